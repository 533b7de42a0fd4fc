//! [`UpstreamClient`]: the one entry point to Grok for chat, session lookup and uploads.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue};

use super::body::{ERROR_BODY_LIMIT, read_error_body, read_limited};
use super::headers::HeaderBuilder;
use super::session::{SESSION_LIMIT, SessionCache, parse_session, user_id_from_session};
use super::statsig::Statsig;
use super::upload::{UPLOAD_PATH, file_metadata_id, multipart};
use super::{ChatRequest, ChatStream, UpstreamError, classify, observe, rest_chat, ws_chat};
use crate::Secret;
use crate::config::{ChatTransport, UpstreamConfig};

/// Largest upload answer accepted.
const UPLOAD_ANSWER_LIMIT: usize = 256 * 1024;

/// The Grok web client. Cheap to clone: all clones share one HTTP connection pool, the
/// session cache and the statsig cache.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("base_url", &self.inner.base_url)
            .field("ws_url", &self.inner.ws_url)
            .field("transport", &self.inner.transport)
            .finish_non_exhaustive()
    }
}

/// Shared state of the transports.
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) headers: HeaderBuilder,
    pub(crate) statsig: Statsig,
    pub(crate) sessions: SessionCache,
    pub(crate) base_url: String,
    pub(crate) ws_url: String,
    /// The assets host generated files are downloaded from.
    pub(crate) assets_url: String,
    pub(crate) transport: ChatTransport,
    /// Bounds connecting and waiting for the first frame.
    pub(crate) connect_timeout: Duration,
    /// Bounds silence between frames once the answer streams.
    pub(crate) idle_timeout: Duration,
}

impl UpstreamClient {
    /// Builds the client from configuration. Fails only on unusable values (a user agent
    /// that is not a header value, a TLS setup error).
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let connect_timeout = Duration::from_secs(config.connect_timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(classify::from_reqwest)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                headers: HeaderBuilder::new(config)?,
                statsig: Statsig::new(config),
                sessions: SessionCache::new(Duration::from_secs(config.session_cache_secs)),
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                ws_url: config.ws_url.trim_end_matches('/').to_owned(),
                assets_url: config.assets_url.trim_end_matches('/').to_owned(),
                transport: config.chat_transport,
                connect_timeout,
                idle_timeout: Duration::from_secs(config.stream_idle_timeout_secs.max(1)),
            }),
        })
    }

    /// Streams one chat answer with the account `token`, over the configured transport.
    ///
    /// An error before the upstream accepted the request is returned here. Otherwise the
    /// stream yields `Started`, then `Reasoning`/`Text`/`Citation` chunks, then `Done`, or
    /// an `Err` item and ends. Dropping the stream closes the connection at once.
    pub async fn chat(
        &self,
        token: &Secret,
        request: &ChatRequest,
    ) -> Result<ChatStream, UpstreamError> {
        let open = async {
            match self.inner.transport {
                ChatTransport::Ws => ws_chat::open(&self.inner, token, request).await,
                ChatTransport::Rest => rest_chat::open(&self.inner, token, request).await,
            }
        };
        observe::stream("chat", open)
            .await
            .map_err(|e| scrub(e, token))
    }

    /// Shared transport state, for the call modules that extend this client.
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The account's user id, cached per token for `session_cache_secs`.
    pub async fn user_id(&self, token: &Secret) -> Result<String, UpstreamError> {
        observe::call("session", self.inner.user_id(token))
            .await
            .map_err(|e| scrub(e, token))
    }

    /// Uploads one file for use as a chat attachment; returns its `fileMetadataId`.
    ///
    /// The whole call is bounded by the connect plus the idle timeout.
    pub async fn upload(
        &self,
        token: &Secret,
        file_name: &str,
        mime: &str,
        bytes: bytes::Bytes,
    ) -> Result<String, UpstreamError> {
        let limit = self.inner.connect_timeout + self.inner.idle_timeout;
        let upload = async {
            tokio::time::timeout(limit, self.inner.upload(token, file_name, mime, bytes))
                .await
                .map_err(|_| classify::timeout("upload"))?
        };
        observe::call("upload", upload)
            .await
            .map_err(|e| scrub(e, token))
    }
}

impl Inner {
    pub(crate) async fn user_id(&self, token: &Secret) -> Result<String, UpstreamError> {
        if let Some(id) = self.sessions.get(token) {
            return Ok(id);
        }
        let lookup = async {
            let response = self
                .http
                .get(format!("{}/api/auth/session", self.base_url))
                .headers(self.headers.fetch(token)?)
                .send()
                .await
                .map_err(classify::from_reqwest)?;
            let status = response.status();
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = read_error_body(response, ERROR_BODY_LIMIT).await;
                return Err(classify::from_http(status.as_u16(), &headers, &body));
            }
            let body = read_limited(response, SESSION_LIMIT).await?;
            user_id_from_session(&parse_session(&body)?)
        };
        let id = tokio::time::timeout(self.connect_timeout, lookup)
            .await
            .map_err(|_| classify::timeout("session lookup"))??;
        self.sessions.put(token, &id);
        Ok(id)
    }

    async fn upload(
        &self,
        token: &Secret,
        file_name: &str,
        mime: &str,
        bytes: bytes::Bytes,
    ) -> Result<String, UpstreamError> {
        let (content_type, body) = multipart(file_name, mime, &bytes);
        let mut headers = self.headers.fetch(token)?;
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&content_type).expect("a generated boundary is header-safe"),
        );
        let response = self
            .http
            .post(format!("{}{UPLOAD_PATH}", self.base_url))
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(classify::from_reqwest)?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_error_body(response, ERROR_BODY_LIMIT).await;
            return Err(classify::from_http(status.as_u16(), &headers, &body));
        }
        let answer = read_limited(response, UPLOAD_ANSWER_LIMIT).await?;
        let answer = serde_json::from_slice(&answer)
            .map_err(|_| classify::protocol("upload answer is not JSON"))?;
        file_metadata_id(&answer)
    }
}

/// Belt and braces: an upstream that echoes the cookie back must not get it into a message.
pub(crate) fn scrub(mut error: UpstreamError, token: &Secret) -> UpstreamError {
    let value = super::headers::sso_value(token);
    if value.len() >= 8 && error.message.contains(value) {
        error.message = error.message.replace(value, "***");
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn debug_shows_no_secret() {
        let mut config = Config::defaults().upstream;
        config.cf_clearance = Secret::from("cf-secret-value");
        config.statsig_value = Secret::from("statsig-secret-value");
        let client = UpstreamClient::new(&config).unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("https://grok.com"), "{shown}");
        assert!(!shown.contains("secret-value"), "{shown}");
    }

    #[test]
    fn scrub_removes_an_echoed_token() {
        let token = Secret::from("sso=very-secret-token");
        let error = UpstreamError::new(
            super::super::UpstreamErrorKind::BadRequest,
            Some(400),
            "HTTP 400: {\"cookie\":\"sso=very-secret-token\"}",
        );
        assert!(!scrub(error, &token).message.contains("very-secret-token"));
    }
}
