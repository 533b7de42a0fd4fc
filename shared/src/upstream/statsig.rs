//! The `x-statsig-id` header of REST calls, in the three configured modes:
//!
//! - `fixed`: the configured value;
//! - `fallback`: the value the browser sends when its SDK fails (`x1:` + a TypeError text),
//!   new per request;
//! - `signer`: a signature from an external service over the page's `grok-site-verification`
//!   meta tag, cached per path for an hour, re-signed once after a 403, with a stale value
//!   (or the fallback) used when signing fails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use serde_json::{Value, json};

use super::body::{read_error_body, read_limited};
use super::headers::HeaderBuilder;
use super::{UpstreamError, classify};
use crate::Secret;
use crate::config::{StatsigMode, UpstreamConfig};

/// How long a signed value is used before it is signed again.
const SIGNED_TTL: Duration = Duration::from_secs(3600);
/// Largest page fetched for the meta tag.
const PAGE_LIMIT: usize = 4 * 1024 * 1024;
/// Largest signer answer accepted.
const SIGNER_LIMIT: usize = 64 * 1024;
const META_NAME: &str = "grok-site-verification";

/// A fresh fallback value: base64 of one of the two TypeError texts the browser produces.
pub(crate) fn fallback_value() -> String {
    let mut rng = rand::rng();
    let text = if rng.random_bool(0.5) {
        let name: String = (0..10)
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect();
        format!("x1:TypeError: Cannot read properties of undefined (reading '{name}')")
    } else {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let key: String = (0..5)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        format!("x1:TypeError: Cannot read properties of null (reading 'children['{key}']')")
    };
    STANDARD.encode(text)
}

/// The `content` of the `grok-site-verification` meta tag (name dashes/underscores and case
/// normalised; attribute order and quoting free).
pub(crate) fn site_verification(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<meta") {
        let start = from + start;
        let end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
        let tag = &html[start..end];
        let name = attribute(tag, "name").map(|n| {
            n.trim()
                .to_ascii_lowercase()
                .replace(['_', '\u{2010}', '\u{2011}', '\u{2013}', '\u{2014}'], "-")
        });
        if name.as_deref() == Some(META_NAME)
            && let Some(content) = attribute(tag, "content").filter(|c| !c.trim().is_empty())
        {
            return Some(content.trim().to_owned());
        }
        from = end;
    }
    None
}

/// The value of `name="..."` (or single-quoted) inside one tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let at = from + found;
        from = at + name.len();
        let preceded_by_space = lower[..at].ends_with(|c: char| c.is_ascii_whitespace());
        let rest = lower[from..].trim_start();
        if !preceded_by_space || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let value = tag[value_start..].trim_start();
        let quote = value.chars().next()?;
        if quote == '"' || quote == '\'' {
            let inner = &value[1..];
            return inner.find(quote).map(|e| &inner[..e]);
        }
        let e = value
            .find(|c: char| c.is_ascii_whitespace() || c == '/')
            .unwrap_or(value.len());
        return Some(&value[..e]);
    }
    None
}

#[derive(Debug, Clone)]
struct Signed {
    value: String,
    signed_at: Instant,
}

/// Produces `x-statsig-id` values for one client.
#[derive(Debug)]
pub(crate) struct Statsig {
    mode: StatsigMode,
    fixed: Secret,
    base_url: String,
    signer_url: String,
    timeout: Duration,
    cache: std::sync::Mutex<HashMap<String, Signed>>,
    /// One signing round trip at a time, so an expiry does not start a stampede.
    signing: tokio::sync::Mutex<()>,
}

