//! `POST /v1/videos` as multipart/form-data, as OpenAI's API takes it: text fields
//! (`prompt`, `model`, `seconds`, `size`, ...) and an optional `input_reference` file for
//! image-to-video. The form becomes the same JSON object a JSON request gives, the file a
//! `data:` URI, so both shapes share every check.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use shared::upstream::sniff_media_type;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest text field accepted.
const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Largest `input_reference` image (the whole body is also held to `server.max_body_bytes`).
pub const MAX_REFERENCE_BYTES: usize = 20 * 1024 * 1024;
/// Most parts one form may have.
const MAX_PARTS: usize = 32;

/// True when the request carries a multipart form.
pub fn is_multipart(request: &Request) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
            .with_param("body")
            .with_code("body_too_large")
    } else {
        ApiError::invalid("body", "invalid_body", "Malformed multipart body")
    }
}

async fn read_capped(
    field: &mut Field<'_>,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads the form into the JSON object of a JSON request.
pub async fn read(state: &AppState, request: Request) -> Result<Value, ApiError> {
    let mut multipart = Multipart::from_request(request, state).await.map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json or multipart/form-data",
        )
        .with_param("body")
        .with_code("invalid_content_type")
    })?;
    let mut obj = Map::new();
    let mut parts = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(ApiError::invalid(
                "body",
                "too_many_fields",
                format!("At most {MAX_PARTS} form fields"),
            ));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if field.file_name().is_some() || name == "input_reference" {
            let value = reference(&mut field, &name).await?;
            obj.insert(name, value);
            continue;
        }
        let bytes = read_capped(&mut field, MAX_FIELD_BYTES, || {
            ApiError::invalid(&name, "invalid_value", "Form field is too large")
        })
        .await?;
        let text = String::from_utf8(bytes).map_err(|_| {
            ApiError::invalid(&name, "invalid_value", "Form fields must be UTF-8 text")
        })?;
        obj.insert(name, Value::String(text));
    }
    Ok(Value::Object(obj))
}

/// A file part: an image, checked by its magic bytes, as a `data:` URI. A text part named
/// `input_reference` (a URL) stays text.
async fn reference(field: &mut Field<'_>, name: &str) -> Result<Value, ApiError> {
    let is_file = field.file_name().is_some();
    let bytes = read_capped(field, MAX_REFERENCE_BYTES, || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{name} must be at most {} MB",
                MAX_REFERENCE_BYTES / 1024 / 1024
            ),
        )
        .with_param(name)
        .with_code("image_too_large")
    })
    .await?;
    if !is_file {
        let text = String::from_utf8(bytes).map_err(|_| {
            ApiError::invalid(name, "invalid_value", "Form fields must be UTF-8 text")
        })?;
        return Ok(Value::String(text));
    }
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            name,
            "empty_media",
            format!("{name} is an empty file"),
        ));
    }
    let kind = sniff_media_type(&bytes)
        .filter(|t| matches!(t.ext, "png" | "jpg" | "webp"))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                "invalid_image",
                format!("{name} must be a PNG, JPEG or WebP image"),
            )
        })?;
    Ok(Value::String(format!(
        "data:{};base64,{}",
        kind.mime,
        STANDARD.encode(&bytes)
    )))
}
