//! `GET|HEAD /v1/files/image/{name}` and `/v1/files/video/{name}`: generated media, streamed
//! from the BlobStore.
//!
//! No API key, like the original product: names are random UUIDs, so a link is as good as a
//! capability, and clients (browsers, chat UIs) can embed it directly. Names are checked
//! strictly (letters, digits, `.`, `_`, `-`, a known extension, no `..`), so a name can only
//! ever address `images/<name>` or `videos/<name>` in the store. Single byte ranges are
//! served (206/416), which video players rely on for seeking.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::blob::{BlobError, MediaKind, content_type_for};

use crate::error::ApiError;
use crate::state::AppState;

pub use shared::blob::media_url;

/// Longest file name served.
pub const MAX_NAME_BYTES: usize = 128;
/// Media never changes under a name: let clients and proxies keep it.
const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// `GET|HEAD /v1/files/image/{name}`
pub async fn image(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    serve(&state, MediaKind::Image, &method, &headers, name).await
}

/// `GET|HEAD /v1/files/video/{name}`
pub async fn video(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    serve(&state, MediaKind::Video, &method, &headers, name).await
}

/// The public link of a stored media file, from `app.app_url`.
pub fn link(state: &AppState, kind: MediaKind, name: &str) -> String {
    media_url(&state.backends.live.get().app.app_url, kind, name)
}

fn invalid_name() -> ApiError {
    ApiError::invalid("name", "invalid_filename", "Invalid filename")
}

fn not_found(kind: MediaKind) -> ApiError {
    ApiError::not_found(match kind {
        MediaKind::Image => "Image not found",
        MediaKind::Video => "Video not found",
    })
}

/// Checks a requested name: the only names that can exist are ones the server made.
pub fn valid_name(kind: MediaKind, name: &str) -> bool {
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    name.len() <= MAX_NAME_BYTES
        && stem.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && kind
            .extensions()
            .contains(&ext.to_ascii_lowercase().as_str())
}

async fn serve(
    state: &AppState,
    kind: MediaKind,
    method: &Method,
    headers: &HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    // A path that does not even decode is as invalid as a bad name.
    let Ok(Path(name)) = name else {
        return invalid_name().into_response();
    };
    if !valid_name(kind, &name) {
        return invalid_name().into_response();
    }
    let key = kind.key(&name);
    let store = &state.backends.blob;
    let info = match store.head(&key).await {
        Ok(info) => info,
        Err(e) => return blob_error(kind, e).into_response(),
    };
    let mut common = HeaderMap::new();
    common.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_for(&name)),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        common.insert(header::CONTENT_DISPOSITION, v);
    }
    common.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, info.size) {
            RangeRequest::Ignore => None,
            RangeRequest::Satisfiable(start, end) => Some((start, end)),
            RangeRequest::Unsatisfiable => return unsatisfiable(info.size),
        },
    };
    let (status, start, end) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, info.size),
    };
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, info.size))
    {
        common.insert(header::CONTENT_RANGE, v);
    }
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if method == Method::HEAD {
        return (status, common).into_response();
    }
    // An empty object has no byte to open a range on.
    if info.size == 0 {
        return (status, common, Body::empty()).into_response();
    }
    match store.open(&key, range).await {
        Ok(reader) => (status, common, Body::from_stream(reader.body)).into_response(),
        Err(BlobError::InvalidRange) => unsatisfiable(info.size),
        Err(e) => blob_error(kind, e).into_response(),
    }
}

fn unsatisfiable(size: u64) -> Response {
    let mut response = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "Requested range not satisfiable",
    )
    .with_code("range_not_satisfiable")
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

fn blob_error(kind: MediaKind, error: BlobError) -> ApiError {
    match error {
        BlobError::NotFound => not_found(kind),
        BlobError::InvalidKey => invalid_name(),
        e => {
            tracing::warn!(error = %e, "media storage unavailable");
            ApiError::unavailable("Media storage is unavailable", 2)
        }
    }
}

/// What a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Malformed or several ranges: serve the whole object (RFC 9110 allows ignoring).
    Ignore,
    /// `start..end`, end exclusive, within the object.
    Satisfiable(u64, u64),
    Unsatisfiable,
}

fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignore;
    };
    if spec.contains(',') {
        return RangeRequest::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignore;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeRequest::Ignore,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Satisfiable(size.saturating_sub(n), size),
        },
        (start, "") => match number(start) {
            None => RangeRequest::Ignore,
            Some(s) if s >= size => RangeRequest::Unsatisfiable,
            Some(s) => RangeRequest::Satisfiable(s, size),
        },
        (start, end) => match (number(start), number(end)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Satisfiable(s, e.saturating_add(1).min(size))
                }
            }
            _ => RangeRequest::Ignore,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_strict() {
        for good in ["0f3c9a.png", "a.JPG", "b-c_d.webp", "x.jpeg"] {
            assert!(valid_name(MediaKind::Image, good), "{good}");
        }
        assert!(valid_name(MediaKind::Video, "v.mp4"));
        for bad in [
            "",
            "..",
            "../x.png",
            "..png",
            "a..png",
            ".png",
            "/etc/x.png",
            "a/b.png",
            "a\\b.png",
            "a\0.png",
            "a%2e.png",
            "a.exe",
            "a",
            "a.mp4",
            "a b.png",
            "C:x.png",
        ] {
            assert!(!valid_name(MediaKind::Image, bad), "{bad:?}");
        }
        assert!(!valid_name(MediaKind::Video, "v.png"));
        let long = format!("{}.png", "a".repeat(MAX_NAME_BYTES));
        assert!(!valid_name(MediaKind::Image, &long));
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Satisfiable(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), Satisfiable(90, 100));
        assert_eq!(parse_range("bytes=-10", 100), Satisfiable(90, 100));
        assert_eq!(parse_range("bytes=-500", 100), Satisfiable(0, 100));
        assert_eq!(parse_range("bytes=50-5000", 100), Satisfiable(50, 100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=200-300", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), Ignore);
        assert_eq!(parse_range("bytes=+1-2", 100), Ignore);
    }
}
