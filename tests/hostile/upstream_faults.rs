//! Scenario 8, upstream faults from the simulator's fault modes, end to end: refusals fail
//! over to another account or end in a clear error; broken streams end with an error event
//! (or a clean error status when nothing was sent yet); bytes that are not an image are a
//! failure. (Rate limits, 401s and clean cuts are covered in tests/e2e/chat.rs.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Options, Shape, sse_data, stream_content};
use crate::probe::{expect_error, wait_for};

fn ask(prompt: &str, stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "stream": stream,
        "messages": [{"role": "user", "content": prompt}]})
}

async fn status_of(c: &Cluster, token: &str) -> String {
    let id = shared::crypto::token_id(token);
    let tokens = c.tokens().await;
    let t = tokens.iter().find(|t| t["id"] == id).expect("token listed");
    t["status"].as_str().unwrap().to_owned()
}

/// The error event of an SSE answer, and the text that reached the caller before it.
fn error_event(data: &[String]) -> (Value, String) {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let error = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("error").is_some())
        .unwrap_or_else(|| panic!("no error event in {data:?}"));
    (error["error"].clone(), stream_content(data))
}

async fn refusals_fail_over_or_end_in_a_clear_error(shape: Shape) {
    let c = Cluster::start(shape, "refusals").await;
    for (fault, code) in [("403", "upstream_challenge"), ("5xx", "upstream_error")] {
        // A refusing account with the most quota is tried first; another serves.
        let bad = format!("bad-fault-{fault}");
        c.post_tokens(json!({"ssoBasic": [{"token": bad, "quota": 100},
            {"token": "good-token", "quota": 10}]}))
            .await;
        let r = c.chat(0, ask(&format!("over {fault}"), false)).await;
        assert_eq!(r.status(), 200, "{fault}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            sim::answer_for(&format!("over {fault}")).text
        );
        // Neither the challenge nor an upstream outage is the account's fault.
        assert_eq!(status_of(&c, &bad).await, "active", "{fault}");

        // With only refusing accounts, the caller gets a clear error in OpenAI's shape.
        c.set_tokens(&[&bad], &[]).await;
        for stream in [false, true] {
            let r = c.chat(0, ask("nobody answers", stream)).await;
            let e = expect_error(r, 502).await;
            assert_eq!(e["code"], code, "{fault} stream={stream}");
            let message = e["message"].as_str().unwrap();
            assert!(!message.contains(&bad), "the token leaked: {message}");
            assert!(
                !message.contains("<html"),
                "upstream HTML leaked: {message}"
            );
        }
    }
}
both_shapes!(refusals_fail_over_or_end_in_a_clear_error);

async fn broken_streams_end_with_clear_errors(shape: Shape) {
    // The harness sets upstream.stream_idle_timeout_secs to 5.
    let c = Cluster::start(shape, "broken").await;
    let prompt = "a long answer that breaks somewhere in the middle of it";

    // A connection reset mid-answer: the streamed caller keeps what it got and then sees
    // an error event; a non-streamed caller gets a 502.
    c.set_tokens(&["reset-fault-reset"], &[]).await;
    let mut body = ask(prompt, true);
    body["reasoning_effort"] = json!("none");
    let r = c.chat(0, body).await;
    assert_eq!(r.status(), 200);
    let (error, text) = error_event(&sse_data(r).await);
    assert_eq!(error["code"], "upstream_error");
    assert!(
        sim::answer_for(prompt).text.starts_with(&text) && !text.is_empty(),
        "partial text {text:?}"
    );
    let e = expect_error(c.chat(0, ask(prompt, false)).await, 502).await;
    assert_eq!(e["code"], "upstream_error");

    // A stall after the first frame: the upstream idle timeout fires and the caller is told.
    c.set_tokens(&["stall-fault-stall"], &[]).await;
    let r = c.chat(0, ask("then silence", true)).await;
    assert_eq!(r.status(), 200);
    let (error, _) = error_event(&sse_data(r).await);
    assert_eq!(error["code"], "upstream_timeout");
    // The stalled call was dropped, so the upstream sees it end.
    wait_for(
        "the stalled call to close",
        Duration::from_secs(20),
        async || c.sim.stats().await.tokens["stall-fault-stall"].in_flight == 0,
    )
    .await;

    // A frame far larger than any answer frame: refused by the client's frame cap.
    c.set_tokens(&["huge-fault-huge"], &[]).await;
    let r = c.chat(0, ask("one enormous frame", true)).await;
    assert_eq!(r.status(), 200);
    let (error, text) = error_event(&sse_data(r).await);
    assert_eq!(error["code"], "upstream_error");
    assert!(
        !text.contains("xxxxxxxx"),
        "part of the huge frame was relayed"
    );

    // A frame that is not JSON mid-stream is skipped; the answer stays whole.
    c.set_tokens(&["odd-fault-malformed"], &[]).await;
    let r = c.chat(0, ask("tolerate one bad frame", false)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        sim::answer_for("tolerate one bad frame").text
    );

    // After all of that the service still answers.
    c.set_tokens(&["fine-token"], &[]).await;
    assert_eq!(c.chat(0, ask("still fine?", false)).await.status(), 200);
}
both_shapes!(broken_streams_end_with_clear_errors);

/// The REST transport renders the same faults through NDJSON; its reset is an HTTP body
/// aborted mid-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_the_rest_transport_is_an_error_too() {
    let options = Options {
        transport: "rest",
        // Paced frames go out one by one, so the text before the reset reaches the caller.
        sim: sim::SimConfig {
            frame_delay_ms: 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = Cluster::start_with(Shape::Embedded, "rest-reset", options).await;
    c.set_tokens(&["reset-fault-reset"], &[]).await;
    let mut body = ask("a long answer over rest that breaks in the middle", true);
    body["reasoning_effort"] = json!("none");
    let r = c.chat(0, body).await;
    assert_eq!(r.status(), 200);
    let (error, text) = error_event(&sse_data(r).await);
    assert_eq!(error["code"], "upstream_error");
    assert!(!text.is_empty());
    c.set_tokens(&["down-fault-5xx"], &[]).await;
    let e = expect_error(c.chat(0, ask("x", false)).await, 502).await;
    assert_eq!(e["code"], "upstream_error");
}

async fn bytes_that_are_not_an_image_fail_the_request(shape: Shape) {
    let c = Cluster::start(shape, "notimage").await;
    c.set_tokens(&["painter-token"], &[]).await;
    let prompt = format!("a cat {}", sim::NOT_IMAGE_MARKER);
    for format in ["b64_json", "url"] {
        let r = c
            .http
            .post(c.url("/v1/images/generations"))
            .bearer_auth(API_KEY)
            .json(&json!({"prompt": prompt, "response_format": format}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            status >= 400,
            "{format}: an HTML page was served as an image"
        );
        let e = expect_error(r, status).await;
        assert!(e["code"].is_string(), "{e}");
    }
}
both_shapes!(bytes_that_are_not_an_image_fail_the_request);
