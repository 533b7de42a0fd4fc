//! The TokenPool contract, run against the in-memory pool and the Redis pool.
//!
//! Each case is one async fn over `Arc<dyn TokenPool>`; `conformance!` turns it into a
//! `<case>::memory` and a `<case>::redis` test. Redis cases use their own key prefix and
//! delete their keys afterwards.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shared::models::Tier;
use shared::pool::memory::MemoryPool;
use shared::pool::redis::RedisPool;
use shared::pool::{
    Lease, LeaseOutcome, LeaseRequest, PoolError, PoolSettings, PoolToken, Refresh, Settlement,
    TokenPool, TokenState, TokenStatus,
};
use shared::time::now_ms;

use crate::common::{purge_redis, redis_url, run_then_cleanup, unique_prefix};

fn settings(per_token_concurrency: u32, fail_threshold: u32, cooldown: Duration) -> PoolSettings {
    PoolSettings {
        per_token_concurrency,
        fail_threshold,
        default_cooldown: cooldown,
        prefix: String::new(),
        selection: Default::default(),
    }
}

fn defaults() -> PoolSettings {
    settings(2, 5, Duration::from_secs(60))
}

async fn run_memory<F, Fut>(settings: PoolSettings, case: F)
where
    F: FnOnce(Arc<dyn TokenPool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    case(Arc::new(MemoryPool::new(settings))).await;
}

async fn run_redis<F, Fut>(name: &str, mut settings: PoolSettings, case: F)
where
    F: FnOnce(Arc<dyn TokenPool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    settings.prefix = unique_prefix(name);
    let prefix = settings.prefix.clone();
    let pool = RedisPool::connect(&redis_url(), settings)
        .await
        .expect("connect the Redis pool");
    run_then_cleanup(case(Arc::new(pool)), purge_redis(&prefix)).await;
}

macro_rules! conformance {
    ($($case:ident => $settings:expr;)*) => {
        $(
            mod $case {
                #[tokio::test]
                async fn memory() {
                    super::run_memory($settings, super::$case).await;
                }

                #[tokio::test]
                async fn redis() {
                    super::run_redis(stringify!($case), $settings, super::$case).await;
                }
            }
        )*
    };
}

conformance! {
    picks_most_quota_then_least_recently_used => super::defaults();
    tries_tiers_in_order => super::defaults();
    skips_excluded_tokens => super::defaults();
    caps_concurrent_leases_per_token => super::defaults();
    expired_lease_frees_its_slot => super::settings(1, 5, std::time::Duration::from_secs(60));
    refuses_stale_fence => super::defaults();
    rate_limit_cools_then_recovers => super::defaults();
    unauthorized_counts_to_threshold => super::settings(2, 3, std::time::Duration::from_secs(60));
    blocked_is_invalid_at_once => super::defaults();
    success_consumes_quota_and_cools_at_zero => super::defaults();
    sync_adds_removes_and_keeps_runtime_state => super::defaults();
    concurrent_leases_never_exceed_cap => super::defaults();
    refresh_applies_quota_tier_and_window => super::defaults();
    refresh_rechecks_invalid_but_not_disabled => super::settings(2, 2, std::time::Duration::from_secs(60));
    lru_selection_prefers_least_recently_used => super::lru();
    reaper_removes_expired_leases => super::defaults();
}

fn lru() -> PoolSettings {
    PoolSettings {
        selection: shared::pool::Selection::Lru,
        ..defaults()
    }
}

async fn refresh_applies_quota_tier_and_window(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("t", Tier::Basic, 10)]).await.unwrap();
    assert_eq!(
        pool.apply_refresh("missing", &Refresh::Blocked)
            .await
            .unwrap(),
        None
    );
    // Nothing left: cooling until the window resets.
    let before = now_ms();
    let cooled = pool
        .apply_refresh(
            "t",
            &Refresh::Quota {
                remaining: 0,
                total: 50,
                tier: Some(Tier::Super),
                window_reset: Some(Duration::from_millis(400)),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cooled.status, cooled.quota, cooled.tier),
        (TokenStatus::Cooling, 0, Tier::Super)
    );
    assert!(cooled.cooling_until_ms >= before + 400 && cooled.cooling_until_ms <= now_ms() + 400);
    assert!(cooled.last_refresh_ms >= before);
    // The tier the upstream reported survives a sync from the record.
    pool.sync(vec![token("t", Tier::Basic, 10)]).await.unwrap();
    assert_eq!(state(&pool, "t").await.tier, Tier::Super);
    assert!(exhausted(&pool, &request(&[Tier::Super])).await.is_some());
    // After the window the token serves again with the window's total.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lease = must_lease(&pool, &request(&[Tier::Super])).await;
    assert_eq!(lease.token_id, "t");
    assert_eq!(state(&pool, "t").await.quota, 50);
    // Quota left: active at once with that quota.
    let back = pool
        .apply_refresh(
            "t",
            &Refresh::Quota {
                remaining: 7,
                total: 50,
                tier: None,
                window_reset: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (back.status, back.quota, back.cooling_until_ms),
        (TokenStatus::Active, 7, 0)
    );
    // The live lease is untouched by a refresh.
    assert_eq!(back.in_flight, 1);
}

