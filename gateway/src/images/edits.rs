//! `POST /v1/images/edits` (multipart/form-data).
//!
//! Fields: `prompt`, one or more `image` (or `image[]`) file parts, `model`, `n`, `size`,
//! `response_format`, `stream`; `quality`, `style`, `user`, `background` are ignored. Each
//! image is limited while it streams in (never buffered past [`MAX_IMAGE_BYTES`]), checked
//! by its magic bytes, and written to the blob store at once, so at most one image is held
//! in memory. The job carries the blob keys.

use std::collections::HashMap;

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::BytesMut;
use serde_json::Value;
use shared::models;
use shared::upstream::sniff_media_type;

use super::{
    ImageOptions, check_model, job_payload, parse_format, parse_n, parse_prompt, parse_size,
    parse_stream, run,
};
use crate::error::ApiError;
use crate::state::AppState;

/// The one model this route serves.
pub const MODEL: &str = "grok-imagine-1.0-edit";
/// Most images one edit takes.
pub const MAX_IMAGES: usize = 16;
/// Largest image accepted.
pub const MAX_IMAGE_BYTES: usize = 50 * 1024 * 1024;
/// Largest text field accepted.
const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Largest whole request body (every image at its limit, plus the text fields).
pub const MAX_BODY_BYTES: usize = MAX_IMAGES * MAX_IMAGE_BYTES + 1024 * 1024;
/// Where inputs wait for the worker.
const INPUT_PREFIX: &str = "edit-inputs";

pub async fn create(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be multipart/form-data",
            )
            .with_param("body")
            .with_code("invalid_content_type")
        })?;
    let mut form = Form::default();
    let read = form.read(&state, multipart).await;
    let validated =
        read.and_then(|()| form.options(&state.backends.live.get().image.response_format));
    let options = match validated {
        Ok(options) => options,
        Err(e) => {
            form.discard(&state).await;
            return Err(e);
        }
    };
    let model = models::find(MODEL).ok_or_else(ApiError::internal)?;
    let payload = job_payload(model, &options, form.images.clone());
    run(&state, payload, options).await
}

/// What the form held: text fields, and the blob keys of the images already stored.
#[derive(Default)]
struct Form {
    fields: HashMap<String, Value>,
    images: Vec<String>,
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

/// Reads a field to its end, failing as soon as it passes `limit`.
async fn read_capped(
    field: &mut Field<'_>,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<BytesMut, ApiError> {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

impl Form {
    async fn read(&mut self, state: &AppState, mut multipart: Multipart) -> Result<(), ApiError> {
        while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "image" || name == "image[]" {
                self.store_image(state, &mut field).await?;
                continue;
            }
            let bytes = read_capped(&mut field, MAX_FIELD_BYTES, || {
                ApiError::invalid(&name, "invalid_value", "Form field is too large")
            })
            .await?;
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::invalid(&name, "invalid_value", "Form fields must be UTF-8 text")
            })?;
            self.fields.insert(name, Value::String(text));
        }
        Ok(())
    }

    async fn store_image(
        &mut self,
        state: &AppState,
        field: &mut Field<'_>,
    ) -> Result<(), ApiError> {
        let index = self.images.len();
        let param = format!("image.{index}");
        if index >= MAX_IMAGES {
            return Err(ApiError::invalid(
                "image",
                "too_many_images",
                format!("At most {MAX_IMAGES} images"),
            ));
        }
        let bytes = read_capped(field, MAX_IMAGE_BYTES, || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Each image must be at most {} MB",
                    MAX_IMAGE_BYTES / 1024 / 1024
                ),
            )
            .with_param(param.clone())
            .with_code("image_too_large")
        })
        .await?;
        let kind = sniff_media_type(&bytes)
            .filter(|t| matches!(t.ext, "png" | "jpg" | "webp"))
            .ok_or_else(|| {
                ApiError::invalid(
                    &param,
                    "invalid_image",
                    "Images must be PNG, JPEG or WebP files",
                )
            })?;
        let key = format!(
            "{INPUT_PREFIX}/{}.{}",
            uuid::Uuid::new_v4().simple(),
            kind.ext
        );
        state
            .backends
            .blob
            .put(&key, kind.mime, bytes.freeze())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not store an edit input");
                ApiError::unavailable("Media storage is unavailable, try again shortly", 2)
            })?;
        self.images.push(key);
        Ok(())
    }

    fn options(&self, default_format: &str) -> Result<ImageOptions, ApiError> {
        check_model(self.fields.get("model"), MODEL)?;
        let prompt = parse_prompt(self.fields.get("prompt"))?;
        if self.images.is_empty() {
            return Err(ApiError::invalid(
                "image",
                "missing_image",
                "At least one image is required",
            ));
        }
        let n = parse_n(self.fields.get("n"))?;
        let (size, aspect_ratio) = parse_size(self.fields.get("size"))?;
        let format = parse_format(self.fields.get("response_format"), default_format)?;
        let stream = parse_stream(self.fields.get("stream"), n)?;
        Ok(ImageOptions {
            prompt,
            n,
            size,
            aspect_ratio,
            format,
            stream,
        })
    }

    /// Removes stored inputs of a request that was refused.
    async fn discard(&self, state: &AppState) {
        for key in &self.images {
            let _ = state.backends.blob.delete(key).await;
        }
    }
}
