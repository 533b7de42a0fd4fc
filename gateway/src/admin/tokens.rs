//! `GET/POST /v1/admin/tokens`, compatible with the original product: tokens grouped by pool
//! (`ssoBasic`, `ssoSuper`), and POST replaces the whole set.
//!
//! One deliberate difference: account tokens never leave the server. GET shows each token
//! masked, with its `id` (SHA-256 of the token); a POST may name an existing token by that
//! `id` instead of repeating the token itself.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use shared::Secret;
use shared::crypto::token_id;
use shared::pool::{TokenState, TokenStatus};
use shared::store::TokenRecord;
use shared::time::now_ms;

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

const MAX_NOTE_CHARS: usize = 200;
pub(crate) const MAX_TOKENS: usize = 100_000;

/// `GET /v1/admin/tokens[?pool=&status=&tag=&type=]`; filters combine (all must match).
pub async fn list(
    State(state): State<AppState>,
    axum::extract::Query(filter): axum::extract::Query<super::token_tools::Filter>,
) -> Result<Json<Value>, ApiError> {
    let filter = filter.check()?;
    let records = state
        .backends
        .store
        .list_tokens()
        .await
        .map_err(store_error)?;
    let live: HashMap<String, TokenState> = match state.backends.pool.list().await {
        Ok(list) => list.into_iter().map(|t| (t.id.clone(), t)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "token pool unavailable; showing stored state");
            HashMap::new()
        }
    };
    let mut pools: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pool in ["ssoBasic", "ssoSuper"] {
        pools.insert(pool.into(), vec![]);
    }
    for r in records {
        let view = view(&r, live.get(&r.id));
        if !filter.matches(&r, &view) {
            continue;
        }
        pools.entry(r.pool.clone()).or_default().push(view);
    }
    Ok(Json(json!(pools)))
}

/// One token as the admin API shows it: masked, with live pool state where known.
pub(crate) fn view(r: &TokenRecord, live: Option<&TokenState>) -> Value {
    let (status, quota, use_count, fail_count, last_used) = match live {
        Some(t) => (
            t.status,
            t.quota,
            r.use_count.max(t.use_count as i64),
            t.fail_count as i64,
            (t.last_used_ms > 0)
                .then_some(t.last_used_ms)
                .or(r.last_used_at_ms),
        ),
        None => (
            r.status,
            r.quota,
            r.use_count,
            r.fail_count,
            r.last_used_at_ms,
        ),
    };
    json!({
        "id": r.id,
        "token": r.token.masked(),
        "status": status.as_str(),
        "quota": quota,
        "created_at": r.created_at_ms,
        "last_used_at": last_used,
        "use_count": use_count,
        "fail_count": fail_count,
        "last_fail_reason": r.last_fail_reason,
        "last_sync_at": r.last_sync_at_ms,
        "tags": r.tags,
        "note": r.note,
        "cooling_until": live.map(|t| t.cooling_until_ms).filter(|ms| *ms > 0),
        "in_flight": live.map(|t| t.in_flight).unwrap_or(0),
    })
}

pub async fn replace(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let pools = body.as_object().ok_or_else(|| {
        ApiError::invalid(
            "body",
            "invalid_body",
            "Body must be an object of pool name to token list",
        )
    })?;
    let existing: HashMap<String, TokenRecord> = state
        .backends
        .store
        .list_tokens()
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let live = state.backends.live.get();
    let defaults = &live.token;
    let mut next: BTreeMap<String, TokenRecord> = BTreeMap::new();
    for (pool, entries) in pools {
        if pool.is_empty() || pool.len() > 64 {
            return Err(ApiError::invalid(
                "body",
                "invalid_pool",
                "Pool names are 1 to 64 characters",
            ));
        }
        let entries = entries.as_array().ok_or_else(|| {
            ApiError::invalid(
                pool.as_str(),
                "invalid_value",
                "Each pool must be a list of tokens",
            )
        })?;
        let default_quota = if pool == "ssoBasic" {
            defaults.basic_quota
        } else {
            defaults.super_quota
        };
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{pool}.{i}");
            let record = entry_record(entry, pool, default_quota, &existing, &at)?;
            next.insert(record.id.clone(), record);
        }
    }
    if next.len() > MAX_TOKENS {
        return Err(ApiError::invalid(
            "body",
            "too_many_tokens",
            format!("At most {MAX_TOKENS} tokens"),
        ));
    }
    let records: Vec<TokenRecord> = next.into_values().collect();
    state
        .backends
        .store
        .replace_tokens(&records)
        .await
        .map_err(store_error)?;
    sync_pool(&state).await?;
    tracing::info!(count = records.len(), "token set replaced");
    Ok(Json(
        json!({"status": "success", "message": "Tokens updated", "count": records.len()}),
    ))
}

/// Pushes the stored token set into the live pool.
pub(crate) async fn sync_pool(state: &AppState) -> Result<(), ApiError> {
    scheduler::sync_pool_from_store(&state.backends).await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "token pool sync failed");
        ApiError::unavailable("Tokens were saved but the live pool could not be updated; it catches up on its own", 5)
    })
}

