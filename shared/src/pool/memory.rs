//! The token pool of a single process: plain maps behind one mutex.
//!
//! It follows the same rules as the Redis pool (`lua/*.lua`), with the process clock in
//! place of the server's. The lock is never held across an await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    Lease, LeaseOutcome, LeaseRequest, PoolError, PoolSettings, PoolToken, Refresh, Selection,
    Settlement, TokenPool, TokenState, TokenStatus, duration_ms,
};
use crate::models::Tier;
use crate::time::now_ms;

/// A [`TokenPool`] held in this process.
pub struct MemoryPool {
    settings: PoolSettings,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPool").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    tokens: BTreeMap<String, Slot>,
    /// Shared by all tokens, so a token removed and added again never hands out a fence
    /// number an old lease still carries.
    last_fence: u64,
}

struct Slot {
    pool: String,
    tier: Tier,
    sealed: String,
    status: TokenStatus,
    quota: i64,
    /// Quota to give back when a cooldown ends (what the token had when it started cooling).
    resume_quota: i64,
    cooling_until_ms: i64,
    fail_count: u32,
    use_count: u64,
    last_used_ms: i64,
    last_refresh_ms: i64,
    /// Set once a quota refresh reported the tier; a sync then keeps it.
    tier_inferred: bool,
    /// Live leases: fence → expiry (unix ms).
    leases: HashMap<u64, i64>,
}

impl Slot {
    fn new(token: PoolToken, cooldown_ms: i64, now: i64) -> Self {
        // The record does not say when a cooling token's window ends: assume a full
        // cooldown rather than hand a rate-limited account straight back out.
        let cooling_until_ms = if token.status == TokenStatus::Cooling {
            now + cooldown_ms
        } else {
            0
        };
        Self {
            pool: token.pool,
            tier: token.tier,
            sealed: token.sealed,
            status: token.status,
            quota: token.quota,
            resume_quota: token.quota,
            cooling_until_ms,
            fail_count: 0,
            use_count: 0,
            last_used_ms: 0,
            last_refresh_ms: 0,
            tier_inferred: false,
            leases: HashMap::new(),
        }
    }

    fn in_flight(&self, now: i64) -> usize {
        self.leases.values().filter(|&&expiry| expiry > now).count()
    }

    fn drop_expired(&mut self, now: i64) {
        self.leases.retain(|_, expiry| *expiry > now);
    }

    /// A cooling token whose window has passed is active again, with the quota it had when
    /// it started cooling (or 1, so it is selectable until a quota refresh says more).
    fn recover_if_due(&mut self, now: i64) {
        if self.status == TokenStatus::Cooling && self.cooling_until_ms <= now {
            self.status = TokenStatus::Active;
            self.quota = if self.resume_quota > 0 {
                self.resume_quota
            } else {
                1
            };
            self.cooling_until_ms = 0;
        }
    }

    fn selectable(&self, cap: u32, now: i64) -> bool {
        self.status == TokenStatus::Active && self.quota > 0 && self.in_flight(now) < cap as usize
    }

    fn cool(&mut self, until_ms: i64, resume_quota: i64) {
        if self.status == TokenStatus::Active {
            self.resume_quota = resume_quota;
        }
        self.status = TokenStatus::Cooling;
        self.cooling_until_ms = self.cooling_until_ms.max(until_ms);
    }

    fn apply(&mut self, outcome: Settlement, settings: &PoolSettings, now: i64) {
        // Outcomes move only tokens the pool manages itself; an operator's "disabled" and
        // an "invalid" verdict stay until a sync changes them.
        let managed = matches!(self.status, TokenStatus::Active | TokenStatus::Cooling);
        let default_cooldown = duration_ms(settings.default_cooldown);
        match outcome {
            Settlement::Success { cost } => {
                self.quota = (self.quota - i64::from(cost)).max(0);
                self.use_count += 1;
                self.fail_count = 0;
                if self.quota == 0 && self.status == TokenStatus::Active {
                    self.cool(now + default_cooldown, 0);
                }
            }
            Settlement::RateLimited { retry_after } => {
                if managed {
                    let wait = retry_after.map_or(default_cooldown, duration_ms);
                    self.cool(now + wait, self.quota);
                    self.quota = 0;
                }
            }
            Settlement::Unauthorized => {
                self.fail_count = self.fail_count.saturating_add(1);
                if managed && self.fail_count >= settings.fail_threshold {
                    self.invalidate();
                }
            }
            Settlement::Blocked => {
                if managed {
                    self.invalidate();
                }
            }
            Settlement::Released => {}
        }
    }

