//! Video generation through `POST /rest/app-chat/conversations/new` (the current upstream:
//! no media post, `modelName: "imagine-video-gen"`, `mediaGenInput.textToVideo`), and the
//! 720p upscale `POST /rest/media/video/upscale`.
//!
//! Image-to-video uses `mediaGenInput.imageToVideo {prompt, inputAssets: [<fileMetadataId>],
//! aspectRatio, duration, resolutionName}`: this shape is inferred (the current web client
//! has no image-to-video), modelled on `imageToImage`.
//!
//! The answer is NDJSON: `streamingVideoGenerationResponse` progress frames, then a final
//! one at 100 with `videoUrl` and `thumbnailImageUrl` (or `moderated: true` and no URL for
//! a prompt holding `[[moderated]]`). The MP4 and its thumbnail are real files registered on
//! the assets host for the generating account only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::account::{authenticated_token, sso_token, user_id_for};
use crate::faults::{self, Faults};
use crate::imagine::{FAIL_MARKER, MODERATED_MARKER};
use crate::{SimState, mp4, png};

/// `modelName` of a video call.
pub const VIDEO_MODEL: &str = "imagine-video-gen";
/// Aspect ratios the video model accepts.
pub const VIDEO_ASPECT_RATIOS: [&str; 5] = ["16:9", "9:16", "3:2", "2:3", "1:1"];
/// Resolutions the video model accepts.
pub const VIDEO_RESOLUTIONS: [&str; 2] = ["480p", "720p"];
/// `--mode=` values of the message.
const VIDEO_MODES: [&str; 4] = [
    "custom",
    "normal",
    "extremely-crazy",
    "extremely-spicy-or-crazy",
];
/// Progress reported before the final frame.
const PROGRESS_STEPS: [u8; 5] = [1, 25, 50, 75, 95];
/// Side of the thumbnail picture.
const THUMBNAIL_SIDE: u32 = 32;

/// The MP4 the simulator generates for a prompt, a duration and (image-to-video) the input
/// image's bytes. Tests compare downloads against it byte for byte.
pub fn generated_video(prompt: &str, seconds: u32, image: Option<&[u8]>) -> Vec<u8> {
    let digest = image.map(|b| <[u8; 32]>::from(Sha256::digest(b)));
    mp4::video(
        &seed(prompt, seconds, digest.as_ref()),
        seconds,
        mp4::SD_SIDE,
    )
}

/// The upscaled MP4 for a generated one (what `hdMediaUrl` serves).
pub fn upscaled_video(video: &[u8]) -> Vec<u8> {
    mp4::video(&Sha256::digest(video), 1, mp4::HD_SIDE)
}

/// The thumbnail (PNG) of a generated video.
pub fn video_thumbnail(video: &[u8]) -> Vec<u8> {
    let mut seed = b"thumbnail:".to_vec();
    seed.extend_from_slice(&Sha256::digest(video));
    png::picture(&seed, THUMBNAIL_SIDE)
}

fn seed(prompt: &str, seconds: u32, image: Option<&[u8; 32]>) -> Vec<u8> {
    let mut seed = format!("video:{seconds}:{prompt}").into_bytes();
    if let Some(d) = image {
        seed.extend_from_slice(b":image:");
        seed.extend_from_slice(d);
    }
    seed
}

/// Whether a `conversations/new` body asks for a video.
pub(crate) fn is_video(request: &Value) -> bool {
    request.get("modelName").and_then(Value::as_str) == Some(VIDEO_MODEL)
        || request.pointer("/mediaGenInput/textToVideo").is_some()
        || request.pointer("/mediaGenInput/imageToVideo").is_some()
}

/// A validated video call.
struct VideoCall {
    prompt: String,
    seconds: u32,
    image: Option<[u8; 32]>,
}

