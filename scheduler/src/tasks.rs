//! The periodic tasks and the loop that runs them on the leader only.
//!
//! Each task has its own interval (`[scheduler]`, 0 = off). Tasks that need the upstream
//! do not call it: they queue an account batch for the workers, so a missed tick costs
//! nothing and the work survives this process. Every task can also be run by hand
//! (`grok2api scheduler run-once <task>`).

use std::sync::Arc;
use std::time::Duration;

use shared::backends::Backends;
use shared::batch::{AccountJob, AccountOp};
use shared::config::{Config, SchedulerConfig};
use shared::job::{JobEnvelope, JobPayload};
use shared::leader::{LeaderLock, Leadership, LocalLeaderLock, RedisLeaderLock};
use shared::pool::TokenStatus;
use shared::time::now_ms;
use tokio_util::sync::CancellationToken;

use crate::{blob_cleanup, job_retention};

/// How long a queued maintenance job stays worth running.
const MAINTENANCE_DEADLINE: Duration = Duration::from_secs(600);

/// The periodic tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    PoolSync,
    QuotaRefresh,
    InvalidRecheck,
    LeaseReaper,
    BlobCleanup,
    JobRetention,
}

impl Task {
    pub const ALL: [Task; 6] = [
        Task::PoolSync,
        Task::QuotaRefresh,
        Task::InvalidRecheck,
        Task::LeaseReaper,
        Task::BlobCleanup,
        Task::JobRetention,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::PoolSync => "pool_sync",
            Task::QuotaRefresh => "quota_refresh",
            Task::InvalidRecheck => "invalid_recheck",
            Task::LeaseReaper => "lease_reaper",
            Task::BlobCleanup => "blob_cleanup",
            Task::JobRetention => "job_retention",
        }
    }

    pub fn parse(name: &str) -> Option<Task> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == name.replace('-', "_"))
    }

    /// The configured interval; `None` when the task is off.
    pub fn interval(self, config: &SchedulerConfig) -> Option<Duration> {
        let secs = match self {
            Task::PoolSync => config.pool_sync_secs,
            Task::QuotaRefresh => config.quota_refresh_secs,
            Task::InvalidRecheck => config.invalid_recheck_secs,
            Task::LeaseReaper => config.lease_reaper_secs,
            Task::BlobCleanup => config.blob_cleanup_secs,
            Task::JobRetention => config.job_retention_secs,
        };
        (secs > 0).then(|| Duration::from_secs(secs))
    }
}

/// Runs one task now; returns a short summary for logs and the CLI.
pub async fn run_once(task: Task, config: &Config, backends: &Backends) -> anyhow::Result<String> {
    let scheduler = &config.scheduler;
    Ok(match task {
        Task::PoolSync => format!(
            "{} tokens synced",
            crate::sync_pool_from_store(backends).await?
        ),
        Task::QuotaRefresh => {
            let min_age = (scheduler.refresh_min_age_secs * 1000) as i64;
            let now = now_ms();
            let ids = token_ids(backends, |t| {
                t.status == TokenStatus::Cooling && now - t.last_refresh_ms >= min_age
            })
            .await?;
            enqueue(backends, AccountOp::Refresh, ids, task).await?
        }
        Task::InvalidRecheck => {
            let ids = token_ids(backends, |t| t.status == TokenStatus::Invalid).await?;
            enqueue(backends, AccountOp::Refresh, ids, task).await?
        }
        Task::LeaseReaper => format!(
            "{} expired leases removed",
            backends.pool.reap_expired().await?
        ),
        Task::BlobCleanup => {
            let limits = blob_cleanup::Limits {
                max_bytes: scheduler.blob_limit_mb.saturating_mul(1024 * 1024),
                max_age_ms: scheduler.blob_max_age_secs.saturating_mul(1000),
            };
            let report = blob_cleanup::run(backends.blob.as_ref(), limits, now_ms()).await?;
            format!(
                "{} objects ({} bytes) removed",
                report.removed, report.freed_bytes
            )
        }
        Task::JobRetention if scheduler.job_max_age_secs == 0 => {
            "job records are kept forever (job_max_age_secs = 0)".to_owned()
        }
        Task::JobRetention => {
            let max_age_ms = (scheduler.job_max_age_secs as i64).saturating_mul(1000);
            let report = job_retention::run(backends, now_ms() - max_age_ms).await?;
            format!(
                "{} video job records and {} media objects removed",
                report.records, report.blobs
            )
        }
    })
}

async fn token_ids(
    backends: &Backends,
    wanted: impl Fn(&shared::pool::TokenState) -> bool,
) -> anyhow::Result<Vec<String>> {
    Ok(backends
        .pool
        .list()
        .await?
        .into_iter()
        .filter(|t| wanted(t))
        .map(|t| t.id)
        .collect())
}

/// Queues one account batch for the workers (nothing when there are no accounts).
async fn enqueue(
    backends: &Backends,
    op: AccountOp,
    token_ids: Vec<String>,
    task: Task,
) -> anyhow::Result<String> {
    if token_ids.is_empty() {
        return Ok("nothing due".into());
    }
    let count = token_ids.len();
    let payload = JobPayload::Account(AccountJob {
        op,
        token_ids,
        origin: format!("scheduler:{}", task.name()),
        skipped: 0,
    });
    let job = JobEnvelope::new(payload, now_ms() + MAINTENANCE_DEADLINE.as_millis() as i64);
    backends.queue.publish(&job).await?;
    Ok(format!(
        "queued {} for {count} accounts as job {}",
        op.as_str(),
        job.id
    ))
}

/// The lock that elects the leader: Redis when this deployment has one, else this process.
pub async fn leader_lock(config: &Config) -> anyhow::Result<Arc<dyn LeaderLock>> {
    if config.backend.redis_url.is_empty() {
        return Ok(Arc::new(LocalLeaderLock));
    }
    Ok(Arc::new(
        RedisLeaderLock::connect(
            config.backend.redis_url.expose(),
            &config.backend.prefix,
            "scheduler",
        )
        .await?,
    ))
}

/// Runs every enabled task on its interval while this replica leads, until `shutdown`.
pub async fn run(config: Arc<Config>, backends: Backends, shutdown: CancellationToken) {
    let lock = match leader_lock(&config).await {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!(error = %e, "scheduler cannot reach its leader lock; not running tasks");
            return;
        }
    };
    let holder = uuid::Uuid::new_v4().to_string();
    let leadership = Leadership::new(
        lock,
        holder,
        Duration::from_millis(config.scheduler.leader_ttl_ms),
    );
    leadership.tick().await;
    let renewing = tokio::spawn(leadership.clone().run(shutdown.clone()));
    let mut loops = Vec::new();
    for task in Task::ALL {
        let Some(every) = task.interval(&config.scheduler) else {
            continue;
        };
        let (config, backends, leadership, shutdown) = (
            config.clone(),
            backends.clone(),
            leadership.clone(),
            shutdown.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => break,
                }
                let Some(fence) = leadership.fence() else {
                    continue;
                };
                match run_once(task, &config, &backends).await {
                    Ok(summary) => {
                        tracing::info!(task = task.name(), fence, %summary, "scheduler task ran")
                    }
                    Err(e) => {
                        tracing::warn!(task = task.name(), error = %e, "scheduler task failed")
                    }
                }
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    let _ = renewing.await;
}
