//! Access to `/v1/public/*`: nothing while `app.public_enabled` is false (404, as the pages),
//! then `app.public_key` as a Bearer header when one is set, compared in constant time.
//!
//! Unlike the original product, a configured public key does not open the public API while
//! public mode is off, and public mode never opens the OpenAI-compatible API.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use shared::crypto::secrets_match;

use crate::error::ApiError;
use crate::state::AppState;

/// The error every public route answers while public mode is off.
pub fn disabled() -> ApiError {
    ApiError::not_found("Not found").with_code("not_found")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(key.trim())
        .filter(|k| !k.is_empty())
}

/// Whether `headers` carry what the public API asks for; `Err` says why not.
pub fn check(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let app = &state.config.app;
    if !app.public_enabled {
        return Err(disabled());
    }
    if app.public_key.is_empty() {
        return Ok(());
    }
    let given =
        bearer(headers).ok_or_else(|| ApiError::unauthorized("Missing authentication token"))?;
    if !secrets_match(given, app.public_key.expose()) {
        return Err(ApiError::unauthorized("Invalid authentication token"));
    }
    Ok(())
}

/// Guards the keyed public routes.
pub async fn require_public_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&state, request.headers())?;
    Ok(next.run(request).await)
}

/// Guards the task-capability routes: they exist only in public mode.
pub async fn require_public_enabled(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.config.app.public_enabled {
        return Err(disabled());
    }
    Ok(next.run(request).await)
}
