//! Token filters, per-token edits, import (merge) and export on both shapes, plus a
//! refresh of every account.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, Cluster, Shape};

/// `GET /v1/admin/tokens?<query>`, flattened over pools.
async fn listed(c: &Cluster, query: &str) -> (u16, Vec<Value>) {
    let r = c
        .http
        .get(c.url(&format!("/v1/admin/tokens?{query}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    if status != 200 {
        return (status, vec![body]);
    }
    let all = body
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap().clone())
        .collect();
    (status, all)
}

async fn export(c: &Cluster, query: &str) -> BTreeSet<String> {
    let r = c
        .http
        .get(c.url(&format!("/v1/admin/tokens/export?{query}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    r.text().await.unwrap().lines().map(str::to_owned).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn admin_tokens_filter_edit_import_export(shape: Shape) {
    let c = Cluster::start(shape, "admin-tokens-io").await;
    c.set_tokens(&["io-basic-a", "io-basic-b"], &["io-super-s"])
        .await;

    // Import merges: new tokens are added to the pool, known ones are left alone.
    let r = c
        .http
        .post(c.url("/v1/admin/tokens/import?pool=ssoSuper"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/plain")
        .body("sso=io-super-c\n\n# a comment\nio-basic-a\n  io-super-d  \nio-super-c\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let imported: Value = r.json().await.unwrap();
    assert_eq!(
        (imported["added"].clone(), imported["skipped"].clone()),
        (json!(2), json!(2))
    );
    let r = c
        .http
        .post(c.url("/v1/admin/tokens/import"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"pool": "ssoBasic", "tokens": ["io-basic-e"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["added"], 1);
    for (body, param) in [("bad token with spaces", "lines.1")] {
        let r = c
            .http
            .post(c.url("/v1/admin/tokens/import?pool=ssoBasic"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], param);
    }
    let r = c
        .http
        .post(c.url("/v1/admin/tokens/import?pool=ssoNope"))
        .bearer_auth(ADMIN_KEY)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Export: the tokens in clear, per pool, admin only.
    assert_eq!(
        export(&c, "pool=ssoSuper").await,
        set(&["io-super-s", "io-super-c", "io-super-d"])
    );
    assert_eq!(
        export(&c, "").await,
        set(&[
            "io-basic-a",
            "io-basic-b",
            "io-basic-e",
            "io-super-s",
            "io-super-c",
            "io-super-d"
        ])
    );
    let r = c
        .http
        .get(c.url("/v1/admin/tokens/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Filters.
    let (_, all) = listed(&c, "").await;
    assert_eq!(all.len(), 6);
    assert!(
        !json!(all).to_string().contains("io-super-c"),
        "tokens leaked"
    );
    assert_eq!(listed(&c, "pool=ssoSuper").await.1.len(), 3);
    assert_eq!(listed(&c, "type=basic").await.1.len(), 3);
    assert_eq!(listed(&c, "status=active").await.1.len(), 6);
    assert_eq!(listed(&c, "status=invalid").await.1.len(), 0);
    for bad in ["pool=nope", "type=gold", "status=sleepy"] {
        assert_eq!(listed(&c, bad).await.0, 400, "{bad}");
    }

    // Per-token edit by id: tags and note, then a move to another pool.
    let id = shared::crypto::token_id("io-super-c");
    let patch = |body: Value, id: String| {
        c.http
            .patch(c.url(&format!("/v1/admin/tokens/{id}")))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let r = patch(
        json!({"tags": ["vip", "nsfw"], "note": "team c"}),
        id.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let edited: Value = r.json().await.unwrap();
    assert_eq!(edited["token"]["note"], "team c");
    let (_, vip) = listed(&c, "tag=vip").await;
    assert_eq!(vip.len(), 1);
    assert_eq!(vip[0]["id"], id.as_str());
    assert_eq!(vip[0]["tags"], json!(["vip", "nsfw"]));
    let r = patch(json!({"pool": "ssoBasic"}), id.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, basic) = listed(&c, "pool=ssoBasic&tag=vip").await;
    assert_eq!(basic.len(), 1);
    assert_eq!(basic[0]["note"], "team c");
    assert_eq!(
        patch(json!({"note": "x"}), "0".repeat(64))
            .await
            .unwrap()
            .status(),
        404
    );
    let r = patch(json!({"colour": "red"}), id.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    // A quota edit is the live figure at once, not only the stored one.
    let r = patch(json!({"quota": 7}), id.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, vip) = listed(&c, "tag=vip").await;
    assert_eq!(vip[0]["quota"], 7);
    let r = patch(json!({"quota": -5}), id.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "quota");
    // Nothing else moved.
    assert_eq!(listed(&c, "").await.1.len(), 6);

    // Refresh all accounts.
    let r = c
        .http
        .post(c.url("/v1/admin/tokens/refresh"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"scope": "all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refreshed: Value = r.json().await.unwrap();
    assert_eq!(refreshed["summary"]["total"], 6, "{refreshed}");
    assert_eq!(refreshed["results"].as_object().unwrap().len(), 6);
}

both_shapes!(admin_tokens_filter_edit_import_export);
