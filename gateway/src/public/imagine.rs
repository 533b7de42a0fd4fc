//! The Imagine waterfall: `start` stores a task, then a stream (SSE, or a WebSocket that
//! sends `start`/`stop` messages) runs it: round after round of image generation jobs,
//! each final image sent as it lands, until the caller leaves or `stop` removes the task.
//!
//! Each round is an ordinary image job on the queue (the path `/v1/images/generations`
//! takes). The task records the round's job id, so `stop` on any replica cancels it, and a
//! departing client cancels it too (the job's cancel flag, as for a chat caller).

use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::blob::{MediaKind, media_url};
use shared::event::{EventBody, MediaStage};
use shared::job::{ImageJob, JobEnvelope, JobPayload};
use shared::models;
use shared::time::now_ms;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::tasks::{TaskKind, TaskStore, new_task_id};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::feed::FeedError;
use crate::jobs::{CancelOnDrop, submit};
use crate::state::AppState;

/// The aspect ratios a task may ask for, and the size each stands for.
const RATIOS: [(&str, &str); 5] = [
    ("1:1", "1024x1024"),
    ("2:3", "1024x1792"),
    ("3:2", "1792x1024"),
    ("9:16", "720x1280"),
    ("16:9", "1280x720"),
];
const DEFAULT_RATIO: &str = "2:3";
/// Images asked for per round.
const ROUND_IMAGES: u32 = 2;
/// Messages buffered per stream; a slow reader holds the next round back.
const STREAM_BUFFER: usize = 16;
/// How often a running stream checks that its task still exists.
const TASK_POLL: Duration = Duration::from_secs(1);
/// Pause after a failed round: longer when no account was free.
const RETRY_PAUSE: Duration = Duration::from_millis(1500);
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(2);
/// Failed rounds in a row after which a stream gives up.
const MAX_FAILED_ROUNDS: u32 = 5;
/// Largest image sent inline.
const MAX_INLINE_BYTES: u64 = 20 * 1024 * 1024;
/// Largest client WebSocket message.
const MAX_WS_MESSAGE: usize = 64 * 1024;
/// Longest prompt accepted, in characters.
const MAX_PROMPT_CHARS: usize = 8000;
/// Most task ids one stop call may name.
const MAX_STOP_IDS: usize = 100;

/// What one imagine run makes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ImagineParams {
    pub prompt: String,
    pub aspect_ratio: String,
    pub nsfw: Option<bool>,
}

/// `GET /v1/public/imagine/config`
pub async fn config() -> Json<Value> {
    Json(json!({"final_min_bytes": 100_000, "medium_min_bytes": 30_000, "nsfw": true}))
}

fn invalid(param: &str, code: &str, message: &str) -> ApiError {
    ApiError::invalid(param, code, message)
}

/// Validates `prompt`, `aspect_ratio` (a ratio or one of the sizes) and `nsfw`.
pub fn params(body: &Value) -> Result<ImagineParams, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("body", "invalid_body", "Request body must be a JSON object"))?;
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) if s.chars().count() > MAX_PROMPT_CHARS => {
            return Err(invalid(
                "prompt",
                "prompt_too_long",
                "prompt must be at most 8000 characters",
            ));
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        None | Some(Value::Null) => {
            return Err(invalid(
                "prompt",
                "missing_required_parameter",
                "prompt is required",
            ));
        }
        Some(_) => {
            return Err(invalid(
                "prompt",
                "empty_prompt",
                "prompt must be a non-empty string",
            ));
        }
    };
    let aspect_ratio = match obj.get("aspect_ratio") {
        None | Some(Value::Null) => DEFAULT_RATIO.to_owned(),
        Some(Value::String(s)) => RATIOS
            .iter()
            .find(|(ratio, size)| *ratio == s.trim() || *size == s.trim())
            .map(|(ratio, _)| (*ratio).to_owned())
            .ok_or_else(ratio_error)?,
        Some(_) => return Err(ratio_error()),
    };
    let nsfw = match obj.get("nsfw") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(invalid("nsfw", "invalid_value", "nsfw must be a boolean")),
    };
    Ok(ImagineParams {
        prompt,
        aspect_ratio,
        nsfw,
    })
}

