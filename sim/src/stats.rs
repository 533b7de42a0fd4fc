//! Per-token call counters, readable over HTTP (`/sim/stats`) and in-process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Counters of chat calls that reached the answer stage.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SimStats {
    pub total_calls: u64,
    /// Keyed by the full account token (the `sso` cookie value): this is test tooling, and
    /// tests look accounts up by value.
    pub tokens: BTreeMap<String, TokenStats>,
}

/// Counters for one account token.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct TokenStats {
    /// Chat calls (REST `conversations/new` or WS `response.create`) that reached the answer.
    pub calls: u64,
    /// Answers being streamed right now.
    pub in_flight: u64,
    /// The highest `in_flight` seen since the last reset.
    pub peak_concurrency: u64,
    /// The mode (`fast`, `auto`, `expert`, `heavy`) of the latest call.
    pub last_mode: Option<String>,
}

#[derive(Default)]
struct Counters {
    stats: SimStats,
    /// Bumped by every reset, so answers that began before it do not touch the new counters.
    epoch: u64,
}

/// The shared counter store.
#[derive(Default)]
pub(crate) struct StatsRegistry {
    counters: Mutex<Counters>,
}

impl StatsRegistry {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock cannot leave the counters inconsistent enough to
        // matter for test tooling, so a poisoned lock is simply taken over.
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a call that reached the answer stage; the answer counts as in flight until the
    /// returned guard is dropped.
    pub(crate) fn begin_call(self: &Arc<Self>, token: &str, mode: &str) -> CallGuard {
        let mut counters = self.lock();
        counters.stats.total_calls += 1;
        let entry = counters.stats.tokens.entry(token.to_owned()).or_default();
        entry.calls += 1;
        entry.in_flight += 1;
        entry.peak_concurrency = entry.peak_concurrency.max(entry.in_flight);
        entry.last_mode = Some(mode.to_owned());
        CallGuard {
            registry: Arc::clone(self),
            token: token.to_owned(),
            epoch: counters.epoch,
        }
    }

    /// Calls made by one token since the last reset.
    pub(crate) fn calls_for(&self, token: &str) -> u64 {
        self.lock().stats.tokens.get(token).map_or(0, |t| t.calls)
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        self.lock().stats.clone()
    }

    pub(crate) fn reset(&self) {
        let mut counters = self.lock();
        counters.stats = SimStats::default();
        counters.epoch += 1;
    }
}

/// Marks one answer as in flight for as long as it lives.
pub(crate) struct CallGuard {
    registry: Arc<StatsRegistry>,
    token: String,
    epoch: u64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut counters = self.registry.lock();
        if counters.epoch != self.epoch {
            return;
        }
        if let Some(entry) = counters.stats.tokens.get_mut(&self.token) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_in_flight_and_peak() {
        let registry = Arc::new(StatsRegistry::default());
        let first = registry.begin_call("tok-a", "fast");
        let second = registry.begin_call("tok-a", "expert");
        drop(first);
        let _third = registry.begin_call("tok-b", "auto");
        let stats = registry.snapshot();
        assert_eq!(stats.total_calls, 3);
        let a = &stats.tokens["tok-a"];
        assert_eq!((a.calls, a.in_flight, a.peak_concurrency), (2, 1, 2));
        assert_eq!(a.last_mode.as_deref(), Some("expert"));
        drop(second);
        assert_eq!(registry.snapshot().tokens["tok-a"].in_flight, 0);
        assert_eq!(registry.calls_for("tok-a"), 2);
        assert_eq!(registry.calls_for("unknown"), 0);
    }

    #[test]
    fn reset_is_not_undone_by_older_answers() {
        let registry = Arc::new(StatsRegistry::default());
        let old = registry.begin_call("tok", "fast");
        registry.reset();
        let _new = registry.begin_call("tok", "fast");
        drop(old);
        let stats = registry.snapshot();
        assert_eq!(stats.total_calls, 1);
        assert_eq!(stats.tokens["tok"].in_flight, 1);
    }
}
