//! Re-sealing stored account tokens under the current key, the last step of a key rotation
//! (`grok2api reseal`; the procedure is in docs/OPERATIONS.md).
//!
//! It works on the `tokens` table directly and touches only the `sealed` column, each row
//! with a compare-and-set on its old value, so it runs safely beside live processes: a
//! worker writing runtime fields, or an operator replacing the token set, is never undone.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::{StoreError, sqlx_error};
use crate::crypto::TokenCipher;

/// What a re-seal run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Rows rewritten under the current key.
    pub resealed: usize,
    /// Rows already sealed with the current key.
    pub current: usize,
    /// Rows changed by someone else meanwhile (already rewritten by them; left alone).
    pub raced: usize,
    /// Ids of rows no configured key opens (sealed with a key that was dropped too early).
    pub unreadable: Vec<String>,
}

/// Rewrites every token sealed with an older key under `cipher`'s current key.
pub async fn reseal_tokens(
    database_url: &str,
    cipher: &TokenCipher,
) -> Result<ResealReport, StoreError> {
    if database_url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(database_url)
            .map_err(sqlx_error)?
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(sqlx_error)?;
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, sealed FROM tokens")
            .fetch_all(&pool)
            .await
            .map_err(sqlx_error)?;
        let mut report = ResealReport::default();
        for (id, sealed) in rows {
            let Some(fresh) = plan(cipher, &id, &sealed, &mut report) else {
                continue;
            };
            let done = sqlx::query("UPDATE tokens SET sealed = ? WHERE id = ? AND sealed = ?")
                .bind(&fresh)
                .bind(&id)
                .bind(&sealed)
                .execute(&pool)
                .await
                .map_err(sqlx_error)?;
            count(&mut report, done.rows_affected());
        }
        pool.close().await;
        Ok(report)
    } else {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(database_url)
            .await
            .map_err(sqlx_error)?;
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, sealed FROM tokens")
            .fetch_all(&pool)
            .await
            .map_err(sqlx_error)?;
        let mut report = ResealReport::default();
        for (id, sealed) in rows {
            let Some(fresh) = plan(cipher, &id, &sealed, &mut report) else {
                continue;
            };
            let done = sqlx::query("UPDATE tokens SET sealed = $1 WHERE id = $2 AND sealed = $3")
                .bind(&fresh)
                .bind(&id)
                .bind(&sealed)
                .execute(&pool)
                .await
                .map_err(sqlx_error)?;
            count(&mut report, done.rows_affected());
        }
        pool.close().await;
        Ok(report)
    }
}

/// The new sealed value of a row, or `None` when it needs none (or cannot get one).
fn plan(cipher: &TokenCipher, id: &str, sealed: &str, report: &mut ResealReport) -> Option<String> {
    if !cipher.needs_reseal(sealed) {
        report.current += 1;
        return None;
    }
    match cipher.open(id, sealed) {
        Ok(token) => Some(cipher.seal(id, token.expose())),
        Err(_) => {
            report.unreadable.push(id.to_owned());
            None
        }
    }
}

fn count(report: &mut ResealReport, rows_affected: u64) {
    if rows_affected == 1 {
        report.resealed += 1;
    } else {
        report.raced += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use crate::crypto::generate_key;

    #[test]
    fn plan_reseals_old_values_only() {
        let old = Secret::new(generate_key());
        let new = Secret::new(generate_key());
        let before = TokenCipher::new(&old, &[]).unwrap();
        let after = TokenCipher::new(&new, std::slice::from_ref(&old)).unwrap();
        let mut report = ResealReport::default();
        let sealed_old = before.seal("id", "tok");
        let fresh = plan(&after, "id", &sealed_old, &mut report).unwrap();
        assert!(!after.needs_reseal(&fresh));
        assert_eq!(after.open("id", &fresh).unwrap().expose(), "tok");
        assert!(plan(&after, "id", &fresh, &mut report).is_none());
        assert_eq!(report.current, 1);
        let stranger = TokenCipher::new(&Secret::new(generate_key()), &[]).unwrap();
        assert!(plan(&after, "x", &stranger.seal("x", "t"), &mut report).is_none());
        assert_eq!(report.unreadable, vec!["x".to_owned()]);
    }
}