async fn refresh_rechecks_invalid_but_not_disabled(pool: Arc<dyn TokenPool>) {
    let mut disabled = token("d", Tier::Basic, 10);
    disabled.status = TokenStatus::Disabled;
    pool.sync(vec![token("t", Tier::Basic, 10), disabled])
        .await
        .unwrap();
    // Threshold 2: two refused refreshes make the token invalid.
    pool.apply_refresh("t", &Refresh::Unauthorized)
        .await
        .unwrap();
    assert_eq!(state(&pool, "t").await.status, TokenStatus::Active);
    let invalid = pool
        .apply_refresh("t", &Refresh::Unauthorized)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (invalid.status, invalid.fail_count),
        (TokenStatus::Invalid, 2)
    );
    // A quota answer is the upstream accepting the account again.
    let quota = Refresh::Quota {
        remaining: 5,
        total: 20,
        tier: None,
        window_reset: None,
    };
    let back = pool.apply_refresh("t", &quota).await.unwrap().unwrap();
    assert_eq!(
        (back.status, back.quota, back.fail_count),
        (TokenStatus::Active, 5, 0)
    );
    let still = pool.apply_refresh("d", &quota).await.unwrap().unwrap();
    assert_eq!(still.status, TokenStatus::Disabled);
    let blocked = pool
        .apply_refresh("t", &Refresh::Blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blocked.status, TokenStatus::Invalid);
}

async fn lru_selection_prefers_least_recently_used(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![
        token("rich", Tier::Basic, 100),
        token("poor", Tier::Basic, 5),
    ])
    .await
    .unwrap();
    // Never used: ties on recency go to the most quota.
    let first = must_lease(&pool, &basic()).await;
    assert_eq!(first.token_id, "rich");
    settle(&pool, &first, Settlement::Success { cost: 1 }).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Now "poor" was used longer ago (never), so it goes first despite less quota.
    let second = must_lease(&pool, &basic()).await;
    assert_eq!(second.token_id, "poor");
    settle(&pool, &second, Settlement::Success { cost: 1 }).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(must_lease(&pool, &basic()).await.token_id, "rich");
}

async fn reaper_removes_expired_leases(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![
        token("a", Tier::Basic, 10),
        token("b", Tier::Basic, 10),
    ])
    .await
    .unwrap();
    let mut short = basic();
    short.ttl = Duration::from_millis(100);
    must_lease(&pool, &short).await;
    must_lease(&pool, &short).await;
    let live = must_lease(&pool, &basic()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pool.reap_expired().await.unwrap(), 2);
    assert_eq!(pool.reap_expired().await.unwrap(), 0);
    // The live lease is kept and still settles.
    settle(&pool, &live, Settlement::Released).await;
}

fn token(id: &str, tier: Tier, quota: i64) -> PoolToken {
    let pool = match tier {
        Tier::Basic => "ssoBasic",
        Tier::Super => "ssoSuper",
        Tier::Heavy => "ssoHeavy",
    };
    PoolToken {
        id: id.into(),
        pool: pool.into(),
        tier,
        sealed: format!("sealed-{id}"),
        status: TokenStatus::Active,
        quota,
    }
}

fn request(tiers: &[Tier]) -> LeaseRequest {
    LeaseRequest {
        tiers: tiers.to_vec(),
        exclude: Vec::new(),
        ttl: Duration::from_secs(30),
    }
}

fn basic() -> LeaseRequest {
    request(Tier::Basic.eligible())
}

async fn must_lease(pool: &Arc<dyn TokenPool>, request: &LeaseRequest) -> Lease {
    match pool.lease(request).await.expect("lease") {
        LeaseOutcome::Leased(lease) => lease,
        other => panic!("expected a lease, got {other:?}"),
    }
}

