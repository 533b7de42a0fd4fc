//! Account operations: quota windows on a clock tests can move, the Imagine quota, the
//! terms of service (gRPC-web and REST), the birth date, the NSFW feature control, and the
//! online asset list and delete.
//!
//! Test-only endpoints: `POST /sim/clock/advance {"secs": n}` moves the simulator's clock
//! (quota windows end sooner), and `GET /sim/accounts` shows per-account counters and
//! settings, keyed by the full account token like `/sim/stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::SimState;
use crate::account::{authenticated_token, cookie, sso_token};
use crate::faults::{self, Faults};

/// Length of a quota window, as `/rest/rate-limits` reports it.
pub(crate) const WINDOW_SIZE_SECS: u64 = 7200;
/// Assets a fresh account holds, unless its token carries `assets-<n>`.
const DEFAULT_ASSETS: usize = 3;
const TOS_FRAME: [u8; 7] = [0x00, 0x00, 0x00, 0x00, 0x02, 0x10, 0x01];
const NSFW_FEATURE: &str = "always_show_nsfw_content";

/// What the simulator knows about one account beyond chat calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountOps {
    pub rate_limit_calls: u64,
    pub imagine_quota_calls: u64,
    pub tos_grpc_calls: u64,
    pub tos_rest_calls: u64,
    pub birth_date_calls: u64,
    pub feature_control_calls: u64,
    pub asset_list_calls: u64,
    pub asset_delete_calls: u64,
    pub tos_accepted: bool,
    pub birth_date: Option<String>,
    pub nsfw_enabled: bool,
    /// Assets the account still holds.
    pub assets: Vec<String>,
}

struct Window {
    start_ms: i64,
    /// Chat calls counted before this window began.
    baseline_calls: u64,
}

#[derive(Default)]
struct Inner {
    clock_offset_ms: i64,
    accounts: BTreeMap<String, AccountOps>,
    windows: HashMap<String, Window>,
}

/// The shared account registry of one simulator.
#[derive(Default)]
pub(crate) struct Accounts {
    inner: Mutex<Inner>,
}

impl Accounts {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(inner: &Inner) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        wall + inner.clock_offset_ms
    }

    /// Chat calls of `token` in its current quota window, given its calls so far. The first
    /// quota question opens a window; once the window has passed, a new one begins and
    /// earlier calls no longer count.
    pub(crate) fn used_in_window(&self, token: &str, calls: u64) -> u64 {
        let mut inner = self.lock();
        let now = Self::now_ms(&inner);
        let window = inner.windows.entry(token.to_owned()).or_insert(Window {
            start_ms: now,
            baseline_calls: 0,
        });
        if now >= window.start_ms + (WINDOW_SIZE_SECS * 1000) as i64 {
            window.start_ms = now;
            window.baseline_calls = calls;
        }
        calls.saturating_sub(window.baseline_calls)
    }

    fn with<R>(&self, token: &str, f: impl FnOnce(&mut AccountOps) -> R) -> R {
        let mut inner = self.lock();
        let account = inner
            .accounts
            .entry(token.to_owned())
            .or_insert_with(|| AccountOps {
                assets: initial_assets(token),
                ..Default::default()
            });
        f(account)
    }

    pub(crate) fn reset(&self) {
        *self.lock() = Inner::default();
    }
}

/// Totals per mode from a `quota-<n>` marker in the token, for tests that need a small quota.
pub(crate) fn total_override(token: &str) -> Option<u64> {
    marker_number(token, "quota-")
}

