//! Named client API keys (`client_keys` table): records and the SQL both stores share.
//!
//! A key is `sk-g2a-<8-char prefix><secret>`. The store keeps the prefix (to find the
//! record) and the SHA-256 of the whole key (to check it in constant time), never the key.

use serde::Serialize;

use super::StoreError;

/// A client key as stored (no key material beyond its prefix and digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientKeyRecord {
    pub id: String,
    /// The first characters of the key, shown to tell keys apart and used for lookup.
    pub prefix: String,
    /// SHA-256 (hex) of the whole key.
    #[serde(skip)]
    pub key_sha256: String,
    pub name: String,
    /// Model ids this key may use; empty: every model.
    pub models: Vec<String>,
    /// Requests per minute across the cluster; 0: no limit.
    pub rate_limit_per_minute: i64,
    pub enabled: bool,
    pub request_count: i64,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}

/// Changes to a key's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientKeyUpdate {
    pub name: Option<String>,
    pub models: Option<Vec<String>>,
    pub rate_limit_per_minute: Option<i64>,
    pub enabled: Option<bool>,
}

impl ClientKeyUpdate {
    pub fn apply(&self, record: &mut ClientKeyRecord) {
        if let Some(name) = &self.name {
            record.name = name.clone();
        }
        if let Some(models) = &self.models {
            record.models = models.clone();
        }
        if let Some(limit) = self.rate_limit_per_minute {
            record.rate_limit_per_minute = limit;
        }
        if let Some(enabled) = self.enabled {
            record.enabled = enabled;
        }
    }
}

/// Requests counted for one key since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyUsage {
    pub id: String,
    pub requests: i64,
    pub last_used_at_ms: i64,
}

/// The columns of `client_keys` that make up a record, in [`from_row`] order.
pub(crate) const COLUMNS: &str = "id, prefix, key_sha256, name, models, rate_limit_per_minute, \
    enabled, request_count, created_at_ms, last_used_at_ms";

/// Reads a row selected with [`COLUMNS`].
pub(crate) fn from_row<R>(row: &R) -> Result<ClientKeyRecord, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |e: sqlx::Error| super::sqlx_error(e);
    let id: String = row.try_get(0).map_err(get)?;
    let models: String = row.try_get(4).map_err(get)?;
    let models = serde_json::from_str(&models)
        .map_err(|_| StoreError::Corrupt(format!("client key {id}: models are not a JSON list")))?;
    let enabled: i64 = row.try_get(6).map_err(get)?;
    Ok(ClientKeyRecord {
        prefix: row.try_get(1).map_err(get)?,
        key_sha256: row.try_get(2).map_err(get)?,
        name: row.try_get(3).map_err(get)?,
        models,
        rate_limit_per_minute: row.try_get(5).map_err(get)?,
        enabled: enabled != 0,
        request_count: row.try_get(7).map_err(get)?,
        created_at_ms: row.try_get(8).map_err(get)?,
        last_used_at_ms: row.try_get(9).map_err(get)?,
        id,
    })
}

pub(crate) fn models_json(models: &[String]) -> String {
    serde_json::to_string(models).expect("a list of strings serializes")
}

/// Statements with `?` placeholders; [`numbered`] turns them into PostgreSQL's `$n`.
pub(crate) const INSERT: &str = "INSERT INTO client_keys (id, prefix, key_sha256, name, models, \
    rate_limit_per_minute, enabled, request_count, created_at_ms, last_used_at_ms, \
    updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(crate) const UPDATE: &str = "UPDATE client_keys SET name = ?, models = ?, \
    rate_limit_per_minute = ?, enabled = ?, updated_at_ms = ? WHERE id = ?";
pub(crate) const DELETE: &str = "DELETE FROM client_keys WHERE id = ?";
/// `{greatest}` is `MAX` in SQLite and `GREATEST` in PostgreSQL.
pub(crate) const ADD_USAGE: &str = "UPDATE client_keys SET request_count = request_count + ?, \
    last_used_at_ms = {greatest}(COALESCE(last_used_at_ms, 0), ?) WHERE id = ?";

pub(crate) fn select_where(condition: &str) -> String {
    format!("SELECT {COLUMNS} FROM client_keys {condition}")
}

