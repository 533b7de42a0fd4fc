//! Scenario 6: graceful drain on SIGTERM. Readiness fails at once, in-flight work finishes
//! (or, past the grace period, goes back to the queue for another worker), open streams
//! get a final event, and the process exits within `server.shutdown_grace_secs`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::harness::Cluster;
use crate::support::{self, ask, eventually, words};

/// Waits for the named process to exit, within `limit`; returns how long it took.
async fn exits_within(c: &mut Cluster, name: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let status = eventually(limit, &format!("{name} exits"), || {
        let exited = c.exited(name);
        async move { exited }
    })
    .await;
    assert!(status.success(), "{name} exited with {status}");
    start.elapsed()
}

/// Readiness of a base URL: `None` when nothing answers any more.
async fn ready(c: &Cluster, base: &str) -> Option<u16> {
    let r = c.http.get(format!("{base}/readyz")).send().await.ok()?;
    Some(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_drains_on_sigterm() {
    let options = support::options(&[("GROK2API_SERVER__SHUTDOWN_GRACE_SECS", "15")]);
    let (mut c, _proxies) = support::start("drain-gateway", options).await;
    c.set_tokens(&["drain-gw-fault-slow"], &[]).await;
    let gateway = c.gateways[0].clone();

    // An open stream and a non-streamed request in flight on gateway 0.
    let r = c.chat(0, ask("[[words:100]]", true)).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("w1") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the stream moves")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let pending = support::chat_in_background(&c, 0, ask("[[words:15]]", false));
    eventually(
        Duration::from_secs(20),
        "both upstream calls run",
        || async { (support::upstream_in_flight(&c).await == 2).then_some(()) },
    )
    .await;

    support::terminate(&c, "gateway-0");
    // Readiness fails at once: a 503, or no answer at all once the listener is closed.
    assert_ne!(ready(&c, &gateway).await, Some(200));

    // The open stream ends with a final error event and [DONE], not a cut.
    let rest = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(bytes)) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream did not end: {seen}");
    let data: Vec<&str> = seen
        .split("\n\n")
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{seen}");
    let last: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(support::error_code(&last), "server_shutting_down");

    // The request in flight is answered in full before the process goes.
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.ends_with(&words(15)), "{content}");
    let took = exits_within(&mut c, "gateway-0", Duration::from_secs(15)).await;
    println!("gateway exited {took:?} after the request ended");
    // The other replica serves on.
    let r = c.chat(1, ask("still here", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_finishes_its_job_then_exits() {
    let options = support::options(&[("GROK2API_SERVER__SHUTDOWN_GRACE_SECS", "20")]);
    let (mut c, _proxies) = support::start("drain-worker", options).await;
    c.set_tokens(&["drain-worker-fault-slow"], &[]).await;
    let request = support::chat_in_background(&c, 0, ask("[[words:20]]", false));
    eventually(
        Duration::from_secs(20),
        "the upstream call starts",
        || async { (support::upstream_in_flight(&c).await > 0).then_some(()) },
    )
    .await;
    let holder = support::worker_holding(&c).await;
    let ops = c
        .metrics
        .iter()
        .find(|(n, _)| *n == holder)
        .map(|(_, base)| base.clone())
        .unwrap();
    let started = Instant::now();
    support::terminate(&c, &holder);
    // The ops listener stays up while draining, answering 503.
    eventually(Duration::from_secs(2), "readiness fails", || async {
        (ready(&c, &ops).await == Some(503)).then_some(())
    })
    .await;

    let r = request.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.ends_with(&words(20)), "{content}");
    // Finished by the draining worker itself: one upstream call, no redelivery.
    assert_eq!(support::upstream_calls(&c).await, 1);
    exits_within(&mut c, &holder, Duration::from_secs(20)).await;
    println!("worker exited {:?} after SIGTERM", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_past_its_grace_hands_the_job_back() {
    let options = support::options(&[("GROK2API_SERVER__SHUTDOWN_GRACE_SECS", "1")]);
    let (mut c, _proxies) = support::start("drain-requeue", options).await;
    c.set_tokens(&["drain-requeue-fault-slow"], &[]).await;
    // About 5 s of answer: longer than the grace period.
    let request = support::chat_in_background(&c, 0, ask("[[words:40]]", false));
    eventually(
        Duration::from_secs(20),
        "the upstream call starts",
        || async { (support::upstream_in_flight(&c).await > 0).then_some(()) },
    )
    .await;
    let holder = support::worker_holding(&c).await;
    support::terminate(&c, &holder);
    let took = exits_within(&mut c, &holder, Duration::from_secs(10)).await;
    println!("worker exited {took:?} after SIGTERM");

    // The other worker took the job over and the caller got the whole answer.
    let r = request.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.ends_with(&words(40)), "{content}");
    assert_eq!(support::upstream_calls(&c).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_exits_when_its_grace_is_over() {
    let options = support::options(&[("GROK2API_SERVER__SHUTDOWN_GRACE_SECS", "1")]);
    let (mut c, _proxies) = support::start("drain-gateway-grace", options).await;
    c.set_tokens(&["drain-gw-grace-fault-slow"], &[]).await;
    // About 5 s of answer: longer than the grace period.
    let pending = support::chat_in_background(&c, 0, ask("[[words:40]]", false));
    eventually(
        Duration::from_secs(20),
        "the upstream call starts",
        || async { (support::upstream_in_flight(&c).await == 1).then_some(()) },
    )
    .await;
    let started = Instant::now();
    support::terminate(&c, "gateway-0");
    exits_within(&mut c, "gateway-0", Duration::from_secs(10)).await;
    println!("gateway exited {:?} after SIGTERM", started.elapsed());
    // The caller loses its connection; nothing hangs.
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the caller is released")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
}
