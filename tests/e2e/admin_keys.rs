//! Named client API keys on both shapes: created once in clear and listed without it,
//! accepted by the OpenAI routes, held to their model allowlist (403) and rate limit (429
//! across both gateways of a cluster), counted, and refused soon after being disabled or
//! deleted. The operator key keeps working throughout.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, API_KEY, Cluster, Shape};

async fn admin(
    c: &Cluster,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = c.http.request(method, c.url(path)).bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn keys(c: &Cluster) -> Vec<Value> {
    let (status, body) = admin(c, reqwest::Method::GET, "/v1/admin/keys", None).await;
    assert_eq!(status, 200);
    body["items"].as_array().unwrap().clone()
}

async fn models(c: &Cluster, gateway: usize, key: &str) -> reqwest::Response {
    c.http
        .get(c.url_at(gateway, "/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// Polls until `key` gets `status` from `/v1/models` on every gateway.
async fn wait_for_status(c: &Cluster, key: &str, status: u16) {
    let start = Instant::now();
    for gateway in 0..c.gateways.len() {
        loop {
            if models(c, gateway, key).await.status().as_u16() == status {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "gateway {gateway} never answered {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn client_keys_allowlist_rate_limit_usage_and_revocation(shape: Shape) {
    let c = Cluster::start(shape, "admin-keys").await;
    c.set_tokens(&["keys-basic-token"], &[]).await;

    // Bad input names its field.
    for (body, param) in [
        (json!({"name": ""}), "name"),
        (
            json!({"name": "x", "models": ["no-such-model"]}),
            "models.0",
        ),
        (
            json!({"name": "x", "rate_limit_per_minute": -2}),
            "rate_limit_per_minute",
        ),
        (json!({"name": "x", "owner": "y"}), "owner"),
    ] {
        let (status, err) = admin(&c, reqwest::Method::POST, "/v1/admin/keys", Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["param"], param);
    }
    let r = c
        .http
        .get(c.url("/v1/admin/keys"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (status, created) = admin(
        &c,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"name": "ci", "models": ["grok-4.1-fast"], "rate_limit_per_minute": 3})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-g2a-"), "{key}");
    let id = created["item"]["id"].as_str().unwrap().to_owned();
    let listed = keys(&c).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["prefix"], key[..15]);
    assert_eq!(listed[0]["name"], "ci");
    assert_eq!(listed[0]["models"], json!(["grok-4.1-fast"]));
    assert_eq!(listed[0]["rate_limit_per_minute"], 3);
    assert_eq!(listed[0]["request_count"], 0);
    assert!(
        !json!(listed).to_string().contains(&key[15..]),
        "key leaked"
    );

    // The allowlist: an allowed model is served, another is a 403 that costs no budget.
    let r = c
        .http
        .post(c.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat_body("grok-4.1-fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = c
        .http
        .post(c.url_at(1, "/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat_body("grok-4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_allowed");
    assert_eq!(err["error"]["type"], "permission_error");

    // The limit (3 a minute) holds across gateways: requests alternate between them. The
    // model list shows only the allowed models.
    for i in 0..2 {
        let r = models(&c, i + 1, &key).await;
        assert_eq!(r.status(), 200);
        let list: Value = r.json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["data"][0]["id"], "grok-4.1-fast");
    }
    let r = models(&c, 1, &key).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert_eq!(models(&c, 0, &key).await.status(), 429);
    // The operator key has no such limit.
    for _ in 0..5 {
        assert_eq!(models(&c, 0, API_KEY).await.status(), 200);
    }

    // Usage: the three admitted requests, flushed in batches.
    let start = Instant::now();
    loop {
        let k = keys(&c).await;
        if k[0]["request_count"] == 3 {
            assert!(k[0]["last_used_at"].as_i64().unwrap() > 0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "usage never reached 3: {k:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A second key without limits; disabling and deleting take effect on every gateway.
    let (_, other) = admin(
        &c,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"name": "open"})),
    )
    .await;
    let other_key = other["key"].as_str().unwrap().to_owned();
    let other_id = other["item"]["id"].as_str().unwrap().to_owned();
    wait_for_status(&c, &other_key, 200).await;
    let (status, patched) = admin(
        &c,
        reqwest::Method::PATCH,
        &format!("/v1/admin/keys/{other_id}"),
        Some(json!({"enabled": false, "name": "closed"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["item"]["enabled"], false);
    assert_eq!(patched["item"]["name"], "closed");
    wait_for_status(&c, &other_key, 401).await;
    let (status, _) = admin(
        &c,
        reqwest::Method::DELETE,
        &format!("/v1/admin/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    wait_for_status(&c, &key, 401).await;
    assert_eq!(keys(&c).await.len(), 1);
    for method in [reqwest::Method::DELETE, reqwest::Method::PATCH] {
        let (status, _) = admin(&c, method, &format!("/v1/admin/keys/{id}"), Some(json!({}))).await;
        assert_eq!(status, 404);
    }

    // Near misses of a key are plain 401s.
    for bad in [
        format!("{}x", &key[..key.len() - 1]),
        "sk-g2a-nothing".into(),
        key[..20].to_owned(),
    ] {
        let r = models(&c, 0, &bad).await;
        assert_eq!(r.status(), 401);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["message"], "Invalid authentication token");
    }
    assert_eq!(models(&c, 0, API_KEY).await.status(), 200);
}

both_shapes!(client_keys_allowlist_rate_limit_usage_and_revocation);
