//! Accounts: SSO cookies, user ids, the session lookup and the per-mode quota.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::faults::{self, Faults};
use crate::{MODES, SimState};

/// The user id the simulator assigns to an account token (deterministic, a UUID string).
pub fn user_id_for(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"sim-user-id:")
        .chain_update(token.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The value of one cookie, from all `Cookie` headers of the request.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// The account token from the `sso` cookie, if present and non-empty.
pub(crate) fn sso_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, "sso").filter(|token| !token.is_empty())
}

/// The account token when both `sso` and `sso-rw` carry it, as every authenticated call needs.
pub(crate) fn authenticated_token(headers: &HeaderMap) -> Option<String> {
    let token = sso_token(headers)?;
    (cookie(headers, "sso-rw").as_deref() == Some(token.as_str())).then_some(token)
}

/// `GET /api/auth/session`: who the SSO cookie belongs to.
pub(crate) async fn session(headers: HeaderMap) -> Response {
    let Some(token) = sso_token(&headers) else {
        return Json(json!({"status": "unauthenticated"})).into_response();
    };
    let faults = Faults::for_request(&headers, Some(&token));
    let body = if faults.unauthorized {
        json!({"status": "unauthenticated"})
    } else if faults.blocked {
        json!({"status": "blocked"})
    } else {
        json!({"session": {"userId": user_id_for(&token)}, "status": "authenticated"})
    };
    Json(body).into_response()
}

/// Quota totals per mode for an account tier, guessed from the token the way tests name them.
fn total_queries(token: &str, mode: &str) -> u64 {
    let (auto, fast) = if token.contains("super") {
        (50, 140)
    } else if token.contains("heavy") {
        (150, 400)
    } else {
        (20, 30)
    };
    // Expert and heavy share the auto bucket here; the real split is not known.
    if mode == "fast" { fast } else { auto }
}

/// `POST /rest/rate-limits` with `{"modelName": "<mode>"}`.
pub(crate) async fn rate_limits(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = sso_token(&headers);
    let faults = Faults::for_request(&headers, token.as_deref());
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
    let mode = match serde_json::from_slice::<Value>(&body) {
        Ok(request) => match request.get("modelName").and_then(Value::as_str) {
            Some(mode) if MODES.contains(&mode) => mode.to_owned(),
            _ => return faults::bad_request("modelName must be one of fast, auto, expert, heavy"),
        },
        Err(_) => return faults::bad_request("request body is not valid JSON"),
    };
    crate::account_ops::count_rate_limit_call(&state, &token);
    let total =
        crate::account_ops::total_override(&token).unwrap_or_else(|| total_queries(&token, &mode));
    let remaining = if faults.rate_limited {
        0
    } else {
        let used = state
            .accounts
            .used_in_window(&token, state.stats.calls_for(&token));
        total.saturating_sub(used)
    };
    Json(json!({
        "windowSizeSeconds": crate::account_ops::WINDOW_SIZE_SECS,
        "remainingQueries": remaining,
        "totalQueries": total,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn user_ids_are_stable_uuids() {
        let id = user_id_for("token-a");
        assert_eq!(id, user_id_for("token-a"));
        assert_ne!(id, user_id_for("token-b"));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
    }

    #[test]
    fn cookies_are_found_across_headers_and_spacing() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("sso=abc; sso-rw=abc"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("cf_clearance=x;x-userid=u1"),
        );
        assert_eq!(cookie(&headers, "x-userid").as_deref(), Some("u1"));
        assert_eq!(authenticated_token(&headers).as_deref(), Some("abc"));
        let mut mismatched = HeaderMap::new();
        mismatched.insert(
            header::COOKIE,
            HeaderValue::from_static("sso=abc; sso-rw=abd"),
        );
        assert_eq!(authenticated_token(&mismatched), None);
        let mut empty = HeaderMap::new();
        empty.insert(header::COOKIE, HeaderValue::from_static("sso=; sso-rw="));
        assert_eq!(sso_token(&empty), None);
    }

    #[test]
    fn totals_follow_the_tier_in_the_token() {
        assert_eq!(total_queries("basic-1", "auto"), 20);
        assert_eq!(total_queries("basic-1", "fast"), 30);
        assert_eq!(total_queries("super-1", "auto"), 50);
        assert_eq!(total_queries("super-1", "fast"), 140);
        assert_eq!(total_queries("heavy-1", "auto"), 150);
        assert_eq!(total_queries("heavy-1", "fast"), 400);
    }
}
