//! The token list's filters, and the token routes beyond list/replace:
//!
//! - `PATCH /v1/admin/tokens/{id}`: edit one token's `note`, `tags`, `status`, `quota` or
//!   `pool` without posting the whole set.
//! - `POST /v1/admin/tokens/import[?pool=]`: tokens one per line (`text/plain`, or JSON
//!   `{"pool", "text"}` / `{"pool", "tokens": [...]}`) added to a pool; tokens already
//!   stored are left as they are (merge, not replace).
//! - `GET /v1/admin/tokens/export[?pool=]`: the tokens in clear, one per line. The only
//!   route that returns account tokens, admin-only and never cached.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::store::TokenRecord;

use super::tokens::{MAX_TOKENS, entry_record, store_error, sync_pool};
use crate::error::ApiError;
use crate::state::AppState;

const POOLS: [&str; 2] = ["ssoBasic", "ssoSuper"];
/// Largest import body.
const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;

fn check_pool(pool: &str, param: &str) -> Result<(), ApiError> {
    if POOLS.contains(&pool) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            param,
            "invalid_pool",
            "pool is ssoBasic or ssoSuper",
        ))
    }
}

/// Query filters of `GET /v1/admin/tokens`.
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    pool: Option<String>,
    status: Option<String>,
    tag: Option<String>,
    /// `basic` or `super` (the account type the admin page shows), the same as a pool.
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Filter {
    pub fn check(self) -> Result<Filter, ApiError> {
        if let Some(pool) = self.pool.as_deref().filter(|p| !p.is_empty()) {
            check_pool(pool, "pool")?;
        }
        if let Some(kind) = self.kind.as_deref().filter(|k| !k.is_empty())
            && !matches!(kind, "basic" | "super")
        {
            return Err(ApiError::invalid(
                "type",
                "invalid_type",
                "type is basic or super",
            ));
        }
        if let Some(status) = self.status.as_deref().filter(|s| !s.is_empty())
            && shared::pool::TokenStatus::parse(status).is_none()
        {
            return Err(ApiError::invalid(
                "status",
                "invalid_status",
                "status is active, cooling, invalid or disabled",
            ));
        }
        Ok(self)
    }

    /// Whether a token (its record and the view the list shows, with live status) passes.
    pub fn matches(&self, record: &TokenRecord, view: &Value) -> bool {
        let some = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());
        if let Some(pool) = some(&self.pool)
            && record.pool != pool
        {
            return false;
        }
        if let Some(kind) = some(&self.kind) {
            let pool = if kind == "super" {
                "ssoSuper"
            } else {
                "ssoBasic"
            };
            if record.pool != pool {
                return false;
            }
        }
        if let Some(status) = some(&self.status) {
            let wanted = shared::pool::TokenStatus::parse(&status).map(|s| s.as_str());
            if view["status"].as_str() != wanted {
                return false;
            }
        }
        if let Some(tag) = some(&self.tag)
            && !record.tags.contains(&tag)
        {
            return false;
        }
        true
    }
}

async fn stored(state: &AppState) -> Result<Vec<TokenRecord>, ApiError> {
    state
        .backends
        .store
        .list_tokens()
        .await
        .map_err(store_error)
}

async fn save(state: &AppState, records: &[TokenRecord]) -> Result<(), ApiError> {
    state
        .backends
        .store
        .replace_tokens(records)
        .await
        .map_err(store_error)?;
    sync_pool(state).await
}

fn default_quota(state: &AppState, pool: &str) -> i64 {
    let live = state.backends.live.get();
    if pool == "ssoBasic" {
        live.token.basic_quota
    } else {
        live.token.super_quota
    }
}

