//! The token pool in Redis, shared by every worker.
//!
//! Each operation is one Lua script (`lua/*.lua`, sent with EVALSHA and loaded on demand),
//! so a lease decision, a settlement or a sync is atomic across workers, and every clock
//! reading is the server's (`TIME`), never a worker's. The key layout is described in
//! `lua/common.lua`.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::{
    Lease, LeaseOutcome, LeaseRequest, PoolError, PoolSettings, PoolToken, Refresh, Settlement,
    TokenPool, TokenState, TokenStatus, duration_ms,
};
use crate::models::Tier;

const COMMON: &str = include_str!("lua/common.lua");

/// The scripts, each with the shared helpers prepended.
struct Scripts {
    lease: Script,
    settle: Script,
    sync: Script,
    list: Script,
    refresh: Script,
    reap: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            lease: with_common(include_str!("lua/lease.lua")),
            settle: with_common(include_str!("lua/settle.lua")),
            sync: with_common(include_str!("lua/sync.lua")),
            list: with_common(include_str!("lua/list.lua")),
            refresh: with_common(include_str!("lua/refresh.lua")),
            reap: with_common(include_str!("lua/reap.lua")),
        }
    }
}

/// A [`TokenPool`] kept in Redis under `settings.prefix`.
pub struct RedisPool {
    conn: ConnectionManager,
    settings: PoolSettings,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// Connects to `url` (`redis://…`); the connection reconnects on its own afterwards.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<RedisPool, PoolError> {
        let client = redis::Client::open(url)
            .map_err(|e| PoolError::Other(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(pool_error)?;
        Ok(RedisPool {
            conn,
            settings,
            scripts: Scripts::new(),
        })
    }
}

#[async_trait]
impl TokenPool for RedisPool {
    async fn sync(&self, tokens: Vec<PoolToken>) -> Result<(), PoolError> {
        let mut call = self.scripts.sync.prepare_invoke();
        call.arg(&self.settings.prefix)
            .arg(duration_ms(self.settings.default_cooldown));
        for t in &tokens {
            call.arg(&t.id)
                .arg(&t.pool)
                .arg(t.tier.as_str())
                .arg(&t.sealed)
                .arg(t.status.as_str())
                .arg(t.quota);
        }
        let _: Value = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(pool_error)?;
        Ok(())
    }

    async fn lease(&self, request: &LeaseRequest) -> Result<LeaseOutcome, PoolError> {
        let mut call = self.scripts.lease.prepare_invoke();
        call.arg(&self.settings.prefix)
            .arg(duration_ms(request.ttl).max(1))
            .arg(self.settings.per_token_concurrency)
            .arg(self.settings.selection.as_str())
            .arg(request.tiers.len());
        for tier in &request.tiers {
            call.arg(tier.as_str());
        }
        for id in &request.exclude {
            call.arg(id);
        }
        let reply: Vec<Value> = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(pool_error)?;
        parse_lease(&reply)
    }

    async fn settle(
        &self,
        lease: &Lease,
        outcome: Settlement,
    ) -> Result<Option<TokenState>, PoolError> {
        let (name, amount) = match outcome {
            Settlement::Success { cost } => ("success", i64::from(cost)),
            Settlement::RateLimited { retry_after } => {
                ("rate_limited", retry_after.map_or(-1, duration_ms))
            }
            Settlement::Unauthorized => ("unauthorized", 0),
            Settlement::Blocked => ("blocked", 0),
            Settlement::Released => ("released", 0),
        };
        let reply: Value = self
            .scripts
            .settle
            .arg(&self.settings.prefix)
            .arg(&lease.token_id)
            .arg(lease.fence)
            .arg(name)
            .arg(amount)
            .arg(self.settings.fail_threshold)
            .arg(duration_ms(self.settings.default_cooldown))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(pool_error)?;
        match reply {
            Value::Nil => Ok(None),
            Value::Array(fields) => parse_state(&fields).map(Some),
            other => Err(unexpected(&other)),
        }
    }

    async fn list(&self) -> Result<Vec<TokenState>, PoolError> {
        let reply: Vec<Vec<Value>> = self
            .scripts
            .list
            .arg(&self.settings.prefix)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(pool_error)?;
        reply.iter().map(|fields| parse_state(fields)).collect()
    }

