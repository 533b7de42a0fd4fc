//! The TokenPool seam: which upstream account serves the next call.
//!
//! Two implementations: [`memory`] (one process) and [`redis`] (hashes and sorted sets
//! driven by Lua scripts, so every decision is atomic across workers). Both pass
//! `shared/tests/it/pool_conformance.rs`.
//!
//! Contract:
//! - `lease` atomically picks, among the requested tiers in order, an `active` token with
//!   quota left, not cooling, and below its concurrency cap; among those the one with the
//!   most quota left, ties broken by least recently used. It records a lease with a TTL and
//!   a fencing number. A cooling token whose window has passed becomes active again.
//! - `settle` ends a lease and applies its outcome. A lease that expired, or whose fencing
//!   number is stale, settles nothing and returns `None`.
//! - An expired lease no longer counts against the token's concurrency cap.
//! - `sync` makes the pool hold exactly the given tokens; runtime state (in flight, cooling,
//!   counters) of tokens that stay is kept, unless the record changes their status. A tier
//!   a quota refresh reported is kept over the one the record implies.
//! - `apply_refresh` applies what the upstream said about one account (quota, tier, window);
//!   it may bring an invalid token back, never a disabled one.
//! - `reap_expired` deletes expired lease entries everywhere (they already count for nothing).

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::models::Tier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    Active,
    Cooling,
    /// Rejected by the upstream (401s past the threshold, or a blocked account).
    Invalid,
    /// Switched off by an operator.
    Disabled,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Cooling => "cooling",
            TokenStatus::Invalid => "invalid",
            TokenStatus::Disabled => "disabled",
        }
    }

    /// Accepts the original product's spellings too (`expired` means invalid).
    pub fn parse(s: &str) -> Option<TokenStatus> {
        match s {
            "active" => Some(TokenStatus::Active),
            "cooling" => Some(TokenStatus::Cooling),
            "invalid" | "expired" => Some(TokenStatus::Invalid),
            "disabled" => Some(TokenStatus::Disabled),
            _ => None,
        }
    }
}

/// A token as the pool needs it. The account token itself travels only sealed
/// (encrypted with the at-rest key), so the pool's backend never holds it in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolToken {
    /// SHA-256 hex of the token: stable, safe to log.
    pub id: String,
    /// Pool name as the admin API uses it (`ssoBasic`, `ssoSuper`).
    pub pool: String,
    pub tier: Tier,
    pub sealed: String,
    pub status: TokenStatus,
    pub quota: i64,
}

/// Live state of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub id: String,
    pub pool: String,
    pub tier: Tier,
    pub status: TokenStatus,
    pub quota: i64,
    pub in_flight: u32,
    /// Unix ms until which the token cools; 0 when not cooling.
    pub cooling_until_ms: i64,
    pub fail_count: u32,
    pub use_count: u64,
    /// Unix ms of the last lease; 0 if never used.
    pub last_used_ms: i64,
    /// Unix ms of the last successful quota refresh; 0 if never refreshed.
    pub last_refresh_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Tiers that may serve the call, tried in this order.
    pub tiers: Vec<Tier>,
    /// Token ids not to use (already tried for this job).
    pub exclude: Vec<String>,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub token_id: String,
    pub pool: String,
    pub tier: Tier,
    pub sealed: String,
    /// Grows with every lease of this token; a settle carrying an older one is refused.
    pub fence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Leased(Lease),
    /// Nothing suitable right now; `retry_after` is when the soonest cooling token returns,
    /// if any will.
    Exhausted {
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The call succeeded and consumed `cost` quota units.
    Success { cost: u32 },
    /// 429: cool the token for `retry_after` (or the pool's default cooldown), quota 0.
    RateLimited { retry_after: Option<Duration> },
    /// 401: one more consecutive failure; past the threshold the token becomes invalid.
    Unauthorized,
    /// The account is blocked: invalid at once.
    Blocked,
    /// Failed for a reason that says nothing about the token (network, anti-bot, 5xx).
    Released,
}

/// What the upstream said when asked about one account's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The quota answer: what is left, of how much, when the window resets, and the tier
    /// the totals imply (if they match a known tier).
    Quota {
        remaining: i64,
        total: i64,
        tier: Option<Tier>,
        /// Until the window resets; used when nothing is left (`None`: the default cooldown).
        window_reset: Option<Duration>,
    },
    /// 401: one more consecutive failure; past the threshold the token becomes invalid.
    Unauthorized,
    /// The account is blocked: invalid at once.
    Blocked,
}

/// How `lease` chooses among the tokens that could serve a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Most quota left first, ties to the least recently used.
    #[default]
    Quota,
    /// Least recently used first, ties to the most quota.
    Lru,
}

impl Selection {
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::Quota => "quota",
            Selection::Lru => "lru",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Concurrent upstream calls allowed on one account.
    pub per_token_concurrency: u32,
    /// Consecutive 401s before a token becomes invalid.
    pub fail_threshold: u32,
    /// Cooldown after a 429 that carried no `Retry-After`.
    pub default_cooldown: Duration,
    /// Key prefix (Redis) so several deployments or test runs can share one server.
    pub prefix: String,
    pub selection: Selection,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            per_token_concurrency: 2,
            fail_threshold: 5,
            default_cooldown: Duration::from_secs(7200),
            prefix: "grok2api".into(),
            selection: Selection::Quota,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("token pool unavailable: {0}")]
    Unavailable(String),
    #[error("token pool error: {0}")]
    Other(String),
}

#[async_trait]
pub trait TokenPool: Send + Sync + 'static {
    /// Makes the pool hold exactly these tokens.
    async fn sync(&self, tokens: Vec<PoolToken>) -> Result<(), PoolError>;

    async fn lease(&self, request: &LeaseRequest) -> Result<LeaseOutcome, PoolError>;

    /// Ends the lease and applies the outcome; `None` if the lease was stale or expired.
    async fn settle(
        &self,
        lease: &Lease,
        outcome: Settlement,
    ) -> Result<Option<TokenState>, PoolError>;

    async fn list(&self) -> Result<Vec<TokenState>, PoolError>;

    /// Applies a quota refresh of one token; `None` if the pool does not hold it.
    async fn apply_refresh(
        &self,
        token_id: &str,
        refresh: &Refresh,
    ) -> Result<Option<TokenState>, PoolError>;

    /// Deletes expired lease entries of every token; returns how many went.
    async fn reap_expired(&self) -> Result<u64, PoolError>;

    async fn ping(&self) -> Result<(), PoolError>;
}

/// A duration in whole milliseconds, capped at ten years: an absurd `Retry-After` must not
/// overflow a timestamp (or lose precision in Redis' Lua numbers).
pub(crate) fn duration_ms(d: Duration) -> i64 {
    const TEN_YEARS_MS: u128 = 10 * 365 * 24 * 3600 * 1000;
    d.as_millis().min(TEN_YEARS_MS) as i64
}
