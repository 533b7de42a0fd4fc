//! The admin API under `/v1/admin`, behind the admin key.

pub mod batch;
pub mod cache;
pub mod config;
pub mod keys;
pub mod ops;
pub mod token_tools;
pub mod tokens;

use axum::Json;
use serde_json::{Value, json};

/// `GET /v1/admin/verify`: lets a login page check a key.
pub async fn verify() -> Json<Value> {
    Json(json!({"status": "success"}))
}