    async fn apply_refresh(
        &self,
        token_id: &str,
        refresh: &Refresh,
    ) -> Result<Option<TokenState>, PoolError> {
        let (outcome, remaining, total, tier, reset) = match refresh {
            Refresh::Quota {
                remaining,
                total,
                tier,
                window_reset,
            } => (
                "quota",
                *remaining,
                *total,
                tier.map_or("", Tier::as_str),
                window_reset.map_or(-1, duration_ms),
            ),
            Refresh::Unauthorized => ("unauthorized", 0, 0, "", -1),
            Refresh::Blocked => ("blocked", 0, 0, "", -1),
        };
        let reply: Value = self
            .scripts
            .refresh
            .arg(&self.settings.prefix)
            .arg(token_id)
            .arg(outcome)
            .arg(remaining)
            .arg(total)
            .arg(tier)
            .arg(reset)
            .arg(self.settings.fail_threshold)
            .arg(duration_ms(self.settings.default_cooldown))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(pool_error)?;
        match reply {
            Value::Nil => Ok(None),
            Value::Array(fields) => parse_state(&fields).map(Some),
            other => Err(unexpected(&other)),
        }
    }

    async fn reap_expired(&self) -> Result<u64, PoolError> {
        let removed: i64 = self
            .scripts
            .reap
            .arg(&self.settings.prefix)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(pool_error)?;
        Ok(removed.max(0) as u64)
    }

    async fn ping(&self) -> Result<(), PoolError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(pool_error)?;
        Ok(())
    }
}

/// Connection trouble is `Unavailable` (the caller may retry elsewhere or later); anything
/// the server or a script rejected is `Other`.
fn pool_error(e: RedisError) -> PoolError {
    let unreachable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            )
        );
    if unreachable {
        PoolError::Unavailable(e.to_string())
    } else {
        PoolError::Other(e.to_string())
    }
}

fn unexpected(value: &Value) -> PoolError {
    let shape = match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::Array(_) => "array",
        _ => "other value",
    };
    PoolError::Other(format!("unexpected reply from a pool script: {shape}"))
}

fn text(value: Option<&Value>) -> Result<String, PoolError> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone())
            .map_err(|_| PoolError::Other("pool script returned non-UTF-8 text".into())),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        Some(other) => Err(unexpected(other)),
        None => Err(PoolError::Other("pool script reply too short".into())),
    }
}

fn int(value: Option<&Value>) -> Result<i64, PoolError> {
    match value {
        Some(Value::Int(n)) => Ok(*n),
        other => text(other)?
            .parse()
            .map_err(|_| PoolError::Other("pool script returned a non-integer".into())),
    }
}

fn tier(value: Option<&Value>) -> Result<Tier, PoolError> {
    let s = text(value)?;
    Tier::parse(&s).ok_or_else(|| PoolError::Other(format!("unknown tier in pool: {s}")))
}

fn parse_lease(reply: &[Value]) -> Result<LeaseOutcome, PoolError> {
    let mut fields = reply.iter();
    match text(fields.next())?.as_str() {
        "leased" => Ok(LeaseOutcome::Leased(Lease {
            token_id: text(fields.next())?,
            pool: text(fields.next())?,
            tier: tier(fields.next())?,
            sealed: text(fields.next())?,
            fence: u64::try_from(int(fields.next())?)
                .map_err(|_| PoolError::Other("negative fence".into()))?,
        })),
        "exhausted" => {
            let wait_ms = int(fields.next())?;
            Ok(LeaseOutcome::Exhausted {
                retry_after: (wait_ms >= 0).then(|| Duration::from_millis(wait_ms as u64)),
            })
        }
        other => Err(PoolError::Other(format!("unknown lease reply {other}"))),
    }
}

/// Reads the layout written by `state_reply` in `lua/common.lua`.
fn parse_state(fields: &[Value]) -> Result<TokenState, PoolError> {
    let mut f = fields.iter();
    let id = text(f.next())?;
    let pool = text(f.next())?;
    let tier = tier(f.next())?;
    let status_text = text(f.next())?;
    let status = TokenStatus::parse(&status_text)
        .ok_or_else(|| PoolError::Other(format!("unknown token status {status_text}")))?;
    let counter = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok(TokenState {
        id,
        pool,
        tier,
        status,
        quota: int(f.next())?,
        in_flight: counter(int(f.next())?),
        cooling_until_ms: int(f.next())?,
        fail_count: counter(int(f.next())?),
        use_count: int(f.next())?.max(0) as u64,
        last_used_ms: int(f.next())?,
        last_refresh_ms: int(f.next())?,
    })
}
