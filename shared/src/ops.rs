//! The operations listener of roles without an HTTP API of their own (worker, scheduler):
//! `GET /metrics` (Prometheus), `GET /healthz` (the process is alive) and `GET /readyz`
//! (every backend answers and the process is not draining). Bound to `metrics.listen`.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backends::Backends;

/// A readiness check that takes longer than this counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct OpsState {
    backends: Backends,
    draining: CancellationToken,
}

/// Binds `addr` (`host:port`); the error names the address.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics.listen {addr}"))
}

/// The ops routes. `/readyz` answers 503 as soon as `draining` is cancelled.
pub fn router(backends: Backends, draining: CancellationToken) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(OpsState { backends, draining })
}

/// Serves the ops routes until the task is dropped. It deliberately outlives `draining`:
/// while the role drains, probes must still get their 503 and Prometheus its last scrape.
pub async fn serve(
    listener: TcpListener,
    backends: Backends,
    draining: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, router(backends, draining).into_make_service()).await
}

/// Spawns [`serve`] on the current runtime when `listen` is not empty. Binding happens
/// before this returns, so a busy port stops the process at start.
pub async fn spawn(
    listen: &str,
    backends: &Backends,
    draining: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if listen.trim().is_empty() {
        return Ok(None);
    }
    let listener = bind(listen.trim()).await?;
    let (backends, draining) = (backends.clone(), draining.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = serve(listener, backends, draining).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    })))
}

/// The Prometheus text exposition of this process's metrics.
pub async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn check<E: std::fmt::Display>(f: impl Future<Output = Result<(), E>>) -> Value {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => json!({"ok": true}),
        Ok(Err(e)) => json!({"ok": false, "error": e.to_string()}),
        Err(_) => json!({"ok": false, "error": "timed out"}),
    }
}

/// Whether the role can do its work: not draining, and every backend answers.
pub async fn readiness(backends: &Backends, draining: bool) -> (bool, Value) {
    if draining {
        // No backend round trips while shutting down: the answer is no either way.
        return (false, json!({"ready": false, "draining": true}));
    }
    let (queue, bus, pool, store, blob) = tokio::join!(
        check(backends.queue.ping()),
        check(backends.bus.ping()),
        check(backends.pool.ping()),
        check(backends.store.ping()),
        check(backends.blob.ping())
    );
    let checks = json!({"queue": queue, "bus": bus, "pool": pool, "store": store, "blob": blob});
    let down = down(&checks);
    let ok = down.is_empty();
    (
        ok,
        json!({"ready": ok, "draining": false, "down": down, "checks": checks}),
    )
}

/// The names of the failed checks in a `checks` object.
pub fn down(checks: &Value) -> Vec<String> {
    checks
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, c)| c["ok"] != true)
        .map(|(name, _)| name.clone())
        .collect()
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, axum::Json<Value>) {
    let (ok, body) = readiness(&state.backends, state.draining.is_cancelled()).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}
