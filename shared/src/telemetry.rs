//! Process-wide logging and tracing setup, and W3C trace context helpers.
//!
//! Logs go to stderr as text or JSON lines (`log.format`). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP (gRPC), with
//! `service.name` naming the role, so one trace follows a request from the gateway through
//! the queue to a worker, the upstream call and the events back. Trace context crosses
//! process boundaries as a `traceparent` string (job envelopes, AMQP headers, job events).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogConfig;

/// The environment variable that switches OTLP export on (standard OpenTelemetry name).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static ROLE: OnceLock<&'static str> = OnceLock::new();
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// Names the role this process runs (`serve`, `gateway`, `worker`, `scheduler`, ...);
/// call before [`init`]. The first call wins.
pub fn set_role(role: &'static str) {
    let _ = ROLE.set(role);
}

/// The role set by [`set_role`], `serve` when none was.
pub fn role() -> &'static str {
    ROLE.get().copied().unwrap_or("serve")
}

/// The OpenTelemetry `service.name` of a role: `grok2api` for the all-in-one `serve`,
/// `grok2api-<role>` for the others.
pub fn service_name(role: &str) -> String {
    match role {
        "serve" => "grok2api".to_owned(),
        other => format!("grok2api-{other}"),
    }
}

type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;

/// Installs the global subscriber: `RUST_LOG` if set, else `log.level`; text or JSON lines
/// on stderr; OTLP span export when [`OTLP_ENDPOINT_ENV`] is set. Safe to call more than
/// once (later calls do nothing).
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colours only on a terminal: log files and collectors get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let mut layers: Vec<BoxedLayer> = vec![if log.format == "json" {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    }];
    let exporter_error = match otlp_layer() {
        Ok(Some(layer)) => {
            layers.push(layer);
            None
        }
        Ok(None) => None,
        Err(e) => Some(e),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .is_ok()
        && let Some(e) = exporter_error
    {
        tracing::warn!(error = %e, "OTLP trace export disabled");
    }
}

fn otlp_layer() -> Result<Option<BoxedLayer>, String> {
    let endpoint = std::env::var(OTLP_ENDPOINT_ENV).unwrap_or_default();
    if endpoint.trim().is_empty() {
        return Ok(None);
    }
    let mut slot = PROVIDER.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Ok(None);
    }
    // The exporter reads the endpoint (and the other OTEL_EXPORTER_OTLP_* settings) from
    // the environment itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name(role()))
                .build(),
        )
        .build();
    let tracer = provider.tracer("grok2api");
    *slot = Some(provider);
    Ok(Some(
        tracing_opentelemetry::layer().with_tracer(tracer).boxed(),
    ))
}

/// Flushes and stops span export (at process exit). Does nothing without OTLP export.
pub fn shutdown() {
    let provider = PROVIDER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(provider) = provider
        && let Err(e) = provider.shutdown()
    {
        eprintln!("flushing traces failed: {e}");
    }
}

/// The W3C `traceparent` of the current span, when spans are being exported.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The W3C `traceparent` of `span`, when spans are being exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent` (if it is a valid one).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    set_parent_from(span, &carrier);
}

/// Makes `span` a child of the remote span named by the `traceparent` header, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        set_parent_from(span, &Headers(headers));
    }
}

fn set_parent_from(span: &tracing::Span, carrier: &dyn Extractor) {
    let cx = TraceContextPropagator::new().extract(carrier);
    // Fails only when the span is disabled or already started elsewhere: nothing to link.
    let _ = span.set_parent(cx);
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_the_role() {
        assert_eq!(service_name("serve"), "grok2api");
        assert_eq!(service_name("gateway"), "grok2api-gateway");
        assert_eq!(service_name("worker"), "grok2api-worker");
        assert_eq!(service_name("scheduler"), "grok2api-scheduler");
    }

    #[test]
    fn without_export_there_is_no_traceparent() {
        assert_eq!(current_traceparent(), None);
    }
}
