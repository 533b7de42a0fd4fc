//! `/v1/admin/keys`: named client API keys.
//!
//! - `POST /v1/admin/keys` `{"name", "models"?: [...], "rate_limit_per_minute"?: n}` creates
//!   a key and returns it once, in `key`; only its prefix and SHA-256 are stored.
//! - `GET /v1/admin/keys` lists keys (prefix, name, allowlist, limit, usage, dates).
//! - `PATCH /v1/admin/keys/{id}` changes `name`, `models`, `rate_limit_per_minute`,
//!   `enabled`; `DELETE /v1/admin/keys/{id}` revokes a key.
//!
//! Changes reach every gateway within the key cache's TTL (`crate::client_keys`).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use shared::store::{ClientKeyRecord, ClientKeyUpdate};
use shared::time::now_ms;

use crate::client_keys;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

const MAX_NAME_CHARS: usize = 64;
const MAX_MODELS: usize = 64;
const MAX_RATE_PER_MINUTE: i64 = 1_000_000;
/// Keys one deployment may hold (each is a row read on every list).
const MAX_KEYS: usize = 10_000;

/// A key as the admin API shows it: never the key itself.
fn view(r: &ClientKeyRecord) -> Value {
    json!({
        "id": r.id,
        "prefix": r.prefix,
        "name": r.name,
        "models": r.models,
        "rate_limit_per_minute": r.rate_limit_per_minute,
        "enabled": r.enabled,
        "request_count": r.request_count,
        "created_at": r.created_at_ms,
        "last_used_at": r.last_used_at_ms,
    })
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let keys = state
        .backends
        .store
        .list_client_keys()
        .await
        .map_err(store_error)?;
    Ok(Json(json!({
        "status": "success",
        "items": keys.iter().map(view).collect::<Vec<_>>(),
    })))
}

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let update = parse_update(&body, true)?;
    let store = &state.backends.store;
    if store.list_client_keys().await.map_err(store_error)?.len() >= MAX_KEYS {
        return Err(ApiError::invalid(
            "body",
            "too_many_keys",
            format!("At most {MAX_KEYS} keys"),
        ));
    }
    let new = client_keys::generate();
    let record = ClientKeyRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        prefix: new.prefix.clone(),
        key_sha256: new.sha256,
        name: update.name.unwrap_or_default(),
        models: update.models.unwrap_or_default(),
        rate_limit_per_minute: update.rate_limit_per_minute.unwrap_or(0),
        enabled: update.enabled.unwrap_or(true),
        request_count: 0,
        created_at_ms: now_ms(),
        last_used_at_ms: None,
    };
    store
        .create_client_key(&record)
        .await
        .map_err(store_error)?;
    state.client_keys.forget(&record.prefix);
    tracing::info!(id = %record.id, prefix = %record.prefix, "client key created");
    Ok(Json(json!({
        "status": "success",
        "key": new.key,
        "item": view(&record),
    })))
}

pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let update = parse_update(&body, false)?;
    let record = state
        .backends
        .store
        .update_client_key(&id, &update)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("No key has this id"))?;
    state.client_keys.forget(&record.prefix);
    tracing::info!(id = %record.id, "client key changed");
    Ok(Json(json!({"status": "success", "item": view(&record)})))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = &state.backends.store;
    let prefix = store
        .list_client_keys()
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|k| k.id == id)
        .map(|k| k.prefix);
    if !store.delete_client_key(&id).await.map_err(store_error)? {
        return Err(ApiError::not_found("No key has this id"));
    }
    if let Some(prefix) = prefix {
        state.client_keys.forget(&prefix);
    }
    tracing::info!(id = %id, "client key revoked");
    Ok(Json(json!({"status": "success"})))
}

/// Reads the settable fields; `creating` requires a name.
fn parse_update(body: &Value, creating: bool) -> Result<ClientKeyUpdate, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "invalid_body", "Body must be an object"))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "name" | "models" | "rate_limit_per_minute" | "enabled"
        ) {
            return Err(ApiError::invalid(
                key.as_str(),
                "unknown_parameter",
                format!(
                    "Unknown field `{}`",
                    key.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    let mut update = ClientKeyUpdate::default();
    match obj.get("name") {
        Some(Value::String(name))
            if !name.trim().is_empty() && name.chars().count() <= MAX_NAME_CHARS =>
        {
            update.name = Some(name.trim().to_owned());
        }
        None if !creating => {}
        _ => {
            return Err(ApiError::invalid(
                "name",
                "invalid_name",
                format!("name is a string of 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
    }
    match obj.get("models") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.len() <= MAX_MODELS => {
            let mut models = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                match m.as_str().and_then(shared::models::find) {
                    Some(spec) => models.push(spec.id.to_owned()),
                    None => {
                        return Err(ApiError::invalid(
                            format!("models.{i}"),
                            "model_not_found",
                            "Each entry must be a model id of GET /v1/models",
                        ));
                    }
                }
            }
            models.dedup();
            update.models = Some(models);
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "models",
                "invalid_models",
                format!("models is a list of at most {MAX_MODELS} model ids (empty: all)"),
            ));
        }
    }
    match obj.get("rate_limit_per_minute") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let n = v
                .as_i64()
                .filter(|n| (0..=MAX_RATE_PER_MINUTE).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "rate_limit_per_minute",
                        "invalid_rate_limit",
                        format!(
                            "rate_limit_per_minute is a whole number from 0 (no limit) to {MAX_RATE_PER_MINUTE}"
                        ),
                    )
                })?;
            update.rate_limit_per_minute = Some(n);
        }
    }
    match obj.get("enabled") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => update.enabled = Some(*b),
        Some(_) => {
            return Err(ApiError::invalid(
                "enabled",
                "invalid_value",
                "enabled is true or false",
            ));
        }
    }
    Ok(update)
}

fn store_error(e: shared::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::unavailable("The store is unavailable, try again shortly", 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_checked_field_by_field() {
        let u = parse_update(
            &json!({"name": " ci ", "models": ["grok-4"], "rate_limit_per_minute": 5}),
            true,
        )
        .unwrap();
        assert_eq!(u.name.as_deref(), Some("ci"));
        assert_eq!(u.models, Some(vec!["grok-4".to_owned()]));
        assert_eq!(u.rate_limit_per_minute, Some(5));
        for (body, param) in [
            (json!({}), "name"),
            (json!({"name": "x", "models": ["nope"]}), "models.0"),
            (
                json!({"name": "x", "rate_limit_per_minute": -1}),
                "rate_limit_per_minute",
            ),
            (json!({"name": "x", "color": 1}), "color"),
        ] {
            assert_eq!(
                parse_update(&body, true).unwrap_err().param.as_deref(),
                Some(param),
                "{body}"
            );
        }
        assert!(parse_update(&json!({"enabled": false}), false).is_ok());
    }
}
