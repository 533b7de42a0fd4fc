//! The original product's account batch endpoints: quota refresh, NSFW enable and online
//! asset clearing (each synchronous or as a batch), and the online asset count.
//!
//! Accounts are named by token (as the original does) or by the `id` the token list shows.
//! Results are keyed by token id: a raw token never appears in an answer.

use std::collections::{BTreeSet, HashSet};

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use shared::batch::AccountOp;
use shared::crypto::token_id;

use crate::admin::batch;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

/// Most accounts one request may name.
const MAX_ACCOUNTS: usize = 100_000;

/// The accounts a body names (`token`, `tokens`); all stored accounts when it names none
/// and `all_when_empty` holds.
pub(crate) async fn accounts(
    state: &AppState,
    body: &Value,
    all_when_empty: bool,
) -> Result<Vec<String>, ApiError> {
    let known: HashSet<String> = state
        .backends
        .store
        .list_tokens()
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "store error");
            ApiError::unavailable("The store is unavailable, try again shortly", 2)
        })?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut named: Vec<&Value> = Vec::new();
    if let Some(one) = body.get("token").filter(|v| !v.is_null()) {
        named.push(one);
    }
    match body.get("tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => named.extend(list),
        Some(_) => {
            return Err(ApiError::invalid(
                "tokens",
                "invalid_value",
                "tokens is a list of tokens",
            ));
        }
    }
    if named.len() > MAX_ACCOUNTS {
        return Err(ApiError::invalid(
            "tokens",
            "too_many_tokens",
            format!("At most {MAX_ACCOUNTS} tokens"),
        ));
    }
    let all_scope = body.get("scope").and_then(Value::as_str) == Some("all");
    if named.is_empty() {
        if all_when_empty || all_scope {
            let mut all: Vec<String> = known.into_iter().collect();
            all.sort();
            return Ok(all);
        }
        return Err(ApiError::invalid(
            "tokens",
            "missing_tokens",
            "Name at least one token",
        ));
    }
    let mut ids = BTreeSet::new();
    for (i, entry) in named.into_iter().enumerate() {
        let Some(text) = entry.as_str().map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(ApiError::invalid(
                format!("tokens.{i}"),
                "invalid_value",
                "A token is a non-empty string",
            ));
        };
        let text = text.strip_prefix("sso=").unwrap_or(text);
        // A stored id names its token directly; anything else is a token value.
        let id = if known.contains(text) {
            text.to_owned()
        } else {
            token_id(text)
        };
        if !known.contains(&id) {
            return Err(ApiError::invalid(
                format!("tokens.{i}"),
                "unknown_token",
                "No stored token matches",
            ));
        }
        ids.insert(id);
    }
    Ok(ids.into_iter().collect())
}

pub(crate) async fn run_sync(
    state: &AppState,
    op: AccountOp,
    ids: Vec<String>,
) -> Result<(Value, Value), ApiError> {
    if ids.is_empty() {
        return Ok((json!({"total": 0, "ok": 0, "fail": 0}), json!({})));
    }
    let started = batch::start(state, op, ids, true).await?;
    let progress = batch::wait(started).await?;
    let summary = json!({"total": progress.total, "ok": progress.ok, "fail": progress.fail});
    Ok((summary, progress.result.unwrap_or_else(|| json!({}))))
}

async fn run_async(
    state: &AppState,
    op: AccountOp,
    ids: Vec<String>,
) -> Result<Json<Value>, ApiError> {
    let started = batch::start(state, op, ids, false).await?;
    Ok(batch::accepted(&started))
}

/// `POST /v1/admin/tokens/refresh`: `results` maps each token id to whether it refreshed.
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids = accounts(&state, &body, false).await?;
    let (summary, results) = run_sync(&state, AccountOp::Refresh, ids).await?;
    let flat: serde_json::Map<String, Value> = results
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, r)| (id.clone(), json!(r["success"].as_bool().unwrap_or(false))))
        .collect();
    Ok(Json(
        json!({"status": "success", "summary": summary, "results": flat, "details": results}),
    ))
}

