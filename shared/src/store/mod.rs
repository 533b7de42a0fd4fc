//! The Store seam: durable records (tokens now; client keys, config overrides and job
//! records as the features that need them arrive).
//!
//! Two implementations through sqlx: [`sqlite`] (embedded) and [`postgres`]. Migrations
//! live in `migrations/sqlite` and `migrations/postgres` and are applied by
//! `grok2api migrate` and at the start of `serve`. Account tokens are stored encrypted
//! ([`crate::crypto::TokenCipher`]); only their SHA-256 id is stored in clear.
//! Both pass `shared/tests/store_conformance.rs`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Secret, pool::TokenStatus};

/// One upstream account token and what the operator and the pool know about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 hex of the token.
    pub id: String,
    pub token: Secret,
    pub pool: String,
    pub status: TokenStatus,
    pub quota: i64,
    pub tags: Vec<String>,
    pub note: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub use_count: i64,
    pub fail_count: i64,
    pub last_fail_reason: Option<String>,
    pub last_sync_at_ms: Option<i64>,
}

/// The runtime fields a worker writes back after settling a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRuntime {
    pub status: TokenStatus,
    pub quota: i64,
    pub use_count: i64,
    pub fail_count: i64,
    pub last_used_at_ms: Option<i64>,
    pub last_fail_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Other(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Replaces the whole token set in one transaction: tokens absent from `records` are
    /// deleted, the others inserted or overwritten.
    async fn replace_tokens(&self, records: &[TokenRecord]) -> Result<(), StoreError>;

    /// Writes a token's runtime fields; a token that no longer exists is ignored.
    async fn update_token_runtime(
        &self,
        id: &str,
        runtime: &TokenRuntime,
    ) -> Result<(), StoreError>;

    /// A small key-value table for settings (generated keys, config overrides).
    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}
