//! Leader election: exactly one of several replicas runs the periodic tasks.
//!
//! A [`LeaderLock`] is a lease on a name with a fencing number. [`RedisLeaderLock`] keeps it
//! in one Redis key set only when absent (`SET NX PX` semantics, done in a script so that
//! taking the lock and drawing the next fencing number are one step) and renewed by its
//! holder; when the holder dies, the key expires and another replica takes it with a larger
//! fencing number. [`LocalLeaderLock`] is for one process: it always grants the lock.
//!
//! [`Leadership`] drives a lock in the background and answers "am I the leader right now",
//! counting itself leader only until its last renewal would have expired, so a replica cut
//! off from Redis stops acting before another one can start.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader lock unavailable: {0}")]
    Unavailable(String),
}

/// A named lock with a time-to-live and a fencing number that grows with every new holder.
#[async_trait]
pub trait LeaderLock: Send + Sync + 'static {
    /// Takes the lock if it is free, or extends it if `holder` has it. Returns the holder's
    /// fencing number, or `None` while another holder has the lock.
    async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Option<u64>, LeaderError>;

    /// Gives the lock up if `holder` still has it with this fence.
    async fn release(&self, holder: &str, fence: u64) -> Result<(), LeaderError>;

    /// The fencing number of the current holder, if any.
    async fn current_fence(&self) -> Result<Option<u64>, LeaderError>;
}

/// The lock of a single process: every holder gets it, always with fence 1.
#[derive(Debug, Default)]
pub struct LocalLeaderLock;

#[async_trait]
impl LeaderLock for LocalLeaderLock {
    async fn acquire(&self, _holder: &str, _ttl: Duration) -> Result<Option<u64>, LeaderError> {
        Ok(Some(1))
    }

    async fn release(&self, _holder: &str, _fence: u64) -> Result<(), LeaderError> {
        Ok(())
    }

    async fn current_fence(&self) -> Result<Option<u64>, LeaderError> {
        Ok(Some(1))
    }
}

/// Takes or extends the lock. KEYS: lock key, fence counter. ARGV: holder, ttl ms.
/// The key holds `<holder>|<fence>`. Reply: the fence, or -1 when someone else holds it.
const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'NX', 'PX', ARGV[2])
  return fence
end
local holder, fence = string.match(current, '^(.*)|(%d+)$')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(fence)
end
return -1
";

/// Deletes the lock if it is still `<holder>|<fence>`. KEYS: lock key. ARGV: value.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A [`LeaderLock`] in Redis under `<prefix>:leader:<name>`.
pub struct RedisLeaderLock {
    conn: ConnectionManager,
    key: String,
    fence_key: String,
    acquire: Script,
    release: Script,
}

impl std::fmt::Debug for RedisLeaderLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLeaderLock")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisLeaderLock {
    pub async fn connect(url: &str, prefix: &str, name: &str) -> Result<Self, LeaderError> {
        let client = redis::Client::open(url)
            .map_err(|e| LeaderError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        let key = format!("{prefix}:leader:{name}");
        Ok(Self {
            conn,
            fence_key: format!("{key}:fence"),
            key,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
        })
    }
}

fn unavailable(e: redis::RedisError) -> LeaderError {
    LeaderError::Unavailable(e.to_string())
}

#[async_trait]
impl LeaderLock for RedisLeaderLock {
    async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Option<u64>, LeaderError> {
        let ttl_ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        let fence: i64 = self
            .acquire
            .key(&self.key)
            .key(&self.fence_key)
            .arg(holder)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(fence).ok())
    }

    async fn release(&self, holder: &str, fence: u64) -> Result<(), LeaderError> {
        let _: i64 = self
            .release
            .key(&self.key)
            .arg(format!("{holder}|{fence}"))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn current_fence(&self) -> Result<Option<u64>, LeaderError> {
        let value: Option<String> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(value
            .and_then(|v| v.rsplit_once('|').map(|(_, f)| f.to_owned()))
            .and_then(|f| f.parse().ok()))
    }
}

/// This replica's standing, kept current by [`Leadership::run`].
#[derive(Clone)]
pub struct Leadership {
    lock: Arc<dyn LeaderLock>,
    holder: String,
    ttl: Duration,
    /// The fence held and until when it is surely still ours.
    held: Arc<Mutex<Option<(u64, Instant)>>>,
}

impl Leadership {
    /// `holder` must be unique per replica (a random id is fine).
    pub fn new(lock: Arc<dyn LeaderLock>, holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            lock,
            holder: holder.into(),
            ttl: ttl.max(Duration::from_millis(300)),
            held: Arc::default(),
        }
    }

    /// The fencing number while this replica leads; `None` otherwise.
    pub fn fence(&self) -> Option<u64> {
        let held = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.filter(|(_, until)| Instant::now() < *until)
            .map(|(f, _)| f)
    }

    /// Tries to take or renew the lock once.
    pub async fn tick(&self) -> Option<u64> {
        let asked = Instant::now();
        let outcome = self.lock.acquire(&self.holder, self.ttl).await;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let previous = held.map(|(f, _)| f);
        match outcome {
            Ok(Some(fence)) => {
                // Counted from before the request: the key may have been set that early.
                *held = Some((fence, asked + self.ttl * 2 / 3));
                if previous != Some(fence) {
                    tracing::info!(fence, "became the scheduler leader");
                }
            }
            Ok(None) => {
                if previous.is_some() {
                    tracing::warn!("lost the scheduler leadership");
                }
                *held = None;
            }
            Err(e) => tracing::warn!(error = %e, "leader lock unreachable"),
        }
        drop(held);
        self.fence()
    }

    /// Renews every third of the TTL until `shutdown`, then releases the lock so another
    /// replica takes over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => { self.tick().await; }
                _ = shutdown.cancelled() => break,
            }
        }
        if let Some(fence) = self.fence() {
            *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if let Err(e) = self.lock.release(&self.holder, fence).await {
                tracing::warn!(error = %e, "could not release the leader lock");
            }
        }
    }
}