fn marker_number(token: &str, marker: &str) -> Option<u64> {
    let at = token.find(marker)? + marker.len();
    let digits: String = token[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn initial_assets(token: &str) -> Vec<String> {
    let count = marker_number(token, "assets-").map_or(DEFAULT_ASSETS, |n| n.min(1000) as usize);
    let tag = &crate::account::user_id_for(token)[..8];
    (0..count).map(|i| format!("asset-{tag}-{i:04}")).collect()
}

/// The account token, or the refusal an unauthenticated, blocked or challenged call gets.
// The refusal is a ready response; boxing it would only move the allocation.
#[allow(clippy::result_large_err)]
fn authenticate(headers: &HeaderMap) -> Result<String, Response> {
    let token = sso_token(headers);
    let faults = Faults::for_request(headers, token.as_deref());
    if faults.anti_bot {
        return Err(faults::anti_bot_challenge());
    }
    let Some(token) = authenticated_token(headers) else {
        return Err(faults::unauthorized());
    };
    if faults.unauthorized {
        return Err(faults::unauthorized());
    }
    if faults.blocked {
        return Err(faults::blocked());
    }
    Ok(token)
}

/// A gRPC-web answer: no message, one trailer frame with the status.
fn grpc_answer(code: u32, message: &str) -> Response {
    let trailer = format!("grpc-status:{code}\r\ngrpc-message:{message}\r\n");
    let mut body = vec![0x80];
    body.extend_from_slice(&(trailer.len() as u32).to_be_bytes());
    body.extend_from_slice(trailer.as_bytes());
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc-web+proto"),
    );
    response
}

/// Checks a gRPC-web request's headers; `Err` is the answer to send instead.
#[allow(clippy::result_large_err)]
fn grpc_request(headers: &HeaderMap) -> Result<String, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/grpc-web") {
        return Err(faults::bad_request(
            "content-type must be application/grpc-web+proto",
        ));
    }
    let token = sso_token(headers);
    let faults = Faults::for_request(headers, token.as_deref());
    let Some(token) = authenticated_token(headers) else {
        return Err(grpc_answer(16, "unauthenticated"));
    };
    if faults.unauthorized {
        return Err(grpc_answer(16, "unauthenticated"));
    }
    if faults.blocked {
        return Err(grpc_answer(7, "blocked-user"));
    }
    Ok(token)
}

