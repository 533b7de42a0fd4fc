//! A distributed cluster whose backends are reached through fault proxies, and the small
//! observations the scenarios share.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{API_KEY, Cluster, Options, Shape};
use crate::proxy::FaultProxy;

/// One proxy per backend of the cluster.
pub struct Proxies {
    pub amqp: FaultProxy,
    pub redis: FaultProxy,
    pub postgres: FaultProxy,
    pub s3: FaultProxy,
}

/// `host:port` of a URL (`scheme://[user@]host:port/...`).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

fn target(var: &str, default: &str) -> String {
    host_port(&std::env::var(var).unwrap_or_else(|_| default.to_owned()))
}

/// Settings that keep faults quick to observe: short leases, a short confirm timeout, and
/// a simulator whose `slow` accounts take a few seconds per answer.
pub fn options(extra: &[(&str, &str)]) -> Options {
    let mut env: Vec<(String, String)> = [
        ("GROK2API_TOKEN__LEASE_TTL_SECS", "8"),
        ("GROK2API_QUEUE__CONFIRM_TIMEOUT_MS", "2000"),
        ("GROK2API_CHAT__TIMEOUT_SECS", "30"),
        ("GROK2API_IMAGE__TIMEOUT_SECS", "60"),
        ("GROK2API_VIDEO__TIMEOUT_SECS", "60"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Options {
        extra_env: env,
        sim: sim::SimConfig {
            slow_frame_delay_ms: 100,
            ..Default::default()
        },
        ..Options::default()
    }
}

/// Starts a distributed cluster with every backend behind its own proxy.
pub async fn start(name: &str, mut options: Options) -> (Cluster, Proxies) {
    let amqp_target = target("GROK2API_TEST_AMQP_URL", "amqp://127.0.0.1:5672");
    let redis_target = target("GROK2API_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let pg_target = target("GROK2API_TEST_DATABASE_URL", "postgres://127.0.0.1:5432");
    let s3_target = host_port(&crate::harness::s3_endpoint());
    let proxies = Proxies {
        amqp: FaultProxy::start(&amqp_target).await,
        redis: FaultProxy::start(&redis_target).await,
        postgres: FaultProxy::start(&pg_target).await,
        s3: FaultProxy::start(&s3_target).await,
    };
    options.backend_rewrites = vec![
        (amqp_target, proxies.amqp.addr()),
        (redis_target, proxies.redis.addr()),
        (pg_target, proxies.postgres.addr()),
        (s3_target, proxies.s3.addr()),
    ];
    let cluster = Cluster::start_with(Shape::Distributed, name, options).await;
    (cluster, proxies)
}

/// Polls `probe` until it yields a value, failing with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A chat request body.
pub fn ask(prompt: &str, stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "messages": [{"role": "user", "content": prompt}], "stream": stream})
}

/// The answer text the simulator gives to a `[[words:N]]` prompt.
pub fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends a chat request from a task of its own, so the test can act while it runs.
pub fn chat_in_background(
    c: &Cluster,
    gateway: usize,
    body: Value,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request = c
        .http
        .post(c.url_at(gateway, "/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&body);
    tokio::spawn(request.send())
}

/// Upstream answers in flight right now, over every account (the simulator counts them).
pub async fn upstream_in_flight(c: &Cluster) -> u64 {
    c.sim
        .stats()
        .await
        .tokens
        .values()
        .map(|t| t.in_flight)
        .sum()
}

/// Upstream calls so far, over every account.
pub async fn upstream_calls(c: &Cluster) -> u64 {
    c.sim.stats().await.tokens.values().map(|t| t.calls).sum()
}

/// Leases held right now, as the admin API reports them.
pub async fn leases_held(c: &Cluster) -> u64 {
    c.tokens()
        .await
        .iter()
        .map(|t| t["in_flight"].as_u64().unwrap_or(0))
        .sum()
}

/// Signs in a process's `/metrics` that it took a job: deliveries whose queue wait it
/// measured, and accounts it leased.
pub async fn jobs_taken(c: &Cluster, base: &str) -> u64 {
    let text = c.scrape(base).await;
    text.lines()
        .filter(|l| {
            l.starts_with("grok2api_queue_wait_seconds_count")
                || (l.starts_with("grok2api_leases_total") && l.contains("outcome=\"leased\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The worker (process name) that took the one job running.
pub async fn worker_holding(c: &Cluster) -> String {
    let workers: Vec<(String, String)> = c
        .metrics
        .iter()
        .filter(|(name, _)| name.starts_with("worker"))
        .cloned()
        .collect();
    eventually(Duration::from_secs(20), "a worker takes the job", || {
        let workers = workers.clone();
        async move {
            for (name, base) in &workers {
                if jobs_taken(c, base).await > 0 {
                    return Some(name.clone());
                }
            }
            None
        }
    })
    .await
}

/// Sends SIGTERM to a process of the cluster.
pub fn terminate(c: &Cluster, name: &str) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &c.pid(name).to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Deletes every Redis key of the cluster, as a Redis restart without persistence would.
pub async fn wipe_redis(c: &Cluster) {
    let url = std::env::var("GROK2API_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", c.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Asserts an OpenAI error envelope and returns its `code`.
pub fn error_code(body: &Value) -> String {
    let error = &body["error"];
    assert!(error["message"].as_str().is_some(), "not an error: {body}");
    assert!(error["type"].as_str().is_some(), "not an error: {body}");
    error["code"].as_str().unwrap_or_default().to_owned()
}