/// Builds the record for one posted entry: a token string, or an object with `token` or
/// `id` plus optional fields.
pub(crate) fn entry_record(
    entry: &Value,
    pool: &str,
    default_quota: i64,
    existing: &HashMap<String, TokenRecord>,
    at: &str,
) -> Result<TokenRecord, ApiError> {
    let empty = Map::new();
    let (raw, fields) = match entry {
        Value::String(s) => (Some(s.as_str()), &empty),
        Value::Object(o) => (o.get("token").and_then(Value::as_str), o),
        _ => {
            return Err(ApiError::invalid(
                at,
                "invalid_value",
                "A token entry is a string or an object",
            ));
        }
    };
    let token = raw
        .map(normalize)
        .filter(|t| !t.is_empty() && !t.contains('…'));
    let id = match (&token, fields.get("id").and_then(Value::as_str)) {
        (Some(t), _) => token_id(t),
        (None, Some(id)) if existing.contains_key(id) => id.to_owned(),
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                format!("{at}.id"),
                "unknown_token",
                "No stored token has this id",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                format!("{at}.token"),
                "missing_token",
                "Each entry needs a token or the id of a stored one",
            ));
        }
    };
    if let Some(t) = &token
        && (t.len() > 8192
            || t.chars()
                .any(|c| c.is_control() || c == ';' || c.is_whitespace()))
    {
        return Err(ApiError::invalid(
            format!("{at}.token"),
            "invalid_token",
            "Tokens are single cookie values",
        ));
    }
    let mut record = match existing.get(&id) {
        Some(r) => r.clone(),
        None => TokenRecord {
            id: id.clone(),
            token: Secret::new(token.clone().unwrap_or_default()),
            pool: pool.to_owned(),
            status: TokenStatus::Active,
            quota: default_quota,
            tags: vec![],
            note: String::new(),
            created_at_ms: now_ms(),
            last_used_at_ms: None,
            use_count: 0,
            fail_count: 0,
            last_fail_reason: None,
            last_sync_at_ms: None,
        },
    };
    record.pool = pool.to_owned();
    if let Some(v) = fields.get("status").filter(|v| !v.is_null()) {
        record.status = v.as_str().and_then(TokenStatus::parse).ok_or_else(|| {
            ApiError::invalid(
                format!("{at}.status"),
                "invalid_status",
                "status is active, cooling, invalid or disabled",
            )
        })?;
    }
    if let Some(v) = fields.get("quota").filter(|v| !v.is_null()) {
        record.quota = v
            .as_i64()
            .filter(|q| (0..=1_000_000).contains(q))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("{at}.quota"),
                    "invalid_quota",
                    "quota is a whole number from 0 to 1000000",
                )
            })?;
    }
    if let Some(v) = fields.get("note").filter(|v| !v.is_null()) {
        let note = v.as_str().ok_or_else(|| {
            ApiError::invalid(format!("{at}.note"), "invalid_note", "note is a string")
        })?;
        record.note = note.chars().take(MAX_NOTE_CHARS).collect();
    }
    if let Some(v) = fields.get("tags").filter(|v| !v.is_null()) {
        let tags = v.as_array().ok_or_else(|| {
            ApiError::invalid(
                format!("{at}.tags"),
                "invalid_tags",
                "tags is a list of strings",
            )
        })?;
        record.tags = tags
            .iter()
            .filter_map(Value::as_str)
            .map(|t| t.chars().take(64).collect())
            .take(32)
            .collect();
    }
    Ok(record)
}

/// Strips the `sso=` cookie prefix and whitespace that pasted tokens often carry.
fn normalize(raw: &str) -> String {
    let t = raw.trim();
    t.strip_prefix("sso=").unwrap_or(t).trim().to_owned()
}

pub(crate) fn store_error(e: shared::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::unavailable("The store is unavailable, try again shortly", 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_accept_strings_objects_and_ids() {
        let existing = HashMap::new();
        let r = entry_record(&json!(" sso=abc.def "), "ssoBasic", 80, &existing, "p.0").unwrap();
        assert_eq!(r.token.expose(), "abc.def");
        assert_eq!(r.id, token_id("abc.def"));
        assert_eq!((r.quota, r.status), (80, TokenStatus::Active));
        let r2 = entry_record(
            &json!({"token": "abc.def", "note": "n", "quota": 5, "status": "expired"}),
            "ssoSuper",
            140,
            &existing,
            "p.0",
        )
        .unwrap();
        assert_eq!(
            (r2.quota, r2.status, r2.note.as_str(), r2.pool.as_str()),
            (5, TokenStatus::Invalid, "n", "ssoSuper")
        );
        let existing = HashMap::from([(r.id.clone(), r.clone())]);
        let kept = entry_record(
            &json!({"id": r.id, "token": "abc…def"}),
            "ssoSuper",
            140,
            &existing,
            "p.0",
        )
        .unwrap();
        assert_eq!(kept.token.expose(), "abc.def");
        assert_eq!(kept.pool, "ssoSuper");
        let e = entry_record(
            &json!({"id": "nope"}),
            "ssoBasic",
            80,
            &existing,
            "ssoBasic.3",
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("ssoBasic.3.id"));
        assert!(entry_record(&json!("a b"), "ssoBasic", 80, &existing, "p").is_err());
        assert!(
            entry_record(
                &json!({"token": "x", "quota": -1}),
                "ssoBasic",
                80,
                &existing,
                "p"
            )
            .is_err()
        );
    }
}
