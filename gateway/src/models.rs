//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::Json;
use axum::extract::Path;
use serde_json::{Value, json};
use shared::models::{MODELS, ModelSpec, find};

use crate::error::ApiError;

fn entry(m: &ModelSpec) -> Value {
    json!({"id": m.id, "object": "model", "created": 0, "owned_by": "grok2api"})
}

pub async fn list() -> Json<Value> {
    Json(json!({"object": "list", "data": MODELS.iter().map(entry).collect::<Vec<_>>()}))
}

pub async fn get(Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    find(&id).map(|m| Json(entry(m))).ok_or_else(|| {
        ApiError::not_found("The model does not exist")
            .with_param("model")
            .with_code("model_not_found")
    })
}