fn ratio_error() -> ApiError {
    invalid(
        "aspect_ratio",
        "invalid_aspect_ratio",
        "aspect_ratio must be one of 1:1, 2:3, 3:2, 9:16, 16:9 (or a matching size)",
    )
}

/// `POST /v1/public/imagine/start`
pub async fn start(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let params = params(&body)?;
    let id = TaskStore::of(&state)
        .await?
        .create(TaskKind::Imagine, &params)
        .await?;
    Ok(Json(
        json!({"task_id": id, "aspect_ratio": params.aspect_ratio}),
    ))
}

/// The task ids of a stop body.
pub fn task_ids(body: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || {
        invalid(
            "task_ids",
            "invalid_value",
            "task_ids must be a list of task ids",
        )
    };
    let list = match body.get("task_ids") {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => {
            return Err(invalid(
                "task_ids",
                "missing_required_parameter",
                "task_ids is required",
            ));
        }
        Some(_) => return Err(bad()),
    };
    if list.len() > MAX_STOP_IDS {
        return Err(invalid(
            "task_ids",
            "too_many_tasks",
            "At most 100 task ids per call",
        ));
    }
    list.iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

/// Removes the named tasks of `kind` and cancels the job each one is running.
pub async fn stop_tasks(state: &AppState, kind: TaskKind, body: &Value) -> Result<Value, ApiError> {
    let ids = task_ids(body)?;
    let store = TaskStore::of(state).await?;
    let mut removed = 0;
    for id in ids {
        if let Some(task) = store.take(kind, &id).await? {
            removed += 1;
            if let Some(job_id) = task.job_id
                && let Err(e) = state.backends.bus.cancel(job_id).await
            {
                tracing::warn!(%job_id, error = %e, "could not cancel a stopped task's job");
            }
        }
    }
    Ok(json!({"status": "success", "removed": removed}))
}

/// `POST /v1/public/imagine/stop`
pub async fn stop(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(stop_tasks(&state, TaskKind::Imagine, &body).await?))
}

#[derive(Deserialize)]
pub struct TaskQuery {
    task_id: Option<String>,
}

/// The live imagine task named by the query, or the error to answer with.
async fn find_task(
    state: &AppState,
    query: &TaskQuery,
) -> Result<(String, ImagineParams), ApiError> {
    let id = query.task_id.as_deref().unwrap_or("").trim();
    if id.is_empty() {
        return Err(invalid(
            "task_id",
            "missing_required_parameter",
            "task_id is required (from POST /v1/public/imagine/start)",
        ));
    }
    let task = TaskStore::of(state)
        .await?
        .get(TaskKind::Imagine, id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found("Task not found or expired").with_code("task_not_found")
        })?;
    let params = serde_json::from_value(task.params).map_err(|_| ApiError::internal())?;
    Ok((id.to_owned(), params))
}

