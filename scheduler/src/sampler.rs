//! Samples the service-level gauges every [`SAMPLE_INTERVAL`]: queue depth per job kind and
//! the token pool by tier and status. Every replica samples (the values are the same), so
//! the gauges survive the loss of any one of them.

use std::collections::HashMap;

use shared::backends::Backends;
use shared::job::JobKind;
use shared::metrics::{self, SAMPLE_INTERVAL};
use shared::models::Tier;
use shared::pool::{TokenState, TokenStatus};
use tokio_util::sync::CancellationToken;

const TIERS: [Tier; 3] = [Tier::Basic, Tier::Super, Tier::Heavy];
const STATUSES: [TokenStatus; 4] = [
    TokenStatus::Active,
    TokenStatus::Cooling,
    TokenStatus::Invalid,
    TokenStatus::Disabled,
];

/// Samples until `shutdown`.
pub async fn run(backends: Backends, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => sample(&backends).await,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One sample of every gauge. A backend that does not answer leaves its gauges as they
/// were (and says so at debug level): a stale value is better than a false zero.
pub async fn sample(backends: &Backends) {
    for kind in JobKind::ALL {
        match backends.queue.depth(kind).await {
            Ok(depth) => metrics::queue_depth(kind, depth),
            Err(e) => tracing::debug!(kind = kind.as_str(), error = %e, "queue depth unavailable"),
        }
    }
    match backends.pool.list().await {
        Ok(tokens) => record_pool(&tokens),
        Err(e) => tracing::debug!(error = %e, "token pool unavailable for sampling"),
    }
}

/// Per-tier totals of the pool.
#[derive(Debug, Default, PartialEq, Eq)]
struct TierTotals {
    by_status: HashMap<&'static str, u64>,
    quota: i64,
    in_flight: u64,
}

fn totals(tokens: &[TokenState]) -> HashMap<&'static str, TierTotals> {
    let mut totals: HashMap<&'static str, TierTotals> = HashMap::new();
    for t in tokens {
        let tier = totals.entry(t.tier.as_str()).or_default();
        *tier.by_status.entry(t.status.as_str()).or_default() += 1;
        if matches!(t.status, TokenStatus::Active | TokenStatus::Cooling) {
            tier.quota += t.quota.max(0);
        }
        tier.in_flight += u64::from(t.in_flight);
    }
    totals
}

/// Sets every tier/status combination, zeros included, so a series never sticks at a
/// value after its last token left that state.
fn record_pool(tokens: &[TokenState]) {
    let totals = totals(tokens);
    let empty = TierTotals::default();
    for tier in TIERS {
        let t = totals.get(tier.as_str()).unwrap_or(&empty);
        for status in STATUSES {
            let count = t.by_status.get(status.as_str()).copied().unwrap_or(0);
            metrics::tokens(tier.as_str(), status.as_str(), count);
        }
        metrics::token_quota_remaining(tier.as_str(), t.quota);
        metrics::tokens_in_flight(tier.as_str(), t.in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(tier: Tier, status: TokenStatus, quota: i64, in_flight: u32) -> TokenState {
        TokenState {
            id: format!("{tier:?}{status:?}{quota}"),
            pool: "ssoBasic".into(),
            tier,
            status,
            quota,
            in_flight,
            cooling_until_ms: 0,
            fail_count: 0,
            use_count: 0,
            last_used_ms: 0,
            last_refresh_ms: 0,
        }
    }

    #[test]
    fn totals_count_statuses_and_only_usable_quota() {
        let tokens = [
            token(Tier::Basic, TokenStatus::Active, 10, 2),
            token(Tier::Basic, TokenStatus::Cooling, 0, 0),
            token(Tier::Basic, TokenStatus::Invalid, 50, 0),
            token(Tier::Super, TokenStatus::Active, 7, 1),
        ];
        let t = totals(&tokens);
        let basic = &t["basic"];
        assert_eq!(basic.by_status["active"], 1);
        assert_eq!(basic.by_status["cooling"], 1);
        assert_eq!(basic.by_status["invalid"], 1);
        assert_eq!(basic.quota, 10);
        assert_eq!(basic.in_flight, 2);
        assert_eq!(t["super"].quota, 7);
        assert!(!t.contains_key("heavy"));
    }
}
