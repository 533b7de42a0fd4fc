//! Bearer authentication for the client API and the admin API.
//!
//! Keys are compared in constant time (`shared::crypto::secrets_match`), never accepted from
//! a URL, and a missing key never means "open": the client API is open only when
//! `app.open_api = true`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use shared::Secret;
use shared::crypto::secrets_match;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// The admin key: configured in clear, or generated at first start and kept only as a digest.
#[derive(Clone)]
pub enum AdminKey {
    Configured(Secret),
    Digest([u8; 32]),
}

impl AdminKey {
    pub fn matches(&self, given: &str) -> bool {
        match self {
            AdminKey::Configured(key) => secrets_match(given, key.expose()),
            AdminKey::Digest(digest) => Sha256::digest(given.as_bytes())
                .as_slice()
                .ct_eq(digest)
                .into(),
        }
    }
}

/// The Bearer credential of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(key.trim())
        .filter(|k| !k.is_empty())
}

/// Guards `/v1/*` client routes: the operator keys (`app.api_key`, read live) or a named
/// client key, whose model allowlist and rate limit apply here and whose use is counted.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let live = state.backends.live.get();
    if live.app.open_api {
        return Ok(next.run(request).await);
    }
    let given = bearer(request.headers())
        .ok_or_else(|| ApiError::unauthorized("Missing authentication token"))?;
    let operator_keys = live.app.api_keys();
    // Check every key so the time taken does not tell which one nearly matched.
    let matched = operator_keys
        .iter()
        .fold(false, |acc, key| secrets_match(given, key.expose()) | acc);
    if matched {
        return Ok(next.run(request).await);
    }
    let record = state
        .client_keys
        .authenticate(state.backends.store.as_ref(), given)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "client key lookup failed");
            ApiError::unavailable("The store is unavailable, try again shortly", 2)
        })?;
    let Some(record) = record else {
        if operator_keys.is_empty() && !given.starts_with(crate::client_keys::KEY_MARK) {
            return Err(ApiError::unauthorized(
                "No API key is configured on this server",
            ));
        }
        return Err(ApiError::unauthorized("Invalid authentication token"));
    };
    let mut request = if record.models.is_empty() {
        request
    } else {
        let limit = state.config.server.max_body_bytes;
        let (request, model) = crate::client_keys::requested_model(request, limit).await?;
        if let Some(model) = model {
            crate::client_keys::ClientKeys::check_model(&record, &model)?;
        }
        request
    };
    state.client_keys.check_rate(&record).await?;
    state.client_keys.count(&record.id);
    request
        .extensions_mut()
        .insert(crate::client_keys::ClientKeyGrant(record));
    Ok(next.run(request).await)
}

/// Guards `/v1/admin/*`.
pub async fn require_admin_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = bearer(request.headers())
        .ok_or_else(|| ApiError::unauthorized("Missing authentication token"))?;
    if !state.admin_key.matches(given) {
        return Err(ApiError::unauthorized("Invalid authentication token"));
    }
    Ok(next.run(request).await)
}

/// Settings key under which a generated admin key's digest is kept.
const ADMIN_KEY_SETTING: &str = "admin_key_sha256";

/// The admin key in force: `app.app_key` when set; otherwise the digest of a key generated
/// at first start, which is printed once on stdout and never stored in clear.
pub async fn resolve_admin_key(
    app_key: &Secret,
    store: &dyn shared::store::Store,
) -> anyhow::Result<AdminKey> {
    if !app_key.is_empty() {
        return Ok(AdminKey::Configured(app_key.clone()));
    }
    if let Some(hex_digest) = store.get_setting(ADMIN_KEY_SETTING).await? {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest.trim(), &mut digest)
            .map_err(|_| anyhow::anyhow!("stored admin key digest is malformed"))?;
        return Ok(AdminKey::Digest(digest));
    }
    let key = shared::crypto::random_secret(24);
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    store
        .put_setting(ADMIN_KEY_SETTING, &hex::encode(digest))
        .await?;
    // Printed, not logged: it must reach the operator once and never a log pipeline.
    println!(
        "\n  Admin key generated (shown once, keep it safe): {key}\n  Set app.app_key to choose your own.\n"
    );
    Ok(AdminKey::Digest(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_is_strict_about_shape() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn admin_digest_matches_only_the_key() {
        let key = AdminKey::Digest(Sha256::digest(b"k1").into());
        assert!(key.matches("k1"));
        assert!(!key.matches("k2"));
        assert!(AdminKey::Configured(Secret::new("x")).matches("x"));
    }
}
