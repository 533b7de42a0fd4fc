//! Chat completions end to end, on both shapes.

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Options, Shape, sse_data, stream_content};

fn ask(prompt: &str, stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

async fn non_stream_answer_equals_the_upstream_text(shape: Shape) {
    let c = Cluster::start(shape, "nonstream").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let r = c.chat(0, ask("What is Rust?", false)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "grok-4.1-fast");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        sim::answer_for("What is Rust?").text
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let stats = c.sim.stats().await;
    assert_eq!(stats.tokens["basic-token-1"].calls, 1);
}
both_shapes!(non_stream_answer_equals_the_upstream_text);

async fn stream_answer_equals_the_upstream_text_with_reasoning(shape: Shape) {
    let c = Cluster::start(shape, "stream").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    // Each request may land on either gateway.
    for gw in 0..2 {
        let prompt = format!("Tell me about streams {gw}");
        let r = c.chat(gw, ask(&prompt, true)).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let data = sse_data(r).await;
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let answer = sim::answer_for(&prompt);
        assert_eq!(
            stream_content(&data),
            format!("<think>\n{}\n</think>\n{}", answer.reasoning, answer.text)
        );
        let first: Value = serde_json::from_str(&data[0]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
    }
}
both_shapes!(stream_answer_equals_the_upstream_text_with_reasoning);

async fn reasoning_effort_none_hides_reasoning(shape: Shape) {
    let c = Cluster::start(shape, "noreason").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let mut body = ask("quiet please", true);
    body["reasoning_effort"] = json!("none");
    let data = sse_data(c.chat(0, body).await).await;
    assert_eq!(stream_content(&data), sim::answer_for("quiet please").text);
}
both_shapes!(reasoning_effort_none_hides_reasoning);

async fn a_rate_limited_token_fails_over_to_another(shape: Shape) {
    let c = Cluster::start(shape, "failover").await;
    // The rate-limited account has more quota, so it is picked first.
    c.post_tokens(json!({"ssoBasic": [{"token": "rl-fault-429", "quota": 100}, {"token": "good-token", "quota": 10}]})).await;
    let r = c.chat(0, ask("fail over please", false)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        sim::answer_for("fail over please").text
    );
    let stats = c.sim.stats().await;
    assert_eq!(stats.tokens["good-token"].calls, 1);
    let tokens = c.tokens().await;
    let limited = tokens
        .iter()
        .find(|t| t["id"] == shared::crypto::token_id("rl-fault-429"))
        .unwrap();
    assert_eq!(limited["status"], "cooling", "{limited}");
    // Streaming fails over too, before any text reached the caller.
    let c2 = c.chat(1, ask("and streamed", true)).await;
    assert!(stream_content(&sse_data(c2).await).ends_with(&sim::answer_for("and streamed").text));
}
both_shapes!(a_rate_limited_token_fails_over_to_another);

async fn no_usable_token_is_a_429_with_retry_after(shape: Shape) {
    let c = Cluster::start(shape, "notoken").await;
    for stream in [false, true] {
        let r = c.chat(0, ask("anyone there?", stream)).await;
        assert_eq!(r.status(), 429);
        let retry_after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
    // Only rate-limited accounts: still a 429, with the account's window as Retry-After.
    c.set_tokens(&["only-fault-429"], &[]).await;
    let r = c.chat(0, ask("still there?", false)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}
both_shapes!(no_usable_token_is_a_429_with_retry_after);

async fn an_unauthorized_token_is_retired_and_another_serves(shape: Shape) {
    let options = Options {
        extra_env: vec![("GROK2API_TOKEN__FAIL_THRESHOLD".into(), "1".into())],
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "unauth", options).await;
    c.post_tokens(json!({"ssoBasic": [{"token": "dead-fault-401", "quota": 100}, {"token": "alive-token", "quota": 10}]})).await;
    let r = c.chat(0, ask("hello", false)).await;
    assert_eq!(r.status(), 200);
    let tokens = c.tokens().await;
    let dead = tokens
        .iter()
        .find(|t| t["id"] == shared::crypto::token_id("dead-fault-401"))
        .unwrap();
    assert_eq!(dead["status"], "invalid", "{dead}");
}
both_shapes!(an_unauthorized_token_is_retired_and_another_serves);

async fn heavy_models_use_super_accounts_only(shape: Shape) {
    let c = Cluster::start(shape, "tiers").await;
    c.set_tokens(&["basic-only"], &[]).await;
    let heavy =
        json!({"model": "grok-4-heavy", "messages": [{"role": "user", "content": "think hard"}]});
    assert_eq!(c.chat(0, heavy.clone()).await.status(), 429);
    c.set_tokens(&["basic-only"], &["super-account"]).await;
    let r = c.chat(0, heavy).await;
    assert_eq!(r.status(), 200);
    assert_eq!(c.sim.stats().await.tokens["super-account"].calls, 1);
    // A basic model prefers the basic account.
    assert_eq!(c.chat(0, ask("cheap", false)).await.status(), 200);
    assert_eq!(c.sim.stats().await.tokens["basic-only"].calls, 1);
}
both_shapes!(heavy_models_use_super_accounts_only);

async fn wrong_or_missing_api_key_is_401(shape: Shape) {
    let c = Cluster::start(shape, "auth").await;
    for key in [Some("sk-wrong"), Some("sk-test-e2e-keX"), None] {
        let mut req = c
            .http
            .post(c.url("/v1/chat/completions"))
            .json(&ask("x", false));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let r = c
        .http
        .get(c.url("/v1/models"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let models: Value = r.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"grok-4.1-fast") && ids.contains(&"grok-chat-expert"),
        "{ids:?}"
    );
}
both_shapes!(wrong_or_missing_api_key_is_401);

async fn bad_bodies_are_400_with_param_and_code(shape: Shape) {
    let c = Cluster::start(shape, "badbody").await;
    let post_raw = |body: &'static str, ct: &'static str| {
        c.http
            .post(c.url("/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = post_raw("{\"model\": ", "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["error"]["param"].as_str(), b["error"]["code"].as_str()),
        (Some("body"), Some("invalid_json"))
    );
    let r = post_raw("{}", "text/plain").await.unwrap();
    assert_eq!(r.status(), 415);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_content_type");
    let cases = [
        (
            json!({"model": "grok-4", "temperature": 3, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
            "invalid_temperature",
        ),
        (
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
            "model",
            "model_not_found",
        ),
        (
            json!({"model": "grok-4", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}),
            "messages.0.content.0.text",
            "empty_text",
        ),
        (
            json!({"model": "grok-4", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages.0.role",
            "invalid_role",
        ),
    ];
    for (body, param, code) in cases {
        let r = c.chat(0, body).await;
        assert_eq!(r.status(), 400);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["param"], param);
        assert_eq!(b["error"]["code"], code);
        assert_eq!(b["error"]["type"], "invalid_request_error");
    }
    // No job reached the upstream for any of them.
    assert_eq!(c.sim.stats().await.total_calls, 0);
}
both_shapes!(bad_bodies_are_400_with_param_and_code);

async fn the_rest_transport_answers_the_same(shape: Shape) {
    let options = Options {
        transport: "rest",
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "rest", options).await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let body: Value = c
        .chat(0, ask("over REST", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        sim::answer_for("over REST").text
    );
    let data = sse_data(c.chat(1, ask("streamed over REST", true)).await).await;
    assert!(stream_content(&data).ends_with(&sim::answer_for("streamed over REST").text));
}
both_shapes!(the_rest_transport_answers_the_same);

async fn a_stream_cut_before_output_is_retried_on_another_account(shape: Shape) {
    let c = Cluster::start(shape, "cut").await;
    c.post_tokens(json!({"ssoBasic": [{"token": "empty-fault-empty", "quota": 100}, {"token": "steady", "quota": 10}]})).await;
    // An empty answer is not a success: the worker tries the next account.
    let body: Value = c
        .chat(0, ask("say something", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        sim::answer_for("say something").text
    );
    assert_eq!(c.sim.stats().await.tokens["steady"].calls, 1);
}
both_shapes!(a_stream_cut_before_output_is_retried_on_another_account);

async fn a_stream_cut_mid_answer_ends_with_an_error_event(shape: Shape) {
    let c = Cluster::start(shape, "midcut").await;
    c.set_tokens(&["cutter-fault-cut"], &[]).await;
    let mut body = ask(
        "a long answer that will be cut somewhere in the middle of it",
        true,
    );
    body["reasoning_effort"] = json!("none");
    let r = c.chat(0, body).await;
    assert_eq!(r.status(), 200);
    let data = sse_data(r).await;
    let error = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("error").is_some());
    let error = error.unwrap_or_else(|| panic!("no error event in {data:?}"));
    assert_eq!(error["error"]["code"], "upstream_error");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}
both_shapes!(a_stream_cut_mid_answer_ends_with_an_error_event);
