//! Layered configuration: the commented defaults in `shared/config/defaults.toml`
//! (compiled in) -> a TOML file -> `GROK2API_<SECTION>__<KEY>` environment variables.
//! The result is validated once at start; a bad value stops the process with a message
//! naming the key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::Secret;

/// The defaults file, also the reference for every key (`grok2api config defaults`).
pub const DEFAULTS_TOML: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub backend: BackendConfig,
    pub queue: QueueConfig,
    pub bus: BusConfig,
    pub app: AppConfig,
    pub upstream: UpstreamConfig,
    pub retry: RetryConfig,
    pub token: TokenConfig,
    pub chat: ChatConfig,
    pub worker: WorkerConfig,
    pub security: SecurityConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub data_dir: PathBuf,
    pub queue_url: Secret,
    pub redis_url: Secret,
    pub database_url: Secret,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub capacity: usize,
    pub delivery_limit: u32,
    pub confirm_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub replay_ttl_secs: u64,
    pub replay_max_events: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningFormat {
    ThinkTags,
    ReasoningContent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub app_url: String,
    pub app_key: Secret,
    pub api_key: Secret,
    pub open_api: bool,
    pub thinking: bool,
    pub reasoning_format: ReasoningFormat,
    pub temporary: bool,
    pub disable_memory: bool,
    pub filter_tags: Vec<String>,
}

