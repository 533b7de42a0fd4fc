//! Fault modes, and the refusals the upstream answers with.
//!
//! A fault is chosen by a `fault-<mode>` marker inside the account token, or by the request
//! header `x-sim-fault: <mode>[,<mode>...]`, which replaces the token's markers when present.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The header that picks fault modes for one request.
pub const FAULT_HEADER: &str = "x-sim-fault";

/// The fault modes in force for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// `429`: refused as rate limited.
    pub rate_limited: bool,
    /// `401`: the session is not authenticated.
    pub unauthorized: bool,
    /// `403`: the anti-bot layer answers with an HTML challenge.
    pub anti_bot: bool,
    /// `blocked`: the account is blocked (`blocked-user`).
    pub blocked: bool,
    /// `slow`: frames are spaced by the slow frame delay.
    pub slow: bool,
    /// `cut`: the stream ends after about half the answer, without its final frames.
    pub cut: bool,
    /// `malformed`: one frame mid-stream is not valid JSON.
    pub malformed: bool,
    /// `empty`: a well-formed stream without reasoning or text.
    pub empty: bool,
    /// `stall`: the stream goes silent after its first frames, without closing.
    pub stall: bool,
    /// `5xx`: the upstream itself is failing (`503`).
    pub server_error: bool,
    /// `reset`: the connection drops mid-answer, without an orderly end.
    pub reset: bool,
    /// `huge`: one frame mid-stream is larger than any client should accept.
    pub huge: bool,
}

const MODE_NAMES: [&str; 12] = [
    "429",
    "401",
    "403",
    "blocked",
    "slow",
    "cut",
    "malformed",
    "empty",
    "stall",
    "5xx",
    "reset",
    "huge",
];

impl Faults {
    /// The faults for a request: from the header when it is present, else from the token.
    pub(crate) fn for_request(headers: &HeaderMap, token: Option<&str>) -> Self {
        let mut faults = Faults::default();
        if let Some(value) = headers.get(FAULT_HEADER) {
            let value = value.to_str().unwrap_or_default();
            for name in value.split([',', ' ']).filter(|n| !n.is_empty()) {
                faults.enable(name.strip_prefix("fault-").unwrap_or(name));
            }
        } else if let Some(token) = token {
            for name in MODE_NAMES {
                if token.contains(&format!("fault-{name}")) {
                    faults.enable(name);
                }
            }
        }
        faults
    }

    fn enable(&mut self, name: &str) {
        let flag = match name {
            "429" => &mut self.rate_limited,
            "401" => &mut self.unauthorized,
            "403" => &mut self.anti_bot,
            "blocked" => &mut self.blocked,
            "slow" => &mut self.slow,
            "cut" => &mut self.cut,
            "malformed" => &mut self.malformed,
            "empty" => &mut self.empty,
            "stall" => &mut self.stall,
            "5xx" => &mut self.server_error,
            "reset" => &mut self.reset,
            "huge" => &mut self.huge,
            _ => return,
        };
        *flag = true;
    }
}

fn json_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "details": []}});
    (status, axum::Json(body)).into_response()
}

/// 400: the request itself is wrong (gRPC code 3, invalid argument).
pub(crate) fn bad_request(message: &str) -> Response {
    json_error(StatusCode::BAD_REQUEST, 3, message)
}

/// 401: no valid session (gRPC code 16, unauthenticated).
pub(crate) fn unauthorized() -> Response {
    json_error(StatusCode::UNAUTHORIZED, 16, "Not authenticated")
}

/// 403 with a JSON body: an application decision about this request (gRPC code 7).
pub(crate) fn forbidden(message: &str) -> Response {
    json_error(StatusCode::FORBIDDEN, 7, message)
}

/// 403 with a JSON body saying the account is blocked.
pub(crate) fn blocked() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        7,
        "blocked-user: this account has been blocked",
    )
}

/// 429 with `Retry-After` (gRPC code 8, resource exhausted).
pub(crate) fn rate_limited(window_secs: u64) -> Response {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        8,
        "Too many requests. Please try again later.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(window_secs));
    response
}

/// 503: the upstream is failing (gRPC code 14, unavailable).
pub(crate) fn server_error() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        14,
        "The service is temporarily unavailable",
    )
}

/// 403 with the HTML page a Cloudflare-style browser challenge serves.
pub(crate) fn anti_bot_challenge() -> Response {
    let mut response = (StatusCode::FORBIDDEN, CHALLENGE_PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    headers.insert("cf-mitigated", HeaderValue::from_static("challenge"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0, no-store, no-cache, must-revalidate"),
    );
    response
}

const CHALLENGE_PAGE: &str = r#"<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title><meta http-equiv="Content-Type" content="text/html; charset=UTF-8"><meta name="robots" content="noindex,nofollow"><meta name="viewport" content="width=device-width,initial-scale=1"></head><body><div class="main-wrapper" role="main"><div class="main-content"><noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to continue</span></div></noscript></div></div><script>(function(){window._cf_chl_opt={cvId:'3',cZone:"grok.com",cType:'managed',cRay:'0000000000000000'};var cpo=document.createElement('script');cpo.src='/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1?ray=0000000000000000';window._cf_chl_opt.cOgUHash=location.hash;document.getElementsByTagName('head')[0].appendChild(cpo);}());</script></body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(FAULT_HEADER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn token_markers_combine() {
        let faults = Faults::for_request(&HeaderMap::new(), Some("super-fault-slow-fault-cut-abc"));
        assert!(faults.slow && faults.cut);
        assert!(!faults.stall && !faults.rate_limited);
        assert_eq!(
            Faults::for_request(&HeaderMap::new(), Some("plain")),
            Faults::default()
        );
        assert_eq!(
            Faults::for_request(&HeaderMap::new(), None),
            Faults::default()
        );
    }

    #[test]
    fn header_replaces_token_markers() {
        let faults = Faults::for_request(&headers_with("fault-429, stall"), Some("fault-slow"));
        assert!(faults.rate_limited && faults.stall);
        assert!(!faults.slow);
        let none = Faults::for_request(&headers_with("nonsense"), Some("fault-401"));
        assert_eq!(none, Faults::default());
    }
}