/// `GET /v1/public/imagine/sse?task_id=`: the waterfall as unnamed SSE events.
pub async fn sse(
    State(state): State<AppState>,
    Query(query): Query<TaskQuery>,
) -> Result<Response, ApiError> {
    let (id, params) = find_task(&state, &query).await?;
    let (tx, rx) = mpsc::channel::<Value>(STREAM_BUFFER);
    let run = Run {
        state: state.clone(),
        task_id: id,
        params,
        run_id: new_task_id(),
        stop: CancellationToken::new(),
    };
    tokio::spawn(async move {
        run.go(&tx).await;
        // The task ends with its stream.
        if let Ok(store) = TaskStore::of(&run.state).await {
            let _ = store.take(TaskKind::Imagine, &run.task_id).await;
        }
    });
    let stream = ReceiverStream::new(rx)
        .map(|v| Ok::<_, std::convert::Infallible>(Event::default().data(v.to_string())));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /v1/public/imagine/ws?task_id=`: the waterfall over a WebSocket. A missing or
/// unknown task closes the socket with 1008.
pub async fn ws(
    State(state): State<AppState>,
    Query(query): Query<TaskQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let found = find_task(&state, &query).await;
    upgrade
        .max_message_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| async move {
            match found {
                Ok((id, params)) => session(state, socket, id, params).await,
                Err(e) => {
                    let mut socket = socket;
                    let body = json!({"type": "error", "message": e.message, "code": e.code});
                    let _ = socket.send(Message::Text(body.to_string().into())).await;
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: "invalid or expired task".into(),
                        })))
                        .await;
                }
            }
        })
}

/// One WebSocket session: client messages start and stop runs; one run at a time.
async fn session(state: AppState, socket: WebSocket, task_id: String, stored: ImagineParams) {
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Value>(STREAM_BUFFER);
    // A run whose task was stopped or expired asks the session to close normally.
    let (close_tx, mut close_rx) = mpsc::channel::<()>(1);
    let mut current: Option<CancellationToken> = None;
    loop {
        tokio::select! {
            msg = incoming.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(_))) => {
                        let _ = tx.try_send(error("invalid_payload", "Messages must be JSON text"));
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                let Ok(message) = serde_json::from_str::<Value>(&text) else {
                    let _ = tx.try_send(error("invalid_payload", "Messages must be JSON"));
                    continue;
                };
                match message.get("type").and_then(Value::as_str) {
                    Some("start") => {
                        // The message's prompt wins; without one, the task's own.
                        let mut merged = message.clone();
                        if merged.get("prompt").is_none_or(Value::is_null) {
                            merged["prompt"] = json!(stored.prompt);
                        }
                        if merged.get("aspect_ratio").is_none_or(Value::is_null) {
                            merged["aspect_ratio"] = json!(stored.aspect_ratio);
                        }
                        let params = match params(&merged) {
                            Ok(p) => p,
                            Err(e) => {
                                let code = if e.param.as_deref() == Some("prompt") { "invalid_prompt" } else { "invalid_payload" };
                                let _ = tx.try_send(error(code, &e.message));
                                continue;
                            }
                        };
                        if let Some(old) = current.take() {
                            old.cancel();
                        }
                        let stop = CancellationToken::new();
                        current = Some(stop.clone());
                        let run = Run { state: state.clone(), task_id: task_id.clone(), params, run_id: new_task_id(), stop };
                        let (tx, close_tx) = (tx.clone(), close_tx.clone());
                        tokio::spawn(async move {
                            if run.go(&tx).await == RunEnd::TaskGone {
                                let _ = close_tx.send(()).await;
                            }
                        });
                    }
                    Some("stop") => {
                        if let Some(old) = current.take() {
                            old.cancel();
                        }
                    }
                    _ => {
                        let _ = tx.try_send(error("invalid_action", "type must be start or stop"));
                    }
                }
            }
            Some(out) = rx.recv() => {
                if sink.send(Message::Text(out.to_string().into())).await.is_err() {
                    break;
                }
            }
            Some(()) = close_rx.recv() => {
                // Drain what the run sent before it ended.
                while let Ok(out) = rx.try_recv() {
                    let _ = sink.send(Message::Text(out.to_string().into())).await;
                }
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "task stopped".into() }))).await;
                break;
            }
            _ = state.shutdown.cancelled() => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server restarting".into() }))).await;
                break;
            }
        }
    }
    if let Some(old) = current.take() {
        old.cancel();
    }
    if let Ok(store) = TaskStore::of(&state).await {
        let _ = store.take(TaskKind::Imagine, &task_id).await;
    }
}

fn error(code: &str, message: &str) -> Value {
    json!({"type": "error", "message": message, "code": code})
}

#[derive(Debug, PartialEq, Eq)]
enum RunEnd {
    /// The client left, or asked this run to stop.
    Left,
    /// The task was removed (`stop`) or expired.
    TaskGone,
    /// Too many failed rounds, or the server is draining.
    GaveUp,
}

/// One run of rounds for a task.
struct Run {
    state: AppState,
    task_id: String,
    params: ImagineParams,
    run_id: String,
    /// Cancelled when the client asks this run to stop.
    stop: CancellationToken,
}

impl Run {
    async fn go(&self, tx: &mpsc::Sender<Value>) -> RunEnd {
        let running = json!({"type": "status", "status": "running", "prompt": self.params.prompt,
            "aspect_ratio": self.params.aspect_ratio, "run_id": self.run_id});
        if tx.send(running).await.is_err() {
            return RunEnd::Left;
        }
        let end = self.rounds(tx).await;
        if end != RunEnd::Left || !tx.is_closed() {
            let _ = tx
                .send(json!({"type": "status", "status": "stopped", "run_id": self.run_id}))
                .await;
        }
        end
    }

    async fn task_exists(&self) -> bool {
        match TaskStore::of(&self.state).await {
            Ok(store) => match store.get(TaskKind::Imagine, &self.task_id).await {
                Ok(found) => found.is_some(),
                // A store hiccup is not a stop.
                Err(_) => true,
            },
            Err(_) => true,
        }
    }

    async fn rounds(&self, tx: &mpsc::Sender<Value>) -> RunEnd {
        let mut sequence: u64 = 0;
        let mut failed_rounds = 0;
        let started = std::time::Instant::now();
        loop {
            if !self.task_exists().await {
                return RunEnd::TaskGone;
            }
            let outcome = self.round(tx, &mut sequence, started).await;
            let pause = match outcome {
                Round::Done => {
                    failed_rounds = 0;
                    continue;
                }
                Round::End(end) => return end,
                Round::Failed { rate_limited } => {
                    failed_rounds += 1;
                    if failed_rounds >= MAX_FAILED_ROUNDS {
                        return RunEnd::GaveUp;
                    }
                    if rate_limited {
                        RATE_LIMIT_PAUSE
                    } else {
                        RETRY_PAUSE
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = tx.closed() => return RunEnd::Left,
                () = self.stop.cancelled() => return RunEnd::Left,
            }
        }
    }

    /// One generation job, its images relayed as they land.
    async fn round(
        &self,
        tx: &mpsc::Sender<Value>,
        sequence: &mut u64,
        started: std::time::Instant,
    ) -> Round {
        let state = &self.state;
        let Some(model) = models::find(crate::images::generations::MODEL) else {
            return Round::End(RunEnd::GaveUp);
        };
        let timeout = Duration::from_secs(state.config.image.timeout_secs);
        let job = JobEnvelope::new(
            JobPayload::ImageGenerate(ImageJob {
                model: model.id.to_owned(),
                tier: model.tier,
                cost: model.cost,
                prompt: self.params.prompt.clone(),
                n: ROUND_IMAGES,
                aspect_ratio: self.params.aspect_ratio.clone(),
                stream: false,
            }),
            now_ms() + timeout.as_millis() as i64,
        );
        // Record the job first, so a stop from any replica can cancel it.
        if let Err(e) = self.record_job(job.id).await {
            let _ = tx.send(error("internal_error", &e.message)).await;
            return Round::Failed {
                rate_limited: false,
            };
        }
        let mut feed = match submit(state, &job, timeout).await {
            Ok(feed) => feed,
            Err(e) => {
                let code = e.code.clone().unwrap_or_else(|| "internal_error".into());
                let _ = tx.send(error(&code, &e.message)).await;
                return Round::Failed {
                    rate_limited: false,
                };
            }
        };
        let mut guard = CancelOnDrop::new(state.backends.bus.clone(), job.id);
        let mut poll = tokio::time::interval(TASK_POLL);
        poll.tick().await;
        let mut images_this_round = 0;
        loop {
            let next = tokio::select! {
                next = feed.next() => next,
                () = tx.closed() => return Round::End(RunEnd::Left),
                () = self.stop.cancelled() => return Round::End(RunEnd::Left),
                _ = poll.tick() => {
                    if !self.task_exists().await {
                        return Round::End(RunEnd::TaskGone);
                    }
                    continue;
                }
                () = state.shutdown.cancelled() => {
                    let _ = tx.send(error("server_shutting_down", "The server is restarting; please retry")).await;
                    return Round::End(RunEnd::GaveUp);
                }
            };
            let ev = match next {
                None => {
                    return Round::Failed {
                        rate_limited: false,
                    };
                }
                Some(Err(FeedError::Timeout)) => {
                    let _ = tx.send(error("timeout", "The image round timed out")).await;
                    return Round::Failed {
                        rate_limited: false,
                    };
                }
                Some(Ok(ev)) => ev,
            };
            match ev.body {
                EventBody::Media(media) if media.stage == MediaStage::Final => {
                    let Some(key) = media.key.as_deref() else {
                        continue;
                    };
                    let bytes = match state.backends.blob.get(key, None, MAX_INLINE_BYTES).await {
                        Ok((_, bytes)) => bytes,
                        Err(e) => {
                            tracing::error!(%key, error = %e, "stored image unreadable");
                            continue;
                        }
                    };
                    *sequence += 1;
                    images_this_round += 1;
                    let name = key.rsplit('/').next().unwrap_or(key);
                    let image = json!({"type": "image", "b64_json": STANDARD.encode(&bytes),
                        "url": media_url(&state.config.app.app_url, MediaKind::Image, name),
                        "sequence": *sequence, "created_at": now_ms(),
                        "elapsed_ms": started.elapsed().as_millis() as u64,
                        "aspect_ratio": self.params.aspect_ratio, "run_id": self.run_id});
                    if tx.send(image).await.is_err() {
                        return Round::End(RunEnd::Left);
                    }
                }
                EventBody::Done { .. } => {
                    guard.disarm();
                    if images_this_round == 0 {
                        let _ = tx
                            .send(error("empty_image", "The round produced no image"))
                            .await;
                        return Round::Failed {
                            rate_limited: false,
                        };
                    }
                    return Round::Done;
                }
                EventBody::Error(e) => {
                    guard.disarm();
                    let rate_limited = e.code == "rate_limit_exceeded";
                    let _ = tx.send(error(&e.code, &e.message)).await;
                    return Round::Failed { rate_limited };
                }
                _ => {}
            }
        }
    }

    async fn record_job(&self, job_id: uuid::Uuid) -> Result<(), ApiError> {
        let store = TaskStore::of(&self.state).await?;
        let Some(mut task) = store.get(TaskKind::Imagine, &self.task_id).await? else {
            return Ok(());
        };
        task.job_id = Some(job_id);
        store.put(&self.task_id, &task).await
    }
}

enum Round {
    Done,
    Failed { rate_limited: bool },
    End(RunEnd),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_validate_with_codes() {
        let p = params(&json!({"prompt": " a cat ", "aspect_ratio": "1280x720"})).unwrap();
        assert_eq!(
            (p.prompt.as_str(), p.aspect_ratio.as_str()),
            ("a cat", "16:9")
        );
        assert_eq!(params(&json!({"prompt": "x"})).unwrap().aspect_ratio, "2:3");
        let code = |b: Value| params(&b).unwrap_err().code.unwrap();
        assert_eq!(code(json!({})), "missing_required_parameter");
        assert_eq!(code(json!({"prompt": " "})), "empty_prompt");
        assert_eq!(
            code(json!({"prompt": "x", "aspect_ratio": "4:3"})),
            "invalid_aspect_ratio"
        );
        assert_eq!(code(json!({"prompt": "x", "nsfw": "yes"})), "invalid_value");
        assert_eq!(code(json!([1])), "invalid_body");
    }

    #[test]
    fn stop_bodies_name_task_ids() {
        assert_eq!(task_ids(&json!({"task_ids": ["a"]})).unwrap(), vec!["a"]);
        assert!(task_ids(&json!({"task_ids": "a"})).is_err());
        assert!(task_ids(&json!({"task_ids": [1]})).is_err());
        assert!(task_ids(&json!({})).is_err());
    }
}
