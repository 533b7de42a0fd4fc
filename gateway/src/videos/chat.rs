//! The video model through `/v1/chat/completions`, as the original product serves it: the
//! prompt is the flattened conversation, the first user `image_url` (if any) makes it
//! image-to-video, and `video_config` sets the shape. The answer is a chat completion whose
//! content ends with the rendered video (`app.video_format`); a stream also carries
//! progress lines while reasoning is shown.

use std::time::Duration;

use serde_json::Value;
use shared::job::{JobPayload, VideoDelivery, VideoJob};

use super::input::{self, CHAT_FIELDS};
use crate::chat::validate::ChatInput;
use crate::error::ApiError;
use crate::state::AppState;

/// The original product's default: 3:2.
const CHAT_DEFAULT_SIZE: &str = "1792x1024";

/// The job for a validated chat request to the video model, and how long it may take.
pub fn payload(
    state: &AppState,
    body: &Value,
    input: &ChatInput,
    want_reasoning: bool,
) -> Result<(JobPayload, Duration), ApiError> {
    let config = match body.get("video_config") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "video_config",
                "invalid_value",
                "video_config must be an object",
            ));
        }
    };
    let params = input::params(&config, "video_config.", &CHAT_FIELDS, CHAT_DEFAULT_SIZE)?;
    if input.message.trim().is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "empty_prompt",
            "The conversation has no text to make a video of",
        ));
    }
    let job = VideoJob {
        model: input.model.id.to_owned(),
        cost: input.model.cost,
        prompt: input.message.clone(),
        aspect_ratio: params.aspect_ratio,
        seconds: params.seconds,
        resolution: params.resolution,
        mode: params.mode,
        image: first_user_image(body),
        delivery: VideoDelivery::Chat {
            progress_lines: input.stream && want_reasoning,
        },
    };
    let timeout = Duration::from_secs(state.backends.live.get().video.timeout_secs);
    Ok((JobPayload::Video(job), timeout))
}

/// The URL of the first `image_url` block of a user message (already validated).
fn first_user_image(body: &Value) -> Option<String> {
    body.get("messages")?
        .as_array()?
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("image_url"))
        .find_map(|b| {
            let v = b.get("image_url")?;
            v.as_str()
                .or_else(|| v.get("url").and_then(Value::as_str))
                .map(|s| s.trim().to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_user_image_is_the_input() {
        let body = json!({"messages": [
            {"role": "system", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "t"},
                {"type": "image_url", "image_url": {"url": " data:image/png;base64,AA "}}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": "https://e.com/b.png"}]},
        ]});
        assert_eq!(
            first_user_image(&body).as_deref(),
            Some("data:image/png;base64,AA")
        );
        assert_eq!(first_user_image(&json!({"messages": []})), None);
    }
}
