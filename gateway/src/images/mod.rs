//! The Images API: `POST /v1/images/generations`, `POST /v1/images/edits`, and the image
//! models through `/v1/chat/completions` (answered in the Images API's shape).
//!
//! Every route validates into [`ImageOptions`], publishes an image job, and answers from
//! its events: one JSON document, or named SSE events (`image_generation.partial_image`,
//! `image_generation.completed`, `error`). Final images are read from the blob store, as
//! links under `{app.app_url}/v1/files/image/` or inline base64.

pub mod chat;
pub mod edits;
pub mod generations;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde_json::{Value, json};
use shared::blob::{MediaKind, media_url};
use shared::event::{EventBody, JobError, JobEvent, MediaOutput, MediaStage};
use shared::job::{ImageJob, JobEnvelope, JobPayload};
use shared::models::ModelSpec;
use shared::time::{now_ms, now_secs};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::feed::{EventFeed, FeedError};
use crate::jobs::{CancelOnDrop, submit};
use crate::state::AppState;

/// The sizes the API takes and the aspect ratio each maps to upstream.
pub const SIZES: [(&str, &str); 5] = [
    ("1280x720", "16:9"),
    ("720x1280", "9:16"),
    ("1792x1024", "3:2"),
    ("1024x1792", "2:3"),
    ("1024x1024", "1:1"),
];
pub const DEFAULT_SIZE: &str = "1024x1024";
/// Most images one request may ask for.
pub const MAX_N: u64 = 10;
/// SSE events buffered per stream.
const STREAM_BUFFER: usize = 32;
/// Largest stored image returned inline as base64.
const MAX_INLINE_BYTES: u64 = 50 * 1024 * 1024;

/// How a caller wants images back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Url,
    B64Json,
}

/// Validated options common to every image route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    pub prompt: String,
    pub n: u32,
    pub size: String,
    pub aspect_ratio: String,
    pub format: ResponseFormat,
    pub stream: bool,
}

/// `n`: 1 to 10 (a number, or a numeric string from a form).
pub fn parse_n(value: Option<&Value>) -> Result<u32, ApiError> {
    let n = match value {
        None | Some(Value::Null) => return Ok(1),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if (1..=MAX_N).contains(&n) => Ok(n as u32),
        _ => Err(ApiError::invalid(
            "n",
            "invalid_n",
            format!("n must be an integer between 1 and {MAX_N}"),
        )),
    }
}

/// `size` → (size, aspect ratio).
pub fn parse_size(value: Option<&Value>) -> Result<(String, String), ApiError> {
    let size = match value {
        None | Some(Value::Null) => DEFAULT_SIZE,
        Some(Value::String(s)) => s.trim(),
        Some(_) => "",
    };
    SIZES
        .iter()
        .find(|(s, _)| *s == size)
        .map(|(s, ratio)| ((*s).to_owned(), (*ratio).to_owned()))
        .ok_or_else(|| {
            let sizes: Vec<&str> = SIZES.iter().map(|(s, _)| *s).collect();
            ApiError::invalid(
                "size",
                "invalid_size",
                format!("size must be one of {}", sizes.join(", ")),
            )
        })
}

/// `response_format`: `url`, `b64_json` or `base64` (the same as `b64_json`).
pub fn parse_format(value: Option<&Value>, default: &str) -> Result<ResponseFormat, ApiError> {
    let format = match value {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) => s.trim(),
        Some(_) => "",
    };
    match format {
        "url" => Ok(ResponseFormat::Url),
        "b64_json" | "base64" => Ok(ResponseFormat::B64Json),
        _ => Err(ApiError::invalid(
            "response_format",
            "invalid_response_format",
            "response_format must be one of url, b64_json, base64",
        )),
    }
}

/// `stream`: a boolean (or a boolean-looking string from a form). Streaming takes n ≤ 2.
pub fn parse_stream(value: Option<&Value>, n: u32) -> Result<bool, ApiError> {
    let stream = match value {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" | "" => Some(false),
            _ => None,
        },
        Some(_) => None,
    };
    let stream = stream
        .ok_or_else(|| ApiError::invalid("stream", "invalid_stream", "stream must be a boolean"))?;
    if stream && n > 2 {
        return Err(ApiError::invalid(
            "n",
            "invalid_stream_n",
            "Streaming supports n of 1 or 2",
        ));
    }
    Ok(stream)
}

/// A non-blank prompt.
pub fn parse_prompt(value: Option<&Value>) -> Result<String, ApiError> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            "prompt",
            "missing_required_parameter",
            "prompt is required",
        )),
        Some(_) => Err(ApiError::invalid(
            "prompt",
            "empty_prompt",
            "prompt must be a non-empty string",
        )),
    }
}

