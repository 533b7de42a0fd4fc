//! Request headers the browser sends to grok.com, per kind of call, and the SSO cookie.
//!
//! Cookie values are marked sensitive, so `Debug` of a header map prints `Sensitive`
//! instead of the account token.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{UpstreamError, UpstreamErrorKind};
use crate::Secret;
use crate::config::UpstreamConfig;

/// The page origin every call claims, whatever base URL (simulator, proxy) it goes to.
pub(crate) const ORIGIN: &str = "https://grok.com";
const REFERER: &str = "https://grok.com/";
const ACCEPT_LANGUAGE: &str = "zh-CN,zh;q=0.9,en;q=0.8";
const NAVIGATION_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";

/// The `sso` cookie value of an account token: trimmed, without a pasted `sso=` prefix.
pub(crate) fn sso_value(token: &Secret) -> &str {
    let value = token.expose().trim();
    value.strip_prefix("sso=").unwrap_or(value).trim()
}

/// The cookie of REST calls: `sso=<T>; sso-rw=<T>`, then `;cf_clearance=<C>` when configured
/// (no space, as the browser-derived clients send it).
pub(crate) fn rest_cookie(token: &Secret, cf_clearance: &Secret) -> String {
    let sso = sso_value(token);
    let mut cookie = format!("sso={sso}; sso-rw={sso}");
    if !cf_clearance.is_empty() {
        cookie.push_str(";cf_clearance=");
        cookie.push_str(cf_clearance.expose().trim());
    }
    cookie
}

/// The cookie of the chat gateway upgrade, which also names the user.
pub(crate) fn ws_cookie(token: &Secret, cf_clearance: &Secret, user_id: &str) -> String {
    let sso = sso_value(token);
    let mut cookie = format!("sso={sso}; sso-rw={sso}");
    if !cf_clearance.is_empty() {
        cookie.push_str("; cf_clearance=");
        cookie.push_str(cf_clearance.expose().trim());
    }
    cookie.push_str("; x-userid=");
    cookie.push_str(user_id);
    cookie
}

/// Builds the header sets of the upstream calls from the configured browser identity.
#[derive(Clone)]
pub(crate) struct HeaderBuilder {
    user_agent: HeaderValue,
    cf_clearance: Secret,
}

impl std::fmt::Debug for HeaderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderBuilder")
            .field("user_agent", &self.user_agent)
            .field("cf_clearance", &self.cf_clearance)
            .finish()
    }
}

