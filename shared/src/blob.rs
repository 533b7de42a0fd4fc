//! The BlobStore seam: generated images and videos, kept so clients can fetch them later.
//!
//! Two implementations: [`local::LocalBlobStore`] (a directory, `DATA_DIR/media` in the
//! embedded shape) and [`s3::S3BlobStore`] (any S3-compatible service). [`connect`] picks one
//! from the `[blob]` configuration section.
//!
//! How to use it:
//! - Build keys on the server, never from raw user input: for media, [`MediaKind::new_name`]
//!   gives an unguessable file name and [`MediaKind::key`] the object key for it; the
//!   gateway serves that object at [`media_url`]. Every implementation checks keys with
//!   [`validate_key`] and refuses anything else with [`BlobError::InvalidKey`].
//! - Write with [`BlobStore::put`] (large bodies go up in parts on S3 by themselves).
//! - Read with [`BlobStore::open`] (streamed, what HTTP handlers should use) or
//!   [`BlobStore::get`] (buffered, for small objects).

pub mod local;
pub mod s3;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::config::Config;

/// Longest object key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest single key segment (between slashes), in bytes.
const MAX_SEGMENT_BYTES: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object not found")]
    NotFound,
    #[error("invalid object key")]
    InvalidKey,
    /// The requested byte range starts at or past the end of the object.
    #[error("range not satisfiable")]
    InvalidRange,
    /// A buffered read met an object larger than the caller allows.
    #[error("object larger than {0} bytes")]
    TooLarge(u64),
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub key: String,
    /// Size of the whole object, also when only a range of it was read.
    pub size: u64,
    /// The type given at `put`. Empty in [`BlobStore::list`] results (S3 does not list it).
    pub content_type: String,
    /// Unix ms of the last write.
    pub modified_ms: i64,
}

/// The bytes of an object, as they arrive.
pub type BlobStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// An object opened for reading: its metadata, the range actually served, and the stream.
pub struct BlobReader {
    pub info: BlobInfo,
    /// `start..end` (end exclusive) of the bytes in `body`; `0..size` for a whole object.
    pub range: (u64, u64),
    pub body: BlobStream,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("info", &self.info)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Where objects live. Cheap to share (`Arc<dyn BlobStore>` in `Backends::blob`).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores (or replaces) an object under a key built by the server.
    async fn put(&self, key: &str, content_type: &str, body: Bytes) -> Result<BlobInfo, BlobError>;

    /// Opens an object for streaming. `range` is `start..end` (end exclusive); an `end` past
    /// the object is cut to its size, a `start` at or past the size (or `start >= end`) is
    /// [`BlobError::InvalidRange`]. A missing object is [`BlobError::NotFound`].
    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> Result<BlobReader, BlobError>;

    /// Metadata only; [`BlobError::NotFound`] when missing.
    async fn head(&self, key: &str) -> Result<BlobInfo, BlobError>;

    /// Removes an object; true when it existed.
    async fn delete(&self, key: &str) -> Result<bool, BlobError>;

    /// Up to `limit` objects whose key starts with `prefix`, sorted by key. When more than
    /// `limit` match, which ones come back follows the store's listing order: byte order
    /// locally and on AWS S3; some S3-compatible servers list directory by directory.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<BlobInfo>, BlobError>;

    /// A time-limited URL that fetches the object without credentials, where the store can
    /// make one (S3); `None` for stores that cannot (local directory).
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, BlobError>;

    /// Checks the store answers (readiness).
    async fn ping(&self) -> Result<(), BlobError>;

    /// Reads a whole object (or range) into memory, refusing more than `max_bytes`.
    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        max_bytes: u64,
    ) -> Result<(BlobInfo, Bytes), BlobError> {
        let reader = self.open(key, range).await?;
        let len = reader.range.1 - reader.range.0;
        if len > max_bytes {
            return Err(BlobError::TooLarge(max_bytes));
        }
        let mut buf = BytesMut::with_capacity(len as usize);
        let mut body = reader.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(BlobError::TooLarge(max_bytes));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((reader.info, buf.freeze()))
    }
}

