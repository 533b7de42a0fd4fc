//! Turns every way an upstream call can fail into an [`UpstreamError`] of the right kind.
//!
//! Messages built here carry at most a short excerpt of a JSON body: HTML challenge pages
//! are never quoted, and no request header (cookie, token) is ever part of the input.

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use super::{UpstreamError, UpstreamErrorKind};

/// Longest upstream body excerpt an error message may carry.
const EXCERPT_CHARS: usize = 200;

/// Markers of a Cloudflare challenge page (compared lowercase).
const CHALLENGE_MARKERS: [&str; 4] = ["just a moment", "challenge-platform", "__cf_chl", "cf-chl-"];

/// Markers of an account the upstream has banned (compared lowercase).
const BLOCKED_MARKERS: [&str; 2] = ["blocked-user", "user is blocked"];

/// Markers of an in-band rate-limit error message (compared lowercase).
const RATE_LIMIT_MARKERS: [&str; 4] = [
    "too many requests",
    "rate limit",
    "usage limit",
    "rate_limit_exceeded",
];

const ANTI_BOT_MARKERS: [&str; 2] = ["anti-bot", "anti_bot"];

/// Classifies a non-success HTTP response (REST call or WebSocket upgrade).
pub(crate) fn from_http(status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_lowercase();
    let json = looks_like_json(&text);
    let detail = if json {
        format!("HTTP {status}: {}", excerpt(&text))
    } else if text.trim().is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        format!("HTTP {status} with a non-JSON body")
    };
    let kind = if status == 429 {
        UpstreamErrorKind::RateLimited {
            retry_after: retry_after(headers),
        }
    } else if contains_any(&lower, &BLOCKED_MARKERS) {
        UpstreamErrorKind::Blocked
    } else if status == 401 {
        UpstreamErrorKind::Unauthorized
    } else if status == 403 {
        let challenged = headers
            .get("cf-mitigated")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"challenge"));
        if challenged
            || !json
            || contains_any(&lower, &CHALLENGE_MARKERS)
            || contains_any(&lower, &ANTI_BOT_MARKERS)
        {
            UpstreamErrorKind::AntiBot
        } else {
            UpstreamErrorKind::Forbidden
        }
    } else if status == 408 {
        UpstreamErrorKind::Timeout
    } else if (400..500).contains(&status) {
        UpstreamErrorKind::BadRequest
    } else if status >= 500 {
        UpstreamErrorKind::Transient
    } else {
        UpstreamErrorKind::Protocol
    };
    UpstreamError::new(kind, Some(status), detail)
}

/// Classifies an error reported inside a 200 stream or a WebSocket `error` event:
/// `{"code": 8 | "rate_limit_exceeded" | ..., "message": "..."}` (either field may be absent).
pub(crate) fn from_in_band(error: &Value) -> UpstreamError {
    let (code, message) = match error {
        Value::Object(map) => (
            map.get("code").cloned().unwrap_or(Value::Null),
            map.get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
        Value::String(s) => (Value::Null, s.clone()),
        other => (other.clone(), String::new()),
    };
    let code_text = match &code {
        Value::String(s) => s.to_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let lower = format!("{code_text} {}", message.to_lowercase());
    let kind = if code_text == "8"
        || code_text == "429"
        || contains_any(&lower, &RATE_LIMIT_MARKERS)
    {
        UpstreamErrorKind::RateLimited { retry_after: None }
    } else if contains_any(&lower, &BLOCKED_MARKERS) || code_text == "blocked" {
        UpstreamErrorKind::Blocked
    } else if contains_any(&lower, &ANTI_BOT_MARKERS) || contains_any(&lower, &CHALLENGE_MARKERS) {
        UpstreamErrorKind::AntiBot
    } else if code_text == "16"
        || lower.contains("unauthenticated")
        || lower.contains("unauthorized")
    {
        UpstreamErrorKind::Unauthorized
    } else if code_text == "7" || lower.contains("permission_denied") {
        UpstreamErrorKind::Forbidden
    } else if code_text == "3" || lower.contains("invalid_argument") {
        UpstreamErrorKind::BadRequest
    } else if code_text == "4" || lower.contains("deadline_exceeded") {
        UpstreamErrorKind::Timeout
    } else {
        UpstreamErrorKind::Transient
    };
    let shown = if message.is_empty() {
        format!("in-band error (code {code_text})")
    } else {
        format!("in-band error (code {code_text}): {}", excerpt(&message))
    };
    UpstreamError::new(kind, None, shown)
}

/// Classifies a transport error of the HTTP client. The URL is dropped from the message.
pub(crate) fn from_reqwest(err: reqwest::Error) -> UpstreamError {
    let kind = if err.is_timeout() {
        UpstreamErrorKind::Timeout
    } else if err.is_builder() {
        UpstreamErrorKind::BadRequest
    } else {
        UpstreamErrorKind::Transient
    };
    let status = err.status().map(|s| s.as_u16());
    UpstreamError::new(
        kind,
        status,
        format!("HTTP transport: {}", err.without_url()),
    )
}

/// Classifies a WebSocket error. A refused upgrade carries the HTTP response, which is
/// classified like any other HTTP failure.
pub(crate) fn from_ws(err: tokio_tungstenite::tungstenite::Error) -> UpstreamError {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match err {
        WsError::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            from_http(response.status().as_u16(), response.headers(), body)
        }
        WsError::Capacity(e) => protocol(format!("WebSocket frame over the size limit: {e}")),
        WsError::Utf8(_) => protocol("WebSocket text frame is not UTF-8"),
        WsError::Url(e) => UpstreamError::new(
            UpstreamErrorKind::BadRequest,
            None,
            format!("WebSocket URL: {e}"),
        ),
        other => UpstreamError::new(
            UpstreamErrorKind::Transient,
            None,
            format!("WebSocket transport: {other}"),
        ),
    }
}

pub(crate) fn timeout(what: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::Timeout,
        None,
        format!("{what} timed out"),
    )
}

