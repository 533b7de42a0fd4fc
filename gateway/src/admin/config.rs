//! `GET/POST /v1/admin/config` and `GET /v1/admin/storage`.
//!
//! GET answers the effective configuration of this process (loaded configuration plus the
//! stored overrides), with every secret shown as `"***"` (empty secrets as `""`). POST
//! deep-merges a partial configuration into the stored overrides: only the keys in
//! `shared::settings::LIVE_KEYS` may change, unchanged values of other keys and `"***"` /
//! `"********"` for a secret are accepted and ignored, and anything else is a 400 naming the
//! key. The overrides live in the Store, and every process picks them up within about a
//! second (`shared::settings`).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use shared::settings::{OVERRIDES_SETTING, Overrides};

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

pub async fn get(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Read the store first, so this answer shows a change made through another replica
    // even before this process's poll picks it up.
    state
        .backends
        .live
        .refresh(state.backends.store.as_ref())
        .await
        .map_err(store_error)?;
    let config = state.backends.live.get();
    Ok(Json(
        serde_json::to_value(config.as_ref()).map_err(|_| ApiError::internal())?,
    ))
}

pub async fn update(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let store = state.backends.store.as_ref();
    let current = match store
        .get_setting(OVERRIDES_SETTING)
        .await
        .map_err(store_error)?
    {
        Some(raw) => Overrides::parse(&raw).map_err(|e| {
            tracing::error!(error = %e, "stored overrides unreadable");
            ApiError::internal()
        })?,
        None => Overrides::default(),
    };
    let live = &state.backends.live;
    let next = current
        .merge(live.base(), &body)
        .map_err(|e| ApiError::invalid(e.key.clone(), "invalid_config", e.to_string()))?;
    let raw = next.to_json();
    store
        .put_setting(OVERRIDES_SETTING, &raw)
        .await
        .map_err(store_error)?;
    live.apply_raw(Some(&raw));
    tracing::info!(version = next.version, "configuration updated");
    Ok(Json(json!({
        "status": "success",
        "message": "Configuration updated",
        "version": next.version,
    })))
}

/// `GET /v1/admin/storage`: which kind of store keeps the state (`sqlite` or `pgsql`),
/// plus where media is kept (`local` or `s3`).
pub async fn storage(State(state): State<AppState>) -> Json<Value> {
    let url = state.config.database_url();
    let kind = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "pgsql"
    };
    let blob = if state.config.blob.url.is_empty() {
        "local"
    } else {
        "s3"
    };
    Json(json!({"type": kind, "blob": blob}))
}

fn store_error(e: shared::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::unavailable("The store is unavailable, try again shortly", 2)
}