/// Checks a key: 1 to [`MAX_KEY_BYTES`] bytes, segments separated by single `/`, each
/// segment starting with a letter or digit and made of letters, digits, `.`, `_` and `-`.
/// So no `..`, no absolute paths, no hidden files, no backslashes, no NUL.
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(BlobError::InvalidKey);
    }
    if key.split('/').all(valid_segment) {
        Ok(())
    } else {
        Err(BlobError::InvalidKey)
    }
}

fn valid_segment(segment: &str) -> bool {
    let mut bytes = segment.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    segment.len() <= MAX_SEGMENT_BYTES
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The kinds of media the gateway serves under `/v1/files/<kind>/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
}

impl MediaKind {
    /// The path segment in `/v1/files/<segment>/<name>`.
    pub fn segment(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
        }
    }

    /// File extensions served for this kind (lower case).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            MediaKind::Image => &["png", "jpg", "jpeg", "webp"],
            MediaKind::Video => &["mp4"],
        }
    }

    /// A fresh, unguessable file name (`<uuid>.<ext>`); `ext` must be one of
    /// [`MediaKind::extensions`].
    pub fn new_name(self, ext: &str) -> String {
        debug_assert!(
            self.extensions().contains(&ext),
            "unexpected extension {ext}"
        );
        format!("{}.{ext}", uuid::Uuid::new_v4().simple())
    }

    /// The object key of a media file name: `images/<name>` or `videos/<name>`.
    pub fn key(self, name: &str) -> String {
        match self {
            MediaKind::Image => format!("images/{name}"),
            MediaKind::Video => format!("videos/{name}"),
        }
    }
}

/// The public link to a media file: `{app_url}/v1/files/<kind>/<name>`, or a relative
/// `/v1/files/...` link when `app.app_url` is empty.
pub fn media_url(app_url: &str, kind: MediaKind, name: &str) -> String {
    format!(
        "{}/v1/files/{}/{name}",
        app_url.trim_end_matches('/'),
        kind.segment()
    )
}

/// A content type from a file name's extension (for stores that keep none).
pub fn content_type_for(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "json" => "application/json",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Cuts a requested range to an object's size, or says it cannot be served.
pub fn resolve_range(range: Option<(u64, u64)>, size: u64) -> Result<(u64, u64), BlobError> {
    match range {
        None => Ok((0, size)),
        Some((start, end)) if start < end && start < size => Ok((start, end.min(size))),
        Some(_) => Err(BlobError::InvalidRange),
    }
}

/// Builds the store the configuration names: S3 for an `s3://` URL, else the local
/// directory `data_dir/media`.
pub async fn connect(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    if config.blob.url.is_empty() {
        let dir = config.backend.data_dir.join("media");
        Ok(Arc::new(local::LocalBlobStore::open(&dir).await?))
    } else {
        Ok(Arc::new(s3::S3BlobStore::connect(&config.blob).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_are_refused() {
        for good in ["a", "images/0f3c.png", "x/y/z-1_2.mp4", "A9.b"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/abs", "../x", "a/../b", "a/./b", "a//b", "a/", ".hidden", "a\\b", "a\0b", "a b",
            "C:x", "é", "%2e%2e",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"a".repeat(MAX_SEGMENT_BYTES + 1)).is_err());
    }

    #[test]
    fn links_follow_app_url() {
        assert_eq!(
            media_url("", MediaKind::Image, "a.png"),
            "/v1/files/image/a.png"
        );
        assert_eq!(
            media_url("https://x.example/", MediaKind::Video, "b.mp4"),
            "https://x.example/v1/files/video/b.mp4"
        );
        let name = MediaKind::Image.new_name("png");
        assert!(validate_key(&MediaKind::Image.key(&name)).is_ok());
        assert_eq!(name.len(), 36);
    }

    #[test]
    fn ranges_are_cut_or_refused() {
        assert_eq!(resolve_range(None, 10).unwrap(), (0, 10));
        assert_eq!(resolve_range(Some((2, 100)), 10).unwrap(), (2, 10));
        assert!(resolve_range(Some((10, 11)), 10).is_err());
        assert!(resolve_range(Some((3, 3)), 10).is_err());
        assert!(resolve_range(Some((0, 1)), 0).is_err());
    }
}
