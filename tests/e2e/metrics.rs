//! Prometheus metrics and health endpoints of every role, end to end: chat traffic (streamed,
//! not streamed, rate limited) must move each metric, and every log line of a request must
//! carry its request id.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{Cluster, Options, Shape, sse_data};

const MODEL: &str = "grok-4.1-fast";

fn ask(prompt: &str, stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

/// One sample of the Prometheus text format: name, labels, value.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Sum of the series of `name` whose labels include `labels`, over several scrapes; `None`
/// when no such series exists.
fn sum(scrapes: &[String], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for text in scrapes {
        for s in parse(text) {
            let matches = s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v));
            if matches {
                *found.get_or_insert(0.0) += s.value;
            }
        }
    }
    found
}

fn at_least(scrapes: &[String], name: &str, labels: &[(&str, &str)], min: f64) {
    let got = sum(scrapes, name, labels);
    assert!(
        got.is_some_and(|v| v >= min),
        "{name}{labels:?}: expected at least {min}, got {got:?}\n{}",
        scrapes.join("\n---\n")
    );
}

fn exists(scrapes: &[String], name: &str, labels: &[(&str, &str)]) {
    assert!(
        sum(scrapes, name, labels).is_some(),
        "{name}{labels:?} missing\n{}",
        scrapes.join("\n---\n")
    );
}

/// Scrapes the processes whose name starts with `prefix` (`gateway`, `worker`,
/// `scheduler`; `serve` runs every role).
async fn scrape(c: &Cluster, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, base) in c.metrics_urls() {
        let embedded = c.shape == Shape::Embedded;
        if embedded || name.starts_with(prefix) {
            out.push(c.scrape(&base).await);
            if embedded {
                break;
            }
        }
    }
    assert!(!out.is_empty(), "no {prefix} process to scrape");
    out
}