/// `POST /rest/media/imagine/quota_info`.
pub(crate) async fn imagine_quota(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
) -> Response {
    let token = match authenticate(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    state.accounts.with(&token, |a| a.imagine_quota_calls += 1);
    let bucket = |remaining: u64| {
        json!({"available": remaining > 0, "remainingQueries": remaining,
               "windowSizeSeconds": WINDOW_SIZE_SECS})
    };
    let video = if token.contains("super") || token.contains("heavy") {
        bucket(30)
    } else {
        Value::Null
    };
    Json(
        json!({"image": bucket(50), "imagePro": Value::Null, "imageEdit": bucket(20),
                "video": video.clone(), "video720p": video}),
    )
    .into_response()
}

/// `POST accounts…/auth_mgmt.AuthManagement/SetTosAcceptedVersion` (gRPC-web).
pub(crate) async fn set_tos_accepted_version(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match grpc_request(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    // The accounts host is called without the Cloudflare cookie.
    if cookie(&headers, "cf_clearance").is_some() {
        return grpc_answer(3, "unexpected cookie");
    }
    if body.as_ref() != TOS_FRAME {
        return grpc_answer(3, "invalid request message");
    }
    state.accounts.with(&token, |a| a.tos_grpc_calls += 1);
    grpc_answer(0, "")
}

/// `POST /rest/auth/set-tos-accepted {"tosVersion": 5}`; accepted once both calls were made.
pub(crate) async fn set_tos_accepted(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match authenticate(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let version = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("tosVersion").and_then(Value::as_u64));
    if version.is_none() {
        return faults::bad_request("tosVersion is required");
    }
    state.accounts.with(&token, |a| {
        a.tos_rest_calls += 1;
        a.tos_accepted = a.tos_grpc_calls > 0;
    });
    Json(json!({})).into_response()
}

/// `POST /rest/auth/set-birth-date {"birthDate": "YYYY-MM-DDTHH:MM:SS.mmmZ"}`: once only.
pub(crate) async fn set_birth_date(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match authenticate(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let date = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("birthDate")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let Some(date) = date.filter(|d| well_formed_date(d)) else {
        return faults::bad_request("birthDate must look like 1990-07-14T16:00:00.000Z");
    };
    let already = state.accounts.with(&token, |a| {
        a.birth_date_calls += 1;
        let already = a.birth_date.is_some();
        a.birth_date.get_or_insert(date);
        already
    });
    if already {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"code": 8, "message": "[WKE=account:birth-date-change-limit-reached]"})),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

fn well_formed_date(date: &str) -> bool {
    let b = date.as_bytes();
    date.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && date.ends_with('Z')
        && date[..4]
            .parse::<u32>()
            .is_ok_and(|y| (1900..2100).contains(&y))
}

/// `POST /auth_mgmt.AuthManagement/UpdateUserFeatureControls` (gRPC-web). Refused until
/// the terms are accepted and the birth date is set, as the real service does.
pub(crate) async fn update_feature_controls(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match grpc_request(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if headers.get("x-statsig-id").is_none() {
        return grpc_answer(7, "missing x-statsig-id");
    }
    let valid = body.len() == 37
        && body[..5] == [0, 0, 0, 0, 0x20]
        && body.ends_with(NSFW_FEATURE.as_bytes());
    if !valid {
        return grpc_answer(3, "invalid request message");
    }
    let ready = state.accounts.with(&token, |a| {
        a.feature_control_calls += 1;
        let ready = a.tos_accepted && a.birth_date.is_some();
        a.nsfw_enabled |= ready;
        ready
    });
    if !ready {
        return grpc_answer(9, "terms not accepted or birth date missing");
    }
    grpc_answer(0, "")
}

#[derive(Deserialize)]
pub(crate) struct AssetQuery {
    #[serde(rename = "pageSize")]
    page_size: Option<usize>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

/// `GET /rest/assets?pageSize=&pageToken=`: the account's assets, a page at a time.
pub(crate) async fn list_assets(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(query): Query<AssetQuery>,
) -> Response {
    let token = match authenticate(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let size = query.page_size.unwrap_or(50).clamp(1, 100);
    let start: usize = query
        .page_token
        .as_deref()
        .and_then(|t| t.strip_prefix("p"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let (page, total) = state.accounts.with(&token, |a| {
        a.asset_list_calls += 1;
        let page: Vec<String> = a.assets.iter().skip(start).take(size).cloned().collect();
        (page, a.assets.len())
    });
    let assets: Vec<Value> = page.iter().map(|id| json!({"assetId": id})).collect();
    let mut answer = json!({"assets": assets});
    if start + size < total {
        answer["nextPageToken"] = json!(format!("p{}", start + size));
    }
    Json(answer).into_response()
}

/// `DELETE /rest/assets-metadata/{id}`.
pub(crate) async fn delete_asset(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(asset_id): Path<String>,
) -> Response {
    let token = match authenticate(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let found = state.accounts.with(&token, |a| {
        a.asset_delete_calls += 1;
        let before = a.assets.len();
        a.assets.retain(|id| *id != asset_id);
        a.assets.len() < before
    });
    if !found {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 5, "message": "not found"})),
        )
            .into_response();
    }
    Json(json!({})).into_response()
}

/// Counts a rate-limit question for the account counters.
pub(crate) fn count_rate_limit_call(state: &SimState, token: &str) {
    state.accounts.with(token, |a| a.rate_limit_calls += 1);
}

#[derive(Deserialize)]
pub(crate) struct Advance {
    secs: u64,
}

/// `POST /sim/clock/advance {"secs": n}`.
pub(crate) async fn advance_clock(
    State(state): State<Arc<SimState>>,
    Json(advance): Json<Advance>,
) -> Json<Value> {
    let mut inner = state.accounts.lock();
    inner.clock_offset_ms += (advance.secs.min(10 * 365 * 86400) * 1000) as i64;
    Json(json!({"offset_secs": inner.clock_offset_ms / 1000}))
}

/// `GET /sim/accounts`.
pub(crate) async fn accounts(
    State(state): State<Arc<SimState>>,
) -> Json<BTreeMap<String, AccountOps>> {
    Json(state.accounts.lock().accounts.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_reset_when_the_clock_passes_them() {
        let accounts = Accounts::default();
        assert_eq!(accounts.used_in_window("t", 0), 0);
        assert_eq!(accounts.used_in_window("t", 5), 5);
        accounts.lock().clock_offset_ms += (WINDOW_SIZE_SECS * 1000) as i64;
        assert_eq!(accounts.used_in_window("t", 5), 0);
        assert_eq!(accounts.used_in_window("t", 7), 2);
    }

    #[test]
    fn markers_pick_quota_and_assets() {
        assert_eq!(total_override("basic-quota-2-x"), Some(2));
        assert_eq!(total_override("basic"), None);
        assert_eq!(initial_assets("a-assets-60").len(), 60);
        assert_eq!(initial_assets("plain").len(), DEFAULT_ASSETS);
        assert!(well_formed_date("1990-07-14T16:00:00.000Z"));
        assert!(!well_formed_date("1990-07-14"));
    }
}
