//! `x-statsig-id`: the page meta tag it is derived from, a stand-in for the external signer,
//! and the check the chat endpoint applies.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::faults;

/// The `grok-site-verification` meta content the simulated `/index` page carries.
pub const SITE_VERIFICATION: &str = "sim-verification-5f0c2a9e41d7";

/// Length in bytes of a signed `x-statsig-id` once base64-decoded.
pub const SIGNED_LEN: usize = 70;

/// `GET /index`: the page whose meta tag the signer needs.
pub(crate) async fn index_page() -> Response {
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Grok</title>\
         <meta name=\"grok-site-verification\" content=\"{SITE_VERIFICATION}\"/></head>\
         <body><div id=\"root\"></div></body></html>"
    );
    let mut response = page.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// `POST /sim/sign`: `{"method","path","environment":{"metaContent"}}` → `{"x-statsig-id"}`.
pub(crate) async fn sign(body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return faults::bad_request("request body is not valid JSON");
    };
    let (Some(method), Some(path)) = (
        non_empty_str(request.get("method")),
        non_empty_str(request.get("path")),
    ) else {
        return faults::bad_request("method and path are required");
    };
    let Some(meta) = non_empty_str(request.pointer("/environment/metaContent")) else {
        return faults::bad_request("environment.metaContent is required");
    };
    Json(json!({"x-statsig-id": STANDARD.encode(signature(method, path, meta))})).into_response()
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A deterministic 70-byte value standing in for the real (unknown) signature.
fn signature(method: &str, path: &str, meta: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SIGNED_LEN + 32);
    let mut block = 0u8;
    while bytes.len() < SIGNED_LEN {
        let digest = Sha256::new()
            .chain_update([block])
            .chain_update(method.as_bytes())
            .chain_update([0])
            .chain_update(path.as_bytes())
            .chain_update([0])
            .chain_update(meta.as_bytes())
            .finalize();
        bytes.extend_from_slice(&digest);
        block += 1;
    }
    bytes.truncate(SIGNED_LEN);
    bytes
}

/// Whether the request carries an `x-statsig-id` the anti-bot layer accepts: a signed value
/// (70 bytes once decoded) or the current fallback form (`x1:`). The stale `e:` form, anything
/// else and a missing header are rejected.
pub(crate) fn is_accepted(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("x-statsig-id").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(value.trim()) else {
        return false;
    };
    decoded.len() == SIGNED_LEN || decoded.starts_with(b"x1:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_statsig(raw: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&STANDARD.encode(raw)).unwrap();
        headers.insert("x-statsig-id", value);
        headers
    }

    #[test]
    fn accepts_signed_and_x1_values_only() {
        let signed = signature(
            "POST",
            "/rest/app-chat/conversations/new",
            SITE_VERIFICATION,
        );
        assert_eq!(signed.len(), SIGNED_LEN);
        assert!(is_accepted(&with_statsig(&signed)));
        assert!(is_accepted(&with_statsig(
            b"x1:TypeError: Cannot read properties"
        )));
        assert!(!is_accepted(&with_statsig(
            b"e:TypeError: Cannot read properties"
        )));
        assert!(!is_accepted(&with_statsig(&signed[..69])));
        assert!(!is_accepted(&HeaderMap::new()));
        let mut garbage = HeaderMap::new();
        garbage.insert("x-statsig-id", HeaderValue::from_static("%%%"));
        assert!(!is_accepted(&garbage));
    }

    #[test]
    fn signatures_depend_on_every_input() {
        let base = signature("POST", "/a", "m");
        assert_eq!(base, signature("POST", "/a", "m"));
        assert_ne!(base, signature("GET", "/a", "m"));
        assert_ne!(base, signature("POST", "/b", "m"));
        assert_ne!(base, signature("POST", "/a", "n"));
    }
}
