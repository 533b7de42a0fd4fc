//! The OpenAI-style asynchronous video API:
//!
//! - `POST /v1/videos` validates, writes a `queued` record, publishes a video job and answers
//!   at once with the video object;
//! - `GET /v1/videos/{id}` answers from the record (`queued`, `in_progress` with progress,
//!   `completed`, `failed` with a reason);
//! - `GET /v1/videos/{id}/content` streams the MP4 (`?variant=thumbnail`: its picture), with
//!   Range requests.
//!
//! The record is the truth: any gateway answers for any job, before and after restarts, and
//! the worker moves it forward. Ids are random UUIDs, and a record keeps the SHA-256 of the
//! API key that created it: another key gets 404, as for an id that does not exist.

pub mod chat;
pub mod form;
pub mod input;
pub mod recover;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::blob::MediaKind;
use shared::job::{JobEnvelope, JobPayload, VideoDelivery, VideoJob};
use shared::queue::QueueError;
use shared::store::{VideoJobFailure, VideoJobRecord, VideoJobStatus, VideoJobUpdate};
use shared::time::now_ms;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

/// Public ids are `video_<32 hex>`.
const ID_PREFIX: &str = "video_";
/// Time past a job's deadline before an unfinished record is reported as failed (the
/// worker's last write may land just after the deadline).
const EXPIRY_GRACE_MS: i64 = 30_000;
/// The default size of `POST /v1/videos`.
const API_DEFAULT_SIZE: &str = "1280x720";

/// `POST /v1/videos`: a JSON body, or a multipart form (OpenAI's shape, with an optional
/// `input_reference` image file).
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let body = if form::is_multipart(&request) {
        form::read(&state, request).await?
    } else {
        JsonBody::from_request(request, &state).await?.0
    };
    let obj = body.as_object().ok_or_else(|| {
        ApiError::invalid("body", "invalid_body", "Request body must be a JSON object")
    })?;
    let model = input::model(obj.get("model"))?;
    let prompt = input::prompt(obj.get("prompt"), "prompt")?;
    let params = input::params(obj, "", &input::API_FIELDS, API_DEFAULT_SIZE)?;
    let (image_param, image_value) = ["input_reference", "image_url", "image"]
        .into_iter()
        .find_map(|k| obj.get(k).filter(|v| !v.is_null()).map(|v| (k, v)))
        .unwrap_or(("input_reference", &Value::Null));
    let image = input::image(Some(image_value), image_param)?;

    let id = Uuid::new_v4();
    let now = now_ms();
    let timeout_ms = (state.backends.live.get().video.timeout_secs as i64).saturating_mul(1000);
    let deadline = now + timeout_ms;
    let job = JobPayload::Video(VideoJob {
        model: model.id.to_owned(),
        cost: model.cost,
        prompt: prompt.clone(),
        aspect_ratio: params.aspect_ratio,
        seconds: params.seconds,
        resolution: params.resolution.clone(),
        mode: params.mode,
        image,
        delivery: VideoDelivery::Record,
    });
    let record = VideoJobRecord {
        id: id.to_string(),
        api_key_sha256: caller_digest(&headers),
        model: model.id.to_owned(),
        prompt,
        seconds: i64::from(params.seconds),
        size: params.size.clone(),
        resolution: params.resolution,
        status: VideoJobStatus::Queued,
        progress: 0,
        error: None,
        video_key: None,
        thumbnail_key: None,
        video_bytes: None,
        created_at_ms: now,
        updated_at_ms: now,
        completed_at_ms: None,
        expires_at_ms: deadline,
        // Kept so the job can be queued again if an in-process queue loses it.
        job: serde_json::to_string(&job).ok(),
    };
    state
        .backends
        .store
        .create_video_job(&record)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not record a video job");
            ApiError::unavailable("The store is unavailable, try again shortly", 2)
        })?;
    let mut envelope = JobEnvelope::new(job, deadline);
    // The job and its record share the id, so the worker finds the record.
    envelope.id = id;
    if let Err(e) = state.backends.queue.publish(&envelope).await {
        let (message, retry) = match e {
            QueueError::Full => ("The server is at capacity, try again shortly", 1),
            other => {
                tracing::error!(error = %other, "video job publish failed");
                ("The job queue is unavailable, try again shortly", 2)
            }
        };
        let failure = VideoJobUpdate::Failed(VideoJobFailure {
            code: "service_unavailable".into(),
            message: message.into(),
        });
        let _ = state
            .backends
            .store
            .update_video_job(&record.id, &failure)
            .await;
        return Err(ApiError::unavailable(message, retry));
    }
    tracing::info!(video_id = %id, "video job queued");
    Ok((StatusCode::OK, axum::Json(video_object(&record))).into_response())
}

/// `GET /v1/videos/{id}`
pub async fn retrieve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = load(&state, &headers, &id).await?;
    Ok(axum::Json(video_object(&record)).into_response())
}

#[derive(serde::Deserialize)]
pub struct ContentQuery {
    variant: Option<String>,
}

