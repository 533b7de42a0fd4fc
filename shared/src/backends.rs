//! Builds the five seams from configuration: embedded implementations where a URL is empty,
//! distributed ones where it is set.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::Secret;
use crate::blob::BlobStore;
use crate::bus::EventBus;
use crate::bus::memory::MemoryBus;
use crate::bus::redis::RedisBus;
use crate::config::Config;
use crate::crypto::{TokenCipher, generate_key};
use crate::pool::memory::MemoryPool;
use crate::pool::redis::RedisPool;
use crate::pool::{PoolSettings, TokenPool};
use crate::queue::JobQueue;
use crate::queue::memory::MemoryQueue;
use crate::queue::rabbitmq::RabbitQueue;
use crate::store::{self, Store};

/// Handles to every backend a role may use. Cheap to clone.
#[derive(Clone)]
pub struct Backends {
    pub queue: Arc<dyn JobQueue>,
    pub bus: Arc<dyn EventBus>,
    pub pool: Arc<dyn TokenPool>,
    pub store: Arc<dyn Store>,
    pub cipher: TokenCipher,
    /// Generated media (`[blob]`): a local directory or S3; see `crate::blob`.
    pub blob: Arc<dyn BlobStore>,
    /// The effective configuration with the admin API's stored overrides applied, kept
    /// current by polling the store (see `crate::settings`).
    pub live: crate::settings::LiveConfig,
}

impl Backends {
    /// Connects every backend the configuration names. Embedded backends live in this
    /// process only, so they make sense for `serve`, where all roles share them.
    pub async fn connect(config: &Config) -> anyhow::Result<Backends> {
        let cipher = token_cipher(config)?;
        let store = store::connect(&config.database_url(), cipher.clone())
            .await
            .context("connecting the store")?;
        let prefix = &config.backend.prefix;
        let queue: Arc<dyn JobQueue> = if config.backend.queue_url.is_empty() {
            Arc::new(MemoryQueue::new(
                config.queue.capacity,
                config.queue.delivery_limit,
            ))
        } else {
            Arc::new(
                RabbitQueue::connect(
                    config.backend.queue_url.expose(),
                    prefix,
                    config.queue.delivery_limit,
                    Duration::from_millis(config.queue.confirm_timeout_ms),
                )
                .await
                .context("connecting RabbitMQ")?,
            )
        };
        let replay_ttl = Duration::from_secs(config.bus.replay_ttl_secs);
        let settings = pool_settings(config);
        let (bus, pool): (Arc<dyn EventBus>, Arc<dyn TokenPool>) =
            if config.backend.redis_url.is_empty() {
                (
                    Arc::new(MemoryBus::new(config.bus.replay_max_events, replay_ttl)),
                    Arc::new(MemoryPool::new(settings)),
                )
            } else {
                let url = config.backend.redis_url.expose();
                (
                    Arc::new(
                        RedisBus::connect(url, prefix, config.bus.replay_max_events, replay_ttl)
                            .await
                            .context("connecting Redis (event bus)")?,
                    ),
                    Arc::new(
                        RedisPool::connect(url, settings)
                            .await
                            .context("connecting Redis (token pool)")?,
                    ),
                )
            };
        let blob = crate::blob::connect(config)
            .await
            .context("connecting the blob store")?;
        if config.blob.url.is_empty() && !config.backend.queue_url.is_empty() {
            tracing::warn!(
                "blob.url is empty: media stays in this process's data_dir; processes on other machines cannot serve it"
            );
        }
        let live = crate::settings::LiveConfig::new(Arc::new(config.clone()));
        live.watch(store.clone());
        Ok(Backends {
            queue,
            bus,
            pool,
            store,
            cipher,
            blob,
            live,
        })
    }

    /// True when every backend is a distributed one, so several processes can share them.
    pub fn is_distributed(config: &Config) -> bool {
        !config.backend.queue_url.is_empty() && !config.backend.redis_url.is_empty()
    }
}

pub fn pool_settings(config: &Config) -> PoolSettings {
    PoolSettings {
        per_token_concurrency: config.token.per_token_concurrency,
        fail_threshold: config.token.fail_threshold,
        default_cooldown: Duration::from_secs(config.token.default_cooldown_secs),
        prefix: config.backend.prefix.clone(),
        selection: config.token.selection,
    }
}

/// The at-rest key: configured, or for the embedded store generated once into
/// `data_dir/token.key` (readable by the owner only).
pub fn token_cipher(config: &Config) -> anyhow::Result<TokenCipher> {
    let previous = &config.security.previous_token_keys;
    if !config.security.token_key.is_empty() {
        return TokenCipher::new(&config.security.token_key, previous)
            .context("security.token_key");
    }
    let path = config.backend.data_dir.join("token.key");
    if path.exists() {
        let key = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return TokenCipher::new(&Secret::new(key.trim()), previous)
            .with_context(|| format!("key in {}", path.display()));
    }
    if !config.database_url().starts_with("sqlite:") {
        bail!(
            "security.token_key is required with a shared database (generate one with `grok2api keygen`)"
        );
    }
    let key = generate_key();
    write_private(&path, &key)?;
    tracing::info!(path = %path.display(), "generated the token encryption key");
    TokenCipher::new(&Secret::new(key), previous).context("generated key")
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
