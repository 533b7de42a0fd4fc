//! Playground video tasks: `start` validates and stores the task, `sse` runs it as a video
//! job (the path chat completions take for the video model) and relays the job as
//! chat-completion chunks, `stop` removes the task and cancels its job.
//!
//! A task runs once: the first stream claims it. It is dropped when its stream ends, and a
//! client that leaves mid-stream cancels the job.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::event::{EventBody, JobError};
use shared::job::{JobEnvelope, JobPayload, VideoDelivery, VideoJob};
use shared::models;
use shared::time::{now_ms, now_secs};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::tasks::{TaskKind, TaskStore};
use crate::chat::wire::ChunkWriter;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::feed::FeedError;
use crate::jobs::{CancelOnDrop, submit};
use crate::state::AppState;
use crate::videos::input::{self, CHAT_FIELDS, VIDEO_MODEL};

/// The original product's default shape for playground videos: 3:2.
const DEFAULT_SIZE: &str = "1792x1024";
/// Chunks buffered per stream.
const STREAM_BUFFER: usize = 64;
/// How often a running stream checks that its task was not stopped.
const TASK_POLL: Duration = Duration::from_secs(1);
const EFFORTS: [&str; 6] = ["none", "minimal", "low", "medium", "high", "xhigh"];

/// A validated video task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoParams {
    pub prompt: String,
    pub aspect_ratio: String,
    pub seconds: u32,
    pub resolution: String,
    pub mode: String,
    pub image: Option<String>,
    pub reasoning_effort: Option<String>,
}

/// Validates a start body: `prompt`, `aspect_ratio`, `video_length`, `resolution_name`,
/// `preset`, `image_url`, `reasoning_effort`.
pub fn params(body: &Value) -> Result<VideoParams, ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::invalid("body", "invalid_body", "Request body must be a JSON object")
    })?;
    let prompt = input::prompt(obj.get("prompt"), "prompt")?;
    let shape = input::params(obj, "", &CHAT_FIELDS, DEFAULT_SIZE)?;
    let image = input::image(obj.get("image_url"), "image_url")?;
    let reasoning_effort = match obj.get("reasoning_effort") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if EFFORTS.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "reasoning_effort",
                "invalid_reasoning_effort",
                format!("reasoning_effort must be one of {}", EFFORTS.join(", ")),
            ));
        }
    };
    Ok(VideoParams {
        prompt,
        aspect_ratio: shape.aspect_ratio,
        seconds: shape.seconds,
        resolution: shape.resolution,
        mode: shape.mode,
        image,
        reasoning_effort,
    })
}

/// `POST /v1/public/video/start`
pub async fn start(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let params = params(&body)?;
    let id = TaskStore::of(&state)
        .await?
        .create(TaskKind::Video, &params)
        .await?;
    Ok(Json(
        json!({"task_id": id, "aspect_ratio": params.aspect_ratio}),
    ))
}

/// `POST /v1/public/video/stop`
pub async fn stop(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        super::imagine::stop_tasks(&state, TaskKind::Video, &body).await?,
    ))
}

#[derive(Deserialize)]
pub struct TaskQuery {
    task_id: Option<String>,
}