pub(crate) fn protocol(message: impl Into<String>) -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Protocol, None, message)
}

pub(crate) fn transient(message: impl Into<String>) -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Transient, None, message)
}

/// `Retry-After` in delta-seconds (the form rate limiters send); a date form is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn looks_like_json(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with('{') || t.starts_with('[')
}

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| haystack.contains(n))
}

/// The first [`EXCERPT_CHARS`] characters of `text`, on one line.
pub(crate) fn excerpt(text: &str) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS + 1)
        .collect();
    if one_line.chars().count() > EXCERPT_CHARS {
        let cut: String = one_line.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(status: u16, body: &str) -> UpstreamErrorKind {
        from_http(status, &HeaderMap::new(), body.as_bytes()).kind
    }

    #[test]
    fn http_statuses_map_to_kinds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "17".parse().unwrap());
        assert_eq!(
            from_http(429, &headers, b"").kind,
            UpstreamErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(17))
            }
        );
        assert_eq!(
            kind(429, "{}"),
            UpstreamErrorKind::RateLimited { retry_after: None }
        );
        assert_eq!(
            kind(401, "{\"error\":\"x\"}"),
            UpstreamErrorKind::Unauthorized
        );
        assert_eq!(kind(400, "{}"), UpstreamErrorKind::BadRequest);
        assert_eq!(kind(502, "bad gateway"), UpstreamErrorKind::Transient);
        assert_eq!(kind(503, ""), UpstreamErrorKind::Transient);
    }

    #[test]
    fn forbidden_is_split_by_body() {
        assert_eq!(kind(403, ""), UpstreamErrorKind::AntiBot);
        assert_eq!(
            kind(403, "<!DOCTYPE html><title>Just a moment...</title>"),
            UpstreamErrorKind::AntiBot
        );
        assert_eq!(
            kind(403, "{\"x\":\"/cdn-cgi/challenge-platform/h/b\"}"),
            UpstreamErrorKind::AntiBot
        );
        assert_eq!(
            kind(403, "{\"error\":{\"code\":7,\"message\":\"not allowed\"}}"),
            UpstreamErrorKind::Forbidden
        );
        assert_eq!(
            kind(403, "{\"error\":{\"message\":\"blocked-user\"}}"),
            UpstreamErrorKind::Blocked
        );
        assert_eq!(kind(403, "User is blocked"), UpstreamErrorKind::Blocked);
        let mut challenged = HeaderMap::new();
        challenged.insert("cf-mitigated", "challenge".parse().unwrap());
        assert_eq!(
            from_http(403, &challenged, b"{}").kind,
            UpstreamErrorKind::AntiBot
        );
    }

    #[test]
    fn messages_quote_json_briefly_and_never_html() {
        let long = format!("{{\"error\":\"{}\"}}", "x".repeat(1000));
        let err = from_http(400, &HeaderMap::new(), long.as_bytes());
        assert!(err.message.chars().count() < 230, "{}", err.message);
        let html = "<html><script>secret-ish</script></html>";
        let err = from_http(403, &HeaderMap::new(), html.as_bytes());
        assert!(!err.message.contains("script"), "{}", err.message);
        assert_eq!(err.status, Some(403));
    }

    #[test]
    fn in_band_errors_map_to_kinds() {
        let rl = UpstreamErrorKind::RateLimited { retry_after: None };
        assert_eq!(from_in_band(&json!({"code": 8, "message": "x"})).kind, rl);
        assert_eq!(
            from_in_band(&json!({"code": 2, "message": "Too many requests"})).kind,
            rl
        );
        assert_eq!(
            from_in_band(&json!({"message": "You have reached your usage limit"})).kind,
            rl
        );
        assert_eq!(
            from_in_band(&json!({"code": "rate_limit_exceeded"})).kind,
            rl
        );
        assert_eq!(
            from_in_band(&json!({"code": "anti_bot", "message": "anti-bot rejected"})).kind,
            UpstreamErrorKind::AntiBot
        );
        assert_eq!(
            from_in_band(&json!({"code": "unauthenticated"})).kind,
            UpstreamErrorKind::Unauthorized
        );
        assert_eq!(
            from_in_band(&json!({"code": 7, "message": "denied"})).kind,
            UpstreamErrorKind::Forbidden
        );
        assert_eq!(
            from_in_band(&json!({"message": "blocked-user"})).kind,
            UpstreamErrorKind::Blocked
        );
        assert_eq!(
            from_in_band(&json!({"code": 13, "message": "internal"})).kind,
            UpstreamErrorKind::Transient
        );
    }
}