async fn exhausted(pool: &Arc<dyn TokenPool>, request: &LeaseRequest) -> Option<Duration> {
    match pool.lease(request).await.expect("lease") {
        LeaseOutcome::Exhausted { retry_after } => retry_after,
        other => panic!("expected exhaustion, got {other:?}"),
    }
}

async fn settle(pool: &Arc<dyn TokenPool>, lease: &Lease, outcome: Settlement) -> TokenState {
    pool.settle(lease, outcome)
        .await
        .expect("settle")
        .expect("a live lease settles")
}

async fn state(pool: &Arc<dyn TokenPool>, id: &str) -> TokenState {
    pool.list()
        .await
        .expect("list")
        .into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("token {id} is in the pool"))
}

async fn picks_most_quota_then_least_recently_used(pool: Arc<dyn TokenPool>) {
    pool.ping().await.expect("ping");
    pool.sync(vec![
        token("a", Tier::Basic, 5),
        token("b", Tier::Basic, 9),
        token("c", Tier::Basic, 9),
    ])
    .await
    .unwrap();

    // b and c tie on quota and were never used; then each use sends the next lease to
    // the other one. a, with less quota, is never chosen.
    let mut order = Vec::new();
    for _ in 0..4 {
        let lease = must_lease(&pool, &basic()).await;
        assert_eq!(lease.sealed, format!("sealed-{}", lease.token_id));
        assert_eq!(lease.tier, Tier::Basic);
        assert_eq!(lease.pool, "ssoBasic");
        settle(&pool, &lease, Settlement::Released).await;
        order.push(lease.token_id);
        // Recency is kept in milliseconds: make each lease land in a later one.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(order, ["b", "c", "b", "c"]);

    // Once c has more quota than b, c wins regardless of recency.
    let lease = must_lease(&pool, &basic()).await;
    assert_eq!(lease.token_id, "b");
    let after = settle(&pool, &lease, Settlement::Success { cost: 3 }).await;
    assert_eq!(after.quota, 6);
    assert_eq!(must_lease(&pool, &basic()).await.token_id, "c");

    let listed = pool.list().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"], "list is sorted by id");
    assert!(listed[1].last_used_ms > 0 && listed[0].last_used_ms == 0);
}

async fn tries_tiers_in_order(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![
        token("basic", Tier::Basic, 1),
        token("super", Tier::Super, 100),
    ])
    .await
    .unwrap();

    // A basic request uses the cheap tier first even though super has more quota.
    let lease = must_lease(&pool, &basic()).await;
    assert_eq!(lease.token_id, "basic");
    // ...and a super request never gets a basic token.
    let lease2 = must_lease(&pool, &request(Tier::Super.eligible())).await;
    assert_eq!(lease2.token_id, "super");
    assert_eq!(lease2.tier, Tier::Super);
    settle(&pool, &lease2, Settlement::Released).await;

    // The basic token's last unit goes: it cools, and basic requests fall to super.
    let cooled = settle(&pool, &lease, Settlement::Success { cost: 1 }).await;
    assert_eq!(cooled.status, TokenStatus::Cooling);
    assert_eq!(must_lease(&pool, &basic()).await.token_id, "super");

    // Without super, a super request finds nothing, and the cooling basic token is no
    // reason to come back.
    let mut only_basic_left = request(Tier::Super.eligible());
    only_basic_left.exclude = vec!["super".into()];
    assert_eq!(exhausted(&pool, &only_basic_left).await, None);
    // A basic request is told when the basic token returns.
    let mut basic_only = basic();
    basic_only.exclude = vec!["super".into()];
    let wait = exhausted(&pool, &basic_only)
        .await
        .expect("a cooling token returns");
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}

async fn skips_excluded_tokens(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![
        token("a", Tier::Basic, 10),
        token("b", Tier::Basic, 50),
    ])
    .await
    .unwrap();
    let mut req = basic();
    req.exclude = vec!["b".into()];
    assert_eq!(must_lease(&pool, &req).await.token_id, "a");
    req.exclude = vec!["a".into(), "b".into()];
    assert_eq!(exhausted(&pool, &req).await, None);
}

