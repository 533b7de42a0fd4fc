//! `POST /http/upload-file-v2/direct`: multipart upload of one file, remembered per account.
//!
//! Strict like the real endpoint: a `file` part with a file name and a content type is
//! required; an optional `file_source` field is accepted. Any content type is taken (chat
//! attachments, image-edit inputs, image-to-video sources).

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde_json::json;

use crate::SimState;
use crate::account::{authenticated_token, sso_token, user_id_for};
use crate::faults::{self, Faults};

/// Largest file the simulated endpoint takes.
pub(crate) const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

pub(crate) async fn upload(State(state): State<Arc<SimState>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let faults = Faults::for_request(&headers, sso_token(&headers).as_deref());
    if faults.anti_bot {
        return faults::anti_bot_challenge();
    }
    let Some(token) = authenticated_token(&headers) else {
        return faults::unauthorized();
    };
    if faults.unauthorized {
        return faults::unauthorized();
    }
    if faults.blocked {
        return faults::blocked();
    }
    if faults.rate_limited {
        return faults::rate_limited(state.config.rate_limit_window_secs);
    }
    let multipart = match Multipart::from_request(request, &state).await {
        Ok(m) => m,
        Err(_) => return faults::bad_request("Content-Type must be multipart/form-data"),
    };
    let (content_type, bytes) = match read_file_part(multipart).await {
        Ok(file) => file,
        Err(message) => return faults::bad_request(message),
    };
    let (metadata_id, upload) = state.media.add_upload(&token, &content_type, bytes);
    let uid = user_id_for(&token);
    axum::Json(json!({
        "uploadId": uuid::Uuid::new_v4().to_string(),
        "terminalError": null,
        "fileMetadata": {
            "fileMetadataId": metadata_id,
            "fileId": upload.file_id,
            "fileUri": format!("users/{uid}/{}/content", upload.file_id),
        },
    }))
    .into_response()
}

/// The `file` part's content type and bytes; every other part but `file_source` is refused.
async fn read_file_part(mut multipart: Multipart) -> Result<(String, Bytes), &'static str> {
    let mut file = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return Err("malformed multipart body"),
        };
        match field.name() {
            Some("file") if file.is_none() => {
                if field.file_name().is_none_or(str::is_empty) {
                    return Err("the file part needs a filename");
                }
                let content_type = field
                    .content_type()
                    .filter(|c| !c.is_empty())
                    .ok_or("the file part needs a Content-Type")?
                    .to_owned();
                let mut bytes = BytesMut::new();
                let mut field = field;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|_| "malformed multipart body")?
                {
                    if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES {
                        return Err("file too large");
                    }
                    bytes.extend_from_slice(&chunk);
                }
                if bytes.is_empty() {
                    return Err("the file is empty");
                }
                file = Some((content_type, bytes.freeze()));
            }
            Some("file_source") => {
                let _ = field.text().await;
            }
            _ => return Err("unexpected multipart field"),
        }
    }
    file.ok_or("a file part is required")
}
