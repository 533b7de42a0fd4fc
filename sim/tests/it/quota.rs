use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::common::{
    chat_request, chat_request_signed, http, parse_ndjson, sso_cookie, start, token,
};

async fn rate_limits(base: &str, cookie: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http().post(format!("{base}/rest/rate-limits")).json(&body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn quota(base: &str, token: &str, mode: &str) -> (u64, u64) {
    let (status, body) =
        rate_limits(base, Some(&sso_cookie(token)), json!({"modelName": mode})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["windowSizeSeconds"], 7200);
    let number = |key: &str| body[key].as_u64().expect(key);
    (number("remainingQueries"), number("totalQueries"))
}

#[tokio::test]
async fn totals_follow_the_account_tier() {
    let sim = start().await;
    let base = sim.base_url();
    for (tier, auto, fast) in [("basic", 20, 30), ("super", 50, 140), ("heavy", 150, 400)] {
        let token = token(tier);
        assert_eq!(quota(&base, &token, "auto").await, (auto, auto), "{tier}");
        assert_eq!(quota(&base, &token, "fast").await, (fast, fast), "{tier}");
    }
}

#[tokio::test]
async fn calls_use_up_the_remaining_queries() {
    let sim = start().await;
    let base = sim.base_url();
    let token = token("basic");
    for _ in 0..2 {
        let response = chat_request(&sim, &token, "hi").send().await.unwrap();
        assert!(parse_ndjson(&response.text().await.unwrap()).soft_stop);
    }
    assert_eq!(quota(&base, &token, "auto").await, (18, 20));
    assert_eq!(quota(&base, &token, "fast").await, (28, 30));
    let limited = crate::common::token("super-fault-429");
    assert_eq!(quota(&base, &limited, "fast").await, (0, 140));
}

#[tokio::test]
async fn rate_limits_needs_a_session_and_a_known_mode() {
    let sim = start().await;
    let base = sim.base_url();
    let (status, _) = rate_limits(&base, None, json!({"modelName": "fast"})).await;
    assert_eq!(status, 401);
    let cookie = sso_cookie(&token("basic"));
    let legacy = json!({"requestKind": "DEFAULT", "modelName": "grok-4-1-thinking-1129"});
    let (status, body) = rate_limits(&base, Some(&cookie), legacy).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(3)));
    let (status, _) = rate_limits(&base, Some(&cookie), json!({})).await;
    assert_eq!(status, 400);
    let blocked = sso_cookie(&token("fault-blocked"));
    let (status, body) = rate_limits(&base, Some(&blocked), json!({"modelName": "fast"})).await;
    assert_eq!(status, 403);
    assert!(body.to_string().contains("blocked-user"));
}

#[tokio::test]
async fn signer_flow_yields_an_accepted_statsig() {
    let sim = start().await;
    let client = http();
    let page = client
        .get(format!("{}/index", sim.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "<meta name=\"grok-site-verification\" content=\"";
    let start_at = page.find(marker).expect("verification meta tag") + marker.len();
    let meta = &page[start_at..start_at + page[start_at..].find('"').unwrap()];
    assert!(meta.starts_with("sim-verification-"));

    let sign = |body: Value| {
        client
            .post(format!("{}/sim/sign", sim.base_url()))
            .json(&body)
            .send()
    };
    let signed: Value = sign(
        json!({"method": "POST", "path": "/rest/app-chat/conversations/new",
        "environment": {"metaContent": meta}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let statsig = signed["x-statsig-id"].as_str().expect("x-statsig-id");
    assert_eq!(STANDARD.decode(statsig).unwrap().len(), 70);

    let response = chat_request_signed(&sim, &token("basic"), "signed", Some(statsig))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stream = parse_ndjson(&response.text().await.unwrap());
    assert_eq!(stream.text, sim::answer_for("signed").text);

    let missing = sign(json!({"method": "POST", "path": "/rest/rate-limits", "environment": {}}));
    assert_eq!(missing.await.unwrap().status(), 400);
}
