//! Downloading generated files from the assets host with the generating account's cookies,
//! and recognising media by their magic bytes.
//!
//! Asset URLs are not public: the account that generated a file must fetch it. The cookie
//! only ever goes to the configured assets host: an absolute URL from an answer is reduced
//! to its path and query, which are then requested from `upstream.assets_url`.

use http::header::{self, HeaderValue};

use super::body::{ERROR_BODY_LIMIT, read_error_body, read_limited};
use super::client::{UpstreamClient, scrub};
use super::{UpstreamError, UpstreamErrorKind, classify};
use crate::Secret;

/// A media type recognised from a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType {
    pub mime: &'static str,
    /// File extension without the dot.
    pub ext: &'static str,
}

/// Recognises PNG, JPEG, WebP, GIF and MP4 by their magic bytes.
pub fn sniff_media_type(bytes: &[u8]) -> Option<MediaType> {
    let media = |mime, ext| Some(MediaType { mime, ext });
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        media("image/png", "png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        media("image/jpeg", "jpg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        media("image/webp", "webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        media("image/gif", "gif")
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        media("video/mp4", "mp4")
    } else {
        None
    }
}

/// A downloaded asset.
#[derive(Clone, PartialEq, Eq)]
pub struct DownloadedAsset {
    /// The type the assets host declared (without parameters).
    pub content_type: String,
    pub bytes: bytes::Bytes,
}

impl std::fmt::Debug for DownloadedAsset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadedAsset")
            .field("content_type", &self.content_type)
            .field("size", &self.bytes.len())
            .finish()
    }
}

/// The path and query of `location` (a relative `users/...` path or an absolute URL).
pub(crate) fn asset_path(location: &str) -> Result<String, UpstreamError> {
    let location = location.trim();
    let path = if location.starts_with("https://") || location.starts_with("http://") {
        let url = url::Url::parse(location)
            .map_err(|_| classify::protocol("asset URL is not a valid URL"))?;
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    } else {
        format!("/{}", location.trim_start_matches('/'))
    };
    if path.len() <= 1 || path.split('/').any(|s| s == "..") {
        return Err(classify::protocol("asset path is empty or not canonical"));
    }
    Ok(path)
}

impl UpstreamClient {
    /// Downloads one asset with the account `token`, refusing more than `max_bytes` and any
    /// answer that is not media (an HTML challenge or a JSON error with status 200).
    pub async fn download_asset(
        &self,
        token: &Secret,
        location: &str,
        max_bytes: usize,
    ) -> Result<DownloadedAsset, UpstreamError> {
        let inner = self.inner();
        let limit = inner.connect_timeout + inner.idle_timeout;
        let download = async {
            tokio::time::timeout(limit, self.fetch_asset(token, location, max_bytes))
                .await
                .map_err(|_| classify::timeout("asset download"))?
                .map_err(|e| scrub(e, token))
        };
        super::observe::call("asset_download", download).await
    }

    async fn fetch_asset(
        &self,
        token: &Secret,
        location: &str,
        max_bytes: usize,
    ) -> Result<DownloadedAsset, UpstreamError> {
        let inner = self.inner();
        let url = format!("{}{}", inner.assets_url, asset_path(location)?);
        let mut headers = inner.headers.navigation(token)?;
        headers.insert(
            header::REFERER,
            HeaderValue::from_static("https://grok.com/"),
        );
        let response = inner
            .http
            .get(url)
            .headers(headers)
            .send()
            .await
            .map_err(classify::from_reqwest)?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_error_body(response, ERROR_BODY_LIMIT).await;
            return Err(classify::from_http(status.as_u16(), &headers, &body));
        }
        if response
            .content_length()
            .is_some_and(|len| len > max_bytes as u64)
        {
            return Err(UpstreamError::new(
                UpstreamErrorKind::Protocol,
                Some(status.as_u16()),
                format!("asset larger than {max_bytes} bytes"),
            ));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let is_media = content_type.starts_with("image/")
            || content_type.starts_with("video/")
            || content_type.ends_with("/octet-stream")
            || content_type.is_empty();
        if !is_media {
            return Err(classify::protocol(format!(
                "the assets host answered with {content_type} instead of media"
            )));
        }
        let bytes = read_limited(response, max_bytes).await?;
        Ok(DownloadedAsset {
            content_type,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_are_recognised() {
        let png = sniff_media_type(b"\x89PNG\r\n\x1a\n....").unwrap();
        assert_eq!((png.mime, png.ext), ("image/png", "png"));
        assert_eq!(
            sniff_media_type(&[0xff, 0xd8, 0xff, 0xe0]).unwrap().ext,
            "jpg"
        );
        assert_eq!(
            sniff_media_type(b"RIFF\0\0\0\0WEBPVP8 ").unwrap().ext,
            "webp"
        );
        assert_eq!(
            sniff_media_type(b"\0\0\0\x18ftypmp42").unwrap().mime,
            "video/mp4"
        );
        assert_eq!(sniff_media_type(b"<html>"), None);
        assert_eq!(sniff_media_type(b""), None);
    }

    #[test]
    fn cookies_only_go_to_the_assets_host() {
        assert_eq!(
            asset_path("users/u/generated/x/image.jpg").unwrap(),
            "/users/u/generated/x/image.jpg"
        );
        assert_eq!(
            asset_path("https://evil.example/users/u/x.png?sig=1").unwrap(),
            "/users/u/x.png?sig=1"
        );
        assert!(asset_path("").is_err());
        assert!(asset_path("users/../../etc/passwd").is_err());
    }
}
