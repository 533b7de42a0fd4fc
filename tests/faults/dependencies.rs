//! Scenario 2: a backend fails under a running cluster. Callers get a clear error (503
//! with an OpenAI error body, or an SSE error event) within their deadline, nothing hangs,
//! and once the backend is back the cluster serves again by itself.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{ADMIN_KEY, API_KEY, Cluster, sse_data, stream_content};
use crate::support::{self, ask, eventually};

/// A client deadline well past every server-side one: a request that reaches it hung.
const CLIENT_DEADLINE: Duration = Duration::from_secs(45);

/// Sends a chat and returns `(status, body)` of what came back, failing the test when no
/// answer arrives before the client deadline.
async fn chat_outcome(c: &Cluster, gateway: usize, body: Value) -> (u16, String) {
    let request = c
        .http
        .post(c.url_at(gateway, "/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send();
    let outcome = tokio::time::timeout(CLIENT_DEADLINE, async {
        let r = request.await.expect("the gateway answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    })
    .await;
    outcome.expect("the request ended within its deadline")
}

/// A failed request is a 503 with `Retry-After`-style OpenAI error JSON.
fn assert_unavailable(status: u16, body: &str) {
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(body).expect("an error body in JSON");
    support::error_code(&v);
}

/// Keeps asking until a chat is answered properly again.
async fn recovers(c: &Cluster, what: &str) {
    let start = Instant::now();
    eventually(Duration::from_secs(40), what, || async {
        let (status, body) = chat_outcome(c, 1, ask("back again", false)).await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["choices"][0]["message"]["content"] == "Echo: back again").then_some(())
    })
    .await;
    println!("{what}: after {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted() {
    let (c, proxies) = support::start("dep-amqp-restart", support::options(&[])).await;
    c.set_tokens(&["amqp-restart-fault-slow"], &[]).await;
    // A job in flight when the broker goes away.
    let in_flight = support::chat_in_background(&c, 0, ask("[[words:20]]", false));
    eventually(
        Duration::from_secs(20),
        "the upstream call starts",
        || async { (support::upstream_in_flight(&c).await > 0).then_some(()) },
    )
    .await;
    proxies.amqp.go_down();
    let (status, body) = chat_outcome(&c, 1, ask("while down", false)).await;
    assert_unavailable(status, &body);
    proxies.amqp.heal();

    // The in-flight job ends either way: answered (redelivered or settled late) or a
    // clear error, never a hang.
    let r = tokio::time::timeout(CLIENT_DEADLINE, in_flight)
        .await
        .expect("the in-flight request ended")
        .unwrap()
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    if status == 200 {
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.ends_with(&support::words(20)), "{body}");
    } else {
        support::error_code(&body);
    }
    println!("broker restart: the job in flight ended with {status} {body}");
    recovers(&c, "chats are answered after the broker restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_paused() {
    let (c, proxies) = support::start("dep-amqp-pause", support::options(&[])).await;
    c.set_tokens(&["amqp-pause-token"], &[]).await;
    recovers(&c, "a chat before the pause").await;
    proxies.amqp.pause();
    let started = Instant::now();
    let (status, body) = chat_outcome(&c, 0, ask("while paused", false)).await;
    assert_unavailable(status, &body);
    println!("paused broker: 503 after {:?}", started.elapsed());
    proxies.amqp.heal();
    recovers(&c, "chats are answered after the broker resumes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted() {
    let options = crate::harness::Options {
        scheduler: true,
        ..support::options(&[("GROK2API_SCHEDULER__POOL_SYNC_SECS", "1")])
    };
    let (c, proxies) = support::start("dep-redis", options).await;
    c.set_tokens(&["redis-restart-fault-slow"], &[]).await;
    // A stream in flight when Redis goes away.
    let r = c.chat(0, ask("[[words:30]]", true)).await;
    assert_eq!(r.status(), 200);
    let stream = tokio::spawn(tokio::time::timeout(CLIENT_DEADLINE, sse_data(r)));
    eventually(
        Duration::from_secs(20),
        "the upstream call starts",
        || async { (support::upstream_in_flight(&c).await > 0).then_some(()) },
    )
    .await;
    proxies.redis.go_down();
    support::wipe_redis(&c).await;
    let (status, body) = chat_outcome(&c, 1, ask("while down", false)).await;
    assert_unavailable(status, &body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxies.redis.heal();

    // The open stream ends: the whole answer, or an error event and [DONE].
    let data = stream
        .await
        .unwrap()
        .expect("the open stream ended within its deadline");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let text = stream_content(&data);
    if !text.ends_with(&support::words(30)) {
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        support::error_code(&last);
        println!("redis restart: the open stream ended with {last}");
    } else {
        println!("redis restart: the open stream got the whole answer");
    }
    // The pool comes back from the store and chats are answered again.
    recovers(&c, "chats are answered after the Redis restart").await;
    // Lease state was lost with Redis, yet the account never ran more calls than its cap.
    let peak = c.sim.stats().await.tokens["redis-restart-fault-slow"].peak_concurrency;
    assert!(peak <= 2, "peak concurrency {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted() {
    let (c, proxies) = support::start("dep-postgres", support::options(&[])).await;
    c.set_tokens(&["postgres-token"], &[]).await;
    proxies.postgres.go_down();
    // Chats need no store on their way: answered, or refused clearly, never hung.
    let (status, body) = chat_outcome(&c, 0, ask("while the store is down", false)).await;
    if status != 200 {
        assert_unavailable(status, &body);
    }
    println!("postgres down: a chat got {status}");
    // The store is needed for the token list: a clear error in time, not a hang.
    let r = tokio::time::timeout(
        CLIENT_DEADLINE,
        c.http
            .get(c.url("/v1/admin/tokens"))
            .bearer_auth(ADMIN_KEY)
            .send(),
    )
    .await
    .expect("the token list answers within its deadline")
    .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_unavailable(status, &body);
    // Readiness says which backend is missing.
    let r = c.http.get(c.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["store"]["ok"], false, "{ready}");
    proxies.postgres.heal();
    eventually(
        Duration::from_secs(30),
        "the token list works again",
        || async {
            let r = c
                .http
                .get(c.url("/v1/admin/tokens"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    recovers(&c, "chats are answered after the PostgreSQL restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped() {
    let (c, proxies) = support::start("dep-s3", support::options(&[])).await;
    c.set_tokens(&["s3-token"], &[]).await;
    let generate = |prompt: &str| {
        c.http
            .post(c.url("/v1/images/generations"))
            .bearer_auth(API_KEY)
            .json(&json!({"prompt": prompt}))
            .send()
    };
    proxies.s3.go_down();
    let r = tokio::time::timeout(CLIENT_DEADLINE, generate("while s3 is down"))
        .await
        .expect("the image request ends within its deadline")
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!(status >= 500, "{status} {body}");
    support::error_code(&body);
    println!("s3 down: an image request got {status} {body}");
    proxies.s3.heal();
    eventually(
        Duration::from_secs(40),
        "images are stored again",
        || async {
            let r = generate("after s3 is back").await.ok()?;
            if r.status() != 200 {
                return None;
            }
            let body: Value = r.json().await.ok()?;
            let url = body["data"][0]["url"].as_str()?.to_owned();
            let r = c.http.get(c.url(&url)).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}