/// `GET /v1/videos/{id}/content[?variant=video|thumbnail]`
pub async fn content(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ContentQuery>,
) -> Result<Response, ApiError> {
    let record = load(&state, &headers, &id).await?;
    if record.status != VideoJobStatus::Completed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "The video is {}; its content is available once it is completed",
                record.status.as_str()
            ),
        )
        .with_code("video_not_ready"));
    }
    let (kind, key) = match query.variant.as_deref() {
        None | Some("video") => (MediaKind::Video, record.video_key.as_deref()),
        Some("thumbnail") => (MediaKind::Image, record.thumbnail_key.as_deref()),
        Some(_) => {
            return Err(ApiError::invalid(
                "variant",
                "invalid_variant",
                "variant must be video or thumbnail",
            ));
        }
    };
    let prefix = format!("{}/", MediaKind::key(kind, "").trim_end_matches('/'));
    let Some(name) = key.and_then(|k| k.strip_prefix(&prefix)) else {
        return Err(ApiError::not_found("This video has no such content"));
    };
    // The files routes serve blob objects with Range support and the right headers.
    let name = Ok(Path(name.to_owned()));
    let mut response = match kind {
        MediaKind::Video => crate::files::video(State(state), method, headers, name).await,
        MediaKind::Image => crate::files::image(State(state), method, headers, name).await,
    };
    // The content of a job is private to its key, unlike the capability links.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}

/// The record for a public id, if the caller's key created it; expired unfinished records
/// are settled as failed on the way.
async fn load(state: &AppState, headers: &HeaderMap, id: &str) -> Result<VideoJobRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("No video found with id '{}'", clip(id)));
    let uuid = id
        .strip_prefix(ID_PREFIX)
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .ok_or_else(not_found)?;
    let store = &state.backends.store;
    let mut record = store
        .get_video_job(&uuid.to_string())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not read a video job");
            ApiError::unavailable("The store is unavailable, try again shortly", 2)
        })?
        .ok_or_else(not_found)?;
    let digest = caller_digest(headers);
    let same_key: bool =
        subtle::ConstantTimeEq::ct_eq(record.api_key_sha256.as_bytes(), digest.as_bytes()).into();
    if !same_key {
        return Err(not_found());
    }
    if !record.status.is_terminal() && now_ms() > record.expires_at_ms + EXPIRY_GRACE_MS {
        let failure = VideoJobFailure {
            code: "timeout".into(),
            message: "The video was not finished in time".into(),
        };
        let update = VideoJobUpdate::Failed(failure);
        if let Err(e) = store.update_video_job(&record.id, &update).await {
            tracing::warn!(error = %e, "could not settle an expired video job");
        }
        // Whoever won the race, the record now says how the job ended.
        if let Ok(Some(fresh)) = store.get_video_job(&record.id).await {
            record = fresh;
        }
    }
    Ok(record)
}

/// SHA-256 hex of the caller's API key (of an empty key on an open API).
fn caller_digest(headers: &HeaderMap) -> String {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .unwrap_or("");
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn public_id(record: &VideoJobRecord) -> String {
    match Uuid::try_parse(&record.id) {
        Ok(u) => format!("{ID_PREFIX}{}", u.simple()),
        Err(_) => format!("{ID_PREFIX}{}", record.id),
    }
}

/// OpenAI's video object.
pub fn video_object(record: &VideoJobRecord) -> Value {
    let secs = |ms: i64| ms.div_euclid(1000);
    let error = record
        .error
        .as_ref()
        .map(|e| json!({"code": e.code, "message": e.message}));
    json!({
        "id": public_id(record),
        "object": "video",
        "model": record.model,
        "status": record.status.as_str(),
        "progress": record.progress,
        "created_at": secs(record.created_at_ms),
        "completed_at": record.completed_at_ms.map(secs),
        "expires_at": secs(record.expires_at_ms),
        "seconds": record.seconds.to_string(),
        "size": record.size,
        "resolution": record.resolution,
        "prompt": record.prompt,
        "remixed_from_video_id": null,
        "error": error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> VideoJobRecord {
        VideoJobRecord {
            id: "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0".into(),
            api_key_sha256: String::new(),
            model: "grok-imagine-1.0-video".into(),
            prompt: "p".into(),
            seconds: 6,
            size: "1280x720".into(),
            resolution: "480p".into(),
            status: VideoJobStatus::Failed,
            progress: 0,
            error: Some(VideoJobFailure {
                code: "content_moderated".into(),
                message: "m".into(),
            }),
            video_key: None,
            thumbnail_key: None,
            video_bytes: None,
            created_at_ms: 1_700_000_000_999,
            updated_at_ms: 1,
            completed_at_ms: Some(1_700_000_001_000),
            expires_at_ms: 1_700_000_600_000,
            job: None,
        }
    }

    #[test]
    fn the_object_has_openai_fields() {
        let v = video_object(&record());
        assert_eq!(v["id"], "video_0f1e2d3c4b5a49788796a5b4c3d2e1f0");
        assert_eq!(v["object"], "video");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["seconds"], "6");
        assert_eq!(v["created_at"], 1_700_000_000);
        assert_eq!(v["completed_at"], 1_700_000_001);
        assert_eq!(v["error"]["code"], "content_moderated");
    }

    #[test]
    fn callers_are_told_apart_by_key_digest() {
        let mut a = HeaderMap::new();
        a.insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert(header::AUTHORIZATION, "Bearer k2".parse().unwrap());
        assert_ne!(caller_digest(&a), caller_digest(&b));
        assert_eq!(caller_digest(&a).len(), 64);
        assert!(!caller_digest(&a).contains("k1"));
    }
}