impl Statsig {
    pub(crate) fn new(config: &UpstreamConfig) -> Self {
        Self {
            mode: config.statsig_mode,
            fixed: config.statsig_value.clone(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            signer_url: config.statsig_signer_url.clone(),
            timeout: Duration::from_secs(config.connect_timeout_secs.max(1)),
            cache: std::sync::Mutex::new(HashMap::new()),
            signing: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn is_signed(&self) -> bool {
        self.mode == StatsigMode::Signer
    }

    /// The value for a `POST` to `path`.
    pub(crate) async fn value(
        &self,
        http: &reqwest::Client,
        headers: &HeaderBuilder,
        token: &Secret,
        path: &str,
    ) -> String {
        match self.mode {
            StatsigMode::Fixed => self.fixed.expose().trim().to_owned(),
            StatsigMode::Fallback => fallback_value(),
            StatsigMode::Signer => self.signed(http, headers, token, path).await,
        }
    }

    /// Forgets the signed value for `path` after the upstream refused it, unless another
    /// request already replaced it.
    pub(crate) fn invalidate(&self, path: &str, refused: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.get(path).is_some_and(|s| s.value == refused) {
            cache.remove(path);
        }
    }

    fn cached(&self, path: &str) -> Option<Signed> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(path).cloned()
    }

    async fn signed(
        &self,
        http: &reqwest::Client,
        headers: &HeaderBuilder,
        token: &Secret,
        path: &str,
    ) -> String {
        let fresh = |s: &Signed| s.signed_at.elapsed() < SIGNED_TTL;
        if let Some(signed) = self.cached(path).filter(fresh) {
            return signed.value;
        }
        let _one_at_a_time = self.signing.lock().await;
        let stale = self.cached(path);
        if let Some(signed) = stale.clone().filter(fresh) {
            return signed.value;
        }
        let signing = tokio::time::timeout(self.timeout, self.sign(http, headers, token, path));
        match signing.await {
            Ok(Ok(value)) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.insert(
                    path.to_owned(),
                    Signed {
                        value: value.clone(),
                        signed_at: Instant::now(),
                    },
                );
                value
            }
            failure => {
                let reason = match failure {
                    Ok(Err(e)) => e.message,
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(%reason, stale = stale.is_some(), "statsig signing failed");
                stale.map_or_else(fallback_value, |s| s.value)
            }
        }
    }

    async fn sign(
        &self,
        http: &reqwest::Client,
        headers: &HeaderBuilder,
        token: &Secret,
        path: &str,
    ) -> Result<String, UpstreamError> {
        let meta = self.page_meta(http, headers, token).await?;
        let request = json!({
            "method": "POST",
            "path": path,
            "environment": {"metaContent": meta},
        });
        let response = http
            .post(&self.signer_url)
            .json(&request)
            .send()
            .await
            .map_err(classify::from_reqwest)?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_error_body(response, super::body::ERROR_BODY_LIMIT).await;
            return Err(classify::from_http(status.as_u16(), &headers, &body));
        }
        let body = read_limited(response, SIGNER_LIMIT).await?;
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("x-statsig-id")?.as_str().map(str::to_owned))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| classify::protocol("the statsig signer answered without x-statsig-id"))
    }

    /// Loads `/index` (or `/` when that is missing) and extracts the verification meta.
    async fn page_meta(
        &self,
        http: &reqwest::Client,
        headers: &HeaderBuilder,
        token: &Secret,
    ) -> Result<String, UpstreamError> {
        let mut response = None;
        for page in ["/index", "/"] {
            let got = http
                .get(format!("{}{page}", self.base_url))
                .headers(headers.navigation(token)?)
                .send()
                .await
                .map_err(classify::from_reqwest)?;
            if got.status() != reqwest::StatusCode::NOT_FOUND {
                response = Some(got);
                break;
            }
        }
        let response = response.ok_or_else(|| classify::protocol("no page to sign found"))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_error_body(response, super::body::ERROR_BODY_LIMIT).await;
            return Err(classify::from_http(status.as_u16(), &headers, &body));
        }
        let page = read_limited(response, PAGE_LIMIT).await?;
        site_verification(&String::from_utf8_lossy(&page))
            .ok_or_else(|| classify::protocol("the page carries no grok-site-verification meta"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_values_are_x1_type_errors_and_vary() {
        let a = fallback_value();
        let decoded = String::from_utf8(STANDARD.decode(&a).unwrap()).unwrap();
        assert!(
            decoded.starts_with("x1:TypeError: Cannot read properties of "),
            "{decoded}"
        );
        let distinct: std::collections::HashSet<String> =
            (0..20).map(|_| fallback_value()).collect();
        assert!(distinct.len() > 15);
    }

    #[test]
    fn meta_is_found_in_any_attribute_order() {
        let page = r#"<html><head><meta charset="utf-8"><meta name="description" content="no">
            <meta name="grok-site-verification" content="abc-123"/></head></html>"#;
        assert_eq!(site_verification(page).as_deref(), Some("abc-123"));
        let swapped = "<META content='x y' NAME='Grok_Site-Verification'>";
        assert_eq!(site_verification(swapped).as_deref(), Some("x y"));
        let unquoted = "<meta name=grok-site-verification content=tok/>";
        assert_eq!(site_verification(unquoted).as_deref(), Some("tok"));
        assert_eq!(
            site_verification("<meta name=\"other\" content=\"z\">"),
            None
        );
        assert_eq!(
            site_verification("<meta data-name=\"grok-site-verification\" content=\"z\">"),
            None
        );
    }
}
