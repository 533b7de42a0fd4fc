use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sim::SimConfig;

use crate::common::{
    ask, chat_request, collect, next_event, open_session, parse_ndjson, refusal, send, sso_cookie,
    start, start_with, token, wait_for_stats, ws_connect, ws_connect_with,
};

/// How long a stalled stream is watched for silence (the stall itself lasts minutes).
const SILENCE: Duration = Duration::from_millis(300);

async fn rest_refusal(response: reqwest::Response) -> (u16, String, Option<String>, String) {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    (
        status,
        content_type,
        retry_after,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn rate_limited_tokens_are_refused_with_retry_after() {
    let sim = start_with(SimConfig {
        rate_limit_window_secs: 17,
        ..SimConfig::default()
    })
    .await;
    let token = token("super-fault-429");
    let response = chat_request(&sim, &token, "hi").send().await.unwrap();
    let (status, content_type, retry_after, body) = rest_refusal(response).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("17")));
    assert!(content_type.starts_with("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        8
    );

    let (status, retry_after, _) = refusal(ws_connect(&sim, &token).await);
    assert_eq!((status, retry_after.as_deref()), (429, Some("17")));
    // Refused calls never reach the answer stage.
    assert_eq!(sim.stats().await.total_calls, 0);
}

#[tokio::test]
async fn revoked_tokens_are_unauthorized() {
    let sim = start().await;
    let token = token("fault-401");
    let response = chat_request(&sim, &token, "hi").send().await.unwrap();
    let (status, content_type, _, _) = rest_refusal(response).await;
    assert_eq!(status, 401);
    assert!(content_type.starts_with("application/json"));
    assert_eq!(refusal(ws_connect(&sim, &token).await).0, 401);
}

#[tokio::test]
async fn anti_bot_answers_with_an_html_challenge() {
    let sim = start().await;
    let token = token("fault-403");
    let response = chat_request(&sim, &token, "hi").send().await.unwrap();
    let (status, content_type, _, body) = rest_refusal(response).await;
    assert_eq!(status, 403);
    assert!(content_type.starts_with("text/html"));
    assert!(body.contains("Just a moment...") && body.contains("challenge-platform"));
    let (status, _, body) = refusal(ws_connect(&sim, &token).await);
    assert_eq!(status, 403);
    assert!(body.contains("challenge-platform"));
}

#[tokio::test]
async fn blocked_accounts_get_a_json_403_naming_blocked_user() {
    let sim = start().await;
    let token = token("fault-blocked");
    let response = chat_request(&sim, &token, "hi").send().await.unwrap();
    let (status, content_type, _, body) = rest_refusal(response).await;
    assert_eq!(status, 403);
    assert!(content_type.starts_with("application/json"));
    assert!(body.contains("blocked-user"));
    let (status, _, body) = refusal(ws_connect(&sim, &token).await);
    assert_eq!(status, 403);
    assert!(body.contains("blocked-user"));
    assert!(serde_json::from_str::<Value>(&body).is_ok());
}

#[tokio::test]
async fn the_fault_header_replaces_the_token_markers() {
    let sim = start().await;
    let clean = token("basic");
    let response = chat_request(&sim, &clean, "hi")
        .header("x-sim-fault", "429")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let revoked = token("fault-401");
    let response = chat_request(&sim, &revoked, "hi")
        .header("x-sim-fault", "fault-empty")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stream = parse_ndjson(&response.text().await.unwrap());
    assert!(stream.soft_stop && stream.text.is_empty());

    let uid = sim::user_id_for(&clean);
    let cookie = format!("{}; x-userid={uid}", sso_cookie(&clean));
    let result = ws_connect_with(
        &sim,
        &uid,
        Some(&cookie),
        Some("https://grok.com"),
        Some("403"),
    )
    .await;
    assert_eq!(refusal(result).0, 403);
}

#[tokio::test]
async fn slow_streams_space_their_frames() {
    let delay_ms = 30;
    let sim = start_with(SimConfig {
        slow_frame_delay_ms: delay_ms,
        ..SimConfig::default()
    })
    .await;
    let token = token("fault-slow");
    let prompt = "a b";
    let expected = sim::answer_for(prompt);
    // "Thinking about: a b" and "Echo: a b" are 4 + 3 tokens, so 6 gaps at least.
    let minimum = Duration::from_millis(6 * delay_ms);

    let started = Instant::now();
    let response = chat_request(&sim, &token, prompt).send().await.unwrap();
    let stream = parse_ndjson(&response.text().await.unwrap());
    assert!(started.elapsed() >= minimum);
    assert_eq!(
        (stream.reasoning, stream.text),
        (expected.reasoning.clone(), expected.text.clone())
    );
    assert!(stream.soft_stop);

    let mut ws = ws_connect(&sim, &token).await.unwrap();
    let conversation = open_session(&mut ws, "fast").await;
    let started = Instant::now();
    ask(&mut ws, &conversation, prompt).await;
    let stream = collect(&mut ws).await;
    assert!(started.elapsed() >= minimum);
    assert!(stream.done);
    assert_eq!(
        (stream.reasoning, stream.text),
        (expected.reasoning, expected.text)
    );
}

#[tokio::test]
async fn cut_streams_end_halfway_without_their_final_frames() {
    let sim = start().await;
    let token = token("heavy-fault-cut");
    let prompt = "[[words:10]]";
    let expected = sim::answer_for(prompt);

    let response = chat_request(&sim, &token, prompt).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let stream = parse_ndjson(&response.text().await.unwrap());
    assert_eq!(stream.reasoning, expected.reasoning);
    assert!(!stream.text.is_empty() && stream.text.len() < expected.text.len());
    assert!(expected.text.starts_with(&stream.text));
    assert!(stream.final_message.is_none() && !stream.soft_stop);

    let mut ws = ws_connect(&sim, &token).await.unwrap();
    let conversation = open_session(&mut ws, "heavy").await;
    ask(&mut ws, &conversation, prompt).await;
    let stream = collect(&mut ws).await;
    assert!(stream.closed && !stream.done);
    assert!(!stream.text.is_empty() && stream.text.len() < expected.text.len());
    assert!(expected.text.starts_with(&stream.text));
}

#[tokio::test]
async fn malformed_streams_carry_one_bad_frame_and_then_go_on() {
    let sim = start().await;
    let token = token("fault-malformed");
    let prompt = "[[words:6]]";
    let expected = sim::answer_for(prompt);

    let response = chat_request(&sim, &token, prompt).send().await.unwrap();
    let stream = parse_ndjson(&response.text().await.unwrap());
    assert_eq!(stream.invalid_lines, 1);
    assert_eq!(
        (stream.reasoning, stream.text),
        (expected.reasoning.clone(), expected.text.clone())
    );
    assert!(stream.soft_stop);

    let mut ws = ws_connect(&sim, &token).await.unwrap();
    let conversation = open_session(&mut ws, "auto").await;
    ask(&mut ws, &conversation, prompt).await;
    let stream = collect(&mut ws).await;
    assert_eq!(stream.invalid_frames, 1);
    assert!(stream.done);
    assert_eq!(
        (stream.reasoning, stream.text),
        (expected.reasoning, expected.text)
    );
}

#[tokio::test]
async fn empty_streams_are_well_formed_and_say_nothing() {
    let sim = start().await;
    let token = token("fault-empty");

    let response = chat_request(&sim, &token, "anything").send().await.unwrap();
    let stream = parse_ndjson(&response.text().await.unwrap());
    assert!(stream.conversation_id.is_some());
    assert_eq!((stream.reasoning.as_str(), stream.text.as_str()), ("", ""));
    assert_eq!(stream.final_message.as_deref(), Some(""));
    assert!(stream.soft_stop);

    let mut ws = ws_connect(&sim, &token).await.unwrap();
    let conversation = open_session(&mut ws, "fast").await;
    ask(&mut ws, &conversation, "anything").await;
    let stream = collect(&mut ws).await;
    assert!(stream.done);
    assert_eq!((stream.reasoning.as_str(), stream.text.as_str()), ("", ""));
    assert_eq!(sim.stats().await.tokens[&token].calls, 2);
}

#[tokio::test]
async fn stalled_rest_stream_goes_silent_without_closing() {
    let sim = start().await;
    let token = token("fault-stall");
    let mut response = chat_request(&sim, &token, "hello world")
        .send()
        .await
        .unwrap();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("\"isThinking\":true") {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("first frames before the stall");
        received.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&received).contains("conversationId"));
    let silent = tokio::time::timeout(SILENCE, response.chunk()).await;
    assert!(silent.is_err(), "no frame and no end during the stall");
    assert_eq!(sim.stats().await.tokens[&token].in_flight, 1);
    drop(response);
    // The stalled answer ends once its client is gone.
    wait_for_stats(&sim, |s| s.tokens[&token].in_flight == 0).await;
}

#[tokio::test]
async fn stalled_ws_stream_goes_silent_and_keeps_accepting_pings() {
    let sim = start().await;
    let token = token("fault-stall");
    let mut ws = ws_connect(&sim, &token).await.unwrap();
    let conversation = open_session(&mut ws, "fast").await;
    ask(&mut ws, &conversation, "hello world").await;
    let first = next_event(&mut ws).await;
    assert_eq!(first["event"]["type"], "response.chunk");
    assert!(tokio::time::timeout(SILENCE, ws.next()).await.is_err());
    send(
        &mut ws,
        json!({"event": {"type": "ping", "event_id": "evt_hb_1"}}),
    )
    .await;
    assert!(tokio::time::timeout(SILENCE, ws.next()).await.is_err());
    assert_eq!(sim.stats().await.tokens[&token].in_flight, 1);
    drop(ws);
    wait_for_stats(&sim, |s| s.tokens[&token].in_flight == 0).await;
}
