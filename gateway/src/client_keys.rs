//! Named client API keys at request time: lookup with a short-lived cache, the model
//! allowlist, the per-key rate limit and usage counting.
//!
//! A key is `sk-g2a-` + 8 lookup characters + 32 secret characters. Its first
//! [`PREFIX_LEN`] characters find the record; the SHA-256 of the whole key is compared in
//! constant time with the stored digest. Lookups (found or not) are cached for
//! [`CACHE_TTL`], so a flood of requests costs the store one query per key and TTL, and a
//! revoked or changed key stops working everywhere within that time.
//!
//! Usage is counted in memory and written to the store in one batch every
//! [`FLUSH_INTERVAL`] (and once more at shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shared::ratelimit::{Decision, MemoryLimiter, RateLimiter, RedisLimiter};
use shared::store::{ClientKeyRecord, ClientKeyUsage, Store, StoreError};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Every client key starts with this.
pub const KEY_MARK: &str = "sk-g2a-";
/// Characters of a key stored in clear for lookup (the mark plus 8).
pub const PREFIX_LEN: usize = KEY_MARK.len() + 8;
const SECRET_LEN: usize = 32;
/// How long a lookup is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Cached lookups kept at most; beyond it expired ones go, then all.
const CACHE_MAX: usize = 10_000;
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// A new key: the whole key (shown once), its lookup prefix and digest.
pub struct NewKey {
    pub key: String,
    pub prefix: String,
    pub sha256: String,
}

pub fn generate() -> NewKey {
    // 20 random bytes as hex: 8 lookup characters and 32 secret ones (128 bits).
    let mut bytes = [0u8; (8 + SECRET_LEN) / 2];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let key = format!("{KEY_MARK}{}", hex::encode(bytes));
    NewKey {
        prefix: key[..PREFIX_LEN].to_owned(),
        sha256: digest_hex(&key),
        key,
    }
}

fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The authenticated client key of a request (a request extension).
#[derive(Debug, Clone)]
pub struct ClientKeyGrant(pub Arc<ClientKeyRecord>);

/// A lookup result and when it was made (`None`: no key has that prefix).
type CachedLookup = (Instant, Option<Arc<ClientKeyRecord>>);

pub struct ClientKeys {
    cache: Mutex<HashMap<String, CachedLookup>>,
    /// key id -> (requests, last use in unix ms) since the last flush.
    usage: Mutex<HashMap<String, (i64, i64)>>,
    limiter: Box<dyn RateLimiter>,
}

impl ClientKeys {
    /// Limits live in Redis when the cluster has one, so every gateway shares them.
    pub fn new(redis_url: &str, prefix: &str) -> ClientKeys {
        let limiter: Box<dyn RateLimiter> = if redis_url.is_empty() {
            Box::new(MemoryLimiter::default())
        } else {
            match RedisLimiter::new(redis_url, prefix) {
                Ok(l) => Box::new(l),
                // The same URL already opened the bus; this cannot fail where that worked.
                Err(e) => panic!("rate limiter: {e}"),
            }
        };
        ClientKeys {
            cache: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            limiter,
        }
    }

