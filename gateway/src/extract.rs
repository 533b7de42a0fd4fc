//! A JSON body extractor whose every rejection is an OpenAI error: wrong content type,
//! malformed JSON, a body that is too deep or too large.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde_json::Value;

use crate::error::ApiError;

/// Deepest JSON nesting accepted. Real requests nest a few levels; this stops a
/// 100 000-level document before it reaches the parser's recursion.
const MAX_DEPTH: usize = 64;

/// The request body as a JSON value, validated by the handler afterwards (so each field's
/// error can name its `param` and `code`).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            )
            .with_param("body")
            .with_code("invalid_content_type"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
                    .with_param("body")
                    .with_code("body_too_large")
            } else {
                ApiError::invalid("body", "invalid_body", "Could not read the request body")
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document after checking its nesting depth without recursion.
pub fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    if nesting_depth(bytes) > MAX_DEPTH {
        return Err(ApiError::invalid(
            "body",
            "invalid_json",
            format!("JSON nesting deeper than {MAX_DEPTH} levels"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(
            "body",
            "invalid_json",
            format!("Invalid JSON in request body: {e}"),
        )
    })
}

/// Maximum bracket depth, ignoring brackets inside strings.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_strings_and_rejects_deep_documents() {
        assert_eq!(nesting_depth(br#"{"a":"[[[[{{{{","b":[1,[2]]}"#), 3);
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let err = parse(deep.as_bytes()).unwrap_err();
        assert_eq!(err.code.as_deref(), Some("invalid_json"));
        assert!(parse(b"{\"a\":").is_err());
        assert_eq!(parse(br#"{"a":1}"#).unwrap()["a"], 1);
    }
}
