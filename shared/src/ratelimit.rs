//! Per-key request rate limits (client API keys), as a GCRA: a key with a limit of `n` per
//! minute may burst `n` requests, then gets one more every `60 / n` seconds.
//!
//! Two implementations: [`MemoryLimiter`] for the one-process shape, and [`RedisLimiter`],
//! one `EVALSHA` per request against Redis's clock, so every gateway of a cluster shares
//! the same budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the caller may try again after this long.
    Limited {
        retry_after: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` against `per_minute` (at least 1).
    async fn check(&self, key: &str, per_minute: u32) -> Result<Decision, LimiterError>;
}

/// GCRA step on milliseconds: the new theoretical arrival time, or how long to wait.
fn gcra(tat_ms: u64, now_ms: u64, per_minute: u32) -> Result<u64, u64> {
    let per_minute = u64::from(per_minute.max(1));
    let interval = 60_000 / per_minute;
    let burst = interval * per_minute;
    let new_tat = tat_ms.max(now_ms) + interval;
    if new_tat - now_ms <= burst {
        Ok(new_tat)
    } else {
        Err(new_tat - now_ms - burst)
    }
}

/// Limits kept in this process (the embedded shape has one gateway).
pub struct MemoryLimiter {
    start: Instant,
    /// key -> theoretical arrival time (ms since `start`). Entries whose time has passed
    /// carry no information, so they are dropped when the map grows.
    tats: Mutex<HashMap<String, u64>>,
}

/// Above this many keys the memory limiter sweeps out entries that no longer matter.
const SWEEP_AT: usize = 10_000;

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter {
            start: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, key: &str, per_minute: u32) -> Result<Decision, LimiterError> {
        let now = self.start.elapsed().as_millis() as u64;
        let mut tats = self.tats.lock().expect("not poisoned");
        if tats.len() >= SWEEP_AT {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(0);
        Ok(match gcra(tat, now, per_minute) {
            Ok(new_tat) => {
                tats.insert(key.to_owned(), new_tat);
                Decision::Allowed
            }
            Err(wait) => Decision::Limited {
                retry_after: Duration::from_millis(wait),
            },
        })
    }
}

/// The same GCRA step in Redis, on the server's clock. Returns 0 when allowed, else the
/// milliseconds to wait. The key expires when its arrival time passes.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_minute = tonumber(ARGV[1])
local interval = math.floor(60000 / per_minute)
local burst = interval * per_minute
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > burst then
  return new_tat - now - burst
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return 0
";

/// Limits shared by every process through Redis.
pub struct RedisLimiter {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    script: redis::Script,
}

impl RedisLimiter {
    /// Connects lazily, on the first check.
    pub fn new(url: &str, prefix: &str) -> Result<RedisLimiter, LimiterError> {
        Ok(RedisLimiter {
            client: redis::Client::open(url).map_err(|e| LimiterError(e.to_string()))?,
            connection: OnceCell::new(),
            prefix: prefix.to_owned(),
            script: redis::Script::new(GCRA_LUA),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, LimiterError> {
        self.connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
            .map_err(|e| LimiterError(e.to_string()))
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, per_minute: u32) -> Result<Decision, LimiterError> {
        let mut conn = self.connection().await?;
        let wait: u64 = self
            .script
            .key(format!("{}:ratelimit:{key}", self.prefix))
            .arg(per_minute.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LimiterError(e.to_string()))?;
        Ok(if wait == 0 {
            Decision::Allowed
        } else {
            Decision::Limited {
                retry_after: Duration::from_millis(wait),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_one_per_interval() {
        let mut tat = 0;
        for _ in 0..3 {
            tat = gcra(tat, 1_000, 3).unwrap();
        }
        let wait = gcra(tat, 1_000, 3).unwrap_err();
        assert_eq!(wait, 20_000);
        assert!(gcra(tat, 21_000, 3).is_ok());
    }

    #[tokio::test]
    async fn memory_limiter_separates_keys() {
        let l = MemoryLimiter::default();
        assert_eq!(l.check("a", 1).await.unwrap(), Decision::Allowed);
        assert!(matches!(
            l.check("a", 1).await.unwrap(),
            Decision::Limited { .. }
        ));
        assert_eq!(l.check("b", 1).await.unwrap(), Decision::Allowed);
    }
}
