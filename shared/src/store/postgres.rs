//! The shared store: PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

use super::video_jobs::{VIDEO_JOB_COLUMNS, video_job_from_row};
use super::{
    ClientKeyRecord, ClientKeyUpdate, ClientKeyUsage, Store, StoreError, TOKEN_COLUMNS,
    TokenRecord, TokenRow, TokenRuntime, VideoJobRecord, VideoJobUpdate, migrate_error, sqlx_error,
};
use crate::crypto::TokenCipher;
use crate::time::now_ms;

/// Records past their retention: ended before the cutoff, or unfinished with a deadline
/// before it.
const EXPIRED: &str = "((status IN ('completed', 'failed') AND updated_at_ms < $1) OR \
     (status NOT IN ('completed', 'failed') AND expires_at_ms < $1))";

/// A [`Store`] in a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    cipher: TokenCipher,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`).
    pub async fn connect(url: &str, cipher: TokenCipher) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(Some(Duration::from_secs(300)))
            // Checks a pooled connection before use, so a database restart costs one
            // round trip instead of an error.
            .test_before_acquire(true)
            .connect(url)
            .await
            .map_err(sqlx_error)?;
        Ok(PgStore { pool, cipher })
    }

    async fn upsert(tx: &mut Transaction<'_, Postgres>, row: &TokenRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO tokens (id, sealed, pool, status, quota, tags, note, created_at_ms, \
               last_used_at_ms, use_count, fail_count, last_fail_reason, last_sync_at_ms, \
               updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed, pool = excluded.pool, \
               status = excluded.status, quota = excluded.quota, tags = excluded.tags, \
               note = excluded.note, created_at_ms = excluded.created_at_ms, \
               last_used_at_ms = excluded.last_used_at_ms, use_count = excluded.use_count, \
               fail_count = excluded.fail_count, last_fail_reason = excluded.last_fail_reason, \
               last_sync_at_ms = excluded.last_sync_at_ms, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&row.id)
        .bind(&row.sealed)
        .bind(&row.pool)
        .bind(&row.status)
        .bind(row.quota)
        .bind(&row.tags)
        .bind(&row.note)
        .bind(row.created_at_ms)
        .bind(row.last_used_at_ms)
        .bind(row.use_count)
        .bind(row.fail_count)
        .bind(&row.last_fail_reason)
        .bind(row.last_sync_at_ms)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

super::client_keys::client_key_methods!(PgStore, super::client_keys::numbered, "GREATEST");

#[async_trait]
impl Store for PgStore {
    /// Safe to run from several processes at once: the migrator holds an advisory lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(migrate_error)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY pool, created_at_ms, id");
        // Built from constants only.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_error)?;
        rows.iter()
            .map(|row| {
                TokenRow::from_row(row)
                    .map_err(sqlx_error)?
                    .open(&self.cipher)
            })
            .collect()
    }

    async fn replace_tokens(&self, records: &[TokenRecord]) -> Result<(), StoreError> {
        let mut rows: Vec<TokenRow> = records
            .iter()
            .map(|r| TokenRow::seal(r, &self.cipher))
            .collect();
        // One row order for every writer, so two concurrent replacements cannot deadlock.
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut tx = self.pool.begin().await.map_err(sqlx_error)?;
        for row in &rows {
            Self::upsert(&mut tx, row).await.map_err(sqlx_error)?;
        }
        sqlx::query("DELETE FROM tokens WHERE NOT (id = ANY($1))")
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?;
        tx.commit().await.map_err(sqlx_error)
    }

    async fn update_token_runtime(
        &self,
        id: &str,
        runtime: &TokenRuntime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tokens SET status = $1, quota = $2, use_count = $3, fail_count = $4, \
               last_used_at_ms = $5, last_fail_reason = $6, updated_at_ms = $7 \
             WHERE id = $8",
        )
        .bind(runtime.status.as_str())
        .bind(runtime.quota)
        .bind(runtime.use_count)
        .bind(runtime.fail_count)
        .bind(runtime.last_used_at_ms)
        .bind(&runtime.last_fail_reason)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sqlx_error)?;
        Ok(())
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlx_error)
    }

    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
               updated_at_ms = excluded.updated_at_ms",
        )
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(sqlx_error)?;
        Ok(())
    }

    async fn create_video_job(&self, record: &VideoJobRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO video_jobs ({VIDEO_JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        );
        let error = record.error.as_ref();
        // Built from constants only.
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&record.id)
            .bind(&record.api_key_sha256)
            .bind(&record.model)
            .bind(&record.prompt)
            .bind(record.seconds)
            .bind(&record.size)
            .bind(&record.resolution)
            .bind(record.status.as_str())
            .bind(record.progress)
            .bind(error.map(|e| e.code.clone()))
            .bind(error.map(|e| e.message.clone()))
            .bind(&record.video_key)
            .bind(&record.thumbnail_key)
            .bind(record.video_bytes)
            .bind(record.created_at_ms)
            .bind(record.updated_at_ms)
            .bind(record.completed_at_ms)
            .bind(record.expires_at_ms)
            .bind(&record.job)
            .execute(&self.pool)
            .await
            .map_err(sqlx_error)?;
        Ok(())
    }

    async fn get_video_job(&self, id: &str) -> Result<Option<VideoJobRecord>, StoreError> {
        let sql = format!("SELECT {VIDEO_JOB_COLUMNS} FROM video_jobs WHERE id = $1");
        // Built from constants only.
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlx_error)?;
        row.as_ref().map(video_job_from_row).transpose()
    }

    async fn update_video_job(
        &self,
        id: &str,
        update: &VideoJobUpdate,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let (status, progress, code, message, video_key, thumbnail_key, bytes, completed) =
            update.columns(now);
        let done = sqlx::query(
            "UPDATE video_jobs SET status = $1, progress = GREATEST(progress, $2), \
               error_code = $3, error_message = $4, video_key = $5, \
               thumbnail_key = $6, video_bytes = $7, completed_at_ms = $8, \
               updated_at_ms = $9 \
             WHERE id = $10 AND status NOT IN ('completed', 'failed')",
        )
        .bind(status)
        .bind(progress)
        .bind(code)
        .bind(message)
        .bind(video_key)
        .bind(thumbnail_key)
        .bind(bytes)
        .bind(completed)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sqlx_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_client_key(&self, record: &ClientKeyRecord) -> Result<(), StoreError> {
        self.ck_create_client_key(record).await
    }

    async fn list_client_keys(&self) -> Result<Vec<ClientKeyRecord>, StoreError> {
        self.ck_list_client_keys().await
    }

    async fn client_key_by_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<ClientKeyRecord>, StoreError> {
        self.ck_client_key_by_prefix(prefix).await
    }

    async fn update_client_key(
        &self,
        id: &str,
        update: &ClientKeyUpdate,
    ) -> Result<Option<ClientKeyRecord>, StoreError> {
        self.ck_update_client_key(id, update).await
    }

    async fn delete_client_key(&self, id: &str) -> Result<bool, StoreError> {
        self.ck_delete_client_key(id).await
    }

    async fn add_client_key_usage(&self, usage: &[ClientKeyUsage]) -> Result<(), StoreError> {
        self.ck_add_client_key_usage(usage).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(sqlx_error)?;
        Ok(())
    }

    async fn unfinished_video_jobs(&self, limit: i64) -> Result<Vec<VideoJobRecord>, StoreError> {
        let sql = format!(
            "SELECT {VIDEO_JOB_COLUMNS} FROM video_jobs \
             WHERE status NOT IN ('completed', 'failed') ORDER BY created_at_ms LIMIT $1"
        );
        // Built from constants only.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_error)?;
        rows.iter().map(video_job_from_row).collect()
    }

    async fn delete_video_jobs_before(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<VideoJobRecord>, StoreError> {
        let sql = format!(
            "SELECT {VIDEO_JOB_COLUMNS} FROM video_jobs WHERE {EXPIRED} \
             ORDER BY updated_at_ms LIMIT $2"
        );
        // Built from constants only.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_error)?;
        let mut deleted = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = video_job_from_row(row)?;
            // The condition again: a record that moved on since the read stays.
            let sql = format!("DELETE FROM video_jobs WHERE id = $2 AND {EXPIRED}");
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(before_ms)
                .bind(&record.id)
                .execute(&self.pool)
                .await
                .map_err(sqlx_error)?;
            if done.rows_affected() > 0 {
                deleted.push(record);
            }
        }
        Ok(deleted)
    }

    async fn set_token_tags(&self, id: &str, tags: &[String]) -> Result<bool, StoreError> {
        let tags = serde_json::to_string(tags).expect("a list of strings serializes");
        let done = sqlx::query("UPDATE tokens SET tags = $1, updated_at_ms = $2 WHERE id = $3")
            .bind(tags)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlx_error)?;
        Ok(done.rows_affected() > 0)
    }
}
