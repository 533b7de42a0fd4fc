//! `GET/POST /v1/admin/config` and `GET /v1/admin/storage` on both shapes: secrets are
//! redacted, posts deep-merge and are validated key by key, and a change made through one
//! gateway takes effect on the other within about a second.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, API_KEY, Cluster, Shape};

async fn get_config(c: &Cluster, gateway: usize) -> Value {
    let r = c
        .http
        .get(c.url_at(gateway, "/v1/admin/config"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn post_config(c: &Cluster, gateway: usize, body: Value) -> (u16, Value) {
    let r = c
        .http
        .post(c.url_at(gateway, "/v1/admin/config"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn models_status(c: &Cluster, gateway: usize, key: &str) -> u16 {
    c.http
        .get(c.url_at(gateway, "/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn admin_config_redacts_merges_validates_and_spreads(shape: Shape) {
    let c = Cluster::start(shape, "admin-config").await;
    let r = c.http.get(c.url("/v1/admin/config")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Secrets never come back; empty ones show as empty.
    let config = get_config(&c, 0).await;
    assert_eq!(config["app"]["api_key"], "***");
    assert_eq!(config["app"]["app_key"], "***");
    assert_eq!(config["security"]["token_key"], "***");
    assert_eq!(config["upstream"]["cf_clearance"], "");
    assert_eq!(config["app"]["thinking"], true);
    let text = config.to_string();
    for secret in [
        API_KEY,
        ADMIN_KEY,
        "testsecret",
        "q83vEjRWeJCrze8SNFZ4kKvN7xI0",
    ] {
        assert!(!text.contains(secret), "secret leaked: {secret}");
    }

    // Deep merge: a second partial post keeps the first one's keys.
    let (status, body) = post_config(
        &c,
        0,
        json!({"app": {"thinking": false}, "retry": {"max_retry": 2}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    let (status, _) = post_config(&c, 0, json!({"image": {"nsfw": false}})).await;
    assert_eq!(status, 200);
    for gateway in 0..c.gateways.len() {
        let config = get_config(&c, gateway).await;
        assert_eq!(config["app"]["thinking"], false);
        assert_eq!(config["retry"]["max_retry"], 2);
        assert_eq!(config["image"]["nsfw"], false);
    }

    // Each bad post is a 400 naming the key, and changes nothing.
    for (patch, param) in [
        (json!({"app": {"nope": 1}}), "app.nope"),
        (json!({"nope": {"x": 1}}), "nope"),
        (json!({"app": {"thinking": "yes"}}), "app.thinking"),
        (json!({"retry": {"max_retry": 0}}), "retry.max_retry"),
        (json!({"server": {"port": 1}}), "server.port"),
        (
            json!({"backend": {"redis_url": "redis://elsewhere"}}),
            "backend.redis_url",
        ),
        (
            json!({"image": {"response_format": "gif"}}),
            "image.response_format",
        ),
        (json!(["not", "an", "object"]), "body"),
    ] {
        let (status, body) = post_config(&c, 0, patch.clone()).await;
        assert_eq!(status, 400, "{patch}: {body}");
        assert_eq!(body["error"]["param"], param, "{patch}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let (_, body) = post_config(&c, 0, json!({"server": {"port": 1}})).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("runtime"),
        "{body}"
    );

    // Posting back what GET returned (secrets redacted) is accepted and keeps the secrets:
    // the operator key still works.
    let whole = get_config(&c, 0).await;
    let (status, body) = post_config(&c, 0, whole).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(models_status(&c, 0, API_KEY).await, 200);

    // A live secret changed through gateway 0 applies on every gateway within about a
    // second, without anything reading the config route there.
    let new_key = "sk-rotated-e2e-key";
    let (status, _) = post_config(&c, 0, json!({"app": {"api_key": new_key}})).await;
    assert_eq!(status, 200);
    let last = c.gateways.len() - 1;
    let start = Instant::now();
    loop {
        if models_status(&c, last, new_key).await == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "gateway {last} never accepted the rotated key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for gateway in 0..c.gateways.len() {
        assert_eq!(models_status(&c, gateway, API_KEY).await, 401);
        assert_eq!(models_status(&c, gateway, new_key).await, 200);
    }
    let config = get_config(&c, last).await;
    assert_eq!(config["app"]["api_key"], "***");

    let r = c
        .http
        .get(c.url("/v1/admin/storage"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let storage: Value = r.json().await.unwrap();
    let expected = match shape {
        Shape::Embedded => json!({"type": "sqlite", "blob": "local"}),
        Shape::Distributed => json!({"type": "pgsql", "blob": "s3"}),
    };
    assert_eq!(storage, expected);
}

both_shapes!(admin_config_redacts_merges_validates_and_spreads);
