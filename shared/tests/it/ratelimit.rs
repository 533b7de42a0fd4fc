//! Client-key rate limits: the Redis limiter shares one budget between processes (two
//! limiter instances stand for two gateways), and the in-process one keeps keys apart.

use std::time::Duration;

use shared::ratelimit::{Decision, MemoryLimiter, RateLimiter, RedisLimiter};

use crate::common::{purge_redis, redis_url, run_then_cleanup, unique_prefix};

async fn spend(
    limiters: &[&dyn RateLimiter],
    key: &str,
    per_minute: u32,
    n: usize,
) -> Vec<Decision> {
    let mut out = vec![];
    for i in 0..n {
        out.push(
            limiters[i % limiters.len()]
                .check(key, per_minute)
                .await
                .expect("limiter answers"),
        );
    }
    out
}

#[tokio::test]
async fn redis_budget_is_shared_between_instances() {
    let prefix = unique_prefix("ratelimit");
    let p = prefix.clone();
    run_then_cleanup(
        async move {
            let a = RedisLimiter::new(&redis_url(), &p).unwrap();
            let b = RedisLimiter::new(&redis_url(), &p).unwrap();
            let got = spend(&[&a, &b], "key-1", 3, 4).await;
            assert_eq!(&got[..3], &[Decision::Allowed; 3]);
            match got[3] {
                Decision::Limited { retry_after } => {
                    assert!(
                        retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20),
                        "{retry_after:?}"
                    );
                }
                other => panic!("fourth request passed: {other:?}"),
            }
            // Another key has its own budget.
            assert_eq!(b.check("key-2", 3).await.unwrap(), Decision::Allowed);
        },
        purge_redis(&prefix),
    )
    .await;
}

#[tokio::test]
async fn redis_limiter_fails_cleanly_without_a_server() {
    let limiter = RedisLimiter::new("redis://127.0.0.1:1/0", "nothing").unwrap();
    assert!(limiter.check("k", 1).await.is_err());
}

#[tokio::test]
async fn memory_budget_refills_one_per_interval() {
    let limiter = MemoryLimiter::default();
    // 600 per minute: a burst of 600, then one every 100 ms.
    let got = spend(&[&limiter], "k", 600, 601).await;
    assert!(got[..600].iter().all(|d| *d == Decision::Allowed));
    let Decision::Limited { retry_after } = got[600] else {
        panic!("the 601st request passed");
    };
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert_eq!(limiter.check("k", 600).await.unwrap(), Decision::Allowed);
}