    /// The enabled key record matching `given`, or `None` (not a client key, unknown,
    /// disabled or wrong).
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        given: &str,
    ) -> Result<Option<Arc<ClientKeyRecord>>, StoreError> {
        if !given.starts_with(KEY_MARK) || given.len() != PREFIX_LEN + SECRET_LEN {
            return Ok(None);
        }
        let prefix = &given[..PREFIX_LEN];
        let record = match self.cached(prefix) {
            Some(hit) => hit,
            None => {
                let found = store.client_key_by_prefix(prefix).await?.map(Arc::new);
                self.remember(prefix, found.clone());
                found
            }
        };
        Ok(record.filter(|r| {
            let digest = digest_hex(given);
            r.enabled && bool::from(digest.as_bytes().ct_eq(r.key_sha256.as_bytes()))
        }))
    }

    fn cached(&self, prefix: &str) -> Option<Option<Arc<ClientKeyRecord>>> {
        let cache = self.cache.lock().expect("not poisoned");
        cache
            .get(prefix)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, r)| r.clone())
    }

    fn remember(&self, prefix: &str, record: Option<Arc<ClientKeyRecord>>) {
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(prefix.to_owned(), (Instant::now(), record));
    }

    /// Drops a cached lookup (after this gateway changed or removed the key).
    pub fn forget(&self, prefix: &str) {
        self.cache.lock().expect("not poisoned").remove(prefix);
    }

    /// 403 unless the key may use `model` (an empty allowlist allows every model).
    pub fn check_model(record: &ClientKeyRecord, model: &str) -> Result<(), ApiError> {
        if record.models.is_empty() || record.models.iter().any(|m| m == model) {
            return Ok(());
        }
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "This API key may not use the model `{}`",
                model.chars().take(64).collect::<String>()
            ),
        )
        .with_param("model")
        .with_code("model_not_allowed"))
    }

    /// Takes one request from the key's budget: 429 with `Retry-After` when it is spent.
    pub async fn check_rate(&self, record: &ClientKeyRecord) -> Result<(), ApiError> {
        if record.rate_limit_per_minute <= 0 {
            return Ok(());
        }
        let per_minute = record.rate_limit_per_minute.min(u32::MAX as i64) as u32;
        match self.limiter.check(&record.id, per_minute).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Limited { retry_after }) => {
                let mut e = ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Rate limit of {} requests per minute reached for this API key",
                        record.rate_limit_per_minute
                    ),
                )
                .with_code("rate_limit_exceeded");
                e.retry_after = Some(retry_after.as_millis().div_ceil(1000).max(1) as u64);
                Err(e)
            }
            Err(e) => {
                tracing::error!(error = %e, "rate limiter unavailable");
                Err(ApiError::unavailable(
                    "Rate limits cannot be checked right now, try again shortly",
                    1,
                ))
            }
        }
    }

    /// Counts one request of a key.
    pub fn count(&self, id: &str) {
        let now = shared::time::now_ms();
        let mut usage = self.usage.lock().expect("not poisoned");
        let entry = usage.entry(id.to_owned()).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
    }

    /// Writes the counted usage in one batch; on failure the counts are kept for the next
    /// try.
    pub async fn flush(&self, store: &dyn Store) {
        let taken: Vec<ClientKeyUsage> = {
            let mut usage = self.usage.lock().expect("not poisoned");
            usage
                .drain()
                .map(|(id, (requests, last_used_at_ms))| ClientKeyUsage {
                    id,
                    requests,
                    last_used_at_ms,
                })
                .collect()
        };
        if taken.is_empty() {
            return;
        }
        if let Err(e) = store.add_client_key_usage(&taken).await {
            tracing::warn!(error = %e, keys = taken.len(), "client key usage not saved; retrying");
            let mut usage = self.usage.lock().expect("not poisoned");
            for u in taken {
                let entry = usage.entry(u.id).or_insert((0, u.last_used_at_ms));
                entry.0 += u.requests;
                entry.1 = entry.1.max(u.last_used_at_ms);
            }
        }
    }

    /// Flushes usage every [`FLUSH_INTERVAL`] until `shutdown`, then once more.
    pub fn spawn_flusher(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => self.flush(store.as_ref()).await,
                    _ = shutdown.cancelled() => {
                        self.flush(store.as_ref()).await;
                        return;
                    }
                }
            }
        });
    }
}

/// The model a client-API request asks for, so an allowlist can be checked before the
/// handler runs. JSON bodies are read (up to `limit` bytes) and handed on unchanged; a
/// missing `model` means the route's default. Routes that take no model give `None`, and so
/// does a body the handler is going to refuse anyway (not JSON, malformed).
pub async fn requested_model(
    request: axum::extract::Request,
    limit: usize,
) -> Result<(axum::extract::Request, Option<String>), ApiError> {
    use axum::http::{Method, StatusCode, header};
    if request.method() != Method::POST {
        return Ok((request, None));
    }
    let path = request.uri().path().to_owned();
    if path == "/v1/images/edits" {
        // Multipart, and the route serves exactly one model.
        return Ok((request, Some(crate::images::edits::MODEL.to_owned())));
    }
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
    if !is_json {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
            .with_param("body")
            .with_code("body_too_large")
    })?;
    let model = match crate::extract::parse(&bytes) {
        Ok(value) => match value.get("model") {
            Some(serde_json::Value::String(m)) => Some(m.clone()),
            None | Some(serde_json::Value::Null) => match path.as_str() {
                "/v1/images/generations" => Some(crate::images::generations::MODEL.to_owned()),
                "/v1/videos" => Some(crate::videos::input::VIDEO_MODEL.to_owned()),
                _ => None,
            },
            // Not a string: the handler answers 400.
            Some(_) => None,
        },
        Err(_) => None,
    };
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    Ok((request, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = generate();
        assert!(k.key.starts_with(KEY_MARK));
        assert_eq!(k.key.len(), PREFIX_LEN + SECRET_LEN);
        assert_eq!(&k.key[..PREFIX_LEN], k.prefix);
        assert_eq!(k.sha256, digest_hex(&k.key));
        assert_ne!(generate().key, k.key);
    }

    #[test]
    fn allowlists_refuse_other_models() {
        let mut r = ClientKeyRecord {
            id: "i".into(),
            prefix: "p".into(),
            key_sha256: String::new(),
            name: "n".into(),
            models: vec![],
            rate_limit_per_minute: 0,
            enabled: true,
            request_count: 0,
            created_at_ms: 0,
            last_used_at_ms: None,
        };
        assert!(ClientKeys::check_model(&r, "grok-4").is_ok());
        r.models = vec!["grok-3".into()];
        assert!(ClientKeys::check_model(&r, "grok-3").is_ok());
        let e = ClientKeys::check_model(&r, "grok-4").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_deref()),
            (403, Some("model_not_allowed"))
        );
    }
}