/// `?` placeholders numbered for PostgreSQL (`$1`, `$2`, ...). The statements above contain
/// no `?` other than placeholders.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Implements the client-key queries on a store type with a `pool` field, as inherent
/// `ck_*` methods its `Store` impl delegates to (`async_trait` cannot see into a macro).
/// `$place` adapts the placeholder style and `$greatest` names the two-argument maximum.
macro_rules! client_key_methods {
    ($store:ty, $place:expr, $greatest:literal) => {
        impl $store {
            pub(crate) async fn ck_create_client_key(
                &self,
                record: &$crate::store::ClientKeyRecord,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::client_keys as ck;
                sqlx::query(sqlx::AssertSqlSafe($place(ck::INSERT)))
                    .bind(&record.id)
                    .bind(&record.prefix)
                    .bind(&record.key_sha256)
                    .bind(&record.name)
                    .bind(ck::models_json(&record.models))
                    .bind(record.rate_limit_per_minute)
                    .bind(record.enabled as i64)
                    .bind(record.request_count)
                    .bind(record.created_at_ms)
                    .bind(record.last_used_at_ms)
                    .bind($crate::time::now_ms())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::sqlx_error)?;
                Ok(())
            }

            pub(crate) async fn ck_list_client_keys(
                &self,
            ) -> Result<Vec<$crate::store::ClientKeyRecord>, $crate::store::StoreError> {
                use $crate::store::client_keys as ck;
                let rows = sqlx::query(sqlx::AssertSqlSafe(ck::select_where(
                    "ORDER BY created_at_ms, id",
                )))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::sqlx_error)?;
                rows.iter().map(ck::from_row).collect()
            }

            pub(crate) async fn ck_client_key_by_prefix(
                &self,
                prefix: &str,
            ) -> Result<Option<$crate::store::ClientKeyRecord>, $crate::store::StoreError> {
                use $crate::store::client_keys as ck;
                let row = sqlx::query(sqlx::AssertSqlSafe($place(&ck::select_where(
                    "WHERE prefix = ?",
                ))))
                .bind(prefix)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::sqlx_error)?;
                row.as_ref().map(ck::from_row).transpose()
            }

            pub(crate) async fn ck_update_client_key(
                &self,
                id: &str,
                update: &$crate::store::ClientKeyUpdate,
            ) -> Result<Option<$crate::store::ClientKeyRecord>, $crate::store::StoreError> {
                use $crate::store::client_keys as ck;
                let mut tx = self.pool.begin().await.map_err($crate::store::sqlx_error)?;
                let row = sqlx::query(sqlx::AssertSqlSafe($place(&ck::select_where(
                    "WHERE id = ?",
                ))))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err($crate::store::sqlx_error)?;
                let Some(mut record) = row.as_ref().map(ck::from_row).transpose()? else {
                    return Ok(None);
                };
                update.apply(&mut record);
                sqlx::query(sqlx::AssertSqlSafe($place(ck::UPDATE)))
                    .bind(&record.name)
                    .bind(ck::models_json(&record.models))
                    .bind(record.rate_limit_per_minute)
                    .bind(record.enabled as i64)
                    .bind($crate::time::now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::sqlx_error)?;
                tx.commit().await.map_err($crate::store::sqlx_error)?;
                Ok(Some(record))
            }

            pub(crate) async fn ck_delete_client_key(
                &self,
                id: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::client_keys as ck;
                let done = sqlx::query(sqlx::AssertSqlSafe($place(ck::DELETE)))
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::sqlx_error)?;
                Ok(done.rows_affected() > 0)
            }

            pub(crate) async fn ck_add_client_key_usage(
                &self,
                usage: &[$crate::store::ClientKeyUsage],
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::client_keys as ck;
                if usage.is_empty() {
                    return Ok(());
                }
                let sql = $place(&ck::ADD_USAGE.replace("{greatest}", $greatest));
                let mut tx = self.pool.begin().await.map_err($crate::store::sqlx_error)?;
                for u in usage {
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(u.requests)
                        .bind(u.last_used_at_ms)
                        .bind(&u.id)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::store::sqlx_error)?;
                }
                tx.commit().await.map_err($crate::store::sqlx_error)
            }
        }
    };
}
pub(crate) use client_key_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(numbered(DELETE), "DELETE FROM client_keys WHERE id = $1");
        assert!(numbered(INSERT).ends_with("$10, $11)"));
    }
}
