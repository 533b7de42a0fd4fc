//! `POST /v1/images/generations` (JSON).

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;
use shared::models;

use super::{
    ImageOptions, check_model, job_payload, parse_format, parse_n, parse_prompt, parse_size,
    parse_stream, run,
};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

/// The one model this route serves.
pub const MODEL: &str = "grok-imagine-1.0";

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let options = validate(&body, &state.backends.live.get().image.response_format)?;
    let model = models::find(MODEL).ok_or_else(ApiError::internal)?;
    run(&state, job_payload(model, &options, vec![]), options).await
}

/// Validates a generation body; `quality`, `style` and `user` are accepted and ignored.
pub fn validate(body: &Value, default_format: &str) -> Result<ImageOptions, ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::invalid("body", "invalid_body", "Request body must be a JSON object")
    })?;
    check_model(obj.get("model"), MODEL)?;
    let prompt = parse_prompt(obj.get("prompt"))?;
    let n = parse_n(obj.get("n"))?;
    let (size, aspect_ratio) = parse_size(obj.get("size"))?;
    let format = parse_format(obj.get("response_format"), default_format)?;
    let stream = parse_stream(obj.get("stream"), n)?;
    Ok(ImageOptions {
        prompt,
        n,
        size,
        aspect_ratio,
        format,
        stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_validate_field_by_field() {
        let ok = validate(
            &json!({"prompt": "a cat", "n": 2, "size": "720x1280"}),
            "url",
        )
        .unwrap();
        assert_eq!(
            (ok.n, ok.aspect_ratio.as_str(), ok.stream),
            (2, "9:16", false)
        );
        let code = |body: Value| validate(&body, "url").unwrap_err().code.unwrap();
        assert_eq!(code(json!({})), "missing_required_parameter");
        assert_eq!(
            code(json!({"prompt": "x", "model": "dall-e-3"})),
            "model_not_supported"
        );
        assert_eq!(
            code(json!({"prompt": "x", "n": 3, "stream": true})),
            "invalid_stream_n"
        );
        assert_eq!(code(json!([])), "invalid_body");
    }
}
