//! The token pool's lifecycle with real processes: one scheduler leader among replicas,
//! a cooling account brought back by the scheduler's quota refresh after its window, the
//! per-account concurrency cap under load, and a killed worker's lease coming back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, Cluster, Options, Shape};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every scheduler task off except those named, which run every second.
fn scheduler_env(every_second: &[&str]) -> Vec<(String, String)> {
    let mut pairs = vec![];
    for task in [
        "POOL_SYNC",
        "QUOTA_REFRESH",
        "INVALID_RECHECK",
        "LEASE_REAPER",
        "BLOB_CLEANUP",
        "JOB_RETENTION",
    ] {
        let secs = if every_second.contains(&task) {
            "1"
        } else {
            "0"
        };
        pairs.push((format!("GROK2API_SCHEDULER__{task}_SECS"), secs.to_owned()));
    }
    pairs
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "stream": stream,
           "messages": [{"role": "user", "content": "Hello pool"}]})
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ran_tasks(log: &str) -> usize {
    log.matches("scheduler task ran").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_leads_and_another_takes_over_when_it_dies() {
    let mut extra = scheduler_env(&["LEASE_REAPER"]);
    extra.extend(env(&[("GROK2API_SCHEDULER__LEADER_TTL_MS", "1500")]));
    let options = Options {
        extra_env: extra,
        ..Default::default()
    };
    let mut c = Cluster::start_with(Shape::Distributed, "sched-leader", options).await;
    c.spawn_process("sched-a", &["scheduler"]);
    c.spawn_process("sched-b", &["scheduler"]);
    wait_for(
        "a scheduler to run tasks",
        Duration::from_secs(20),
        async || ran_tasks(&c.log_of("sched-a")) + ran_tasks(&c.log_of("sched-b")) >= 3,
    )
    .await;
    let (a, b) = (
        ran_tasks(&c.log_of("sched-a")),
        ran_tasks(&c.log_of("sched-b")),
    );
    assert!(a == 0 || b == 0, "both schedulers ran tasks: {a} and {b}");
    let (leader, other) = if a > 0 {
        ("sched-a", "sched-b")
    } else {
        ("sched-b", "sched-a")
    };
    c.kill(leader);
    let killed_at = Instant::now();
    wait_for(
        "the other scheduler to take over",
        Duration::from_secs(10),
        async || ran_tasks(&c.log_of(other)) > 0,
    )
    .await;
    eprintln!("takeover after {:?}", killed_at.elapsed());
    assert!(c.log_of(other).contains("became the scheduler leader"));
}

async fn token_status(c: &Cluster, token: &str) -> String {
    let id = shared::crypto::token_id(token);
    c.tokens()
        .await
        .into_iter()
        .find(|t| t["id"] == id.as_str())
        .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

async fn cooling_token_returns_after_its_window(shape: Shape) {
    const TOKEN: &str = "basic-quota-2-cooling";
    let mut extra = scheduler_env(&["QUOTA_REFRESH"]);
    extra.extend(env(&[
        ("GROK2API_SCHEDULER__REFRESH_MIN_AGE_SECS", "0"),
        ("GROK2API_TOKEN__DEFAULT_COOLDOWN_SECS", "3600"),
    ]));
    let options = Options {
        extra_env: extra,
        scheduler: true,
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "pool-cooling", options).await;
    c.set_tokens(&[TOKEN], &[]).await;
    for _ in 0..2 {
        assert_eq!(c.chat(0, chat_body(false)).await.status(), 200);
    }
    // The upstream says the window's two calls are used up: the account cools.
    let r = c
        .http
        .post(c.url("/v1/admin/tokens/refresh"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(token_status(&c, TOKEN).await, "cooling");
    assert_eq!(c.chat(0, chat_body(false)).await.status(), 429);
    // Still cooling while the window lasts, however often the scheduler asks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(token_status(&c, TOKEN).await, "cooling");
    let asked = c
        .http
        .get(format!("{}/sim/accounts", c.sim.base_url()))
        .send()
        .await
        .unwrap();
    let asked: Value = asked.json().await.unwrap();
    assert!(
        asked[TOKEN]["rate_limit_calls"].as_u64().unwrap() > 2,
        "the scheduler never refreshed: {asked}"
    );
    // The window passes: the scheduler's next refresh brings the account back.
    let r = c
        .http
        .post(format!("{}/sim/clock/advance", c.sim.base_url()))
        .json(&json!({"secs": 7200}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_for(
        "the token to become active",
        Duration::from_secs(20),
        async || token_status(&c, TOKEN).await == "active",
    )
    .await;
    assert_eq!(c.chat(1, chat_body(false)).await.status(), 200);
}
both_shapes!(cooling_token_returns_after_its_window);

async fn fifty_parallel_jobs_never_exceed_the_cap(shape: Shape) {
    let options = Options {
        sim: sim::SimConfig {
            frame_delay_ms: 15,
            ..Default::default()
        },
        extra_env: env(&[("GROK2API_TOKEN__PER_TOKEN_CONCURRENCY", "2")]),
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "pool-cap", options).await;
    c.set_tokens(&["basic-cap-1", "basic-cap-2"], &[]).await;
    let calls = (0..50).map(|i| {
        let c = &c;
        async move { c.chat(i, chat_body(false)).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(ok >= 4, "{statuses:?}");
    let stats = c.sim.stats().await;
    let mut calls = 0;
    for token in ["basic-cap-1", "basic-cap-2"] {
        let t = &stats.tokens[token];
        assert!(
            t.peak_concurrency <= 2,
            "{token}: peak {}",
            t.peak_concurrency
        );
        calls += t.calls;
    }
    assert_eq!(calls as usize, ok);
}
both_shapes!(fifty_parallel_jobs_never_exceed_the_cap);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_lease_comes_back_after_its_ttl() {
    const TOKEN: &str = "basic-lease-kill";
    let options = Options {
        sim: sim::SimConfig {
            frame_delay_ms: 250,
            ..Default::default()
        },
        extra_env: env(&[
            ("GROK2API_TOKEN__PER_TOKEN_CONCURRENCY", "1"),
            ("GROK2API_TOKEN__LEASE_TTL_SECS", "6"),
            ("GROK2API_CHAT__TIMEOUT_SECS", "60"),
        ]),
        ..Default::default()
    };
    let mut c = Cluster::start_with(Shape::Distributed, "pool-lease-kill", options).await;
    c.set_tokens(&[TOKEN], &[]).await;
    let long = {
        let http = c.http.clone();
        let url = c.url("/v1/chat/completions");
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .bearer_auth(crate::harness::API_KEY)
                .json(&chat_body(true))
                .send()
                .await;
        })
    };
    wait_for("the answer to start", Duration::from_secs(10), async || {
        c.sim
            .stats()
            .await
            .tokens
            .get(TOKEN)
            .is_some_and(|t| t.in_flight == 1)
    })
    .await;
    // Whichever worker holds the lease dies without settling it.
    c.kill("worker-0");
    c.kill("worker-1");
    let killed_at = Instant::now();
    c.spawn_process("worker-2", &["worker"]);
    long.abort();
    // While the dead worker's lease lives, the account is taken.
    let r = c.chat(1, chat_body(false)).await;
    if killed_at.elapsed() < Duration::from_secs(5) {
        assert_eq!(r.status(), 429, "the lease was free too early");
    }
    // After the TTL the account serves again.
    let mut status = 0;
    while killed_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        status = c.chat(0, chat_body(false)).await.status().as_u16();
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200);
    assert!(
        killed_at.elapsed() >= Duration::from_secs(5),
        "lease freed before its TTL"
    );
}
