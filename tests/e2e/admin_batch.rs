//! The admin account batches (quota refresh, NSFW enable, online asset clearing), sync and
//! async, with progress streamed over SSE, on both shapes. In the distributed shape the
//! batch is started on one gateway and streamed from the other.

use serde_json::{Value, json};
use shared::crypto::token_id;

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, API_KEY, Cluster, Shape, sse_data};

const A: &str = "basic-batch-a-assets-4";
const B: &str = "basic-batch-b";
const C: &str = "super-batch-c";

async fn post(c: &Cluster, gateway: usize, path: &str, body: Value) -> (u16, Value) {
    let r = c
        .http
        .post(c.url_at(gateway, path))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    for secret in [A, B, C] {
        assert!(!text.contains(secret), "a raw token leaked: {text}");
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn accounts(c: &Cluster) -> Value {
    c.http
        .get(format!("{}/sim/accounts", c.sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Streams a batch's progress from `gateway` until its final event.
async fn follow(c: &Cluster, gateway: usize, task_id: &str) -> Vec<Value> {
    let r = c
        .http
        .get(c.url_at(gateway, &format!("/v1/admin/batch/{task_id}/stream")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sse_data(r)
        .await
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

async fn admin_batches_refresh_enable_nsfw_and_clear_assets(shape: Shape) {
    let c = Cluster::start(shape, "admin-batch").await;
    c.set_tokens(&[A, B], &[C]).await;
    let (a, b, cc) = (token_id(A), token_id(B), token_id(C));

    // Bad input: nothing named, an unknown token, no admin key.
    let (status, body) = post(&c, 0, "/v1/admin/tokens/refresh", json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &c,
        0,
        "/v1/admin/tokens/refresh",
        json!({"tokens": ["nope"]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("tokens.0"))
    );
    let r = c
        .http
        .post(c.url("/v1/admin/tokens/refresh"))
        .bearer_auth(API_KEY)
        .json(&json!({"token": A}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Synchronous refresh, naming one account by token and one by id.
    let (status, body) = post(
        &c,
        0,
        "/v1/admin/tokens/refresh",
        json!({"token": A, "tokens": [cc]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][&a], true, "{body}");
    assert_eq!(body["results"][&cc], true, "{body}");
    assert_eq!(body["details"][&cc]["tier"], "super", "{body}");
    let sim = accounts(&c).await;
    assert_eq!(sim[A]["rate_limit_calls"], 2, "{sim}");
    assert_eq!(sim[C]["rate_limit_calls"], 2, "{sim}");
    assert!(sim.get(B).is_none(), "B was not named: {sim}");

    // NSFW for every account: both terms calls, the birth date, the feature control.
    let (status, body) = post(&c, 0, "/v1/admin/tokens/nsfw/enable", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["summary"],
        json!({"total": 3, "ok": 3, "fail": 0}),
        "{body}"
    );
    let sim = accounts(&c).await;
    for t in [A, B, C] {
        let acc = &sim[t];
        assert_eq!(acc["nsfw_enabled"], true, "{sim}");
        assert_eq!(
            (
                acc["tos_grpc_calls"].as_u64(),
                acc["tos_rest_calls"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert!(acc["birth_date"].is_string(), "{sim}");
    }

    // Online assets of A: listed and deleted.
    let (status, body) = post(
        &c,
        0,
        "/v1/admin/cache/online/clear",
        json!({"tokens": [A]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][&a]["result"],
        json!({"total": 4, "success": 4, "failed": 0})
    );
    let sim = accounts(&c).await;
    assert_eq!(sim[A]["assets"], json!([]));
    assert_eq!(sim[A]["asset_delete_calls"], 4);

    // The async variants: started on gateway 0, followed on gateway 1.
    let (status, started) = post(
        &c,
        0,
        "/v1/admin/tokens/refresh/async",
        json!({"tokens": [B]}),
    )
    .await;
    assert_eq!(
        (status, started["total"].as_u64()),
        (200, Some(1)),
        "{started}"
    );
    let events = follow(&c, 1, started["task_id"].as_str().unwrap()).await;
    assert_eq!(events[0]["type"], "snapshot", "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "done", "{events:?}");
    assert_eq!(last["result"]["results"][&b]["success"], true, "{events:?}");
    assert_eq!(accounts(&c).await[B]["rate_limit_calls"], 2);

    let (_, started) = post(
        &c,
        0,
        "/v1/admin/cache/online/clear/async",
        json!({"tokens": [B, C]}),
    )
    .await;
    let events = follow(&c, 1, started["task_id"].as_str().unwrap()).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["ok"].as_u64()),
        (Some("done"), Some(2)),
        "{events:?}"
    );
    let sim = accounts(&c).await;
    assert_eq!(
        (sim[B]["assets"].clone(), sim[C]["assets"].clone()),
        (json!([]), json!([]))
    );

    let (_, started) = post(
        &c,
        0,
        "/v1/admin/tokens/nsfw/enable/async",
        json!({"tokens": [B]}),
    )
    .await;
    let events = follow(&c, 1, started["task_id"].as_str().unwrap()).await;
    assert_eq!(events.last().unwrap()["type"], "done", "{events:?}");
    // A finished batch still answers a late subscriber: snapshot, then the final event.
    let late = follow(&c, 0, started["task_id"].as_str().unwrap()).await;
    assert_eq!(late.len(), 2, "{late:?}");
    assert_eq!(
        (late[0]["type"].as_str(), late[1]["type"].as_str()),
        (Some("snapshot"), Some("done"))
    );

    let (_, started) = post(
        &c,
        0,
        "/v1/admin/cache/online/load/async",
        json!({"scope": "all"}),
    )
    .await;
    let events = follow(&c, 1, started["task_id"].as_str().unwrap()).await;
    let last = events.last().unwrap();
    assert_eq!(last["result"]["results"][&b]["count"], 0, "{events:?}");

    // Unknown batches.
    let unknown = uuid::Uuid::new_v4();
    let r = c
        .http
        .get(c.url(&format!("/v1/admin/batch/{unknown}/stream")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) = post(
        &c,
        1,
        &format!("/v1/admin/batch/{unknown}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
}
both_shapes!(admin_batches_refresh_enable_nsfw_and_clear_assets);

/// A successful NSFW enable tags the account `nsfw` in the store (visible in the token
/// list); `"skip_tagged": true` leaves tagged accounts out and says so in the summary, and
/// answers at once when every account is tagged.
async fn nsfw_enable_tags_accounts_and_skips_tagged_ones(shape: Shape) {
    const T1: &str = "basic-nsfw-tag-1";
    const T2: &str = "basic-nsfw-tag-2";
    let c = Cluster::start(shape, "nsfw-tags").await;
    c.set_tokens(&[T1, T2], &[]).await;
    let (t1, t2) = (token_id(T1), token_id(T2));
    let tags = |tokens: &[Value], id: &str| -> Vec<String> {
        let t = tokens.iter().find(|t| t["id"] == id).expect("listed");
        serde_json::from_value(t["tags"].clone()).unwrap()
    };

    let (status, body) = post(
        &c,
        0,
        "/v1/admin/tokens/nsfw/enable",
        json!({"tokens": [T1]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][&t1]["success"], true, "{body}");
    let listed = c.tokens().await;
    assert_eq!(tags(&listed, &t1), ["nsfw"]);
    assert!(tags(&listed, &t2).is_empty());

    let (status, body) = post(
        &c,
        0,
        "/v1/admin/tokens/nsfw/enable/async",
        json!({"skip_tagged": "yes"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("skip_tagged"))
    );

    let (status, started) = post(
        &c,
        0,
        "/v1/admin/tokens/nsfw/enable/async",
        json!({"skip_tagged": true}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        (started["total"].as_u64(), started["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{started}"
    );
    let events = follow(&c, 1, started["task_id"].as_str().unwrap()).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "done", "{events:?}");
    assert_eq!(
        last["result"]["summary"],
        json!({"total": 1, "ok": 1, "fail": 0, "skipped": 1}),
        "{last}"
    );
    assert!(last["result"]["results"].get(&t1).is_none(), "{last}");
    assert_eq!(last["result"]["results"][&t2]["success"], true, "{last}");
    // The skipped account got no second round of calls.
    let sim = accounts(&c).await;
    assert_eq!(sim[T1]["tos_grpc_calls"], 1, "{sim}");
    assert_eq!(sim[T2]["nsfw_enabled"], true, "{sim}");
    let listed = c.tokens().await;
    assert_eq!(tags(&listed, &t2), ["nsfw"]);

    let (status, body) = post(
        &c,
        1,
        "/v1/admin/tokens/nsfw/enable/async",
        json!({"skip_tagged": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "success", "message": "All tokens already have NSFW enabled", "skipped": 2})
    );
}
both_shapes!(nsfw_enable_tags_accounts_and_skips_tagged_ones);

/// A batch started on one gateway is cancelled through the other, and both gateways serve
/// its end to late subscribers (snapshot, then the final event), from state kept in the
/// event bus rather than in either gateway.
async fn batch_cancel_and_late_subscribe_through_another_gateway(shape: Shape) {
    let c = Cluster::start(shape, "batch-cancel").await;
    // Enough accounts that the batch is still running when the cancel arrives.
    let tokens: Vec<String> = (0..200).map(|i| format!("basic-cancel-{i}")).collect();
    c.post_tokens(json!({"ssoBasic": tokens})).await;
    let (status, started) = post(&c, 0, "/v1/admin/tokens/nsfw/enable/async", json!({})).await;
    assert_eq!(status, 200, "{started}");
    let task = started["task_id"].as_str().unwrap().to_owned();
    let (status, body) = post(&c, 1, &format!("/v1/admin/batch/{task}/cancel"), json!({})).await;
    assert_eq!((status, body), (200, json!({"status": "success"})));

    let events = follow(&c, 0, &task).await;
    assert_eq!(events[0]["type"], "snapshot", "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "cancelled", "{last}");
    assert_eq!(last["status"], "cancelled", "{last}");
    let processed = last["processed"].as_u64().unwrap();
    assert!(processed < 200, "{last}");
    // Accounts not started were skipped: the simulator saw at most the processed ones.
    let sim = accounts(&c).await;
    let enabled = sim
        .as_object()
        .unwrap()
        .values()
        .filter(|a| a["nsfw_enabled"] == true)
        .count() as u64;
    assert!(enabled <= processed, "{enabled} > {processed}");

    for gateway in [1, 0] {
        let late = follow(&c, gateway, &task).await;
        assert_eq!(late.len(), 2, "{late:?}");
        assert_eq!(
            (late[0]["type"].as_str(), late[1]["type"].as_str()),
            (Some("snapshot"), Some("cancelled")),
            "{late:?}"
        );
        assert_eq!(late[1]["processed"], processed, "{late:?}");
    }
    // Cancelling a finished batch is harmless.
    let (status, _) = post(&c, 1, &format!("/v1/admin/batch/{task}/cancel"), json!({})).await;
    assert_eq!(status, 200);
}
both_shapes!(batch_cancel_and_late_subscribe_through_another_gateway);
