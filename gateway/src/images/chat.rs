//! The image models through `/v1/chat/completions`, as the original product serves them:
//! the prompt is the last non-blank text of the conversation, options come from
//! `image_config` (`n`, `size`, `response_format`), and the answer has the Images API's
//! shape (a JSON document, or the image SSE events when `stream` is true).
//!
//! `grok-imagine-1.0-edit` needs a user `image_url`; the last one is edited. A `data:` URI
//! is stored like an `/v1/images/edits` upload; an http(s) URL passes the checks that need
//! no lookup here and is downloaded by the worker under the SSRF policy (`shared::fetch`).

use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::Value;
use shared::models::{ModelKind, ModelSpec};
use shared::upstream::sniff_media_type;

use super::edits::MAX_IMAGE_BYTES;
use super::{ImageOptions, job_payload, parse_format, parse_n, parse_size, parse_stream, run};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn completions(
    state: &AppState,
    body: &Value,
    model: &'static ModelSpec,
) -> Result<Response, ApiError> {
    let config = body.get("image_config").filter(|c| !c.is_null());
    if config.is_some_and(|c| !c.is_object()) {
        return Err(ApiError::invalid(
            "image_config",
            "invalid_value",
            "image_config must be an object",
        ));
    }
    let field = |name: &str| config.and_then(|c| c.get(name));
    let n = parse_n(field("n")).map_err(|e| e.with_param("image_config.n"))?;
    let (size, aspect_ratio) =
        parse_size(field("size")).map_err(|e| e.with_param("image_config.size"))?;
    let format = parse_format(
        field("response_format"),
        &state.backends.live.get().image.response_format,
    )
    .map_err(|e| e.with_param("image_config.response_format"))?;
    let stream = parse_stream(body.get("stream"), n)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let prompt = last_text(messages).ok_or_else(|| {
        ApiError::invalid(
            "messages",
            "empty_prompt",
            "The conversation has no text to send",
        )
    })?;
    let mut inputs = Vec::new();
    if model.kind == ModelKind::ImageEdit {
        inputs.push(store_last_image(state, messages).await?);
    }
    let options = ImageOptions {
        prompt,
        n,
        size,
        aspect_ratio,
        format,
        stream,
    };
    run(state, job_payload(model, &options, inputs), options).await
}

/// The last non-blank text of any message (string content or `text` blocks).
fn last_text(messages: &[Value]) -> Option<String> {
    messages.iter().rev().find_map(|m| match m.get("content") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Array(blocks)) => blocks.iter().rev().find_map(|b| {
            (b.get("type").and_then(Value::as_str) == Some("text"))
                .then(|| b.get("text").and_then(Value::as_str))
                .flatten()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        }),
        _ => None,
    })
}

/// The last user `image_url` with its parameter path.
fn last_image(messages: &[Value]) -> Option<(String, &str)> {
    messages.iter().enumerate().rev().find_map(|(i, m)| {
        if m.get("role").and_then(Value::as_str) != Some("user") {
            return None;
        }
        let blocks = m.get("content")?.as_array()?;
        blocks.iter().enumerate().rev().find_map(|(j, b)| {
            let url = b.get("image_url")?;
            let url = url.get("url").unwrap_or(url).as_str()?;
            Some((
                format!("messages.{i}.content.{j}.image_url.url"),
                url.trim(),
            ))
        })
    })
}

/// Decodes the last user image and stores it as an edit input; returns its blob key, or
/// the checked URL the worker downloads.
async fn store_last_image(state: &AppState, messages: &[Value]) -> Result<String, ApiError> {
    let (param, url) = last_image(messages).ok_or_else(|| {
        ApiError::invalid(
            "messages",
            "missing_image",
            "grok-imagine-1.0-edit needs an image_url in a user message",
        )
    })?;
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("http" | "https")) {
        return shared::fetch::precheck_url(url)
            .map(|checked| checked.to_string())
            .map_err(|e| ApiError::invalid(&param, e.code(), e.to_string()));
    }
    let payload = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .map(|(_, payload)| payload)
        .ok_or_else(|| {
            ApiError::invalid(
                &param,
                "unsupported_media_url",
                "Send the image to edit as an http(s) URL or a data: URI (data:image/png;base64,...)",
            )
        })?;
    if payload.len() / 4 * 3 > MAX_IMAGE_BYTES {
        return Err(ApiError::invalid(
            &param,
            "image_too_large",
            "The image is larger than 50 MB",
        ));
    }
    let bytes = STANDARD
        .decode(payload.trim())
        .map_err(|_| ApiError::invalid(&param, "invalid_media", "The image is not valid base64"))?;
    let kind = sniff_media_type(&bytes)
        .filter(|t| matches!(t.ext, "png" | "jpg" | "webp"))
        .ok_or_else(|| {
            ApiError::invalid(
                &param,
                "invalid_image",
                "Images must be PNG, JPEG or WebP files",
            )
        })?;
    let key = format!("edit-inputs/{}.{}", uuid::Uuid::new_v4().simple(), kind.ext);
    state
        .backends
        .blob
        .put(&key, kind.mime, Bytes::from(bytes))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not store an edit input");
            ApiError::unavailable("Media storage is unavailable, try again shortly", 2)
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_and_image_come_from_the_end_of_the_conversation() {
        let messages = vec![
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "first"}]}),
            json!({"role": "assistant", "content": "ok"}),
            json!({"role": "user", "content": [
                {"type": "text", "text": " make it blue "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBBB"}}]}),
        ];
        assert_eq!(last_text(&messages).as_deref(), Some("make it blue"));
        let (param, url) = last_image(&messages).unwrap();
        assert_eq!(param, "messages.2.content.1.image_url.url");
        assert!(url.ends_with("BBBB"));
        assert_eq!(last_image(&messages[1..2]), None);
    }
}