async fn caps_concurrent_leases_per_token(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("only", Tier::Basic, 100)])
        .await
        .unwrap();
    let first = must_lease(&pool, &basic()).await;
    let second = must_lease(&pool, &basic()).await;
    assert!(second.fence > first.fence, "fences grow");
    assert_eq!(state(&pool, "only").await.in_flight, 2);
    // A busy token is not a cooling one: nothing to wait for.
    assert_eq!(exhausted(&pool, &basic()).await, None);

    let after = settle(&pool, &first, Settlement::Released).await;
    assert_eq!(after.in_flight, 1);
    let third = must_lease(&pool, &basic()).await;
    assert_eq!(third.token_id, "only");
    assert_eq!(state(&pool, "only").await.in_flight, 2);
}

async fn expired_lease_frees_its_slot(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("t", Tier::Basic, 100)]).await.unwrap();
    let mut short = basic();
    short.ttl = Duration::from_millis(300);
    let crashed = must_lease(&pool, &short).await;
    // Cap 1: the token is busy while the lease lives.
    assert_eq!(exhausted(&pool, &basic()).await, None);

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(state(&pool, "t").await.in_flight, 0);
    let next = must_lease(&pool, &basic()).await;
    assert!(next.fence > crashed.fence);

    // The worker that lost its lease may not settle it, whatever it claims.
    let late = pool
        .settle(&crashed, Settlement::Success { cost: 50 })
        .await
        .unwrap();
    assert_eq!(late, None);
    let after = settle(&pool, &next, Settlement::Released).await;
    assert_eq!((after.quota, after.in_flight, after.use_count), (100, 0, 0));
}

async fn refuses_stale_fence(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("t", Tier::Basic, 100)]).await.unwrap();
    let lease = must_lease(&pool, &basic()).await;
    settle(&pool, &lease, Settlement::Released).await;
    // Settling twice, or with a fence never handed out, changes nothing.
    assert_eq!(
        pool.settle(&lease, Settlement::Blocked).await.unwrap(),
        None
    );
    let forged = Lease {
        fence: lease.fence + 1000,
        ..lease.clone()
    };
    assert_eq!(
        pool.settle(&forged, Settlement::Success { cost: 10 })
            .await
            .unwrap(),
        None
    );
    let unknown = Lease {
        token_id: "missing".into(),
        ..lease
    };
    assert_eq!(
        pool.settle(&unknown, Settlement::Released).await.unwrap(),
        None
    );
    let s = state(&pool, "t").await;
    assert_eq!(
        (s.status, s.quota, s.in_flight),
        (TokenStatus::Active, 100, 0)
    );
}

async fn rate_limit_cools_then_recovers(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("t", Tier::Basic, 50)]).await.unwrap();
    let lease = must_lease(&pool, &basic()).await;
    let before = now_ms();
    let cooled = settle(
        &pool,
        &lease,
        Settlement::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        },
    )
    .await;
    assert_eq!(cooled.status, TokenStatus::Cooling);
    assert_eq!(cooled.quota, 0);
    let until = cooled.cooling_until_ms - before;
    assert!((800..=1300).contains(&until), "cooling for {until} ms");

    let wait = exhausted(&pool, &basic()).await.expect("retry_after");
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );

    tokio::time::sleep(wait + Duration::from_millis(150)).await;
    let again = must_lease(&pool, &basic()).await;
    assert_eq!(again.token_id, "t");
    let s = state(&pool, "t").await;
    assert_eq!(s.status, TokenStatus::Active);
    assert_eq!(s.quota, 50, "the quota from before the cooldown comes back");
    assert_eq!(s.cooling_until_ms, 0);
}

async fn unauthorized_counts_to_threshold(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("t", Tier::Basic, 50)]).await.unwrap();
    for expected in 1..=2 {
        let lease = must_lease(&pool, &basic()).await;
        let s = settle(&pool, &lease, Settlement::Unauthorized).await;
        assert_eq!((s.fail_count, s.status), (expected, TokenStatus::Active));
    }
    // A success clears the streak.
    let lease = must_lease(&pool, &basic()).await;
    assert_eq!(
        settle(&pool, &lease, Settlement::Success { cost: 1 })
            .await
            .fail_count,
        0
    );

    for expected in 1..=3 {
        let lease = must_lease(&pool, &basic()).await;
        let s = settle(&pool, &lease, Settlement::Unauthorized).await;
        assert_eq!(s.fail_count, expected);
        let want = if expected < 3 {
            TokenStatus::Active
        } else {
            TokenStatus::Invalid
        };
        assert_eq!(s.status, want);
    }
    assert_eq!(exhausted(&pool, &basic()).await, None);
}

