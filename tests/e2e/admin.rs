//! The minimal admin token API, on both shapes.

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, API_KEY, Cluster, Shape};

async fn admin_tokens_replace_mask_and_require_the_admin_key(shape: Shape) {
    let c = Cluster::start(shape, "admin").await;
    let url = c.url("/v1/admin/tokens");
    for key in [None, Some(API_KEY), Some("nope")] {
        let mut req = c.http.get(&url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    let body = json!({"ssoBasic": ["sso=first-account-token", {"token": "second-account-token", "note": "team b", "tags": ["x"]}], "ssoSuper": ["super-account-token"]});
    let r = c
        .http
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = c
        .http
        .get(&url)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["ssoBasic"].as_array().unwrap().len(), 2);
    assert_eq!(listed["ssoSuper"].as_array().unwrap().len(), 1);
    let text = listed.to_string();
    for secret in [
        "first-account-token",
        "second-account-token",
        "super-account-token",
    ] {
        assert!(!text.contains(secret), "token leaked in {text}");
    }
    let first = listed["ssoBasic"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == shared::crypto::token_id("first-account-token"))
        .unwrap();
    assert_eq!(first["status"], "active");
    assert_eq!(first["quota"], 80);
    let second = listed["ssoBasic"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["note"] == "team b")
        .unwrap();
    // Replace semantics: keep one token by id, drop the others.
    let r = c
        .http
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"ssoSuper": [{"id": second["id"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = c
        .http
        .get(&url)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["ssoBasic"].as_array().unwrap().len(), 0);
    let kept = listed["ssoSuper"].as_array().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["note"], "team b");
    // The kept token still works upstream: it moved to the super pool and serves heavy models.
    let r = c
        .chat(
            0,
            json!({"model": "grok-4-heavy", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(c.sim.stats().await.tokens["second-account-token"].calls, 1);
    // Bad entries are 400s naming the entry.
    let r = c
        .http
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"ssoBasic": [{"id": "unknown"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["param"], "ssoBasic.0.id");
    // Nothing secret in the logs either.
    let logs = c.logs();
    assert!(
        !logs.contains("second-account-token")
            && !logs.contains(ADMIN_KEY)
            && !logs.contains(API_KEY)
    );
}
both_shapes!(admin_tokens_replace_mask_and_require_the_admin_key);