fn validate(state: &SimState, token: &str, request: &Value) -> Result<VideoCall, String> {
    if request.get("modelName").and_then(Value::as_str) != Some(VIDEO_MODEL) {
        return Err(format!("modelName must be {VIDEO_MODEL}"));
    }
    if request.get("kind").and_then(Value::as_str) != Some("CONVERSATION_KIND_IMAGINE") {
        return Err("kind must be CONVERSATION_KIND_IMAGINE".into());
    }
    let message = request
        .get("message")
        .and_then(Value::as_str)
        .ok_or("message must be a string")?;
    let mode = message
        .rsplit_once(" --mode=")
        .map(|(_, m)| m)
        .ok_or("message must end with --mode=<mode>")?;
    if !VIDEO_MODES.contains(&mode) {
        return Err(format!("unknown video mode {mode:?}"));
    }
    let input = request
        .get("mediaGenInput")
        .ok_or("mediaGenInput is required")?;
    let (spec, image_to_video) = match (input.get("textToVideo"), input.get("imageToVideo")) {
        (Some(t), None) => (t, false),
        (None, Some(i)) => (i, true),
        _ => return Err("mediaGenInput needs exactly one of textToVideo, imageToVideo".into()),
    };
    let prompt = spec
        .get("prompt")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty())
        .ok_or("prompt is required")?;
    let ratio = spec
        .get("aspectRatio")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !VIDEO_ASPECT_RATIOS.contains(&ratio) {
        return Err(format!("unsupported aspectRatio {ratio:?}"));
    }
    let seconds = spec
        .get("duration")
        .and_then(Value::as_u64)
        .filter(|d| (1..=15).contains(d))
        .ok_or("duration must be an integer from 1 to 15")?;
    let resolution = spec
        .get("resolutionName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !VIDEO_RESOLUTIONS.contains(&resolution) {
        return Err(format!("unsupported resolutionName {resolution:?}"));
    }
    let image = if image_to_video {
        let ids = spec
            .get("inputAssets")
            .and_then(Value::as_array)
            .filter(|ids| ids.len() == 1)
            .ok_or("imageToVideo.inputAssets must hold exactly one uploaded image")?;
        let upload = ids[0]
            .as_str()
            .and_then(|id| state.media.upload_of(token, id))
            .ok_or("unknown input asset")?;
        if !upload.content_type.starts_with("image/") {
            return Err("the input asset is not an image".into());
        }
        Some(upload.digest)
    } else {
        None
    };
    Ok(VideoCall {
        prompt: prompt.to_owned(),
        seconds: seconds as u32,
        image,
    })
}