async fn blocked_is_invalid_at_once(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("t", Tier::Basic, 50)]).await.unwrap();
    let first = must_lease(&pool, &basic()).await;
    let second = must_lease(&pool, &basic()).await;
    let s = settle(&pool, &first, Settlement::Blocked).await;
    assert_eq!(s.status, TokenStatus::Invalid);
    assert_eq!(exhausted(&pool, &basic()).await, None);
    // A success on another lease of the same account does not bring it back.
    let s = settle(&pool, &second, Settlement::Success { cost: 1 }).await;
    assert_eq!((s.status, s.in_flight), (TokenStatus::Invalid, 0));
}

async fn success_consumes_quota_and_cools_at_zero(pool: Arc<dyn TokenPool>) {
    pool.sync(vec![token("t", Tier::Basic, 5)]).await.unwrap();
    let lease = must_lease(&pool, &basic()).await;
    let s = settle(&pool, &lease, Settlement::Success { cost: 3 }).await;
    assert_eq!(
        (s.quota, s.use_count, s.status),
        (2, 1, TokenStatus::Active)
    );

    let lease = must_lease(&pool, &basic()).await;
    let before = now_ms();
    // Costing more than is left takes what is left.
    let s = settle(&pool, &lease, Settlement::Success { cost: 4 }).await;
    assert_eq!(
        (s.quota, s.use_count, s.status),
        (0, 2, TokenStatus::Cooling)
    );
    let cooling = s.cooling_until_ms - before;
    assert!(
        (59_000..=60_500).contains(&cooling),
        "cooling for {cooling} ms"
    );

    let wait = exhausted(&pool, &basic()).await.expect("retry_after");
    assert!(
        wait > Duration::from_secs(58) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}

async fn sync_adds_removes_and_keeps_runtime_state(pool: Arc<dyn TokenPool>) {
    let mut disabled = token("c", Tier::Basic, 10);
    disabled.status = TokenStatus::Disabled;
    pool.sync(vec![
        token("a", Tier::Basic, 10),
        token("b", Tier::Basic, 9),
        disabled.clone(),
        token("e", Tier::Basic, 8),
    ])
    .await
    .unwrap();
    assert_eq!(state(&pool, "c").await.status, TokenStatus::Disabled);

    let lease_a = must_lease(&pool, &basic()).await;
    assert_eq!(lease_a.token_id, "a");
    settle(&pool, &lease_a, Settlement::Success { cost: 3 }).await;
    let mut only_b = basic();
    only_b.exclude = vec!["a".into(), "e".into()];
    let lease_b = must_lease(&pool, &only_b).await;
    assert_eq!(
        settle(&pool, &lease_b, Settlement::Blocked).await.status,
        TokenStatus::Invalid
    );
    let mut only_e = basic();
    only_e.exclude = vec!["a".into()];
    let lease_e = must_lease(&pool, &only_e).await;
    assert_eq!(lease_e.token_id, "e");
    let mut only_a = basic();
    only_a.exclude = vec!["e".into()];
    let held_a = must_lease(&pool, &only_a).await;
    assert_eq!(held_a.token_id, "a");

    // a stays with a new pool name and sealed value; b is re-enabled by the operator;
    // c and e go; d is new and cooling.
    let mut renamed = token("a", Tier::Basic, 10);
    renamed.pool = "ssoRenamed".into();
    renamed.sealed = "resealed-a".into();
    let mut new_cooling = token("d", Tier::Super, 3);
    new_cooling.status = TokenStatus::Cooling;
    pool.sync(vec![renamed, token("b", Tier::Basic, 20), new_cooling])
        .await
        .unwrap();

    let listed = pool.list().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "d"]);
    let a = &listed[0];
    assert_eq!(
        (a.pool.as_str(), a.quota, a.use_count, a.in_flight),
        ("ssoRenamed", 7, 1, 1),
        "a keeps its runtime state"
    );
    let b = &listed[1];
    assert_eq!(
        (b.status, b.quota, b.fail_count),
        (TokenStatus::Active, 20, 0)
    );
    let d = &listed[2];
    assert_eq!(
        (d.status, d.quota, d.tier),
        (TokenStatus::Cooling, 3, Tier::Super)
    );
    assert!(d.cooling_until_ms > now_ms());

    // The lease held across the sync still settles; the removed token's does not.
    assert_eq!(
        settle(&pool, &held_a, Settlement::Released).await.in_flight,
        0
    );
    assert_eq!(
        pool.settle(&lease_e, Settlement::Released).await.unwrap(),
        None
    );
    let mut only_a = basic();
    only_a.exclude = vec!["b".into()];
    assert_eq!(must_lease(&pool, &only_a).await.sealed, "resealed-a");

    // A record saying disabled wins over the pool's runtime state.
    let mut a_off = token("a", Tier::Basic, 7);
    a_off.status = TokenStatus::Disabled;
    pool.sync(vec![a_off, token("b", Tier::Basic, 20)])
        .await
        .unwrap();
    assert_eq!(state(&pool, "a").await.status, TokenStatus::Disabled);
    assert_eq!(exhausted(&pool, &only_a).await, None);
}

