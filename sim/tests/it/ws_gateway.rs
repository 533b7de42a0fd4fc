use serde_json::json;

use crate::common::{
    ask, collect, item_create, next_event, next_text, open_session, refusal, response_create, send,
    session_create, sso_cookie, start, token, ws_connect, ws_connect_with,
};

#[tokio::test]
async fn full_flow_reproduces_the_answer() {
    let sim = start().await;
    let token = token("basic");
    let mut ws = ws_connect(&sim, &token).await.unwrap();
    // Heartbeats may come at any time and must not disturb the flow.
    send(
        &mut ws,
        json!({"event": {"type": "ping", "event_id": "evt_hb_1"}}),
    )
    .await;
    let conversation = open_session(&mut ws, "expert").await;
    send(
        &mut ws,
        json!({"event": {"type": "ping", "event_id": "evt_hb_2"}}),
    )
    .await;
    let prompt = "system: be brief\n\nWhat is  the answer?";
    ask(&mut ws, &conversation, prompt).await;
    let stream = collect(&mut ws).await;
    let expected = sim::answer_for(prompt);
    assert!(stream.done, "{stream:?}");
    assert_eq!(stream.reasoning, expected.reasoning);
    assert_eq!(stream.text, expected.text);
    assert_eq!(stream.invalid_frames, 0);
    let stats = sim.stats().await;
    assert_eq!(stats.tokens[&token].calls, 1);
    assert_eq!(stats.tokens[&token].last_mode.as_deref(), Some("expert"));
}

#[tokio::test]
async fn text_chunks_are_joined_and_a_session_serves_several_turns() {
    let sim = start().await;
    let token = token("super");
    let mut ws = ws_connect(&sim, &token).await.unwrap();
    let conversation = open_session(&mut ws, "fast").await;
    let mut item = item_create(&conversation, "ignored");
    item["event"]["item"]["x_grok"]["input_chunks"] = json!([
        {"mention": {"target": {"file_mention": {"file_id": "file-1"}}}},
        {"text": {"text": "first "}},
        {"text": {"text": "turn"}},
    ]);
    send(&mut ws, item).await;
    send(&mut ws, response_create(&conversation)).await;
    let first = collect(&mut ws).await;
    assert!(first.done);
    assert_eq!(first.text, "Echo: first turn");

    ask(&mut ws, &conversation, "[[words:3000]]").await;
    let second = collect(&mut ws).await;
    assert!(second.done);
    assert_eq!(second.text, sim::answer_for("[[words:3000]]").text);
    assert_eq!(sim.stats().await.tokens[&token].calls, 2);
}

#[tokio::test]
async fn upgrade_requires_cookie_origin_and_matching_uid() {
    let sim = start().await;
    let token = token("basic");
    let uid = sim::user_id_for(&token);
    let good_cookie = format!("{}; x-userid={uid}", sso_cookie(&token));
    let origin = Some("https://grok.com");

    let no_cookie = ws_connect_with(&sim, &uid, None, origin, None).await;
    assert_eq!(refusal(no_cookie).0, 401);
    let without_rw = format!("sso={token}; x-userid={uid}");
    let result = ws_connect_with(&sim, &uid, Some(&without_rw), origin, None).await;
    assert_eq!(refusal(result).0, 401);
    let without_userid = sso_cookie(&token);
    let result = ws_connect_with(&sim, &uid, Some(&without_userid), origin, None).await;
    assert_eq!(refusal(result).0, 401);

    let other_uid = sim::user_id_for("someone-else");
    let wrong_uid = format!("{}; x-userid={other_uid}", sso_cookie(&token));
    let result = ws_connect_with(&sim, &other_uid, Some(&wrong_uid), origin, None).await;
    assert_eq!(refusal(result).0, 401);

    let bad_origin = ws_connect_with(
        &sim,
        &uid,
        Some(&good_cookie),
        Some("https://evil.test"),
        None,
    );
    assert_eq!(refusal(bad_origin.await).0, 403);
    let no_origin = ws_connect_with(&sim, &uid, Some(&good_cookie), None, None).await;
    assert_eq!(refusal(no_origin).0, 403);

    assert!(
        ws_connect_with(&sim, &uid, Some(&good_cookie), origin, None)
            .await
            .is_ok()
    );
}

/// Sends `messages` after connecting and expects an `invalid_request` error and a close.
async fn expect_invalid_request(messages: Vec<String>, open_first: bool) {
    let sim = start().await;
    let token = token("basic");
    let mut ws = ws_connect(&sim, &token).await.unwrap();
    if open_first {
        open_session(&mut ws, "fast").await;
    }
    for message in messages {
        use futures::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::text(message))
            .await
            .unwrap();
    }
    let error = next_event(&mut ws).await;
    assert_eq!(error["event"]["type"], "error", "{error}");
    assert_eq!(error["event"]["error"]["code"], "invalid_request");
    assert!(error["event"]["error"]["message"].is_string());
    assert_eq!(
        next_text(&mut ws).await,
        None,
        "the gateway closes after an error"
    );
    assert_eq!(sim.stats().await.total_calls, 0);
}

#[tokio::test]
async fn malformed_json_is_an_invalid_request() {
    expect_invalid_request(vec!["{not json".into()], false).await;
}

#[tokio::test]
async fn session_create_is_validated() {
    let mut unknown_model = session_create("fast");
    unknown_model["event"]["session"]["model"] = json!("grok-4");
    expect_invalid_request(vec![unknown_model.to_string()], false).await;
    let mut no_event_id = session_create("fast");
    no_event_id["event"]
        .as_object_mut()
        .unwrap()
        .remove("event_id");
    expect_invalid_request(vec![no_event_id.to_string()], false).await;
    let mut no_x_grok = session_create("fast");
    no_x_grok["event"]["session"]
        .as_object_mut()
        .unwrap()
        .remove("x_grok");
    expect_invalid_request(vec![no_x_grok.to_string()], false).await;
    // A chat message before the session exists.
    expect_invalid_request(vec![item_create("c", "hi").to_string()], false).await;
}

#[tokio::test]
async fn chat_events_are_validated() {
    // session_id that is not the attached conversation.
    expect_invalid_request(
        vec![item_create("not-the-conversation", "hi").to_string()],
        true,
    )
    .await;
    // response.create without a message first.
    let sim = start().await;
    let mut ws = ws_connect(&sim, &token("basic")).await.unwrap();
    let conversation = open_session(&mut ws, "fast").await;
    send(&mut ws, response_create(&conversation)).await;
    let error = next_event(&mut ws).await;
    assert_eq!(error["event"]["error"]["code"], "invalid_request");
    // A message without any text chunk, and one from the wrong role.
    let mut ws = ws_connect(&sim, &token("basic")).await.unwrap();
    let conversation = open_session(&mut ws, "fast").await;
    let mut item = item_create(&conversation, "hi");
    item["event"]["item"]["x_grok"]["input_chunks"] = json!([]);
    send(&mut ws, item).await;
    assert_eq!(
        next_event(&mut ws).await["event"]["error"]["code"],
        "invalid_request"
    );
    let mut ws = ws_connect(&sim, &token("basic")).await.unwrap();
    let conversation = open_session(&mut ws, "fast").await;
    let mut item = item_create(&conversation, "hi");
    item["event"]["item"]["role"] = json!("assistant");
    send(&mut ws, item).await;
    assert_eq!(
        next_event(&mut ws).await["event"]["error"]["code"],
        "invalid_request"
    );
}
