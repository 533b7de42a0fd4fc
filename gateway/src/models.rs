//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::Json;
use axum::extract::Path;
use serde_json::{Value, json};
use shared::models::{MODELS, ModelSpec, find};

use crate::client_keys::ClientKeyGrant;
use crate::error::ApiError;

fn entry(m: &ModelSpec) -> Value {
    json!({"id": m.id, "object": "model", "created": 0, "owned_by": "grok2api"})
}

/// A client key with a model allowlist sees only the models it may use.
pub async fn list(grant: Option<axum::Extension<ClientKeyGrant>>) -> Json<Value> {
    let allowed = |m: &&ModelSpec| match &grant {
        Some(g) if !g.0.0.models.is_empty() => g.0.0.models.iter().any(|id| id == m.id),
        _ => true,
    };
    let data: Vec<Value> = MODELS.iter().filter(allowed).map(entry).collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn get(Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    find(&id).map(|m| Json(entry(m))).ok_or_else(|| {
        ApiError::not_found("The model does not exist")
            .with_param("model")
            .with_code("model_not_found")
    })
}