impl AppConfig {
    /// The configured client API keys (the `api_key` value may list several, comma-separated).
    pub fn api_keys(&self) -> Vec<Secret> {
        self.api_key
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Secret::from)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatTransport {
    Ws,
    Rest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsigMode {
    Fixed,
    Signer,
    Fallback,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub ws_url: String,
    pub assets_url: String,
    pub accounts_url: String,
    pub chat_transport: ChatTransport,
    pub statsig_mode: StatsigMode,
    pub statsig_value: Secret,
    pub statsig_signer_url: String,
    pub user_agent: String,
    pub cf_clearance: Secret,
    pub connect_timeout_secs: u64,
    pub stream_idle_timeout_secs: u64,
    pub session_cache_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub max_retry: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub per_token_concurrency: u32,
    pub fail_threshold: u32,
    pub default_cooldown_secs: u64,
    pub lease_ttl_secs: u64,
    pub basic_quota: i64,
    pub super_quota: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub chat_concurrency: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub token_key: Secret,
    pub previous_token_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Loads defaults, then `file` (or `$DATA_DIR/config.toml` when it exists), then the
    /// environment. `DATA_DIR` (or `GROK2API_BACKEND__DATA_DIR`) locates the default file.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env = Env::prefixed("GROK2API_").split("__");
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML));
        if let Ok(dir) = std::env::var("DATA_DIR") {
            figment = figment.merge(("backend.data_dir", dir));
        }
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let data_dir: PathBuf = figment
                    .clone()
                    .merge(env.clone())
                    .extract_inner("backend.data_dir")
                    .map_err(Box::new)?;
                let candidate = data_dir.join("config.toml");
                candidate.exists().then_some(candidate)
            }
        };
        if let Some(p) = path {
            if !p.exists() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist", p.display()),
                ));
            }
            figment = figment.merge(Toml::file(p));
        }
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults only (tests start from here and override fields).
    pub fn defaults() -> Config {
        Figment::from(Toml::string(DEFAULTS_TOML))
            .extract()
            .expect("compiled-in defaults parse")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let scheme_ok = |url: &Secret, schemes: &[&str]| {
            url.is_empty() || schemes.iter().any(|s| url.expose().starts_with(s))
        };
        if !scheme_ok(&self.backend.queue_url, &["amqp://", "amqps://"]) {
            return Err(invalid(
                "backend.queue_url",
                "must be empty or an amqp:// URL",
            ));
        }
        if !scheme_ok(&self.backend.redis_url, &["redis://", "rediss://"]) {
            return Err(invalid(
                "backend.redis_url",
                "must be empty or a redis:// URL",
            ));
        }
        if !scheme_ok(
            &self.backend.database_url,
            &["postgres://", "postgresql://", "sqlite:"],
        ) {
            return Err(invalid(
                "backend.database_url",
                "must be empty, sqlite:// or postgres://",
            ));
        }
        if self.backend.prefix.is_empty()
            || !self
                .backend
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "backend.prefix",
                "letters, digits, '-', '_' and '.' only",
            ));
        }
        if self.queue.capacity == 0 {
            return Err(invalid("queue.capacity", "must be at least 1"));
        }
        if self.queue.delivery_limit == 0 {
            return Err(invalid("queue.delivery_limit", "must be at least 1"));
        }
        if self.token.per_token_concurrency == 0 {
            return Err(invalid("token.per_token_concurrency", "must be at least 1"));
        }
        if self.token.fail_threshold == 0 {
            return Err(invalid("token.fail_threshold", "must be at least 1"));
        }
        if self.retry.max_retry == 0 {
            return Err(invalid("retry.max_retry", "must be at least 1"));
        }
        if self.worker.chat_concurrency == 0 {
            return Err(invalid("worker.chat_concurrency", "must be at least 1"));
        }
        for (key, url) in [
            ("upstream.base_url", &self.upstream.base_url),
            ("upstream.assets_url", &self.upstream.assets_url),
            ("upstream.accounts_url", &self.upstream.accounts_url),
        ] {
            if url::Url::parse(url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return Err(invalid(key, "must be an http(s) URL"));
            }
        }
        if url::Url::parse(&self.upstream.ws_url)
            .map(|u| !matches!(u.scheme(), "ws" | "wss"))
            .unwrap_or(true)
        {
            return Err(invalid("upstream.ws_url", "must be a ws(s) URL"));
        }
        if self.upstream.statsig_mode == StatsigMode::Fixed
            && self.upstream.statsig_value.is_empty()
        {
            return Err(invalid(
                "upstream.statsig_value",
                "required when statsig_mode = \"fixed\"",
            ));
        }
        if self.upstream.statsig_mode == StatsigMode::Signer
            && self.upstream.statsig_signer_url.is_empty()
        {
            return Err(invalid(
                "upstream.statsig_signer_url",
                "required when statsig_mode = \"signer\"",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "\"text\" or \"json\""));
        }
        Ok(())
    }

    /// The store URL, with the embedded default filled in.
    pub fn database_url(&self) -> String {
        if self.backend.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.backend.data_dir.join("grok2api.db").display()
            )
        } else {
            self.backend.database_url.expose().to_owned()
        }
    }
}

#[cfg(test)]
// figment's Jail closures return its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::defaults();
        c.validate().unwrap();
        assert_eq!(c.server.port, 8000);
        assert!(c.backend.queue_url.is_empty());
        assert!(!c.app.open_api);
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[server]\nport = 9001\n[app]\napi_key = \"a, b\"\n",
            )?;
            jail.set_env("GROK2API_SERVER__HOST", "127.0.0.1");
            jail.set_env("GROK2API_TOKEN__FAIL_THRESHOLD", "2");
            let c = Config::load(Some(Path::new("c.toml"))).expect("loads");
            assert_eq!(c.server.port, 9001);
            assert_eq!(c.server.host, "127.0.0.1");
            assert_eq!(c.token.fail_threshold, 2);
            assert_eq!(c.app.api_keys().len(), 2);
            jail.set_env("GROK2API_SERVER__PORT", "9002");
            assert_eq!(
                Config::load(Some(Path::new("c.toml"))).unwrap().server.port,
                9002
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[backend]\nqueue_url = \"http://x\"\n")?;
            let err = Config::load(Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("backend.queue_url"), "{err}");
            jail.create_file("d.toml", "[server]\nprot = 1\n")?;
            let err = Config::load(Some(Path::new("d.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("prot"), "{err}");
            Ok(())
        });
    }
}
