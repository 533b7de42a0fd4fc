//! The BlobStore seam: generated images and videos and user uploads.
//!
//! Declared now so the roles are built against it; the local-directory and S3-compatible
//! implementations arrive with media generation.

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object not found")]
    NotFound,
    #[error("invalid object key")]
    InvalidKey,
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub key: String,
    pub size: u64,
    pub content_type: String,
    /// Unix ms of the last write.
    pub modified_ms: i64,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores an object under a key built by the server (never from raw user input).
    async fn put(&self, key: &str, content_type: &str, body: Bytes) -> Result<BlobInfo, BlobError>;
    /// A byte range (`start..end`, end exclusive) or the whole object.
    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(BlobInfo, Bytes), BlobError>;
    async fn head(&self, key: &str) -> Result<BlobInfo, BlobError>;
    async fn delete(&self, key: &str) -> Result<bool, BlobError>;
    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>, BlobError>;
}
