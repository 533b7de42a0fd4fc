//! The gateway role: the OpenAI-compatible HTTP API in front of the job queue.
//!
//! It authenticates and validates requests, publishes jobs, and answers from the jobs'
//! events. It keeps no state of its own beyond open connections, so replicas scale freely.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod error;
pub mod extract;
pub mod feed;
pub mod health;
pub mod jobs;
pub mod models;
pub mod state;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .layer(from_fn_with_state(state.clone(), auth::require_api_key));
    let admin = Router::new()
        .route("/v1/admin/verify", get(admin::verify))
        .route(
            "/v1/admin/tokens",
            get(admin::tokens::list).post(admin::tokens::replace),
        )
        .layer(from_fn_with_state(state.clone(), auth::require_admin_key));
    Router::new()
        .merge(api)
        .merge(admin)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found").with_code("not_found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        .with_code("method_not_allowed")
}

/// Serves until `shutdown` is cancelled, then lets open requests finish (streams end with a
/// final event when they see the same token).
pub async fn serve(state: AppState, listener: TcpListener) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
