//! Scenario 5: a streamed chat whose gateway dies mid-answer is resumed on another gateway
//! replica with `Last-Event-ID`: the caller gets the events it missed, then live ones, and
//! the two parts join into exactly the answer an uninterrupted stream gives.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::harness::{ADMIN_KEY, API_KEY, sse_data, stream_content};
use crate::support::{self, ask};

/// `(id, data)` of each complete SSE frame in `text`.
fn frames(text: &str) -> Vec<(Option<String>, String)> {
    let complete = match text.rfind("\n\n") {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .split("\n\n")
        .filter_map(|frame| {
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|i| i.trim().to_owned());
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| (id, data.join("\n")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_on_another_gateway_without_gap_or_duplicate() {
    let (mut c, _proxies) = support::start("resume", support::options(&[])).await;
    c.set_tokens(&["resume-fault-slow"], &[]).await;
    let prompt = "[[words:40]]";

    let r = c.chat(0, ask(prompt, true)).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut raw = String::new();
    while !raw.contains("w5") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("the stream moves")
            .expect("the stream is open")
            .unwrap();
        raw.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The gateway dies; the job goes on without it.
    c.kill("gateway-0");
    drop(body);
    let received = frames(&raw);
    let last_id = received
        .iter()
        .rev()
        .find_map(|(id, _)| id.clone())
        .expect("events carry ids");
    // What the caller holds: every frame up to the last one with an id.
    let held: Vec<String> = received
        .iter()
        .take(received.iter().rposition(|(id, _)| id.is_some()).unwrap() + 1)
        .map(|(_, d)| d.clone())
        .collect();
    assert!(
        support::upstream_in_flight(&c).await > 0,
        "the job is still running, so the resumed stream has live events too"
    );

    // The id is bound to the key that asked: another valid key resumes nothing.
    let created: Value = c
        .http
        .post(c.url_at(1, "/v1/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "someone else"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_key = created["key"].as_str().expect("a client key").to_owned();
    let r = c
        .http
        .post(c.url_at(1, "/v1/chat/completions"))
        .bearer_auth(&other_key)
        .header("last-event-id", &last_id)
        .json(&ask(prompt, true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(support::error_code(&body), "resume_not_found");

    let r = c
        .http
        .post(c.url_at(1, "/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .header("last-event-id", &last_id)
        .json(&ask(prompt, true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resumed = tokio::time::timeout(Duration::from_secs(40), sse_data(r))
        .await
        .expect("the resumed stream ends");
    assert_eq!(resumed.last().map(String::as_str), Some("[DONE]"));
    // Its first chunk continues the answer: no second opening chunk.
    let first: Value = serde_json::from_str(&resumed[0]).unwrap();
    assert!(first["choices"][0]["delta"]["role"].is_null(), "{first}");

    // The reference: the same prompt streamed without interruption.
    let r = c.chat(1, ask(prompt, true)).await;
    let reference = stream_content(&sse_data(r).await);
    assert!(reference.ends_with(&support::words(40)), "{reference}");
    let joined = stream_content(&held) + &stream_content(&resumed);
    assert_eq!(joined, reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_refuses_ids_it_did_not_make() {
    let (c, _proxies) = support::start("resume-bad", support::options(&[])).await;
    c.set_tokens(&["resume-bad-token"], &[]).await;
    let send = |id: &str| {
        c.http
            .post(c.url("/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .header("last-event-id", id)
            .json(&ask("hello", true))
            .send()
    };
    let r = send("garbage").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "Last-Event-ID");
    assert_eq!(support::error_code(&body), "invalid_last_event_id");
    let unknown = format!("{}-1-3-0123456789abcdef", uuid::Uuid::now_v7().simple());
    let r = send(&unknown).await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(support::error_code(&body), "resume_not_found");
}
