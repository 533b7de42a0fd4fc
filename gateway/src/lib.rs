//! The gateway role: the OpenAI-compatible HTTP API in front of the job queue.
//!
//! It authenticates and validates requests, publishes jobs, and answers from the jobs'
//! events. It keeps no state of its own beyond open connections, so replicas scale freely.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod chat;
pub mod client_keys;
pub mod error;
pub mod extract;
pub mod feed;
pub mod files;
pub mod health;
pub mod images;
pub mod jobs;
pub mod models;
pub mod observe;
pub mod pages;
pub mod public;
pub mod state;
pub mod videos;

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
        .route("/v1/images/generations", post(images::generations::create))
        .route(
            "/v1/images/edits",
            post(images::edits::create).layer(DefaultBodyLimit::max(images::edits::MAX_BODY_BYTES)),
        )
        .route("/v1/videos", post(videos::create))
        .route("/v1/videos/{id}", get(videos::retrieve))
        .route(
            "/v1/videos/{id}/content",
            get(videos::content).head(videos::content),
        )
        .route("/v1/models/{id}", get(models::get))
        .layer(from_fn_with_state(
            admission::Admission::new(&state.config),
            admission::admit,
        ))
        .layer(from_fn_with_state(state.clone(), auth::require_api_key));
    let admin = Router::new()
        .route("/v1/admin/verify", get(admin::verify))
        .route(
            "/v1/admin/tokens",
            get(admin::tokens::list).post(admin::tokens::replace),
        )
        .route("/v1/admin/tokens/refresh", post(admin::ops::refresh))
        .route(
            "/v1/admin/tokens/refresh/async",
            post(admin::ops::refresh_async),
        )
        .route(
            "/v1/admin/tokens/nsfw/enable",
            post(admin::ops::nsfw_enable),
        )
        .route(
            "/v1/admin/tokens/nsfw/enable/async",
            post(admin::ops::nsfw_enable_async),
        )
        .route(
            "/v1/admin/cache/online/clear",
            post(admin::ops::online_clear),
        )
        .route(
            "/v1/admin/cache/online/clear/async",
            post(admin::ops::online_clear_async),
        )
        .route(
            "/v1/admin/cache/online/load/async",
            post(admin::ops::online_load_async),
        )
        .route("/v1/admin/batch/{id}/stream", get(admin::batch::stream))
        .route("/v1/admin/batch/{id}/cancel", post(admin::batch::cancel))
        .route(
            "/v1/admin/config",
            get(admin::config::get).post(admin::config::update),
        )
        .route("/v1/admin/storage", get(admin::config::storage))
        .route(
            "/v1/admin/tokens/{id}",
            axum::routing::patch(admin::token_tools::patch),
        )
        .route("/v1/admin/tokens/import", post(admin::token_tools::import))
        .route("/v1/admin/tokens/export", get(admin::token_tools::export))
        .route("/v1/admin/cache", get(admin::cache::stats_handler))
        .route("/v1/admin/cache/list", get(admin::cache::list))
        .route("/v1/admin/cache/clear", post(admin::cache::clear))
        .route(
            "/v1/admin/cache/item/delete",
            post(admin::cache::delete_item),
        )
        .route("/v1/admin/cache/download", post(admin::cache::download))
        .route(
            "/v1/admin/keys",
            get(admin::keys::list).post(admin::keys::create),
        )
        .route(
            "/v1/admin/keys/{id}",
            axum::routing::patch(admin::keys::update).delete(admin::keys::delete),
        )
        .layer(from_fn_with_state(state.clone(), auth::require_admin_key));
    Router::new()
        .merge(api)
        .merge(admin)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        // Media links carry no key (see files.rs).
        .route(
            "/v1/files/image/{name}",
            get(files::image).head(files::image),
        )
        .route(
            "/v1/files/video/{name}",
            get(files::video).head(files::video),
        )
        .route("/metrics", get(observe::prometheus))
        .merge(pages::router())
        .merge(public::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(axum::middleware::from_fn(observe::track_http))
        .layer(TraceLayer::new_for_http().make_span_with(observe::request_span::<axum::body::Body>))
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
    state
        .client_keys
        .clone()
        .spawn_flusher(state.backends.store.clone(), shutdown.clone());
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let grace = std::time::Duration::from_secs(state.config.server.shutdown_grace_secs);
    // Small SSE writes must leave at once: with Nagle's algorithm on, the first chunk after
    // the response head waits for the client's delayed ACK (about 40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    // `into_make_service` hands each connection a clone of the finished router (one Arc);
    // serving the `Router` itself rebuilds its route tables per connection (~70 KiB each).
    let served = axum::serve(listener, router(state).into_make_service())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Draining lets in-flight requests finish, but only for `server.shutdown_grace_secs`.
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = async { served.await } => served,
        _ = grace_over => {
            tracing::warn!("drain grace period over with requests still open");
            Ok(())
        }
    }
}