impl HeaderBuilder {
    pub(crate) fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let user_agent = HeaderValue::from_str(config.user_agent.trim()).map_err(|_| {
            UpstreamError::new(
                UpstreamErrorKind::BadRequest,
                None,
                "upstream.user_agent is not a valid header value",
            )
        })?;
        Ok(Self {
            user_agent,
            cf_clearance: config.cf_clearance.clone(),
        })
    }

    /// A JSON API call (`/rest/...`): the browser's fetch headers, a fresh request id and,
    /// when given, the `x-statsig-id`.
    pub(crate) fn api(
        &self,
        token: &Secret,
        statsig: Option<&str>,
    ) -> Result<HeaderMap, UpstreamError> {
        let mut headers = self.fetch(token)?;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let request_id = uuid::Uuid::new_v4().to_string();
        headers.insert(
            HeaderName::from_static("x-xai-request-id"),
            HeaderValue::from_str(&request_id).expect("a UUID is a valid header value"),
        );
        if let Some(statsig) = statsig {
            let value = HeaderValue::from_str(statsig).map_err(|_| {
                UpstreamError::new(
                    UpstreamErrorKind::BadRequest,
                    None,
                    "x-statsig-id is not a valid header value",
                )
            })?;
            headers.insert(HeaderName::from_static("x-statsig-id"), value);
        }
        Ok(headers)
    }

    /// The multipart upload and the session lookup: fetch headers without statsig, request
    /// id or content type (the caller sets its own).
    pub(crate) fn fetch(&self, token: &Secret) -> Result<HeaderMap, UpstreamError> {
        let mut headers = self.common(rest_cookie(token, &self.cf_clearance))?;
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(header::ORIGIN, HeaderValue::from_static(ORIGIN));
        headers.insert(header::REFERER, HeaderValue::from_static(REFERER));
        headers.insert(
            HeaderName::from_static("priority"),
            HeaderValue::from_static("u=1, i"),
        );
        headers.insert(
            HeaderName::from_static("sec-fetch-dest"),
            HeaderValue::from_static("empty"),
        );
        headers.insert(
            HeaderName::from_static("sec-fetch-mode"),
            HeaderValue::from_static("cors"),
        );
        headers.insert(
            HeaderName::from_static("sec-fetch-site"),
            HeaderValue::from_static("same-origin"),
        );
        Ok(headers)
    }

    /// A top-level page load (`GET /index`), as a browser tab does it.
    pub(crate) fn navigation(&self, token: &Secret) -> Result<HeaderMap, UpstreamError> {
        let mut headers = self.common(rest_cookie(token, &self.cf_clearance))?;
        headers.insert(header::ACCEPT, HeaderValue::from_static(NAVIGATION_ACCEPT));
        headers.insert(
            HeaderName::from_static("priority"),
            HeaderValue::from_static("u=0, i"),
        );
        headers.insert(
            HeaderName::from_static("sec-fetch-dest"),
            HeaderValue::from_static("document"),
        );
        headers.insert(
            HeaderName::from_static("sec-fetch-mode"),
            HeaderValue::from_static("navigate"),
        );
        headers.insert(
            HeaderName::from_static("sec-fetch-site"),
            HeaderValue::from_static("none"),
        );
        headers.insert(
            HeaderName::from_static("sec-fetch-user"),
            HeaderValue::from_static("?1"),
        );
        headers.insert(
            HeaderName::from_static("upgrade-insecure-requests"),
            HeaderValue::from_static("1"),
        );
        Ok(headers)
    }

    /// The chat gateway upgrade. The gateway takes no statsig header.
    pub(crate) fn websocket(
        &self,
        token: &Secret,
        user_id: &str,
    ) -> Result<HeaderMap, UpstreamError> {
        let mut headers = self.common(ws_cookie(token, &self.cf_clearance, user_id))?;
        headers.insert(header::ORIGIN, HeaderValue::from_static(ORIGIN));
        Ok(headers)
    }

    fn common(&self, cookie: String) -> Result<HeaderMap, UpstreamError> {
        let mut cookie = HeaderValue::from_str(&cookie).map_err(|_| {
            UpstreamError::new(
                UpstreamErrorKind::BadRequest,
                None,
                "the account token or cf_clearance holds characters a cookie cannot carry",
            )
        })?;
        cookie.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, cookie);
        headers.insert(header::USER_AGENT, self.user_agent.clone());
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static(ACCEPT_LANGUAGE),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.account-secret-part";

    fn builder(cf: &str) -> HeaderBuilder {
        let mut config = Config::defaults().upstream;
        config.cf_clearance = Secret::from(cf);
        HeaderBuilder::new(&config).unwrap()
    }

    #[test]
    fn rest_cookie_format() {
        let token = Secret::from(TOKEN);
        assert_eq!(
            rest_cookie(&token, &Secret::default()),
            format!("sso={TOKEN}; sso-rw={TOKEN}")
        );
        assert_eq!(
            rest_cookie(&token, &Secret::from("cf-123")),
            format!("sso={TOKEN}; sso-rw={TOKEN};cf_clearance=cf-123")
        );
        let prefixed = Secret::from(format!(" sso={TOKEN} "));
        assert_eq!(
            rest_cookie(&prefixed, &Secret::default()),
            format!("sso={TOKEN}; sso-rw={TOKEN}")
        );
    }

    #[test]
    fn ws_cookie_names_the_user() {
        let token = Secret::from(format!("sso={TOKEN}"));
        assert_eq!(
            ws_cookie(&token, &Secret::from("cf"), "u-1"),
            format!("sso={TOKEN}; sso-rw={TOKEN}; cf_clearance=cf; x-userid=u-1")
        );
        assert_eq!(
            ws_cookie(&token, &Secret::default(), "u-1"),
            format!("sso={TOKEN}; sso-rw={TOKEN}; x-userid=u-1")
        );
    }

    #[test]
    fn header_sets_carry_what_each_call_needs() {
        let b = builder("");
        let token = Secret::from(TOKEN);
        let api = b.api(&token, Some("c3RhdHNpZw==")).unwrap();
        assert_eq!(api["content-type"], "application/json");
        assert_eq!(api["origin"], ORIGIN);
        assert_eq!(api["x-statsig-id"], "c3RhdHNpZw==");
        assert_eq!(api["x-xai-request-id"].len(), 36);
        assert_ne!(
            api["x-xai-request-id"],
            b.api(&token, None).unwrap()["x-xai-request-id"]
        );
        assert!(!b.fetch(&token).unwrap().contains_key("x-statsig-id"));
        let ws = b.websocket(&token, "u-1").unwrap();
        assert!(!ws.contains_key("x-statsig-id"));
        assert_eq!(ws["pragma"], "no-cache");
        assert!(ws["cookie"].to_str().unwrap().ends_with("x-userid=u-1"));
        assert_eq!(b.navigation(&token).unwrap()["sec-fetch-mode"], "navigate");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let b = builder("cf-clearance-secret-value");
        let token = Secret::from(TOKEN);
        for headers in [
            b.api(&token, None).unwrap(),
            b.fetch(&token).unwrap(),
            b.navigation(&token).unwrap(),
            b.websocket(&token, "u").unwrap(),
        ] {
            let shown = format!("{headers:?}");
            assert!(!shown.contains("account-secret-part"), "{shown}");
            assert!(!shown.contains("cf-clearance-secret"), "{shown}");
            assert!(shown.contains("user-agent"), "{shown}");
        }
        let shown = format!("{b:?}");
        assert!(!shown.contains("cf-clearance-secret"), "{shown}");
    }

    #[test]
    fn a_token_with_a_newline_is_refused_without_echoing_it() {
        let err = builder("")
            .api(&Secret::from("abc\ndef-secret"), None)
            .unwrap_err();
        assert_eq!(err.kind, UpstreamErrorKind::BadRequest);
        assert!(!err.message.contains("def-secret"));
    }
}
