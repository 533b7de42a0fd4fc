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
    pub video: VideoConfig,
    pub image: ImageConfig,
    pub worker: WorkerConfig,
    pub security: SecurityConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub blob: BlobConfig,
    pub fetch: FetchConfig,
    pub scheduler: SchedulerConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    /// Client API requests served at once by one gateway; more get 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Client API requests one key of `app.api_key` may have open at once (0: no per-key
    /// cap); more get 429 with `Retry-After`.
    pub max_in_flight_per_key: usize,
    /// A streaming client that accepts no event for this long is cut off.
    pub slow_client_timeout_secs: u64,
    /// A request body that sends nothing for this long is abandoned.
    pub body_read_timeout_secs: u64,
    /// How long a draining process (SIGTERM) may take before it exits.
    pub shutdown_grace_secs: u64,
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
    /// How a generated video is rendered in a chat answer.
    pub video_format: VideoFormat,
    /// Serves the playground pages and `/v1/public/*`.
    pub public_enabled: bool,
    /// Bearer key of `/v1/public/*`; empty: the public API needs no key while enabled.
    pub public_key: Secret,
}

/// How a video reaches a chat answer: an HTML `<video>` element, a bare URL or a Markdown link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoFormat {
    Html,
    Url,
    Markdown,
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
    pub selection: crate::pool::Selection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub timeout_secs: u64,
}

/// Image generation and edit (`[image]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Seconds an image job may take end to end.
    pub timeout_secs: u64,
    /// `enable_nsfw` of Imagine requests.
    pub nsfw: bool,
    /// `enable_pro` of Imagine requests (the higher-quality model, where the account has it).
    pub enable_pro: bool,
    /// Default `response_format` when a request names none: "url" or "b64_json".
    pub response_format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    /// Seconds a video job may take end to end; an unfinished `/v1/videos` job fails then.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub chat_concurrency: usize,
    /// Image jobs (generation and edit) one worker runs at once.
    pub image_concurrency: usize,
    /// Video jobs one worker runs at once (they are long and heavy upstream).
    pub video_concurrency: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub token_key: Secret,
    pub previous_token_keys: Vec<Secret>,
}

/// Where generated media is kept (`[blob]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobConfig {
    /// "" (a local directory, `data_dir/media`) or `s3://bucket[/key-prefix]`.
    pub url: String,
    /// S3 endpoint (`http://127.0.0.1:8333` for SeaweedFS/MinIO); empty: AWS's own.
    pub endpoint: String,
    pub region: String,
    /// Static credentials; both empty: the AWS default chain (environment, profile, IMDS).
    pub access_key: Secret,
    pub secret_key: Secret,
    /// Lifetime of presigned GET URLs, in seconds.
    pub presign_secs: u64,
    /// Objects larger than this go up as a multipart upload in parts of this size.
    pub multipart_threshold_bytes: u64,
}

/// Downloads of URLs that users give (`[fetch]`); see `crate::fetch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Seconds one fetch may take, redirects included.
    pub timeout_secs: u64,
    /// Fetches one process runs at once.
    pub concurrency: usize,
}

/// S3's smallest part size (every part but the last).
pub const S3_MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

impl BlobConfig {
    /// Bucket and key prefix of an `s3://bucket[/prefix]` URL.
    pub fn s3_location(&self) -> Option<(&str, &str)> {
        let rest = self.url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Some((bucket, prefix.trim_matches('/')))
    }
}

/// Periodic upkeep; every interval is in seconds, 0 switches the task off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    pub leader_ttl_ms: u64,
    pub pool_sync_secs: u64,
    pub quota_refresh_secs: u64,
    pub refresh_min_age_secs: u64,
    pub invalid_recheck_secs: u64,
    pub lease_reaper_secs: u64,
    pub blob_cleanup_secs: u64,
    pub blob_limit_mb: u64,
    pub blob_max_age_secs: u64,
    pub job_retention_secs: u64,
    pub job_max_age_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

/// The worker's and scheduler's own `/metrics`, `/healthz` and `/readyz` listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port`; empty disables it. The gateway serves these routes on its own port.
    pub listen: String,
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
        // `GROK2API_TEST_*` variables belong to the test tooling (shared::fetch), not here.
        let env = Env::prefixed("GROK2API_")
            .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_"))
            .split("__");
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
        if self.server.max_in_flight == 0 {
            return Err(invalid("server.max_in_flight", "must be at least 1"));
        }
        if self.server.body_read_timeout_secs == 0 {
            return Err(invalid(
                "server.body_read_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.server.slow_client_timeout_secs == 0 {
            return Err(invalid(
                "server.slow_client_timeout_secs",
                "must be at least 1",
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
        if self.worker.image_concurrency == 0 {
            return Err(invalid("worker.image_concurrency", "must be at least 1"));
        }
        if self.image.timeout_secs == 0 {
            return Err(invalid("image.timeout_secs", "must be at least 1"));
        }
        if !matches!(self.image.response_format.as_str(), "url" | "b64_json") {
            return Err(invalid("image.response_format", "\"url\" or \"b64_json\""));
        }
        if self.worker.chat_concurrency == 0 {
            return Err(invalid("worker.chat_concurrency", "must be at least 1"));
        }
        if self.worker.video_concurrency == 0 {
            return Err(invalid("worker.video_concurrency", "must be at least 1"));
        }
        if self.video.timeout_secs == 0 {
            return Err(invalid("video.timeout_secs", "must be at least 1"));
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
        self.validate_blob()?;
        if self.fetch.max_bytes == 0 || self.fetch.timeout_secs == 0 || self.fetch.concurrency == 0
        {
            return Err(invalid(
                "fetch",
                "max_bytes, timeout_secs and concurrency must be at least 1",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "\"text\" or \"json\""));
        }
        if !self.metrics.listen.trim().is_empty()
            && self
                .metrics
                .listen
                .trim()
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "metrics.listen",
                "must be empty or host:port with an IP address, e.g. 0.0.0.0:9100",
            ));
        }
        Ok(())
    }

    fn validate_blob(&self) -> Result<(), ConfigError> {
        let blob = &self.blob;
        if !blob.url.is_empty() {
            let valid_bucket = |b: &str| {
                (3..=63).contains(&b.len())
                    && b.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-".contains(&c))
                    && b.starts_with(|c: char| c.is_ascii_alphanumeric())
            };
            match blob.s3_location() {
                Some((bucket, prefix))
                    if valid_bucket(bucket)
                        && (prefix.is_empty() || crate::blob::validate_key(prefix).is_ok()) => {}
                _ => {
                    return Err(invalid(
                        "blob.url",
                        "must be empty (local directory) or s3://bucket[/prefix]",
                    ));
                }
            }
        }
        if !blob.endpoint.is_empty()
            && url::Url::parse(&blob.endpoint)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
        {
            return Err(invalid("blob.endpoint", "must be empty or an http(s) URL"));
        }
        if blob.access_key.is_empty() != blob.secret_key.is_empty() {
            return Err(invalid(
                "blob.secret_key",
                "access_key and secret_key go together",
            ));
        }
        if !(1..=604_800).contains(&blob.presign_secs) {
            return Err(invalid(
                "blob.presign_secs",
                "between 1 and 604800 (7 days)",
            ));
        }
        if blob.multipart_threshold_bytes < S3_MIN_PART_BYTES {
            return Err(invalid(
                "blob.multipart_threshold_bytes",
                "at least 5242880 (S3's smallest part)",
            ));
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
