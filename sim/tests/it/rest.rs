use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::common::{
    CHAT_PATH, chat_body, chat_request, chat_request_signed, http, parse_ndjson, signed_statsig,
    sso_cookie, start, token,
};

#[tokio::test]
async fn full_flow_reproduces_the_answer() {
    let sim = start().await;
    let token = token("basic");
    let prompt = "user: hi\n\nTell me\tsomething  nice ";
    let response = chat_request(&sim, &token, prompt).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let stream = parse_ndjson(&response.text().await.unwrap());
    let expected = sim::answer_for(prompt);
    assert!(stream.conversation_id.is_some());
    assert_eq!(stream.reasoning, expected.reasoning);
    assert_eq!(stream.text, expected.text);
    assert_eq!(
        stream.final_message.as_deref(),
        Some(expected.text.as_str())
    );
    assert!(stream.soft_stop);
    assert_eq!(stream.invalid_lines, 0);
    let stats = sim.stats().await;
    assert_eq!(stats.tokens[&token].calls, 1);
    assert_eq!(stats.tokens[&token].last_mode.as_deref(), Some("fast"));
}

#[tokio::test]
async fn long_answers_arrive_whole() {
    let sim = start().await;
    let prompt = "[[words:20000]]";
    let response = chat_request(&sim, &token("basic"), prompt)
        .send()
        .await
        .unwrap();
    let stream = parse_ndjson(&response.text().await.unwrap());
    assert_eq!(stream.text, sim::answer_for(prompt).text);
    assert!(stream.lines > 20_000);
    assert!(stream.soft_stop);
}

#[tokio::test]
async fn the_x1_fallback_statsig_is_accepted() {
    let sim = start().await;
    let statsig =
        STANDARD.encode("x1:TypeError: Cannot read properties of undefined (reading 'abc')");
    let response = chat_request_signed(&sim, &token("basic"), "hi", Some(&statsig))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(parse_ndjson(&response.text().await.unwrap()).soft_stop);
}

async fn status_and_body(request: reqwest::RequestBuilder) -> (u16, String, String) {
    let response = request.send().await.unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        response.status().as_u16(),
        content_type,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn missing_or_partial_cookies_are_unauthorized() {
    let sim = start().await;
    let url = format!("{}{CHAT_PATH}", sim.base_url());
    let token = token("basic");
    let without_cookie = http()
        .post(&url)
        .header("x-statsig-id", signed_statsig())
        .header("x-xai-request-id", "r1")
        .json(&chat_body("hi", "fast"));
    let (status, content_type, body) = status_and_body(without_cookie).await;
    assert_eq!(status, 401);
    assert!(content_type.starts_with("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        16
    );
    let only_sso = http()
        .post(&url)
        .header("cookie", format!("sso={token}"))
        .header("x-statsig-id", signed_statsig())
        .header("x-xai-request-id", "r1")
        .json(&chat_body("hi", "fast"));
    assert_eq!(status_and_body(only_sso).await.0, 401);
    assert_eq!(sim.stats().await.total_calls, 0);
}

#[tokio::test]
async fn malformed_requests_are_bad_requests() {
    let sim = start().await;
    let token = token("basic");
    let bad_json = chat_request(&sim, &token, "hi").body("{\"message\":");
    let old_shape = chat_request(&sim, &token, "hi").json(&json!({
        "message": "hi", "modelName": "grok-4-1-thinking-1129", "modelMode": "MODEL_MODE_FAST",
    }));
    let unknown_mode = chat_request(&sim, &token, "hi").json(&chat_body("hi", "grok-4"));
    let message_not_string =
        chat_request(&sim, &token, "hi").json(&json!({"message": ["hi"], "modeId": "fast"}));
    let wrong_type = http()
        .post(format!("{}{CHAT_PATH}", sim.base_url()))
        .header("cookie", sso_cookie(&token))
        .header("x-statsig-id", signed_statsig())
        .header("x-xai-request-id", "r1")
        .header("content-type", "text/plain")
        .body(chat_body("hi", "fast").to_string());
    for request in [
        bad_json,
        old_shape,
        unknown_mode,
        message_not_string,
        wrong_type,
    ] {
        let (status, _, body) = status_and_body(request).await;
        assert_eq!(status, 400, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], 3);
        assert!(body["error"]["message"].is_string());
    }
    assert_eq!(sim.stats().await.total_calls, 0);
}

#[tokio::test]
async fn the_request_id_header_is_required() {
    let sim = start().await;
    let token = token("basic");
    let request = http()
        .post(format!("{}{CHAT_PATH}", sim.base_url()))
        .header("cookie", sso_cookie(&token))
        .header("x-statsig-id", signed_statsig())
        .json(&chat_body("hi", "fast"));
    assert_eq!(status_and_body(request).await.0, 400);
}

#[tokio::test]
async fn missing_stale_or_bogus_statsig_meets_the_challenge_page() {
    let sim = start().await;
    let token = token("basic");
    let stale = STANDARD
        .encode("e:TypeError: Cannot read properties of null (reading 'children['ab1cd']')");
    let short = STANDARD.encode([1u8; 69]);
    let requests = [
        chat_request_signed(&sim, &token, "hi", Some(&stale)),
        chat_request_signed(&sim, &token, "hi", Some(&short)),
        chat_request_signed(&sim, &token, "hi", Some("not base64 !")),
        chat_request_signed(&sim, &token, "hi", None),
    ];
    for request in requests {
        let (status, content_type, body) = status_and_body(request).await;
        assert_eq!(status, 403);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(body.contains("Just a moment..."));
        assert!(body.contains("challenge-platform"));
    }
    assert_eq!(sim.stats().await.total_calls, 0);
}
