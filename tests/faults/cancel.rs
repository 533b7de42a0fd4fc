//! Scenario 4: a caller that disconnects stops the upstream call promptly and frees the
//! account's lease (explicitly: the lease TTL here is far longer than the wait).

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::support::{self, ask, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_stops_the_upstream_call_and_frees_the_lease() {
    let options = support::options(&[("GROK2API_TOKEN__LEASE_TTL_SECS", "120")]);
    let (c, _proxies) = support::start("cancel", options).await;
    c.set_tokens(&["cancel-fault-slow"], &[]).await;

    // A streamed answer of 200 words at 100 ms per frame would run for 20 s.
    let r = c.chat(0, ask("[[words:200]]", true)).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("w2") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("the stream moves")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(support::upstream_in_flight(&c).await, 1);
    drop(body);
    let left = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the upstream call stops",
        || async { (support::upstream_in_flight(&c).await == 0).then_some(()) },
    )
    .await;
    let stopped = left.elapsed();
    eventually(Duration::from_secs(5), "the lease is released", || async {
        (support::leases_held(&c).await == 0).then_some(())
    })
    .await;
    println!("streamed: upstream closed {stopped:?} after the caller left");

    // The same for a caller waiting on a non-streamed answer.
    let request = support::chat_in_background(&c, 1, ask("[[words:200]]", false));
    eventually(
        Duration::from_secs(20),
        "the upstream call starts",
        || async { (support::upstream_in_flight(&c).await == 1).then_some(()) },
    )
    .await;
    request.abort();
    let left = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the upstream call stops",
        || async { (support::upstream_in_flight(&c).await == 0).then_some(()) },
    )
    .await;
    let stopped = left.elapsed();
    eventually(Duration::from_secs(5), "the lease is released", || async {
        (support::leases_held(&c).await == 0).then_some(())
    })
    .await;
    println!("non-streamed: upstream closed {stopped:?} after the caller left");
    assert_eq!(support::upstream_calls(&c).await, 2);
}
