//! The admin API under `/v1/admin`, behind the admin key.

pub mod batch;
pub mod ops;
pub mod tokens;

use axum::Json;
use serde_json::{Value, json};

/// `GET /v1/admin/verify`: lets a login page check a key.
pub async fn verify() -> Json<Value> {
    Json(json!({"status": "success"}))
}