/// The `model` field, which must name exactly `expected` when present.
pub fn check_model(value: Option<&Value>, expected: &str) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == expected => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "model",
            "model_not_supported",
            format!("This endpoint only serves the model `{expected}`"),
        )),
    }
}

/// The job for validated options; `inputs` are blob keys of an edit's images.
pub fn job_payload(model: &ModelSpec, options: &ImageOptions, inputs: Vec<String>) -> JobPayload {
    let image = ImageJob {
        model: model.id.to_owned(),
        tier: model.tier,
        cost: model.cost,
        prompt: options.prompt.clone(),
        n: options.n,
        aspect_ratio: options.aspect_ratio.clone(),
        stream: options.stream,
    };
    if inputs.is_empty() {
        JobPayload::ImageGenerate(image)
    } else {
        JobPayload::ImageEdit(shared::job::ImageEditJob { image, inputs })
    }
}

fn usage() -> Value {
    json!({"total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
        "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}})
}

fn timeout_error() -> ApiError {
    ApiError::new(StatusCode::GATEWAY_TIMEOUT, "The request timed out").with_code("timeout")
}

/// Publishes the job and answers from its events.
pub async fn run(
    state: &AppState,
    payload: JobPayload,
    options: ImageOptions,
) -> Result<Response, ApiError> {
    let timeout = Duration::from_secs(state.backends.live.get().image.timeout_secs);
    let job = JobEnvelope::new(payload, now_ms() + timeout.as_millis() as i64);
    let mut feed = submit(state, &job, timeout).await?;
    let mut guard = CancelOnDrop::new(state.backends.bus.clone(), job.id);
    let first = match feed.next().await {
        Some(Ok(ev)) => ev,
        Some(Err(FeedError::Timeout)) => return Err(timeout_error()),
        None => return Err(ApiError::internal()),
    };
    if let EventBody::Error(e) = &first.body {
        guard.disarm();
        return Err(ApiError::from(e));
    }
    let mut response = if options.stream {
        stream_response(state.clone(), feed, first, options, guard)
    } else {
        collect(state, feed, first, &options, guard).await?
    };
    if let Ok(v) = HeaderValue::from_str(&job.id.to_string()) {
        response.headers_mut().insert("x-job-id", v);
    }
    Ok(response)
}

/// One final image as an Images API `data` entry.
async fn entry(
    state: &AppState,
    media: &MediaOutput,
    format: ResponseFormat,
) -> Result<Value, ApiError> {
    let key = media.key.as_deref().ok_or_else(ApiError::internal)?;
    match format {
        ResponseFormat::Url => {
            // Keys are `images/<name>`; the files route serves `<name>`.
            let name = key.rsplit('/').next().unwrap_or(key);
            let app_url = state.backends.live.get().app.app_url.clone();
            Ok(json!({"url": media_url(&app_url, MediaKind::Image, name)}))
        }
        ResponseFormat::B64Json => {
            let (_, bytes) = state
                .backends
                .blob
                .get(key, None, MAX_INLINE_BYTES)
                .await
                .map_err(|e| {
                    tracing::error!(%key, error = %e, "stored image unreadable");
                    ApiError::internal()
                })?;
            Ok(json!({"b64_json": STANDARD.encode(&bytes)}))
        }
    }
}

/// Collects the finals of the last attempt into one answer.
async fn collect(
    state: &AppState,
    mut feed: EventFeed,
    first: JobEvent,
    options: &ImageOptions,
    mut guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let mut finals: BTreeMap<u32, MediaOutput> = BTreeMap::new();
    let mut attempt = first.attempt;
    let mut next = Some(Ok(first));
    while let Some(item) = next {
        let ev = item.map_err(|FeedError::Timeout| timeout_error())?;
        if ev.attempt != attempt {
            attempt = ev.attempt;
            finals.clear();
        }
        match ev.body {
            EventBody::Media(media) if media.stage == MediaStage::Final => {
                finals.insert(media.index, media);
            }
            EventBody::Done { .. } => {
                guard.disarm();
                let mut data = Vec::with_capacity(finals.len());
                for media in finals.values() {
                    data.push(entry(state, media, options.format).await?);
                }
                let body = json!({"created": now_secs(), "data": data, "usage": usage()});
                return Ok(axum::Json(body).into_response());
            }
            EventBody::Error(e) => {
                guard.disarm();
                return Err(ApiError::from(&e));
            }
            _ => {}
        }
        next = feed.next().await;
    }
    Err(ApiError::internal())
}

fn stream_response(
    state: AppState,
    feed: EventFeed,
    first: JobEvent,
    options: ImageOptions,
    guard: CancelOnDrop,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(STREAM_BUFFER);
    tokio::spawn(pump(state, feed, first, options, guard, tx));
    let stream = ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn named(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

fn error_event(e: &JobError) -> Event {
    let body = ApiError::from(e).body();
    let error = &body["error"];
    named(
        "error",
        &json!({"error": {"message": error["message"], "type": error["type"], "code": error["code"]}}),
    )
}

/// Follows the job and writes named SSE events until its end.
async fn pump(
    state: AppState,
    mut feed: EventFeed,
    first: JobEvent,
    options: ImageOptions,
    mut guard: CancelOnDrop,
    tx: mpsc::Sender<Event>,
) {
    let mut partials: BTreeMap<u32, u32> = BTreeMap::new();
    let created = now_secs();
    let mut next = Some(Ok(first));
    while let Some(item) = next {
        let event = match item {
            Err(FeedError::Timeout) => Some(error_event(&JobError::new(
                504,
                "timeout",
                "The request timed out",
            ))),
            Ok(ev) => match ev.body {
                EventBody::Media(media) if media.stage == MediaStage::Preview => {
                    let counter = partials.entry(media.index).or_default();
                    let mut data = json!({"type": "image_generation.partial_image",
                        "b64_json": media.b64.unwrap_or_default(), "created_at": created,
                        "size": options.size, "index": media.index,
                        "partial_image_index": *counter, "stage": "preview",
                        "progress": media.progress});
                    if data["b64_json"] == "" {
                        data["stage"] = json!("progress");
                    }
                    *counter += 1;
                    Some(named("image_generation.partial_image", &data))
                }
                EventBody::Media(media) => match entry(&state, &media, options.format).await {
                    Ok(entry) => {
                        let mut data = json!({"type": "image_generation.completed",
                            "created_at": created, "size": options.size, "index": media.index,
                            "stage": "final", "usage": usage()});
                        for (k, v) in entry.as_object().into_iter().flatten() {
                            data[k] = v.clone();
                        }
                        Some(named("image_generation.completed", &data))
                    }
                    Err(e) => Some(named("error", &e.body())),
                },
                EventBody::Done { .. } => {
                    guard.disarm();
                    return;
                }
                EventBody::Error(e) => {
                    guard.disarm();
                    let _ = tx.send(error_event(&e)).await;
                    return;
                }
                _ => None,
            },
        };
        if let Some(event) = event
            && tx.send(event).await.is_err()
        {
            return;
        }
        next = tokio::select! {
            n = feed.next() => n,
            _ = state.shutdown.cancelled() => {
                let e = JobError::new(503, "server_shutting_down", "The server is restarting; please retry");
                let _ = tx.send(error_event(&e)).await;
                return;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated_with_codes() {
        assert_eq!(parse_n(None).unwrap(), 1);
        assert_eq!(parse_n(Some(&json!("3"))).unwrap(), 3);
        for bad in [json!(0), json!(11), json!(1.5), json!("x"), json!(true)] {
            assert_eq!(
                parse_n(Some(&bad)).unwrap_err().code.as_deref(),
                Some("invalid_n")
            );
        }
        assert_eq!(
            parse_size(Some(&json!("1280x720"))).unwrap(),
            ("1280x720".to_owned(), "16:9".to_owned())
        );
        assert_eq!(parse_size(None).unwrap().1, "1:1");
        let e = parse_size(Some(&json!("512x512"))).unwrap_err();
        assert_eq!(
            (e.param.as_deref(), e.code.as_deref()),
            (Some("size"), Some("invalid_size"))
        );
        assert_eq!(
            parse_format(Some(&json!("base64")), "url").unwrap(),
            ResponseFormat::B64Json
        );
        assert_eq!(parse_format(None, "url").unwrap(), ResponseFormat::Url);
        assert_eq!(
            parse_format(Some(&json!("png")), "url")
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_response_format")
        );
        assert!(parse_stream(Some(&json!(true)), 2).unwrap());
        assert_eq!(
            parse_stream(Some(&json!(true)), 3)
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_stream_n")
        );
        assert_eq!(
            parse_prompt(Some(&json!("  ")))
                .unwrap_err()
                .code
                .as_deref(),
            Some("empty_prompt")
        );
        assert!(check_model(Some(&json!("grok-imagine-1.0")), "grok-imagine-1.0").is_ok());
        assert_eq!(
            check_model(Some(&json!("dall-e-3")), "grok-imagine-1.0")
                .unwrap_err()
                .code
                .as_deref(),
            Some("model_not_supported")
        );
    }
}
