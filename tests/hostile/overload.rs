//! Scenario 7, overload: every queue and buffer is bounded; beyond capacity callers get 429
//! or 503 with `Retry-After` at once, admitted requests still succeed, memory stays flat.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Options, Shape, sse_data, stream_content};
use crate::probe::{expect_error, retry_after, rss_kib, wait_for};

const SECOND_KEY: &str = "sk-test-second-key";

fn ask(prompt: &str, stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "stream": stream,
        "messages": [{"role": "user", "content": prompt}]})
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn chat_as(c: &Cluster, key: &str, body: Value) -> reqwest::Response {
    c.http
        .post(c.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The process that serves the first gateway.
fn gateway_process(shape: Shape) -> &'static str {
    match shape {
        Shape::Embedded => "serve",
        Shape::Distributed => "gateway-0",
    }
}

async fn in_flight_upstream(c: &Cluster) -> u64 {
    c.sim
        .stats()
        .await
        .tokens
        .values()
        .map(|t| t.in_flight)
        .sum()
}

async fn beyond_capacity_callers_are_refused_at_once(shape: Shape) {
    let options = Options {
        extra_env: env(&[
            ("GROK2API_APP__API_KEY", &format!("{API_KEY},{SECOND_KEY}")),
            ("GROK2API_SERVER__MAX_IN_FLIGHT", "4"),
            ("GROK2API_SERVER__MAX_IN_FLIGHT_PER_KEY", "3"),
            ("GROK2API_TOKEN__PER_TOKEN_CONCURRENCY", "8"),
        ]),
        // Answers long enough that the admitted streams are still open while the rest of
        // the flood arrives.
        sim: sim::SimConfig {
            slow_frame_delay_ms: 400,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "overload", options).await;
    c.set_tokens(&["busy-fault-slow-a", "busy-fault-slow-b"], &[])
        .await;
    let prompt = "one two three four five six seven eight nine ten eleven twelve";

    // The first key fills its own share: three open streams.
    let admitted = join_all((0..3).map(|_| chat_as(&c, API_KEY, ask(prompt, true)))).await;
    for r in &admitted {
        assert_eq!(r.status(), 200);
    }
    // More from the same key: 429 with Retry-After, each.
    let refused = join_all((0..5).map(|_| chat_as(&c, API_KEY, ask(prompt, true)))).await;
    for r in refused {
        assert!(retry_after(&r).is_some_and(|s| s >= 1));
        let e = expect_error(r, 429).await;
        assert_eq!(e["code"], "too_many_concurrent_requests");
        assert_eq!(e["type"], "rate_limit_error");
    }
    // Another key finds one slot left on the gateway; the rest get 503 with Retry-After.
    let second = join_all((0..5).map(|_| chat_as(&c, SECOND_KEY, ask(prompt, true)))).await;
    let mut admitted_second = Vec::new();
    for r in second {
        if r.status() == 200 {
            admitted_second.push(r);
            continue;
        }
        assert!(retry_after(&r).is_some_and(|s| s >= 1));
        let e = expect_error(r, 503).await;
        assert_eq!(e["code"], "server_overloaded");
    }
    assert_eq!(admitted_second.len(), 1);
    // Every refusal came back while the admitted answers were still streaming.
    assert_eq!(in_flight_upstream(&c).await, 4);

    // A flood far beyond capacity is refused without the gateway growing.
    let pid = c.pid(gateway_process(shape));
    let before = rss_kib(pid);
    for _ in 0..3 {
        let flood = join_all((0..200).map(|_| chat_as(&c, SECOND_KEY, ask("flood", false)))).await;
        for r in flood {
            assert_eq!(r.status(), 503);
        }
    }
    let after = rss_kib(pid);
    eprintln!(
        "{shape:?}: gateway RSS {before} KiB before a refused flood of 600, {after} KiB after"
    );
    assert!(
        after < before + 32 * 1024,
        "gateway RSS grew from {before} KiB to {after} KiB under a refused flood"
    );

    // The admitted ones finish with their whole answer.
    let answer = sim::answer_for(prompt);
    let expected = format!("<think>\n{}\n</think>\n{}", answer.reasoning, answer.text);
    for r in admitted.into_iter().chain(admitted_second) {
        let data = sse_data(r).await;
        assert_eq!(stream_content(&data), expected);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    }
    // And the slots come back.
    wait_for(
        "upstream calls to end",
        Duration::from_secs(30),
        async || in_flight_upstream(&c).await == 0,
    )
    .await;
    let r = chat_as(&c, API_KEY, ask("after the storm", false)).await;
    assert_eq!(r.status(), 200);
}
both_shapes!(beyond_capacity_callers_are_refused_at_once);

/// `serve`'s in-process queue holds `queue.capacity` waiting jobs; a job beyond that is
/// refused with 503 and `Retry-After` rather than queued without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_in_process_queue_refuses_with_retry_after() {
    let options = Options {
        extra_env: env(&[
            ("GROK2API_QUEUE__CAPACITY", "1"),
            ("GROK2API_WORKER__CHAT_CONCURRENCY", "1"),
        ]),
        sim: sim::SimConfig {
            slow_frame_delay_ms: 200,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = Cluster::start_with(Shape::Embedded, "queuefull", options).await;
    c.set_tokens(&["queue-fault-slow"], &[]).await;
    let responses =
        join_all((0..6).map(|i| chat_as(&c, API_KEY, ask(&format!("job {i}"), false)))).await;
    let (mut served, mut refused) = (0, 0);
    for r in responses {
        if r.status() == 200 {
            let body: Value = r.json().await.unwrap();
            assert!(
                body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .starts_with("Echo: job "),
                "{body}"
            );
            served += 1;
        } else {
            assert!(retry_after(&r).is_some_and(|s| s >= 1));
            let e = expect_error(r, 503).await;
            assert_eq!(e["code"], "service_unavailable");
            refused += 1;
        }
    }
    assert!(refused >= 1, "no job was refused by a queue of one");
    assert!(served >= 1, "no job was served");
}