/// `POST /v1/admin/tokens/refresh/async`.
pub async fn refresh_async(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids = accounts(&state, &body, false).await?;
    run_async(&state, AccountOp::Refresh, ids).await
}

/// The tag a successful NSFW enable gives an account.
pub const NSFW_TAG: &str = "nsfw";

/// With `"skip_tagged": true`, leaves out the accounts already tagged [`NSFW_TAG`];
/// returns the accounts left and how many were skipped.
async fn skip_tagged(
    state: &AppState,
    body: &Value,
    ids: Vec<String>,
) -> Result<(Vec<String>, u64), ApiError> {
    match body.get("skip_tagged") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok((ids, 0)),
        Some(Value::Bool(true)) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "skip_tagged",
                "invalid_value",
                "skip_tagged must be a boolean",
            ));
        }
    }
    let tagged: HashSet<String> = state
        .backends
        .store
        .list_tokens()
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "store error");
            ApiError::unavailable("The store is unavailable, try again shortly", 2)
        })?
        .into_iter()
        .filter(|r| r.tags.iter().any(|t| t == NSFW_TAG))
        .map(|r| r.id)
        .collect();
    let before = ids.len();
    let left: Vec<String> = ids.into_iter().filter(|id| !tagged.contains(id)).collect();
    let skipped = (before - left.len()) as u64;
    Ok((left, skipped))
}

/// The answer when `skip_tagged` left nothing to do.
fn all_tagged(skipped: u64) -> Json<Value> {
    Json(json!({
        "status": "success",
        "message": "All tokens already have NSFW enabled",
        "skipped": skipped,
    }))
}

/// `POST /v1/admin/tokens/nsfw/enable`: every account when the body names none.
pub async fn nsfw_enable(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids = accounts(&state, &body, true).await?;
    let (ids, skipped) = skip_tagged(&state, &body, ids).await?;
    if ids.is_empty() && skipped > 0 {
        return Ok(all_tagged(skipped));
    }
    let (mut summary, results) = run_sync(&state, AccountOp::EnableNsfw, ids).await?;
    if skipped > 0 {
        summary["skipped"] = json!(skipped);
    }
    Ok(Json(
        json!({"status": "success", "summary": summary, "results": results}),
    ))
}

/// `POST /v1/admin/tokens/nsfw/enable/async`; `"skip_tagged": true` leaves out the accounts
/// already tagged `nsfw`.
pub async fn nsfw_enable_async(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids = accounts(&state, &body, true).await?;
    let (ids, skipped) = skip_tagged(&state, &body, ids).await?;
    if ids.is_empty() && skipped > 0 {
        return Ok(all_tagged(skipped));
    }
    let started = batch::start_skipping(&state, AccountOp::EnableNsfw, ids, false, skipped).await?;
    let mut answer = batch::accepted(&started);
    if skipped > 0 {
        answer.0["skipped"] = json!(skipped);
    }
    Ok(answer)
}

/// `POST /v1/admin/cache/online/clear`: deletes every online asset of the named accounts
/// (every account when none is named).
pub async fn online_clear(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids = accounts(&state, &body, true).await?;
    let (summary, results) = run_sync(&state, AccountOp::ClearAssets, ids).await?;
    Ok(Json(
        json!({"status": "success", "summary": summary, "results": results}),
    ))
}

/// `POST /v1/admin/cache/online/clear/async`.
pub async fn online_clear_async(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids = accounts(&state, &body, true).await?;
    run_async(&state, AccountOp::ClearAssets, ids).await
}

/// `POST /v1/admin/cache/online/load/async`: counts the online assets per account.
pub async fn online_load_async(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids = accounts(&state, &body, true).await?;
    run_async(&state, AccountOp::LoadAssets, ids).await
}
