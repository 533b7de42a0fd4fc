//! Account batches through the admin API: starting one, waiting for it, streaming its
//! progress (`GET /v1/admin/batch/{id}/stream`) and cancelling it.
//!
//! A batch is a maintenance job; its progress lives on the event bus (replayable for
//! `bus.replay_ttl_secs`), so any gateway replica can stream a batch another one started.
//! The gateway records a first "queued" event itself, so a batch is known from the moment
//! its id is handed out.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use shared::batch::{AccountJob, AccountOp, BatchProgress, BatchStage};
use shared::event::{EventBody, EventMeta, JobEvent};
use shared::job::{JobEnvelope, JobPayload};
use shared::time::now_ms;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a queued batch stays worth running.
const BATCH_DEADLINE: Duration = Duration::from_secs(3600);
/// How long a synchronous admin call waits for its batch.
const SYNC_WAIT: Duration = Duration::from_secs(300);
/// Silence after which the progress stream sends `: ping`.
const PING_EVERY: Duration = Duration::from_secs(15);

/// A started batch, with its live events when the caller wants to wait for it.
pub struct Started {
    pub id: Uuid,
    pub total: usize,
    events: Option<shared::bus::EventStream>,
}

/// Queues a batch; with `wait`, subscribes first so no event is missed.
pub async fn start(
    state: &AppState,
    op: AccountOp,
    token_ids: Vec<String>,
    wait: bool,
) -> Result<Started, ApiError> {
    start_skipping(state, op, token_ids, wait, 0).await
}

/// [`start`], for a batch that leaves `skipped` accounts out on purpose (its summary says
/// so).
pub async fn start_skipping(
    state: &AppState,
    op: AccountOp,
    token_ids: Vec<String>,
    wait: bool,
    skipped: u64,
) -> Result<Started, ApiError> {
    let total = token_ids.len();
    let job = JobEnvelope::new(
        JobPayload::Account(AccountJob {
            op,
            token_ids,
            origin: "admin".into(),
            skipped,
        }),
        now_ms() + BATCH_DEADLINE.as_millis() as i64,
    );
    let bus = &state.backends.bus;
    let events = if wait {
        Some(bus.subscribe(job.id).await.map_err(bus_error)?)
    } else {
        None
    };
    let queued = JobEvent {
        job_id: job.id,
        attempt: 0,
        seq: 1,
        body: EventBody::Batch(BatchProgress {
            stage: BatchStage::Progress,
            op,
            total: total as u64,
            processed: 0,
            ok: 0,
            fail: 0,
            skipped,
            result: None,
            error: None,
        }),
        meta: EventMeta::now(),
    };
    bus.publish(&queued).await.map_err(bus_error)?;
    state.backends.queue.publish(&job).await.map_err(|e| {
        tracing::error!(error = %e, "could not queue an account batch");
        ApiError::unavailable("The job queue is unavailable, try again shortly", 2)
    })?;
    tracing::info!(batch = %job.id, op = op.as_str(), accounts = total, "account batch queued");
    Ok(Started {
        id: job.id,
        total,
        events,
    })
}

/// Waits for the batch's final event.
pub async fn wait(started: Started) -> Result<BatchProgress, ApiError> {
    let Some(mut events) = started.events else {
        return Err(ApiError::internal());
    };
    let waiting = async {
        while let Some(ev) = events.next().await {
            if let EventBody::Batch(p) = ev.body
                && p.is_final()
            {
                return Some(p);
            }
        }
        None
    };
    match tokio::time::timeout(SYNC_WAIT, waiting).await {
        Ok(Some(progress)) => Ok(progress),
        Ok(None) => Err(ApiError::unavailable(
            format!(
                "Lost track of batch {}; follow it at /v1/admin/batch/{}/stream",
                started.id, started.id
            ),
            2,
        )),
        Err(_) => Err(ApiError::unavailable(
            format!(
                "Batch {} is still running; follow it at /v1/admin/batch/{}/stream",
                started.id, started.id
            ),
            5,
        )),
    }
}

/// `{"status":"success","task_id":…,"total":n}` for the async variants.
pub fn accepted(started: &Started) -> Json<Value> {
    Json(json!({"status": "success", "task_id": started.id, "total": started.total}))
}