/// Scrapes `prefix` processes until `check` holds (gauges are sampled every 5 s).
async fn eventually(c: &Cluster, prefix: &str, what: &str, check: impl Fn(&[String]) -> bool) {
    let start = Instant::now();
    loop {
        let scrapes = scrape(c, prefix).await;
        if check(&scrapes) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} never held\n{}",
            scrapes.join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn chat_traffic_moves_every_metric(shape: Shape) {
    let options = Options {
        scheduler: true,
        ..Options::default()
    };
    let c = Cluster::start_with(shape, "metrics", options).await;

    // Served answers, streamed and not.
    c.set_tokens(&["good-token"], &[]).await;
    let r = c.chat(0, ask("count me", false)).await;
    assert_eq!(r.status(), 200);
    let r = c.chat(0, ask("stream me", true)).await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let job_id = r.headers()["x-job-id"].to_str().unwrap().to_owned();
    assert_eq!(sse_data(r).await.last().map(String::as_str), Some("[DONE]"));

    // A slow answer: the stream is counted while it is open, and not after.
    c.set_tokens(&["slow-fault-slow"], &[]).await;
    let slow = c.chat(0, ask("take your time", true)).await;
    assert_eq!(slow.status(), 200);
    let gateway = scrape(&c, "gateway-0").await;
    at_least(&gateway, "grok2api_open_streams", &[], 1.0);
    assert_eq!(
        sse_data(slow).await.last().map(String::as_str),
        Some("[DONE]")
    );
    eventually(&c, "gateway-0", "open_streams back to 0", |s| {
        sum(s, "grok2api_open_streams", &[]) == Some(0.0)
    })
    .await;

    // Every account rate limited: a 429 for the caller.
    c.set_tokens(&["rl-fault-429"], &[]).await;
    let r = c.chat(0, ask("too many", false)).await;
    assert_eq!(r.status(), 429);

    let gateway = scrape(&c, "gateway-0").await;
    let role = if shape == Shape::Embedded {
        "serve"
    } else {
        "gateway"
    };
    at_least(&gateway, "grok2api_build_info", &[("role", role)], 1.0);
    let chat_route = [("route", "/v1/chat/completions"), ("method", "POST")];
    at_least(
        &gateway,
        "grok2api_http_requests_total",
        &[chat_route[0], chat_route[1], ("status", "200")],
        3.0,
    );
    at_least(
        &gateway,
        "grok2api_http_requests_total",
        &[chat_route[0], chat_route[1], ("status", "429")],
        1.0,
    );
    // Admin calls are counted under their template, never a raw path.
    at_least(
        &gateway,
        "grok2api_http_requests_total",
        &[("route", "/v1/admin/tokens"), ("method", "POST")],
        3.0,
    );
    at_least(
        &gateway,
        "grok2api_http_request_duration_seconds_count",
        &chat_route,
        4.0,
    );
    at_least(
        &gateway,
        "grok2api_time_to_first_token_seconds_count",
        &[("model", MODEL)],
        3.0,
    );
    at_least(
        &gateway,
        "grok2api_jobs_published_total",
        &[("kind", "chat"), ("outcome", "ok")],
        4.0,
    );
    at_least(&gateway, "grok2api_bus_lag_seconds_count", &[], 3.0);

    let workers = scrape(&c, "worker").await;
    let chat = ("kind", "chat");
    at_least(
        &workers,
        "grok2api_build_info",
        &[(
            "role",
            if shape == Shape::Embedded {
                "serve"
            } else {
                "worker"
            },
        )],
        1.0,
    );
    at_least(
        &workers,
        "grok2api_jobs_total",
        &[chat, ("outcome", "completed")],
        3.0,
    );
    at_least(
        &workers,
        "grok2api_jobs_total",
        &[chat, ("outcome", "failed")],
        1.0,
    );
    at_least(
        &workers,
        "grok2api_job_duration_seconds_count",
        &[chat],
        4.0,
    );
    at_least(&workers, "grok2api_queue_wait_seconds_count", &[chat], 4.0);
    let upstream_chat = ("operation", "chat");
    at_least(
        &workers,
        "grok2api_upstream_requests_total",
        &[upstream_chat, ("outcome", "ok")],
        3.0,
    );
    at_least(
        &workers,
        "grok2api_upstream_requests_total",
        &[upstream_chat, ("outcome", "rate_limited")],
        1.0,
    );
    at_least(
        &workers,
        "grok2api_upstream_duration_seconds_count",
        &[upstream_chat],
        4.0,
    );
    at_least(&workers, "grok2api_lease_wait_seconds_count", &[], 5.0);
    at_least(
        &workers,
        "grok2api_leases_total",
        &[("outcome", "leased")],
        4.0,
    );
    at_least(
        &workers,
        "grok2api_leases_total",
        &[("outcome", "exhausted")],
        1.0,
    );
    eventually(&c, "worker", "queue age sampled", |s| {
        sum(s, "grok2api_queue_oldest_age_seconds", &[chat]).is_some()
    })
    .await;

    // Service-level gauges, from the scheduler's sampler: the 429 left the only account
    // cooling.
    eventually(&c, "scheduler", "pool gauges sampled", |s| {
        sum(
            s,
            "grok2api_tokens",
            &[("tier", "basic"), ("status", "cooling")],
        ) == Some(1.0)
            && sum(
                s,
                "grok2api_tokens",
                &[("tier", "basic"), ("status", "active")],
            ) == Some(0.0)
    })
    .await;
    let scheduler = scrape(&c, "scheduler").await;
    exists(&scheduler, "grok2api_queue_depth", &[chat]);
    exists(
        &scheduler,
        "grok2api_token_quota_remaining",
        &[("tier", "basic")],
    );
    exists(
        &scheduler,
        "grok2api_tokens_in_flight",
        &[("tier", "basic")],
    );
    if shape == Shape::Distributed {
        at_least(
            &scheduler,
            "grok2api_build_info",
            &[("role", "scheduler")],
            1.0,
        );
    }

    // Worker and scheduler answer health probes on their metrics listener.
    for (name, base) in c.metrics_urls() {
        for probe in ["/healthz", "/readyz"] {
            let r = c.http.get(format!("{base}{probe}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{name}{probe}");
        }
    }

    // The metric list the dashboards and alerts are checked against (deploy/metrics.txt)
    // is exactly what the processes serve: nothing listed is missing, nothing served is
    // unlisted.
    let listed = listed_metrics();
    let everything = scrape(&c, "").await.join("\n");
    let served: std::collections::BTreeSet<String> = parse(&everything)
        .iter()
        .map(|s| base_name(&s.name).to_owned())
        .filter(|n| n.starts_with("grok2api_"))
        .collect();
    for name in &listed {
        assert!(
            served.contains(name),
            "{name} is in deploy/metrics.txt but not served"
        );
    }
    for name in &served {
        assert!(
            listed.contains(name),
            "{name} is served but missing from deploy/metrics.txt"
        );
    }

    // Every gateway log line about the streamed job, the stream task's included, carries
    // the request id.
    let log = if shape == Shape::Embedded {
        "serve.log"
    } else {
        "gateway-0.log"
    };
    let text = std::fs::read_to_string(c.log_dir.join(log)).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&job_id) && l.contains("gateway::"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("stream ended")),
        "the stream task logged nothing:\n{text}"
    );
    for line in lines {
        assert!(line.contains(&request_id), "no request id: {line}");
    }
}
both_shapes!(chat_traffic_moves_every_metric);

/// Metric names from deploy/metrics.txt.
fn listed_metrics() -> std::collections::BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/metrics.txt");
    std::fs::read_to_string(path)
        .expect("deploy/metrics.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// A histogram's series name without its `_bucket`/`_sum`/`_count` suffix.
fn base_name(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}
