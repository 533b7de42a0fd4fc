//! The scheduler role: periodic upkeep.
//!
//! Today it keeps the live token pool in step with the store, so a pool that lost its state
//! (a restarted Redis) gets its accounts back within one interval. The sync is idempotent,
//! so replicas running it at once do no harm.

use std::time::Duration;

use shared::backends::Backends;
use shared::models::Tier;
use shared::pool::PoolToken;
use tokio_util::sync::CancellationToken;

pub mod blob_cleanup;
pub mod job_retention;
pub mod sampler;
pub mod tasks;

/// How often the pool is re-synced from the store.
pub const POOL_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// The tier of the accounts in a named pool; other pool names are stored but never served.
pub fn pool_tier(pool: &str) -> Option<Tier> {
    match pool {
        "ssoBasic" => Some(Tier::Basic),
        "ssoSuper" => Some(Tier::Super),
        "ssoHeavy" => Some(Tier::Heavy),
        _ => None,
    }
}

/// Loads every stored token into the live pool.
pub async fn sync_pool_from_store(backends: &Backends) -> anyhow::Result<usize> {
    let records = backends.store.list_tokens().await?;
    let tokens: Vec<PoolToken> = records
        .iter()
        .filter_map(|r| {
            Some(PoolToken {
                id: r.id.clone(),
                pool: r.pool.clone(),
                tier: pool_tier(&r.pool)?,
                sealed: backends.cipher.seal(&r.id, r.token.expose()),
                status: r.status,
                quota: r.quota,
            })
        })
        .collect();
    let count = tokens.len();
    backends.pool.sync(tokens).await?;
    Ok(count)
}

/// Runs the scheduler's tasks (see [`tasks`]) until `shutdown`.
pub async fn run(
    config: std::sync::Arc<shared::config::Config>,
    backends: Backends,
    shutdown: CancellationToken,
) {
    tokio::spawn(sampler::run(backends.clone(), shutdown.clone()));
    tasks::run(config, backends, shutdown).await
}
