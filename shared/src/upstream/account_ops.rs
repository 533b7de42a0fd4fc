//! Account operations outside chat: the quota calls (per-mode rate limits, the Imagine
//! quota), the NSFW switch (terms of service over gRPC-web and REST, birth date, feature
//! controls) and the online asset list and delete.
//!
//! [`AccountClient`] is built from the same configuration as the chat client and classifies
//! failures the same way ([`UpstreamError`]), so a 401 or a blocked account means the same
//! thing to the pool whichever call saw it.

use std::time::Duration;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{ERROR_BODY_LIMIT, read_error_body, read_limited};
use super::headers::{HeaderBuilder, rest_cookie};
use super::statsig::Statsig;
use super::{UpstreamError, UpstreamErrorKind, classify};
use crate::Secret;
use crate::config::UpstreamConfig;
use crate::models::Tier;

const RATE_LIMITS_PATH: &str = "/rest/rate-limits";
const IMAGINE_QUOTA_PATH: &str = "/rest/media/imagine/quota_info";
const TOS_GRPC_PATH: &str = "/auth_mgmt.AuthManagement/SetTosAcceptedVersion";
const TOS_REST_PATH: &str = "/rest/auth/set-tos-accepted";
const BIRTH_DATE_PATH: &str = "/rest/auth/set-birth-date";
const FEATURE_CONTROLS_PATH: &str = "/auth_mgmt.AuthManagement/UpdateUserFeatureControls";
const ASSETS_PATH: &str = "/rest/assets";
const ASSET_DELETE_PATH: &str = "/rest/assets-metadata/";
const LIVEKIT_TOKENS_PATH: &str = "/rest/livekit/tokens";
/// The LiveKit server the browser joins with a voice token.
pub const LIVEKIT_URL: &str = "wss://livekit.grok.com";

/// gRPC-web frame of `SetTosAcceptedVersion`: field 2 (varint) = 1.
const TOS_FRAME: [u8; 7] = [0x00, 0x00, 0x00, 0x00, 0x02, 0x10, 0x01];
/// The feature-control setting the NSFW switch turns on.
const NSFW_FEATURE: &[u8] = b"always_show_nsfw_content";
/// Largest JSON answer of the small account calls.
const ANSWER_LIMIT: usize = 1024 * 1024;
/// Pages of the asset list read at most (50 assets each).
const MAX_ASSET_PAGES: usize = 200;
/// The 429 body marker that means "the birth date is already set".
const BIRTH_DATE_ALREADY_SET: &str = "birth-date-change-limit-reached";

/// One mode's quota as `/rest/rate-limits` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeQuota {
    pub remaining: i64,
    pub total: i64,
    pub window_secs: u64,
}

/// One Imagine quota bucket (`image`, `imagePro`, `imageEdit`, `video`, `video720p`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaQuota {
    pub kind: String,
    pub available: bool,
    pub remaining: i64,
    pub window_secs: u64,
}

/// The tier the totals of the `auto` and `fast` modes imply (protocol reference 9.4).
pub fn infer_tier(auto_total: Option<i64>, fast_total: Option<i64>) -> Option<Tier> {
    let by_auto = match auto_total {
        Some(7 | 20) => Some(Tier::Basic),
        Some(50) => Some(Tier::Super),
        Some(150) => Some(Tier::Heavy),
        _ => None,
    };
    by_auto.or(match fast_total {
        Some(30) => Some(Tier::Basic),
        Some(140) => Some(Tier::Super),
        Some(400) => Some(Tier::Heavy),
        _ => None,
    })
}

/// A birth date 20 to 48 years back, in the form the web client sends.
pub fn birth_date(now_ms: i64, seed: u64) -> String {
    let year_now = 1970 + now_ms / (365_2425 * 24 * 3600 * 1000 / 10_000);
    let year = year_now - 20 - (seed % 29) as i64;
    let month = 1 + (seed / 29) % 12;
    let day = 1 + (seed / 348) % 28;
    format!("{year:04}-{month:02}-{day:02}T16:00:00.000Z")
}

/// The client for account operations. Cheap to clone.
#[derive(Clone)]
pub struct AccountClient {
    http: reqwest::Client,
    headers: HeaderBuilder,
    statsig: std::sync::Arc<Statsig>,
    base_url: String,
    accounts_url: String,
    /// Bounds one whole call.
    call_timeout: Duration,
}

impl std::fmt::Debug for AccountClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountClient")
            .field("base_url", &self.base_url)
            .field("accounts_url", &self.accounts_url)
            .finish_non_exhaustive()
    }
}

