//! Process-wide logging setup.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber: `RUST_LOG` if set, else `log.level`; text or JSON lines
/// on stderr. Safe to call more than once (later calls do nothing).
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