/// Answers an authenticated video call.
pub(crate) fn respond(
    state: &Arc<SimState>,
    token: &str,
    request: &Value,
    faults: Faults,
) -> Response {
    let call = match validate(state, token, request) {
        Ok(call) => call,
        Err(message) => return faults::bad_request(&message),
    };
    if faults.rate_limited {
        return faults::rate_limited(state.config.rate_limit_window_secs);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let guard = state.stats.begin_call(token, VIDEO_MODEL);
    let run = VideoRun {
        state: Arc::clone(state),
        token: token.to_owned(),
        call,
        faults,
    };
    tokio::spawn(async move {
        let _in_flight = guard;
        let shutdown = run.state.shutdown.clone();
        tokio::select! {
            _ = run.run(&tx) => {}
            () = shutdown.cancelled() => {}
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

struct VideoRun {
    state: Arc<SimState>,
    token: String,
    call: VideoCall,
    faults: Faults,
}

fn line(frame: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(frame).expect("a JSON value always serialises");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl VideoRun {
    async fn run(self, tx: &mpsc::Sender<Bytes>) -> Result<(), mpsc::error::SendError<Bytes>> {
        let uid = user_id_for(&self.token);
        let video_id = uuid::Uuid::new_v4().to_string();
        let post_id = uuid::Uuid::new_v4().to_string();
        let response_id = uuid::Uuid::new_v4().to_string();
        let delay = Duration::from_millis(if self.faults.slow {
            self.state.config.slow_frame_delay_ms
        } else {
            self.state.config.frame_delay_ms
        });
        tx.send(line(&json!({"result": {"conversation": {
            "conversationId": uuid::Uuid::new_v4().to_string(), "temporary": true}}})))
            .await?;
        for (step, progress) in PROGRESS_STEPS.into_iter().enumerate() {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            tx.send(line(&json!({"result": {"response": {
                "responseId": response_id,
                "streamingVideoGenerationResponse": {
                    "videoId": video_id, "progress": progress, "videoPostId": post_id}}}})))
                .await?;
            if step == 0 {
                if self.faults.stall {
                    std::future::pending::<()>().await;
                }
                if self.faults.cut {
                    return Ok(());
                }
                if self.call.prompt.contains(FAIL_MARKER) {
                    return tx
                        .send(line(
                            &json!({"error": {"code": 13, "message": "video generation failed"}}),
                        ))
                        .await;
                }
            }
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut last = json!({"videoId": video_id, "progress": 100, "videoPostId": post_id,
            "moderated": false});
        if self.call.prompt.contains(MODERATED_MARKER) {
            last["moderated"] = json!(true);
        } else if !self.faults.empty {
            let video = mp4::video(
                &seed(
                    &self.call.prompt,
                    self.call.seconds,
                    self.call.image.as_ref(),
                ),
                self.call.seconds,
                mp4::SD_SIDE,
            );
            let video_path = format!("users/{uid}/generated/{video_id}/generated_video.mp4");
            let thumb_path = format!("users/{uid}/generated/{video_id}/preview_image.png");
            let thumbnail = video_thumbnail(&video);
            let media = &self.state.media;
            media.add_asset(&self.token, &video_path, "video/mp4", Bytes::from(video));
            media.add_asset(
                &self.token,
                &thumb_path,
                "image/png",
                Bytes::from(thumbnail),
            );
            last["videoUrl"] = json!(video_path);
            last["thumbnailImageUrl"] = json!(thumb_path);
        }
        tx.send(line(&json!({"result": {"response": {
            "responseId": response_id, "streamingVideoGenerationResponse": last}}})))
            .await?;
        tx.send(line(&json!({"result": {"response": {"modelResponse": {
            "responseId": response_id, "message": "", "sender": "ASSISTANT"}}}})))
            .await?;
        tx.send(line(
            &json!({"result": {"response": {"isSoftStop": true, "finalMetadata": {}}}}),
        ))
        .await
    }
}

/// `POST /rest/media/video/upscale {"videoId"}`: registers the HD version of one of the
/// account's videos and answers `{"hdMediaUrl"}` (absolute, on the assets host).
pub(crate) async fn upscale(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let faults = Faults::for_request(&headers, sso_token(&headers).as_deref());
    if faults.anti_bot {
        return faults::anti_bot_challenge();
    }
    let Some(token) = authenticated_token(&headers) else {
        return faults::unauthorized();
    };
    if faults.rate_limited {
        return faults::rate_limited(state.config.rate_limit_window_secs);
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return faults::bad_request("request body is not valid JSON"),
    };
    let Some(video_id) = request
        .get("videoId")
        .and_then(Value::as_str)
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
    else {
        return faults::bad_request("videoId must be a video id");
    };
    let uid = user_id_for(&token);
    let sd_path = format!("users/{uid}/generated/{video_id}/generated_video.mp4");
    let Some(sd) = state.media.asset(&sd_path).filter(|a| a.owner == token) else {
        return faults::bad_request("unknown videoId");
    };
    let hd_path = format!("users/{uid}/generated/{video_id}/generated_video_hd.mp4");
    let hd = upscaled_video(&sd.bytes);
    state
        .media
        .add_asset(&token, &hd_path, "video/mp4", Bytes::from(hd));
    let base = crate::assets::assets_base(&headers);
    Json(json!({"hdMediaUrl": format!("{base}/{hd_path}")})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn videos_depend_on_prompt_duration_and_image() {
        let a = generated_video("a cat", 6, None);
        assert_eq!(&a[4..8], b"ftyp");
        assert_eq!(a, generated_video("a cat", 6, None));
        assert_ne!(a, generated_video("a cat", 5, None));
        assert_ne!(a, generated_video("a dog", 6, None));
        assert_ne!(a, generated_video("a cat", 6, Some(b"png")));
        let hd = upscaled_video(&a);
        assert_eq!(&hd[4..8], b"ftyp");
        assert_ne!(hd, a);
        assert_eq!(&video_thumbnail(&a)[1..4], b"PNG");
    }

    #[test]
    fn requests_are_recognised_by_model_or_input() {
        assert!(is_video(&json!({"modelName": VIDEO_MODEL})));
        assert!(is_video(&json!({"mediaGenInput": {"textToVideo": {}}})));
        assert!(!is_video(&json!({"modeId": "fast"})));
    }
}