/// `PATCH /v1/admin/tokens/{id}`.
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::extract::JsonBody(body): crate::extract::JsonBody,
) -> Result<Json<Value>, ApiError> {
    let fields = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "invalid_body", "Body must be an object"))?;
    for key in fields.keys() {
        if !matches!(key.as_str(), "note" | "tags" | "status" | "quota" | "pool") {
            return Err(ApiError::invalid(
                key.as_str(),
                "unknown_parameter",
                "Editable fields: note, tags, status, quota, pool",
            ));
        }
    }
    let records = stored(&state).await?;
    let existing: HashMap<String, TokenRecord> =
        records.iter().map(|r| (r.id.clone(), r.clone())).collect();
    let current = existing
        .get(&id)
        .ok_or_else(|| ApiError::not_found("No stored token has this id"))?;
    let pool = match fields.get("pool") {
        Some(v) => {
            let p = v.as_str().unwrap_or("");
            check_pool(p, "pool")?;
            p.to_owned()
        }
        None => current.pool.clone(),
    };
    let mut entry = fields.clone();
    entry.remove("pool");
    entry.insert("id".into(), json!(id));
    let quota = default_quota(&state, &pool);
    let updated =
        entry_record(&Value::Object(entry), &pool, quota, &existing, "").map_err(|mut e| {
            // Name the field itself, not a list position.
            e.param = e.param.map(|p| p.trim_start_matches('.').to_owned());
            e
        })?;
    let next: Vec<TokenRecord> = records
        .into_iter()
        .map(|r| if r.id == id { updated.clone() } else { r })
        .collect();
    save(&state, &next).await?;
    // The pool counts quota down as accounts are used, and a store sync keeps the pool's
    // figure; an operator's edit is news about the account, so it goes in like a refresh.
    if fields.contains_key("quota") {
        let refresh = shared::pool::Refresh::Quota {
            remaining: updated.quota,
            total: updated.quota,
            tier: None,
            window_reset: None,
        };
        state
            .backends
            .pool
            .apply_refresh(&id, &refresh)
            .await
            .map_err(|_| ApiError::unavailable("The token pool is unavailable", 2))?;
    }
    let live = state
        .backends
        .pool
        .list()
        .await
        .ok()
        .and_then(|l| l.into_iter().find(|t| t.id == id));
    Ok(Json(json!({
        "status": "success",
        "token": super::tokens::view(&updated, live.as_ref()),
    })))
}

#[derive(Debug, Deserialize)]
pub struct PoolQuery {
    pool: Option<String>,
}

/// `POST /v1/admin/tokens/import[?pool=ssoBasic]`.
pub async fn import(
    State(state): State<AppState>,
    Query(q): Query<PoolQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if body.len() > MAX_IMPORT_BYTES {
        return Err(ApiError::invalid(
            "body",
            "body_too_large",
            format!("At most {MAX_IMPORT_BYTES} bytes per import"),
        ));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    let (pool, lines): (String, Vec<String>) = if is_json {
        let v = crate::extract::parse(&body)?;
        let pool = v
            .get("pool")
            .and_then(Value::as_str)
            .or(q.pool.as_deref())
            .unwrap_or("ssoBasic")
            .to_owned();
        let lines = match (v.get("text"), v.get("tokens")) {
            (Some(Value::String(text)), _) => text.lines().map(str::to_owned).collect(),
            (_, Some(Value::Array(list))) => list
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::invalid("tokens", "invalid_value", "tokens is a list of strings")
                })?,
            _ => {
                return Err(ApiError::invalid(
                    "text",
                    "missing_tokens",
                    "Send the tokens as text (one per line) or as a tokens list",
                ));
            }
        };
        (pool, lines)
    } else {
        let text = std::str::from_utf8(&body).map_err(|_| {
            ApiError::invalid("body", "invalid_body", "The token list must be UTF-8 text")
        })?;
        (
            q.pool.clone().unwrap_or_else(|| "ssoBasic".into()),
            text.lines().map(str::to_owned).collect(),
        )
    };
    check_pool(&pool, "pool")?;
    let records = stored(&state).await?;
    let existing: HashMap<String, TokenRecord> =
        records.iter().map(|r| (r.id.clone(), r.clone())).collect();
    let quota = default_quota(&state, &pool);
    let mut added: BTreeMap<String, TokenRecord> = BTreeMap::new();
    let mut skipped = 0usize;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("lines.{}", i + 1);
        let record = entry_record(&json!(line), &pool, quota, &HashMap::new(), &at)
            .map_err(|e| e.with_param(at.clone()))?;
        if existing.contains_key(&record.id) || added.contains_key(&record.id) {
            skipped += 1;
            continue;
        }
        added.insert(record.id.clone(), record);
    }
    if records.len() + added.len() > MAX_TOKENS {
        return Err(ApiError::invalid(
            "body",
            "too_many_tokens",
            format!("At most {MAX_TOKENS} tokens"),
        ));
    }
    let count = added.len();
    if count > 0 {
        let mut next = records;
        next.extend(added.into_values());
        save(&state, &next).await?;
    }
    tracing::info!(pool = %pool, added = count, skipped, "tokens imported");
    Ok(Json(json!({
        "status": "success",
        "pool": pool,
        "added": count,
        "skipped": skipped,
    })))
}

/// `GET /v1/admin/tokens/export[?pool=]`.
pub async fn export(
    State(state): State<AppState>,
    Query(q): Query<PoolQuery>,
) -> Result<Response, ApiError> {
    let pool = q.pool.filter(|p| !p.is_empty());
    if let Some(p) = &pool {
        check_pool(p, "pool")?;
    }
    let records = stored(&state).await?;
    let mut text = String::new();
    for r in records
        .iter()
        .filter(|r| pool.as_deref().is_none_or(|p| r.pool == p))
    {
        text.push_str(r.token.expose());
        text.push('\n');
    }
    tracing::info!(pool = pool.as_deref().unwrap_or("all"), "tokens exported");
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"tokens.txt\""),
    );
    Ok(response)
}