/// `GET /v1/public/video/sse?task_id=`
pub async fn sse(
    State(state): State<AppState>,
    Query(query): Query<TaskQuery>,
) -> Result<Response, ApiError> {
    let id = query.task_id.as_deref().unwrap_or("").trim().to_owned();
    if id.is_empty() {
        return Err(ApiError::invalid(
            "task_id",
            "missing_required_parameter",
            "task_id is required (from POST /v1/public/video/start)",
        ));
    }
    let not_found = || ApiError::not_found("Task not found or expired").with_code("task_not_found");
    let store = TaskStore::of(&state).await?;
    let mut task = store
        .get(TaskKind::Video, &id)
        .await?
        .ok_or_else(not_found)?;
    if !store.claim(TaskKind::Video, &id).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "This task is already being streamed",
        )
        .with_code("task_running"));
    }
    let params: VideoParams =
        serde_json::from_value(task.params.clone()).map_err(|_| ApiError::internal())?;
    let model = models::find(VIDEO_MODEL).ok_or_else(ApiError::internal)?;
    let want_reasoning = match &params.reasoning_effort {
        None => state.config.app.thinking,
        Some(effort) => effort != "none",
    };
    let timeout = Duration::from_secs(state.config.video.timeout_secs);
    let job = JobEnvelope::new(
        JobPayload::Video(VideoJob {
            model: model.id.to_owned(),
            cost: model.cost,
            prompt: params.prompt.clone(),
            aspect_ratio: params.aspect_ratio.clone(),
            seconds: params.seconds,
            resolution: params.resolution.clone(),
            mode: params.mode.clone(),
            image: params.image.clone(),
            delivery: VideoDelivery::Chat {
                progress_lines: want_reasoning,
            },
        }),
        now_ms() + timeout.as_millis() as i64,
    );
    // Recorded before publishing, so a stop from any replica finds the job to cancel.
    task.job_id = Some(job.id);
    store.put(&id, &task).await?;
    let feed = match submit(&state, &job, timeout).await {
        Ok(feed) => feed,
        Err(e) => {
            // Claimed but never run: drop it, so the caller starts afresh.
            let _ = store.take(TaskKind::Video, &id).await;
            return Err(e);
        }
    };
    let guard = CancelOnDrop::new(state.backends.bus.clone(), job.id);
    let writer = ChunkWriter::new(
        format!("chatcmpl-{}", job.id.simple()),
        now_secs(),
        model.id,
        state.config.app.reasoning_format,
        want_reasoning,
    );
    let (tx, rx) = mpsc::channel::<Event>(STREAM_BUFFER);
    let relay = Relay {
        state: state.clone(),
        task_id: id,
    };
    tokio::spawn(async move {
        relay.go(feed, writer, guard, &tx).await;
        if let Ok(store) = TaskStore::of(&relay.state).await {
            let _ = store.take(TaskKind::Video, &relay.task_id).await;
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

/// The error event of a video stream: the original product's `error`/`code` fields plus a
/// `type` and `message` like every other playground stream.
fn error_event(code: &str, message: &str) -> Event {
    data(&json!({"type": "error", "error": message, "message": message, "code": code}))
}

struct Relay {
    state: AppState,
    task_id: String,
}

impl Relay {
    async fn task_exists(&self) -> bool {
        match TaskStore::of(&self.state).await {
            Ok(store) => !matches!(store.get(TaskKind::Video, &self.task_id).await, Ok(None)),
            Err(_) => true,
        }
    }

    async fn go(
        &self,
        mut feed: crate::feed::EventFeed,
        mut writer: ChunkWriter,
        mut guard: CancelOnDrop,
        tx: &mpsc::Sender<Event>,
    ) {
        if tx.send(data(&writer.role())).await.is_err() {
            return;
        }
        let mut poll = tokio::time::interval(TASK_POLL);
        poll.tick().await;
        loop {
            let next = tokio::select! {
                next = feed.next() => next,
                () = tx.closed() => return,
                _ = poll.tick() => {
                    if !self.task_exists().await {
                        // Stopped: the guard cancels the job as it drops.
                        let _ = tx.send(error_event("stopped", "The task was stopped")).await;
                        let _ = tx.send(Event::default().data("[DONE]")).await;
                        return;
                    }
                    continue;
                }
                () = self.state.shutdown.cancelled() => {
                    let _ = tx.send(error_event("server_shutting_down", "The server is restarting; please retry")).await;
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
            };
            let mut out: Vec<Value> = Vec::new();
            let mut end: Option<JobError> = None;
            match next {
                None => {
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
                Some(Err(FeedError::Timeout)) => {
                    end = Some(JobError::new(504, "timeout", "The video timed out"))
                }
                Some(Ok(ev)) => match ev.body {
                    EventBody::Delta { text } => out.extend(writer.text(&text)),
                    EventBody::Reasoning { text } => out.extend(writer.reasoning(&text)),
                    EventBody::Done { finish_reason, .. } => {
                        guard.disarm();
                        out.extend(writer.finish(&finish_reason));
                        for chunk in &out {
                            if tx.send(data(chunk)).await.is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(Event::default().data("[DONE]")).await;
                        return;
                    }
                    EventBody::Error(e) => {
                        guard.disarm();
                        end = Some(e);
                    }
                    _ => {}
                },
            }
            for chunk in &out {
                if tx.send(data(chunk)).await.is_err() {
                    return;
                }
            }
            if let Some(e) = end {
                let _ = tx.send(error_event(&e.code, &e.message)).await;
                let _ = tx.send(Event::default().data("[DONE]")).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_bodies_validate_with_codes() {
        let p = params(
            &json!({"prompt": "waves", "aspect_ratio": "16:9", "video_length": 10,
            "resolution_name": "720p", "preset": "fun"}),
        )
        .unwrap();
        assert_eq!(
            (
                p.aspect_ratio.as_str(),
                p.seconds,
                p.resolution.as_str(),
                p.mode.as_str()
            ),
            ("16:9", 10, "720p", "extremely-crazy")
        );
        assert_eq!(params(&json!({"prompt": "x"})).unwrap().aspect_ratio, "3:2");
        let code = |b: Value| params(&b).unwrap_err().code.unwrap();
        assert_eq!(code(json!({})), "missing_required_parameter");
        assert_eq!(
            code(json!({"prompt": "x", "aspect_ratio": "4:3"})),
            "invalid_aspect_ratio"
        );
        assert_eq!(
            code(json!({"prompt": "x", "video_length": 99})),
            "invalid_video_length"
        );
        assert_eq!(
            code(json!({"prompt": "x", "preset": "wild"})),
            "invalid_preset"
        );
        assert_eq!(
            code(json!({"prompt": "x", "reasoning_effort": "max"})),
            "invalid_reasoning_effort"
        );
        let bad_image = params(&json!({"prompt": "x", "image_url": "ftp://x"})).unwrap_err();
        assert_eq!(bad_image.param.as_deref(), Some("image_url"));
    }
}
