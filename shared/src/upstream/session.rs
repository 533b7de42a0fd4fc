//! The account's user id from `GET /api/auth/session`, cached per token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{UpstreamError, UpstreamErrorKind, classify};
use crate::Secret;

/// Largest session answer accepted.
pub(crate) const SESSION_LIMIT: usize = 256 * 1024;
/// Entries kept before expired ones are swept (one per account in the pool).
const SWEEP_AT: usize = 4096;

/// Reads the user id out of a session answer, or says why there is none.
pub(crate) fn user_id_from_session(session: &Value) -> Result<String, UpstreamError> {
    let status = session.get("status").and_then(Value::as_str).unwrap_or("");
    match status {
        "unauthenticated" => {
            return Err(UpstreamError::new(
                UpstreamErrorKind::Unauthorized,
                None,
                "session lookup: unauthenticated",
            ));
        }
        "blocked" => {
            return Err(UpstreamError::new(
                UpstreamErrorKind::Blocked,
                None,
                "session lookup: account blocked",
            ));
        }
        _ => {}
    }
    [
        "/session/userId",
        "/user/id",
        "/userId",
        "/sub",
        "/session/user/id",
    ]
    .iter()
    .find_map(|pointer| session.pointer(pointer).and_then(Value::as_str))
    .map(str::trim)
    .filter(|id| !id.is_empty())
    .map(str::to_owned)
    .ok_or_else(|| {
        UpstreamError::new(
            UpstreamErrorKind::Unauthorized,
            None,
            "session lookup: no user id in the session",
        )
    })
}

/// User ids by token digest (the token itself is never a key).
#[derive(Debug)]
pub(crate) struct SessionCache {
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl SessionCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, token: &Secret) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&digest(token))
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(id, _)| id.clone())
    }

    pub(crate) fn put(&self, token: &Secret, user_id: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SWEEP_AT {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        if entries.len() < SWEEP_AT * 4 {
            entries.insert(digest(token), (user_id.to_owned(), Instant::now()));
        }
    }
}

fn digest(token: &Secret) -> [u8; 32] {
    Sha256::digest(super::headers::sso_value(token).as_bytes()).into()
}

/// Turns a non-JSON session answer into an error.
pub(crate) fn parse_session(body: &[u8]) -> Result<Value, UpstreamError> {
    serde_json::from_slice(body)
        .map_err(|_| classify::protocol("session lookup: the answer is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_id_shapes_and_statuses() {
        let ok = json!({"session": {"userId": "u-1"}, "status": "authenticated"});
        assert_eq!(user_id_from_session(&ok).unwrap(), "u-1");
        assert_eq!(
            user_id_from_session(&json!({"user": {"id": "u-2"}})).unwrap(),
            "u-2"
        );
        assert_eq!(user_id_from_session(&json!({"sub": "u-3"})).unwrap(), "u-3");
        let kind = |v: Value| user_id_from_session(&v).unwrap_err().kind;
        assert_eq!(
            kind(json!({"status": "unauthenticated"})),
            UpstreamErrorKind::Unauthorized
        );
        assert_eq!(
            kind(json!({"status": "blocked"})),
            UpstreamErrorKind::Blocked
        );
        assert_eq!(kind(json!({})), UpstreamErrorKind::Unauthorized);
    }

    #[test]
    fn cache_is_per_token_and_expires() {
        let cache = SessionCache::new(Duration::from_secs(60));
        let a = Secret::from("token-a");
        cache.put(&a, "u-a");
        assert_eq!(cache.get(&a).as_deref(), Some("u-a"));
        assert_eq!(
            cache.get(&Secret::from("sso=token-a")).as_deref(),
            Some("u-a")
        );
        assert_eq!(cache.get(&Secret::from("token-b")), None);
        let none = SessionCache::new(Duration::ZERO);
        none.put(&a, "u-a");
        assert_eq!(none.get(&a), None);
    }
}
