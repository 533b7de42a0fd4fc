//! The Store seam: durable records (tokens now; client keys, config overrides and job
//! records as the features that need them arrive).
//!
//! Two implementations through sqlx: [`sqlite`] (embedded) and [`postgres`]. Migrations
//! live in `migrations/sqlite` and `migrations/postgres` and are applied by
//! `grok2api migrate` and at the start of `serve`. Account tokens are stored encrypted
//! ([`crate::crypto::TokenCipher`]); only their SHA-256 id is stored in clear.
//! Both pass `shared/tests/it/store_conformance.rs`.

pub mod client_keys;
pub mod postgres;
pub mod reseal;
pub mod sqlite;
pub mod video_jobs;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::TokenCipher;
use crate::{Secret, pool::TokenStatus};
pub use client_keys::{ClientKeyRecord, ClientKeyUpdate, ClientKeyUsage};
pub use video_jobs::{VideoJobFailure, VideoJobRecord, VideoJobStatus, VideoJobUpdate};

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

    /// Inserts a new video job record (its id must be new).
    async fn create_video_job(&self, record: &VideoJobRecord) -> Result<(), StoreError>;

    async fn get_video_job(&self, id: &str) -> Result<Option<VideoJobRecord>, StoreError>;

    /// Moves a job forward. Returns false (and changes nothing) when the job does not exist
    /// or is already completed or failed; progress never goes down.
    async fn update_video_job(&self, id: &str, update: &VideoJobUpdate)
    -> Result<bool, StoreError>;

    /// Inserts a new client key record (id and prefix must be new).
    async fn create_client_key(&self, record: &ClientKeyRecord) -> Result<(), StoreError>;

    /// Every client key, oldest first.
    async fn list_client_keys(&self) -> Result<Vec<ClientKeyRecord>, StoreError>;

    async fn client_key_by_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<ClientKeyRecord>, StoreError>;

    /// Changes a key's settings; `None` when no key has this id.
    async fn update_client_key(
        &self,
        id: &str,
        update: &ClientKeyUpdate,
    ) -> Result<Option<ClientKeyRecord>, StoreError>;

    /// Removes a key; true when it existed.
    async fn delete_client_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Adds counted requests to keys in one transaction (keys that no longer exist are
    /// skipped).
    async fn add_client_key_usage(&self, usage: &[ClientKeyUsage]) -> Result<(), StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Video jobs neither completed nor failed, oldest first, at most `limit`.
    async fn unfinished_video_jobs(&self, limit: i64) -> Result<Vec<VideoJobRecord>, StoreError>;

    /// Deletes at most `limit` video job records that ended before `before_ms`, or whose
    /// deadline passed before it, and returns them (their media is the caller's to delete).
    async fn delete_video_jobs_before(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<VideoJobRecord>, StoreError>;

    /// Replaces one token's tags; false when no such token is stored.
    async fn set_token_tags(&self, id: &str, tags: &[String]) -> Result<bool, StoreError>;
}

/// Opens the store a URL names: `sqlite:` (a file, created if missing) or `postgres://` /
/// `postgresql://`. Migrations are not applied here; call [`Store::migrate`].
pub async fn connect(url: &str, cipher: TokenCipher) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url, cipher).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url, cipher).await?))
    } else {
        // Only the scheme: the rest of a database URL may carry a password.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::Other(format!(
            "unsupported database URL scheme {scheme:?} (expected sqlite: or postgres://)"
        )))
    }
}

/// The columns of `tokens` that make up a [`TokenRecord`], in [`TokenRow`] order.
pub(crate) const TOKEN_COLUMNS: &str = "id, sealed, pool, status, quota, tags, note, \
    created_at_ms, last_used_at_ms, use_count, fail_count, last_fail_reason, last_sync_at_ms";

/// A `tokens` row as stored: the token sealed, status and tags as text.
pub(crate) struct TokenRow {
    pub id: String,
    pub sealed: String,
    pub pool: String,
    pub status: String,
    pub quota: i64,
    pub tags: String,
    pub note: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub use_count: i64,
    pub fail_count: i64,
    pub last_fail_reason: Option<String>,
    pub last_sync_at_ms: Option<i64>,
}

impl TokenRow {
    /// Reads a row selected with [`TOKEN_COLUMNS`].
    pub(crate) fn from_row<R>(row: &R) -> Result<TokenRow, sqlx::Error>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(TokenRow {
            id: row.try_get(0)?,
            sealed: row.try_get(1)?,
            pool: row.try_get(2)?,
            status: row.try_get(3)?,
            quota: row.try_get(4)?,
            tags: row.try_get(5)?,
            note: row.try_get(6)?,
            created_at_ms: row.try_get(7)?,
            last_used_at_ms: row.try_get(8)?,
            use_count: row.try_get(9)?,
            fail_count: row.try_get(10)?,
            last_fail_reason: row.try_get(11)?,
            last_sync_at_ms: row.try_get(12)?,
        })
    }

    pub(crate) fn seal(record: &TokenRecord, cipher: &TokenCipher) -> TokenRow {
        TokenRow {
            id: record.id.clone(),
            sealed: cipher.seal(&record.id, record.token.expose()),
            pool: record.pool.clone(),
            status: record.status.as_str().to_owned(),
            quota: record.quota,
            tags: serde_json::to_string(&record.tags).expect("a list of strings serializes"),
            note: record.note.clone(),
            created_at_ms: record.created_at_ms,
            last_used_at_ms: record.last_used_at_ms,
            use_count: record.use_count,
            fail_count: record.fail_count,
            last_fail_reason: record.last_fail_reason.clone(),
            last_sync_at_ms: record.last_sync_at_ms,
        }
    }

    /// Opens the sealed token. Errors name the token id, never any part of the value.
    pub(crate) fn open(self, cipher: &TokenCipher) -> Result<TokenRecord, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("token {}: {what}", self.id));
        let token = cipher
            .open(&self.id, &self.sealed)
            .map_err(|e| corrupt(format!("sealed token cannot be opened ({e})")))?;
        let status = TokenStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("unknown status {:?}", self.status)))?;
        let tags = serde_json::from_str(&self.tags)
            .map_err(|_| corrupt("tags are not a JSON list of strings".into()))?;
        Ok(TokenRecord {
            id: self.id,
            token,
            pool: self.pool,
            status,
            quota: self.quota,
            tags,
            note: self.note,
            created_at_ms: self.created_at_ms,
            last_used_at_ms: self.last_used_at_ms,
            use_count: self.use_count,
            fail_count: self.fail_count,
            last_fail_reason: self.last_fail_reason,
            last_sync_at_ms: self.last_sync_at_ms,
        })
    }
}

/// Connection trouble is `Unavailable`; undecodable data is `Corrupt`; the rest `Other`.
pub(crate) fn sqlx_error(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => StoreError::Unavailable(e.to_string()),
        E::ColumnDecode { .. } | E::Decode(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Other(e.to_string()),
    }
}

pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => sqlx_error(inner),
        other => StoreError::Other(format!("migration failed: {other}")),
    }
}
