//! The public ("playground") API under `/v1/public/*`: what the playground pages call.
//!
//! Off unless `app.public_enabled`; then guarded by `app.public_key` when one is set. The
//! public key opens these routes only, never the OpenAI-compatible API: the playground
//! chats, lists models and edits images through `/v1/public/*` twins of those routes, so
//! an operator can publish the playground without publishing the API.
//!
//! Streams (`imagine/sse`, `imagine/ws`, `video/sse`) are authorised by their task id alone:
//! a 128-bit capability obtained from a Bearer-authenticated `start`, so no key ever travels
//! in a URL (a browser's EventSource and WebSocket cannot send headers).

pub mod auth;
pub mod imagine;
pub mod tasks;
pub mod video;
pub mod voice;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use serde_json::json;

use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    // Routes that need the public key (when one is configured).
    let keyed = Router::new()
        .route("/v1/public/verify", get(verify))
        .route("/v1/public/imagine/start", post(imagine::start))
        .route("/v1/public/imagine/stop", post(imagine::stop))
        .route("/v1/public/video/start", post(video::start))
        .route("/v1/public/video/stop", post(video::stop))
        .route("/v1/public/voice/token", get(voice::token))
        .route("/v1/public/models", get(crate::models::list))
        .route(
            "/v1/public/chat/completions",
            post(crate::chat::completions),
        )
        .route(
            "/v1/public/images/edits",
            post(crate::images::edits::create)
                .layer(DefaultBodyLimit::max(crate::images::edits::MAX_BODY_BYTES)),
        )
        .layer(from_fn_with_state(state.clone(), auth::require_public_key));
    // Routes whose task id is the capability, and the harmless config read.
    let open = Router::new()
        .route("/v1/public/imagine/config", get(imagine::config))
        .route("/v1/public/imagine/sse", get(imagine::sse))
        .route("/v1/public/imagine/ws", get(imagine::ws))
        .route("/v1/public/video/sse", get(video::sse))
        .layer(from_fn_with_state(state, auth::require_public_enabled));
    keyed.merge(open)
}

/// `GET /v1/public/verify`: the key (or its absence) is accepted.
async fn verify() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "success"}))
}
