//! The leader lock: one holder at a time, a larger fence for every new holder, and a new
//! leader soon after the old one stops renewing. Runs against the real Redis.

use std::sync::Arc;
use std::time::Duration;

use shared::leader::{LeaderLock, Leadership, LocalLeaderLock, RedisLeaderLock};
use tokio_util::sync::CancellationToken;

use crate::common::{purge_redis, redis_url, run_then_cleanup, unique_prefix};

async fn redis_lock(prefix: &str) -> Arc<dyn LeaderLock> {
    Arc::new(
        RedisLeaderLock::connect(&redis_url(), prefix, "scheduler")
            .await
            .expect("connect the leader lock"),
    )
}

#[tokio::test]
async fn one_holder_at_a_time_with_growing_fences() {
    let prefix = unique_prefix("leader_one_holder");
    let case = {
        let prefix = prefix.clone();
        async move {
            let lock = redis_lock(&prefix).await;
            let ttl = Duration::from_millis(400);
            let first = lock
                .acquire("a", ttl)
                .await
                .unwrap()
                .expect("free lock is taken");
            assert_eq!(lock.acquire("b", ttl).await.unwrap(), None);
            // Renewing keeps the same fence.
            assert_eq!(lock.acquire("a", ttl).await.unwrap(), Some(first));
            assert_eq!(lock.current_fence().await.unwrap(), Some(first));
            // A release by a stale fence does nothing; the holder's own release frees it.
            lock.release("a", first + 100).await.unwrap();
            assert_eq!(lock.acquire("b", ttl).await.unwrap(), None);
            lock.release("a", first).await.unwrap();
            let second = lock
                .acquire("b", ttl)
                .await
                .unwrap()
                .expect("released lock is taken");
            assert!(second > first);
            // Expiry frees it too.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let third = lock
                .acquire("a", ttl)
                .await
                .unwrap()
                .expect("expired lock is taken");
            assert!(third > second);
        }
    };
    run_then_cleanup(case, purge_redis(&prefix)).await;
}

#[tokio::test]
async fn a_new_leader_takes_over_when_the_old_one_stops() {
    let prefix = unique_prefix("leader_takeover");
    let case = {
        let prefix = prefix.clone();
        async move {
            let ttl = Duration::from_millis(600);
            let a = Leadership::new(redis_lock(&prefix).await, "a", ttl);
            let b = Leadership::new(redis_lock(&prefix).await, "b", ttl);
            let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
            let run_a = tokio::spawn(a.clone().run(stop_a.clone()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let run_b = tokio::spawn(b.clone().run(stop_b.clone()));
            tokio::time::sleep(Duration::from_millis(800)).await;
            let fence_a = a.fence().expect("the first replica leads");
            assert_eq!(b.fence(), None);
            // The leader dies without releasing (its task is aborted): the lock expires.
            run_a.abort();
            let mut waited = Duration::ZERO;
            while b.fence().is_none() {
                assert!(waited < Duration::from_secs(5), "no takeover");
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += Duration::from_millis(50);
            }
            assert!(b.fence().unwrap() > fence_a);
            // A clean stop releases at once.
            stop_b.cancel();
            run_b.await.unwrap();
            assert_eq!(b.fence(), None);
            let c = Leadership::new(redis_lock(&prefix).await, "c", ttl);
            assert!(c.tick().await.is_some());
            stop_a.cancel();
        }
    };
    run_then_cleanup(case, purge_redis(&prefix)).await;
}

#[tokio::test]
async fn the_local_lock_always_leads() {
    let leadership = Leadership::new(Arc::new(LocalLeaderLock), "only", Duration::from_secs(1));
    assert_eq!(leadership.tick().await, Some(1));
    assert_eq!(leadership.fence(), Some(1));
}