impl AccountClient {
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let connect_timeout = Duration::from_secs(config.connect_timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(classify::from_reqwest)?;
        Ok(Self {
            http,
            headers: HeaderBuilder::new(config)?,
            statsig: std::sync::Arc::new(Statsig::new(config)),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            accounts_url: config.accounts_url.trim_end_matches('/').to_owned(),
            call_timeout: connect_timeout
                + Duration::from_secs(config.stream_idle_timeout_secs.max(1)),
        })
    }

    /// `POST /rest/rate-limits {"modelName": mode}`.
    pub async fn rate_limits(
        &self,
        token: &Secret,
        mode: &str,
    ) -> Result<ModeQuota, UpstreamError> {
        let answer = self
            .post_json(token, RATE_LIMITS_PATH, &json!({"modelName": mode}), true)
            .await?;
        parse_mode_quota(&answer)
    }

    /// `POST /rest/media/imagine/quota_info {}`: the buckets the answer carries.
    pub async fn imagine_quota(&self, token: &Secret) -> Result<Vec<MediaQuota>, UpstreamError> {
        let answer = self
            .post_json(token, IMAGINE_QUOTA_PATH, &json!({}), true)
            .await?;
        Ok(parse_media_quota(&answer))
    }

    /// Both terms-of-service calls: the gRPC-web one on the accounts host (without the
    /// Cloudflare cookie) and the REST one.
    pub async fn accept_tos(&self, token: &Secret) -> Result<(), UpstreamError> {
        let mut headers = self.headers.fetch(token)?;
        let mut cookie = HeaderValue::from_str(&rest_cookie(token, &Secret::new("")))
            .map_err(|_| classify::protocol("the account token cannot be a cookie"))?;
        cookie.set_sensitive(true);
        headers.insert(header::COOKIE, cookie);
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://accounts.x.ai"),
        );
        headers.insert(
            header::REFERER,
            HeaderValue::from_static("https://accounts.x.ai/accept-tos"),
        );
        let url = format!("{}{TOS_GRPC_PATH}", self.accounts_url);
        self.grpc(url, headers, TOS_FRAME.to_vec()).await?;
        self.post_json(token, TOS_REST_PATH, &json!({"tosVersion": 5}), true)
            .await
            .map(|_| ())
    }

    /// `POST /rest/auth/set-birth-date`; an account whose date is already set counts as done.
    pub async fn set_birth_date(&self, token: &Secret, date: &str) -> Result<(), UpstreamError> {
        match self
            .post_json(token, BIRTH_DATE_PATH, &json!({"birthDate": date}), true)
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(e.kind, UpstreamErrorKind::RateLimited { .. })
                    && e.message.contains(BIRTH_DATE_ALREADY_SET) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /rest/livekit/tokens`: a LiveKit access token for one voice session with
    /// `voice`, `personality` and playback `speed` (protocol reference 6.8).
    pub async fn livekit_token(
        &self,
        token: &Secret,
        voice: &str,
        personality: &str,
        speed: f64,
    ) -> Result<String, UpstreamError> {
        // `sessionPayload` is a JSON document inside a string, as the web client sends it.
        let session = json!({"voice": voice, "personality": personality, "playback_speed": speed,
            "enable_vision": false, "turn_detection": {"type": "server_vad"}});
        let body = json!({"sessionPayload": session.to_string(), "requestAgentDispatch": false,
            "livekitUrl": LIVEKIT_URL, "params": {"enable_markdown_transcript": "true"}});
        let answer = self
            .post_json(token, LIVEKIT_TOKENS_PATH, &body, true)
            .await?;
        answer
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| classify::protocol("the LiveKit answer has no token"))
    }

    /// `UpdateUserFeatureControls` with `always_show_nsfw_content` on.
    pub async fn enable_nsfw(&self, token: &Secret) -> Result<(), UpstreamError> {
        let statsig = self
            .statsig
            .value(&self.http, &self.headers, token, FEATURE_CONTROLS_PATH)
            .await;
        let mut headers = self.headers.api(token, Some(&statsig))?;
        headers.insert(
            header::REFERER,
            HeaderValue::from_static("https://grok.com/?_s=data"),
        );
        let url = format!("{}{FEATURE_CONTROLS_PATH}", self.base_url);
        self.grpc(url, headers, nsfw_frame()).await
    }

    /// Every asset id of the account, following `nextPageToken` (bounded).
    pub async fn list_assets(&self, token: &Secret) -> Result<Vec<String>, UpstreamError> {
        let mut ids = Vec::new();
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_ASSET_PAGES {
            let mut url = format!(
                "{}{ASSETS_PATH}?pageSize=50&orderBy=ORDER_BY_LAST_USE_TIME&source=SOURCE_ANY&isLatest=true",
                self.base_url
            );
            if let Some(t) = &page_token {
                url.push_str("&pageToken=");
                url.push_str(&urlencoding(t));
            }
            let mut headers = self.headers.fetch(token)?;
            headers.insert(
                header::REFERER,
                HeaderValue::from_static("https://grok.com/files"),
            );
            let answer = self.send(self.http.get(url).headers(headers)).await?;
            let page: Value = serde_json::from_slice(&answer)
                .map_err(|_| classify::protocol("asset list is not JSON"))?;
            if let Some(assets) = page.get("assets").and_then(Value::as_array) {
                ids.extend(
                    assets
                        .iter()
                        .filter_map(|a| a.get("assetId").and_then(Value::as_str))
                        .map(str::to_owned),
                );
            }
            let next = page
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next.is_none() || next == page_token {
                return Ok(ids);
            }
            page_token = next;
        }
        Ok(ids)
    }

    /// `DELETE /rest/assets-metadata/<id>`.
    pub async fn delete_asset(&self, token: &Secret, asset_id: &str) -> Result<(), UpstreamError> {
        if asset_id.is_empty()
            || !asset_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(UpstreamError::new(
                UpstreamErrorKind::BadRequest,
                None,
                "asset id holds unexpected characters",
            ));
        }
        let mut headers = self.headers.fetch(token)?;
        headers.insert(
            header::REFERER,
            HeaderValue::from_static("https://grok.com/files"),
        );
        let url = format!("{}{ASSET_DELETE_PATH}{asset_id}", self.base_url);
        self.send(self.http.delete(url).headers(headers))
            .await
            .map(|_| ())
    }

    async fn post_json(
        &self,
        token: &Secret,
        path: &str,
        body: &Value,
        with_statsig: bool,
    ) -> Result<Value, UpstreamError> {
        let statsig = if with_statsig {
            Some(
                self.statsig
                    .value(&self.http, &self.headers, token, path)
                    .await,
            )
        } else {
            None
        };
        let headers = self.headers.api(token, statsig.as_deref())?;
        let url = format!("{}{path}", self.base_url);
        let answer = self
            .send(self.http.post(url).headers(headers).json(body))
            .await?;
        if answer.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer)
            .map_err(|_| classify::protocol(format!("answer of {path} is not JSON")))
    }

    /// Sends one request within the call timeout; a non-success status is classified.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<bytes::Bytes, UpstreamError> {
        let call = async {
            let response = request.send().await.map_err(classify::from_reqwest)?;
            let status = response.status();
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = read_error_body(response, ERROR_BODY_LIMIT).await;
                return Err(classify::from_http(status.as_u16(), &headers, &body));
            }
            read_limited(response, ANSWER_LIMIT).await
        };
        tokio::time::timeout(self.call_timeout, call)
            .await
            .map_err(|_| classify::timeout("account call"))?
    }

    /// A gRPC-web unary call: success needs HTTP 200 and `grpc-status` 0 (or none).
    async fn grpc(
        &self,
        url: String,
        mut headers: HeaderMap,
        frame: Vec<u8>,
    ) -> Result<(), UpstreamError> {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+proto"),
        );
        headers.insert(
            HeaderName::from_static("x-grpc-web"),
            HeaderValue::from_static("1"),
        );
        let call = async {
            let response = self
                .http
                .post(url)
                .headers(headers)
                .body(frame)
                .send()
                .await
                .map_err(classify::from_reqwest)?;
            let status = response.status();
            let response_headers = response.headers().clone();
            if !status.is_success() {
                let body = read_error_body(response, ERROR_BODY_LIMIT).await;
                return Err(classify::from_http(
                    status.as_u16(),
                    &response_headers,
                    &body,
                ));
            }
            let body = read_limited(response, ANSWER_LIMIT).await?;
            let (code, message) = grpc_status(&response_headers, &body)?;
            grpc_error(code, &message)
        };
        tokio::time::timeout(self.call_timeout, call)
            .await
            .map_err(|_| classify::timeout("gRPC-web call"))?
    }
}

/// The 37-byte `UpdateUserFeatureControls` frame.
fn nsfw_frame() -> Vec<u8> {
    // field 1: {field 2 varint 1}; field 2: {field 1: "always_show_nsfw_content"}
    let mut message = vec![
        0x0a,
        0x02,
        0x10,
        0x01,
        0x12,
        (NSFW_FEATURE.len() + 2) as u8,
        0x0a,
    ];
    message.push(NSFW_FEATURE.len() as u8);
    message.extend_from_slice(NSFW_FEATURE);
    let mut frame = vec![0x00];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// The gRPC status of a gRPC-web answer: from a trailer frame (flag 0x80) in the body, or
/// from the HTTP headers. Absent means success.
pub(crate) fn grpc_status(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(u32, String), UpstreamError> {
    let mut at = 0;
    while at + 5 <= body.len() {
        let flag = body[at];
        let len =
            u32::from_be_bytes([body[at + 1], body[at + 2], body[at + 3], body[at + 4]]) as usize;
        let end = at + 5 + len;
        if end > body.len() {
            return Err(classify::protocol("truncated gRPC-web frame"));
        }
        if flag & 0x01 != 0 {
            return Err(classify::protocol(
                "compressed gRPC-web frames are not supported",
            ));
        }
        if flag & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(&body[at + 5..end]);
            let mut code = 0;
            let mut message = String::new();
            for line in trailers.split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "grpc-status" => code = v.trim().parse().unwrap_or(2),
                        "grpc-message" => message = v.trim().to_owned(),
                        _ => {}
                    }
                }
            }
            return Ok((code, message));
        }
        at = end;
    }
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map_or(0, |v| v.trim().parse().unwrap_or(2));
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((code, message))
}

/// gRPC status codes as the rest of the client classifies HTTP statuses.
fn grpc_error(code: u32, message: &str) -> Result<(), UpstreamError> {
    let message = classify::excerpt(message);
    let (kind, status) = match code {
        0 => return Ok(()),
        16 => (UpstreamErrorKind::Unauthorized, 401),
        7 if message.contains("blocked") => (UpstreamErrorKind::Blocked, 403),
        7 => (UpstreamErrorKind::Forbidden, 403),
        8 => (UpstreamErrorKind::RateLimited { retry_after: None }, 429),
        3 => (UpstreamErrorKind::BadRequest, 400),
        4 => (UpstreamErrorKind::Timeout, 504),
        14 => (UpstreamErrorKind::Transient, 503),
        _ => (UpstreamErrorKind::Transient, 502),
    };
    Err(UpstreamError::new(
        kind,
        Some(status),
        format!("gRPC status {code}: {message}"),
    ))
}

fn parse_mode_quota(answer: &Value) -> Result<ModeQuota, UpstreamError> {
    let number = |key: &str| answer.get(key).and_then(Value::as_i64);
    let remaining = number("remainingQueries")
        .or_else(|| number("remainingTokens"))
        .ok_or_else(|| classify::protocol("rate-limit answer has no remainingQueries"))?;
    let total = number("totalQueries").unwrap_or(0);
    Ok(ModeQuota {
        remaining,
        total,
        window_secs: number("windowSizeSeconds").unwrap_or(0).max(0) as u64,
    })
}

fn parse_media_quota(answer: &Value) -> Vec<MediaQuota> {
    let Some(buckets) = answer.as_object() else {
        return vec![];
    };
    buckets
        .iter()
        .filter_map(|(kind, b)| {
            let b = b.as_object()?;
            Some(MediaQuota {
                kind: kind.clone(),
                available: b.get("available").and_then(Value::as_bool).unwrap_or(false),
                remaining: b
                    .get("remainingQueries")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                window_secs: b
                    .get("windowSizeSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            })
        })
        .collect()
}

/// Percent-encodes a page token for a query string.
fn urlencoding(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_reference_bytes() {
        let frame = nsfw_frame();
        assert_eq!(frame.len(), 37);
        assert_eq!(&frame[..9], &[0, 0, 0, 0, 0x20, 0x0a, 0x02, 0x10, 0x01]);
        assert_eq!(&frame[9..13], &[0x12, 0x1a, 0x0a, 0x18]);
        assert_eq!(&frame[13..], NSFW_FEATURE);
    }

    #[test]
    fn tiers_follow_the_totals() {
        assert_eq!(infer_tier(Some(20), Some(30)), Some(Tier::Basic));
        assert_eq!(infer_tier(Some(50), None), Some(Tier::Super));
        assert_eq!(infer_tier(None, Some(400)), Some(Tier::Heavy));
        assert_eq!(infer_tier(Some(3), Some(3)), None);
    }

    #[test]
    fn grpc_trailers_are_read() {
        let mut body = vec![0x80, 0, 0, 0];
        let trailer = b"grpc-status:16\r\ngrpc-message:unauthenticated\r\n";
        body.push(trailer.len() as u8);
        body.extend_from_slice(trailer);
        let (code, message) = grpc_status(&HeaderMap::new(), &body).unwrap();
        assert_eq!((code, message.as_str()), (16, "unauthenticated"));
        assert_eq!(
            grpc_error(code, &message).unwrap_err().kind,
            UpstreamErrorKind::Unauthorized
        );
        assert_eq!(grpc_status(&HeaderMap::new(), &[]).unwrap().0, 0);
        assert!(grpc_status(&HeaderMap::new(), &[0x00, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn birth_dates_are_adult_and_well_formed() {
        let now = 1_790_000_000_000; // 2026
        let date = birth_date(now, 12345);
        let year: i64 = date[..4].parse().unwrap();
        assert!((1978..=2006).contains(&year), "{date}");
        assert!(date.ends_with("T16:00:00.000Z"));
    }
}