    fn invalidate(&mut self) {
        self.status = TokenStatus::Invalid;
        self.cooling_until_ms = 0;
    }

    /// Applies a record to a token the pool already holds; see [`TokenPool::sync`].
    fn update_from(&mut self, token: PoolToken) {
        self.pool = token.pool;
        if !self.tier_inferred {
            self.tier = token.tier;
        }
        self.sealed = token.sealed;
        match (token.status, self.status) {
            (TokenStatus::Disabled | TokenStatus::Invalid, _) => {
                self.status = token.status;
                self.cooling_until_ms = 0;
            }
            // An operator turned the token back on.
            (TokenStatus::Active, TokenStatus::Invalid | TokenStatus::Disabled) => {
                self.status = TokenStatus::Active;
                self.quota = token.quota;
                self.fail_count = 0;
                self.cooling_until_ms = 0;
            }
            _ => {}
        }
    }

    fn state(&self, id: &str, now: i64) -> TokenState {
        TokenState {
            id: id.to_owned(),
            pool: self.pool.clone(),
            tier: self.tier,
            status: self.status,
            quota: self.quota,
            in_flight: u32::try_from(self.in_flight(now)).unwrap_or(u32::MAX),
            cooling_until_ms: self.cooling_until_ms,
            fail_count: self.fail_count,
            use_count: self.use_count,
            last_used_ms: self.last_used_ms,
            last_refresh_ms: self.last_refresh_ms,
        }
    }

    /// By the selection policy, then the smaller id: most quota then least recently used,
    /// or least recently used then most quota.
    fn better_than(&self, id: &str, other: &Slot, other_id: &str, policy: Selection) -> bool {
        use std::cmp::Reverse;
        match policy {
            Selection::Quota => {
                (Reverse(self.quota), self.last_used_ms, id)
                    < (Reverse(other.quota), other.last_used_ms, other_id)
            }
            Selection::Lru => {
                (self.last_used_ms, Reverse(self.quota), id)
                    < (other.last_used_ms, Reverse(other.quota), other_id)
            }
        }
    }

    /// See `lua/refresh.lua`, which this mirrors.
    fn refresh(&mut self, refresh: &Refresh, settings: &PoolSettings, now: i64) {
        let disabled = self.status == TokenStatus::Disabled;
        match refresh {
            Refresh::Quota {
                remaining,
                total,
                tier,
                window_reset,
            } => {
                self.last_refresh_ms = now;
                self.fail_count = 0;
                if let Some(tier) = tier {
                    self.tier = *tier;
                    self.tier_inferred = true;
                }
                if !disabled {
                    self.quota = (*remaining).max(0);
                    if self.quota > 0 {
                        self.status = TokenStatus::Active;
                        self.cooling_until_ms = 0;
                    } else {
                        let wait = window_reset
                            .map_or(duration_ms(settings.default_cooldown), duration_ms);
                        self.status = TokenStatus::Cooling;
                        self.cooling_until_ms = now + wait;
                        self.resume_quota = (*total).max(0);
                    }
                }
            }
            Refresh::Unauthorized => {
                self.fail_count = self.fail_count.saturating_add(1);
                if !disabled && self.fail_count >= settings.fail_threshold {
                    self.invalidate();
                }
            }
            Refresh::Blocked => {
                if !disabled {
                    self.invalidate();
                }
            }
        }
    }
}