async fn concurrent_leases_never_exceed_cap(pool: Arc<dyn TokenPool>) {
    const CAP: u32 = 2;
    pool.sync(vec![
        token("x", Tier::Basic, 1_000_000),
        token("y", Tier::Basic, 1_000_000),
    ])
    .await
    .unwrap();
    // Per token: holders right now, and the most ever seen at once.
    let counters: Arc<HashMap<String, (AtomicU32, AtomicU32)>> = Arc::new(
        ["x", "y"]
            .into_iter()
            .map(|id| (id.to_owned(), (AtomicU32::new(0), AtomicU32::new(0))))
            .collect(),
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let pool = pool.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let lease = loop {
                    match pool.lease(&basic()).await.expect("lease") {
                        LeaseOutcome::Leased(lease) => break lease,
                        LeaseOutcome::Exhausted { .. } => {
                            tokio::time::sleep(Duration::from_millis(2)).await
                        }
                    }
                };
                let (holders, most) = &counters[&lease.token_id];
                let now_holding = holders.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now_holding, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                let settled = pool
                    .settle(&lease, Settlement::Released)
                    .await
                    .expect("settle");
                assert!(settled.is_some(), "a live lease settles");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    for (id, (_, most)) in counters.iter() {
        let most = most.load(Ordering::SeqCst);
        assert!(most <= CAP, "token {id} had {most} holders at once");
        assert_eq!(most, CAP, "50 tasks on 4 slots fill token {id}");
    }
    for s in pool.list().await.unwrap() {
        assert_eq!(s.in_flight, 0);
    }
}

/// Two connections (two workers) see one pool, and Redis failures map to the right error.
mod redis_only {
    use super::*;

    #[tokio::test]
    async fn two_workers_share_one_pool() {
        let mut s = settings(1, 5, Duration::from_secs(60));
        s.prefix = unique_prefix("two_workers");
        let prefix = s.prefix.clone();
        let a: Arc<dyn TokenPool> =
            Arc::new(RedisPool::connect(&redis_url(), s.clone()).await.unwrap());
        let b: Arc<dyn TokenPool> = Arc::new(RedisPool::connect(&redis_url(), s).await.unwrap());
        run_then_cleanup(
            async move {
                a.sync(vec![token("t", Tier::Basic, 10)]).await.unwrap();
                let lease = must_lease(&a, &basic()).await;
                assert_eq!(exhausted(&b, &basic()).await, None);
                let s = settle(&b, &lease, Settlement::Success { cost: 2 }).await;
                assert_eq!(s.quota, 8);
                assert_eq!(must_lease(&b, &basic()).await.token_id, "t");
            },
            purge_redis(&prefix),
        )
        .await;
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let err = RedisPool::connect("redis://127.0.0.1:1/", defaults())
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(err, PoolError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn script_error_is_other() {
        let mut s = defaults();
        s.prefix = unique_prefix("script_error");
        let prefix = s.prefix.clone();
        let key = format!("{prefix}:leases:t");
        let pool = RedisPool::connect(&redis_url(), s).await.unwrap();
        run_then_cleanup(
            async move {
                pool.sync(vec![token("t", Tier::Basic, 10)]).await.unwrap();
                // A leases key of the wrong type makes the script fail inside Redis.
                let client = redis::Client::open(redis_url()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let _: () = redis::cmd("SET")
                    .arg(key)
                    .arg("not a sorted set")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let err = pool.lease(&basic()).await.expect_err("the script fails");
                assert!(matches!(err, PoolError::Other(_)), "{err:?}");
            },
            purge_redis(&prefix),
        )
        .await;
    }
}
