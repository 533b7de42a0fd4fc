//! Image edit through `POST /rest/app-chat/conversations/new` with
//! `modelName: "imagine-image-edit"` and `mediaGenInput.imageToImage`.
//!
//! The 1 to 8 `inputAssets` must be `fileMetadataId`s this account uploaded. The answer is
//! NDJSON: `streamingImageGenerationResponse` progress per image, then
//! `modelResponse.generatedImageUrls` (relative `users/<uid>/generated/<id>/image.png`
//! paths, served by the assets host to this account only). Each call yields
//! [`EDIT_IMAGES_PER_CALL`] images. Prompt markers as for Imagine: `[[moderated]]` yields
//! moderated results without URLs, `[[fail]]` an in-band error.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::SimState;
use crate::account::user_id_for;
use crate::faults::{self, Faults};
use crate::imagine::{ASPECT_RATIOS, FAIL_MARKER, MODERATED_MARKER};
use crate::png::{FINAL_SIDE, picture};

/// The `modelName` of the edit call.
pub const EDIT_MODEL: &str = "imagine-image-edit";
/// Images one edit call produces.
pub const EDIT_IMAGES_PER_CALL: u32 = 2;
/// Most input images one edit call takes.
pub const MAX_INPUT_ASSETS: usize = 8;
const PROGRESS_STEPS: [u8; 4] = [25, 50, 75, 100];

/// The image an edit of `inputs` (their bytes, in request order) with `prompt` yields at
/// position `index`.
pub fn edited_image(prompt: &str, inputs: &[&[u8]], index: u32) -> Vec<u8> {
    let digests: Vec<[u8; 32]> = inputs.iter().map(|b| Sha256::digest(b).into()).collect();
    edited_from_digests(prompt, &digests, index)
}

fn edited_from_digests(prompt: &str, digests: &[[u8; 32]], index: u32) -> Vec<u8> {
    let mut seed = format!("edit|{prompt}|{index}|").into_bytes();
    for d in digests {
        seed.extend_from_slice(d);
    }
    picture(&seed, FINAL_SIDE)
}

/// True when a `conversations/new` body asks for an image edit.
pub(crate) fn is_edit(request: &Value) -> bool {
    request.get("modelName").and_then(Value::as_str) == Some(EDIT_MODEL)
}

/// Answers an authenticated edit call.
pub(crate) fn respond(
    state: &Arc<SimState>,
    token: &str,
    request: &Value,
    faults: Faults,
) -> Response {
    let edit = &request["mediaGenInput"]["imageToImage"];
    let Some(prompt) = edit["prompt"].as_str().filter(|p| !p.trim().is_empty()) else {
        return faults::bad_request("mediaGenInput.imageToImage.prompt is required");
    };
    if !request["message"].is_string() {
        return faults::bad_request("message must be a string");
    }
    if let Some(ratio) = edit.get("aspectRatio")
        && !ratio.as_str().is_some_and(|r| ASPECT_RATIOS.contains(&r))
    {
        return faults::bad_request("unsupported aspectRatio");
    }
    let Some(ids) = edit["inputAssets"].as_array() else {
        return faults::bad_request("inputAssets must be an array");
    };
    if ids.is_empty() || ids.len() > MAX_INPUT_ASSETS {
        return faults::bad_request("inputAssets must hold 1 to 8 uploaded files");
    }
    let mut digests = Vec::with_capacity(ids.len());
    for id in ids {
        let upload = id.as_str().and_then(|id| state.media.upload_of(token, id));
        match upload {
            Some(u) if u.content_type.starts_with("image/") => digests.push(u.digest),
            Some(_) => return faults::bad_request("an input asset is not an image"),
            None => return faults::bad_request("unknown input asset"),
        }
    }
    if faults.rate_limited {
        return faults::rate_limited(state.config.rate_limit_window_secs);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let guard = state.stats.begin_call(token, EDIT_MODEL);
    let job = EditRun {
        state: Arc::clone(state),
        token: token.to_owned(),
        prompt: prompt.to_owned(),
        digests,
        delay: Duration::from_millis(if faults.slow {
            state.config.slow_frame_delay_ms
        } else {
            state.config.frame_delay_ms
        }),
        stall: faults.stall,
    };
    tokio::spawn(async move {
        let _in_flight = guard;
        let shutdown = job.state.shutdown.clone();
        tokio::select! {
            _ = job.run(&tx) => {}
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

struct EditRun {
    state: Arc<SimState>,
    token: String,
    prompt: String,
    digests: Vec<[u8; 32]>,
    delay: Duration,
    stall: bool,
}

fn line(frame: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(frame).expect("a JSON value always serialises");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl EditRun {
    async fn run(self, tx: &mpsc::Sender<Bytes>) -> Result<(), mpsc::error::SendError<Bytes>> {
        let uid = user_id_for(&self.token);
        let ids: Vec<String> = (0..EDIT_IMAGES_PER_CALL)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let moderated = self.prompt.contains(MODERATED_MARKER);
        let response_id = uuid::Uuid::new_v4().to_string();
        tx.send(line(&json!({"result": {"conversation": {
            "conversationId": uuid::Uuid::new_v4().to_string(), "temporary": true}}})))
            .await?;
        for (step, progress) in PROGRESS_STEPS.into_iter().enumerate() {
            tokio::time::sleep(self.delay).await;
            for (index, id) in ids.iter().enumerate() {
                tx.send(line(&json!({"result": {"response": {
                    "responseId": response_id,
                    "streamingImageGenerationResponse": {"imageId": id, "imageIndex": index,
                        "progress": progress, "moderated": moderated && progress == 100}}}})))
                    .await?;
            }
            if step == 0 && self.stall {
                std::future::pending::<()>().await;
            }
            if step == 0 && self.prompt.contains(FAIL_MARKER) {
                return tx
                    .send(line(
                        &json!({"error": {"code": 13, "message": "image edit failed"}}),
                    ))
                    .await;
            }
        }
        let mut urls = Vec::new();
        if !moderated {
            for (index, id) in ids.iter().enumerate() {
                let path = format!("users/{uid}/generated/{id}/image.png");
                let bytes = edited_from_digests(&self.prompt, &self.digests, index as u32);
                self.state
                    .media
                    .add_asset(&self.token, &path, "image/png", Bytes::from(bytes));
                urls.push(path);
            }
        }
        tx.send(line(&json!({"result": {"response": {"modelResponse": {
            "responseId": response_id, "message": "", "sender": "ASSISTANT",
            "generatedImageUrls": urls}}}})))
            .await?;
        tx.send(line(
            &json!({"result": {"response": {"isSoftStop": true, "finalMetadata": {}}}}),
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_depend_on_prompt_inputs_and_index() {
        let a = edited_image("p", &[b"one"], 0);
        assert_eq!(a, edited_image("p", &[b"one"], 0));
        assert_ne!(a, edited_image("p", &[b"one"], 1));
        assert_ne!(a, edited_image("p", &[b"two"], 0));
        assert_ne!(a, edited_image("p", &[b"one", b"two"], 0));
        assert!(is_edit(&json!({"modelName": EDIT_MODEL})));
        assert!(!is_edit(&json!({"modeId": "fast"})));
    }
}
