//! `/healthz` (the process is alive) and `/readyz` (every dependency answers, and the
//! process is not draining).

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn check<E: std::fmt::Display>(f: impl Future<Output = Result<(), E>>) -> Value {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => json!({"ok": true}),
        Ok(Err(e)) => json!({"ok": false, "error": e.to_string()}),
        Err(_) => json!({"ok": false, "error": "timed out"}),
    }
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let b = &state.backends;
    let (queue, bus, pool, store, blob) = tokio::join!(
        check(b.queue.ping()),
        check(b.bus.ping()),
        check(b.pool.ping()),
        check(b.store.ping()),
        check(b.blob.ping())
    );
    let checks = json!({"queue": queue, "bus": bus, "pool": pool, "store": store, "blob": blob});
    let down = shared::ops::down(&checks);
    let draining = state.shutdown.is_cancelled();
    let ok = !draining && down.is_empty();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": ok, "draining": draining, "down": down, "checks": checks})),
    )
}