impl MemoryPool {
    /// An empty pool; `sync` fills it.
    pub fn new(settings: PoolSettings) -> MemoryPool {
        MemoryPool {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No critical section can stop halfway through an update (none of them panics on
        // any input), so a poisoned lock still guards consistent maps.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn lease(&mut self, request: &LeaseRequest, settings: &PoolSettings) -> LeaseOutcome {
        let now = now_ms();
        let excluded: HashSet<&str> = request.exclude.iter().map(String::as_str).collect();
        let mut soonest: Option<i64> = None;
        for &tier in &request.tiers {
            let mut best: Option<(&String, &Slot)> = None;
            for (id, slot) in self.tokens.iter_mut() {
                if slot.tier != tier || excluded.contains(id.as_str()) {
                    continue;
                }
                slot.recover_if_due(now);
                if slot.status == TokenStatus::Cooling {
                    let wait = slot.cooling_until_ms - now;
                    soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                }
            }
            for (id, slot) in &self.tokens {
                if slot.tier != tier
                    || excluded.contains(id.as_str())
                    || !slot.selectable(settings.per_token_concurrency, now)
                {
                    continue;
                }
                if best.is_none_or(|(best_id, best_slot)| {
                    slot.better_than(id, best_slot, best_id, settings.selection)
                }) {
                    best = Some((id, slot));
                }
            }
            if let Some((id, _)) = best {
                let id = id.clone();
                self.last_fence += 1;
                let fence = self.last_fence;
                let ttl = duration_ms(request.ttl).max(1);
                let slot = self.tokens.get_mut(&id).expect("chosen token exists");
                slot.drop_expired(now);
                slot.leases.insert(fence, now + ttl);
                slot.last_used_ms = now;
                return LeaseOutcome::Leased(Lease {
                    token_id: id,
                    pool: slot.pool.clone(),
                    tier: slot.tier,
                    sealed: slot.sealed.clone(),
                    fence,
                });
            }
        }
        LeaseOutcome::Exhausted {
            retry_after: soonest.map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
        }
    }

    fn settle(
        &mut self,
        lease: &Lease,
        outcome: Settlement,
        settings: &PoolSettings,
    ) -> Option<TokenState> {
        let now = now_ms();
        let slot = self.tokens.get_mut(&lease.token_id)?;
        let expiry = slot.leases.get(&lease.fence).copied();
        slot.drop_expired(now);
        if expiry.is_none_or(|e| e <= now) {
            return None;
        }
        slot.leases.remove(&lease.fence);
        slot.recover_if_due(now);
        slot.apply(outcome, settings, now);
        Some(slot.state(&lease.token_id, now))
    }

    fn sync(&mut self, tokens: Vec<PoolToken>, settings: &PoolSettings) {
        let now = now_ms();
        let wanted: HashSet<&str> = tokens.iter().map(|t| t.id.as_str()).collect();
        self.tokens.retain(|id, _| wanted.contains(id.as_str()));
        let cooldown = duration_ms(settings.default_cooldown);
        for token in tokens {
            match self.tokens.get_mut(&token.id) {
                Some(slot) => slot.update_from(token),
                None => {
                    let id = token.id.clone();
                    self.tokens.insert(id, Slot::new(token, cooldown, now));
                }
            }
        }
    }

    fn list(&mut self) -> Vec<TokenState> {
        let now = now_ms();
        self.tokens
            .iter_mut()
            .map(|(id, slot)| {
                slot.drop_expired(now);
                slot.recover_if_due(now);
                slot.state(id, now)
            })
            .collect()
    }
}

impl State {
    fn apply_refresh(
        &mut self,
        id: &str,
        refresh: &Refresh,
        settings: &PoolSettings,
    ) -> Option<TokenState> {
        let now = now_ms();
        let slot = self.tokens.get_mut(id)?;
        slot.drop_expired(now);
        slot.recover_if_due(now);
        slot.refresh(refresh, settings, now);
        Some(slot.state(id, now))
    }

    fn reap_expired(&mut self) -> u64 {
        let now = now_ms();
        let mut removed = 0;
        for slot in self.tokens.values_mut() {
            let before = slot.leases.len();
            slot.drop_expired(now);
            removed += (before - slot.leases.len()) as u64;
        }
        removed
    }
}

#[async_trait]
impl TokenPool for MemoryPool {
    async fn sync(&self, tokens: Vec<PoolToken>) -> Result<(), PoolError> {
        self.lock().sync(tokens, &self.settings);
        Ok(())
    }

    async fn lease(&self, request: &LeaseRequest) -> Result<LeaseOutcome, PoolError> {
        Ok(self.lock().lease(request, &self.settings))
    }

    async fn settle(
        &self,
        lease: &Lease,
        outcome: Settlement,
    ) -> Result<Option<TokenState>, PoolError> {
        Ok(self.lock().settle(lease, outcome, &self.settings))
    }

    async fn list(&self) -> Result<Vec<TokenState>, PoolError> {
        Ok(self.lock().list())
    }

    async fn apply_refresh(
        &self,
        token_id: &str,
        refresh: &Refresh,
    ) -> Result<Option<TokenState>, PoolError> {
        Ok(self.lock().apply_refresh(token_id, refresh, &self.settings))
    }

    async fn reap_expired(&self) -> Result<u64, PoolError> {
        Ok(self.lock().reap_expired())
    }

    async fn ping(&self) -> Result<(), PoolError> {
        Ok(())
    }
}