fn bus_error(e: shared::bus::BusError) -> ApiError {
    tracing::error!(error = %e, "event bus unavailable");
    ApiError::unavailable("The event bus is unavailable, try again shortly", 2)
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("No such batch"))
}

/// The batch's recorded progress events, oldest first, with their cursors.
async fn recorded(
    state: &AppState,
    id: Uuid,
) -> Result<Vec<((u32, u64), BatchProgress)>, ApiError> {
    let events = state
        .backends
        .bus
        .replay(id, None)
        .await
        .map_err(bus_error)?;
    Ok(events
        .into_iter()
        .filter_map(|ev| match ev.body {
            EventBody::Batch(p) => Some(((ev.attempt, ev.seq), p)),
            _ => None,
        })
        .collect())
}

/// The SSE payload of one progress event.
fn payload(id: Uuid, p: &BatchProgress, snapshot: bool) -> Value {
    let kind = match (snapshot, p.stage) {
        (true, _) => "snapshot",
        (false, BatchStage::Progress) => "progress",
        (false, BatchStage::Done) => "done",
        (false, BatchStage::Error) => "error",
        (false, BatchStage::Cancelled) => "cancelled",
    };
    let status = match p.stage {
        BatchStage::Progress => "running",
        BatchStage::Done => "done",
        BatchStage::Error => "error",
        BatchStage::Cancelled => "cancelled",
    };
    let mut v = json!({"type": kind, "task_id": id, "op": p.op, "status": status, "total": p.total,
        "processed": p.processed, "ok": p.ok, "fail": p.fail, "warning": Value::Null});
    if p.skipped > 0 {
        v["skipped"] = json!(p.skipped);
    }
    if !snapshot {
        if let Some(result) = &p.result {
            let mut summary = json!({"total": p.total, "ok": p.ok, "fail": p.fail});
            if p.skipped > 0 {
                summary["skipped"] = json!(p.skipped);
            }
            v["result"] = json!({"summary": summary, "results": result});
        }
        if let Some(error) = &p.error {
            v["error"] = json!(error);
        }
    }
    v
}

fn sse(v: Value) -> Result<Event, Infallible> {
    Ok(Event::default().data(v.to_string()))
}

/// `GET /v1/admin/batch/{id}/stream`: a snapshot, then progress until the final event.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Subscribe before reading the record, so nothing falls between the two.
    let live = state.backends.bus.subscribe(id).await.map_err(bus_error)?;
    let recorded = recorded(&state, id).await?;
    let Some((cursor, latest)) = recorded.last().cloned() else {
        return Err(ApiError::not_found(
            "No such batch (or it finished too long ago)",
        ));
    };
    let mut first = vec![sse(payload(id, &latest, true))];
    if latest.is_final() {
        first.push(sse(payload(id, &latest, false)));
        return Ok(Sse::new(futures::stream::iter(first)).into_response());
    }
    let shutdown = state.shutdown.clone();
    let follow =
        futures::stream::unfold((live, cursor, false), move |(mut live, cursor, ended)| {
            let shutdown = shutdown.clone();
            async move {
                if ended {
                    return None;
                }
                loop {
                    let ev = tokio::select! {
                        ev = live.next() => ev,
                        _ = shutdown.cancelled() => return None,
                    };
                    let ev = ev?;
                    if (ev.attempt, ev.seq) <= cursor && ev.attempt == cursor.0 {
                        continue;
                    }
                    let EventBody::Batch(p) = ev.body else {
                        continue;
                    };
                    let is_final = p.is_final();
                    return Some((
                        sse(payload(id, &p, false)),
                        (live, (ev.attempt, ev.seq), is_final),
                    ));
                }
            }
        });
    let body = futures::stream::iter(first).chain(follow);
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping"))
        .into_response())
}

/// `POST /v1/admin/batch/{id}/cancel`: the worker skips the accounts it has not started.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    if recorded(&state, id).await?.is_empty() {
        return Err(ApiError::not_found("No such batch"));
    }
    state.backends.bus.cancel(id).await.map_err(bus_error)?;
    Ok(Json(json!({"status": "success"})))
}
