//! The web pages the gateway serves and their static assets.
//!
//! Everything under `gateway/assets/` is compiled into the binary and served at
//! `/static/<path>`. Pages are plain HTML, CSS and JavaScript: no build step, nothing loaded
//! from elsewhere, and a Content-Security-Policy that allows only this origin's own files,
//! so injected markup cannot run script.

pub mod admin;
pub mod playground;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use rust_embed::Embed;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Embed)]
#[folder = "assets/"]
struct Assets;

/// No inline script or style, no other origin; media and images may be `blob:`/`data:`
/// because pages preview generated files that way.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/{*path}", get(static_asset).head(static_asset))
        .merge(admin::router())
        .merge(playground::router())
}

/// `GET /static/{*path}`: one embedded asset.
async fn static_asset(Path(path): Path<String>, headers: HeaderMap) -> Response<Body> {
    serve_asset(&path, &headers)
}

/// Serves the embedded asset at `path` (relative to `gateway/assets/`), answering
/// `If-None-Match` revalidations with 304. Unknown or unsafe paths get 404.
pub fn serve_asset(path: &str, headers: &HeaderMap) -> Response<Body> {
    let Some(file) = safe_path(path).and_then(Assets::get) else {
        return ApiError::not_found("No such file").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(file.data.into_owned()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        r
    };
    let h = response.headers_mut();
    // Names carry no version, so browsers revalidate every time; the ETag makes that a
    // cheap 304, and an upgrade is picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    security_headers(h);
    response
}

/// `path` when it names a file inside the assets folder: relative, no `..`, no empty or
/// hidden segments, no backslashes.
fn safe_path(path: &str) -> Option<&str> {
    let ok = !path.is_empty()
        && path.len() <= 256
        && !path.contains('\\')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && !seg.starts_with('.'));
    ok.then_some(path)
}

/// The media type for an asset's extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The headers every page and asset carries.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        for bad in [
            "",
            "../Cargo.toml",
            "admin/../../src/lib.rs",
            "/etc/passwd",
            "admin//login.html",
            ".hidden",
            "a\\b",
        ] {
            assert_eq!(safe_path(bad), None, "{bad}");
        }
        assert_eq!(safe_path("common/app.js"), Some("common/app.js"));
        assert_eq!(
            content_type("common/app.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("x.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }

    #[test]
    fn every_admin_page_is_embedded() {
        for page in admin::PAGES {
            assert!(Assets::get(page.1).is_some(), "{} missing", page.1);
        }
    }
}
