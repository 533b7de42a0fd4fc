//! The Store contract, run against SQLite (a temporary file) and PostgreSQL (a database
//! created for the test and dropped afterwards).
//!
//! Each case is one async fn over a [`Fixture`]; `conformance!` turns it into a
//! `<case>::sqlite` and a `<case>::postgres` test.

use std::sync::Arc;

use shared::Secret;
use shared::crypto::{TokenCipher, generate_key, token_id};
use shared::pool::TokenStatus;
use shared::store::{self, Store, StoreError, TokenRecord, TokenRuntime};
use shared::store::{VideoJobFailure, VideoJobRecord, VideoJobStatus, VideoJobUpdate};

use crate::common::{create_postgres_db, drop_postgres_db, run_then_cleanup};

/// Where one test's database lives, and how to reach its raw rows.
#[derive(Clone)]
enum Fixture {
    Sqlite { path: std::path::PathBuf },
    Postgres { url: String },
}

impl Fixture {
    fn url(&self) -> String {
        match self {
            Fixture::Sqlite { path } => format!("sqlite://{}", path.display()),
            Fixture::Postgres { url } => url.clone(),
        }
    }

    /// A store on this database, migrated, sealing with `cipher`.
    async fn store(&self, cipher: &TokenCipher) -> Arc<dyn Store> {
        let store = store::connect(&self.url(), cipher.clone())
            .await
            .expect("connect the store");
        store.migrate().await.expect("migrate");
        store
    }

    /// The `sealed` column of one token, read without the store.
    async fn raw_sealed(&self, id: &str) -> String {
        match self {
            Fixture::Sqlite { .. } => {
                let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
                let value = sqlx::query_scalar("SELECT sealed FROM tokens WHERE id = ?")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                value
            }
            Fixture::Postgres { url } => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let value = sqlx::query_scalar("SELECT sealed FROM tokens WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                value
            }
        }
    }
}

async fn run_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // A directory that does not exist yet: connecting must create it.
    let dir = std::env::temp_dir().join(format!("g2a-store-{}", uuid::Uuid::new_v4().simple()));
    let fixture = Fixture::Sqlite {
        path: dir.join("nested").join("grok2api.db"),
    };
    run_then_cleanup(case(fixture), async {
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (name, url) = create_postgres_db().await;
    run_then_cleanup(case(Fixture::Postgres { url }), drop_postgres_db(&name)).await;
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn sqlite() {
                    super::run_sqlite(super::$case).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::run_postgres(super::$case).await;
                }
            }
        )*
    };
}

conformance!(
    migrates_twice_and_concurrently,
    tokens_round_trip,
    replace_deletes_missing_and_overwrites,
    token_is_not_stored_in_clear,
    runtime_update_changes_only_runtime_fields,
    settings_round_trip,
    foreign_key_reads_as_corrupt_without_leaking,
    video_job_round_trip,
    video_job_moves_forward_and_terminal_is_final,
    unfinished_video_jobs_are_listed_oldest_first,
    video_jobs_past_retention_are_deleted,
    token_tags_are_replaced,
);

fn cipher() -> TokenCipher {
    TokenCipher::new(&Secret::new(generate_key()), &[]).unwrap()
}

fn record(token: &str, pool: &str, created_at_ms: i64) -> TokenRecord {
    TokenRecord {
        id: token_id(token),
        token: Secret::new(token),
        pool: pool.into(),
        status: TokenStatus::Active,
        quota: 80,
        tags: Vec::new(),
        note: String::new(),
        created_at_ms,
        last_used_at_ms: None,
        use_count: 0,
        fail_count: 0,
        last_fail_reason: None,
        last_sync_at_ms: None,
    }
}

/// Two records covering every optional field both ways.
fn sample() -> Vec<TokenRecord> {
    let plain = record("eyJ-basic-token-one", "ssoBasic", 1_000);
    let full = TokenRecord {
        status: TokenStatus::Cooling,
        quota: 0,
        tags: vec!["nsfw".into(), "vip \"quoted\"".into()],
        note: "note with ünïcode".into(),
        last_used_at_ms: Some(1_700_000_000_123),
        use_count: 42,
        fail_count: 3,
        last_fail_reason: Some("401 Unauthorized".into()),
        last_sync_at_ms: Some(1_700_000_000_456),
        ..record("eyJ-super-token-two", "ssoSuper", 2_000)
    };
    vec![plain, full]
}

async fn migrates_twice_and_concurrently(fixture: Fixture) {
    let key = cipher();
    let url = fixture.url();
    let (a, b) = tokio::join!(
        store::connect(&url, key.clone()),
        store::connect(&url, key.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.ping().await.expect("ping");
    if matches!(fixture, Fixture::Postgres { .. }) {
        // Two processes starting at once on a fresh database.
        let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
        ra.expect("first concurrent migrate");
        rb.expect("second concurrent migrate");
    } else {
        a.migrate().await.expect("first migrate");
    }
    a.migrate().await.expect("migrating again is a no-op");
    b.migrate().await.expect("and from another connection too");
    assert!(a.list_tokens().await.unwrap().is_empty());
}

async fn tokens_round_trip(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let records = sample();
    store.replace_tokens(&records).await.unwrap();
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed, records);
    assert_eq!(listed[1].token.expose(), "eyJ-super-token-two");
}

async fn replace_deletes_missing_and_overwrites(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let mut records = sample();
    store.replace_tokens(&records).await.unwrap();

    let gone = records.remove(0);
    records[0].note = "edited".into();
    records[0].tags = vec!["x".into()];
    let added = record("eyJ-basic-token-three", "ssoBasic", 3_000);
    records.insert(0, added);
    store.replace_tokens(&records).await.unwrap();

    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed, records);
    assert!(listed.iter().all(|r| r.id != gone.id));

    store.replace_tokens(&[]).await.unwrap();
    assert!(store.list_tokens().await.unwrap().is_empty());
}

async fn token_is_not_stored_in_clear(fixture: Fixture) {
    let key = cipher();
    let store = fixture.store(&key).await;
    let records = sample();
    store.replace_tokens(&records).await.unwrap();
    for r in &records {
        let raw = fixture.raw_sealed(&r.id).await;
        assert!(!raw.contains(r.token.expose()), "token stored in clear");
        assert!(raw.starts_with(&format!("v1.{}.", key.key_id())), "{raw}");
        assert_eq!(key.open(&r.id, &raw).unwrap().expose(), r.token.expose());
    }
}

async fn runtime_update_changes_only_runtime_fields(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let mut records = sample();
    store.replace_tokens(&records).await.unwrap();

    let runtime = TokenRuntime {
        status: TokenStatus::Invalid,
        quota: 7,
        use_count: 5,
        fail_count: 5,
        last_used_at_ms: Some(1_800_000_000_000),
        last_fail_reason: Some("blocked".into()),
    };
    store
        .update_token_runtime(&records[0].id, &runtime)
        .await
        .unwrap();
    // A token that no longer exists is ignored.
    store
        .update_token_runtime(&token_id("gone"), &runtime)
        .await
        .unwrap();

    let r = &mut records[0];
    r.status = runtime.status;
    r.quota = runtime.quota;
    r.use_count = runtime.use_count;
    r.fail_count = runtime.fail_count;
    r.last_used_at_ms = runtime.last_used_at_ms;
    r.last_fail_reason = runtime.last_fail_reason.clone();
    assert_eq!(store.list_tokens().await.unwrap(), records);
}

async fn settings_round_trip(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    assert_eq!(store.get_setting("app.api_key").await.unwrap(), None);
    store.put_setting("app.api_key", "first").await.unwrap();
    store.put_setting("other", "{\"json\":true}").await.unwrap();
    assert_eq!(
        store.get_setting("app.api_key").await.unwrap().as_deref(),
        Some("first")
    );
    store.put_setting("app.api_key", "second").await.unwrap();
    assert_eq!(
        store.get_setting("app.api_key").await.unwrap().as_deref(),
        Some("second")
    );
    assert_eq!(
        store.get_setting("other").await.unwrap().as_deref(),
        Some("{\"json\":true}")
    );
}

async fn foreign_key_reads_as_corrupt_without_leaking(fixture: Fixture) {
    let writer = fixture.store(&cipher()).await;
    let records = sample();
    writer.replace_tokens(&records).await.unwrap();

    let reader = fixture.store(&cipher()).await;
    let err = reader
        .list_tokens()
        .await
        .expect_err("another key cannot open the tokens");
    let StoreError::Corrupt(message) = &err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert!(
        records.iter().any(|r| message.contains(&r.id)),
        "the error names the token: {message}"
    );
    for r in &records {
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains(r.token.expose()),
            "the error leaks the token"
        );
    }
    // The writer still reads its own tokens.
    assert_eq!(writer.list_tokens().await.unwrap(), records);
}

fn video_job(id: &str) -> VideoJobRecord {
    VideoJobRecord {
        id: id.into(),
        api_key_sha256: "ab".repeat(32),
        model: "grok-imagine-1.0-video".into(),
        prompt: "a cat on a \"skateboard\" ünïcode".into(),
        seconds: 6,
        size: "1280x720".into(),
        resolution: "720p".into(),
        status: VideoJobStatus::Queued,
        progress: 0,
        error: None,
        video_key: None,
        thumbnail_key: None,
        video_bytes: None,
        created_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_000_000,
        completed_at_ms: None,
        expires_at_ms: 1_700_000_600_000,
        job: Some(r#"{"type":"video"}"#.into()),
    }
}

async fn video_job_round_trip(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let record = video_job(&uuid::Uuid::new_v4().to_string());
    store.create_video_job(&record).await.unwrap();
    assert_eq!(
        store.get_video_job(&record.id).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.get_video_job("missing").await.unwrap(), None);
    // Ids are unique: a second insert with the same id fails rather than overwriting.
    assert!(store.create_video_job(&record).await.is_err());
    // Another store on the same database (a restarted process) sees the same record.
    let again = fixture.store(&cipher()).await;
    assert_eq!(again.get_video_job(&record.id).await.unwrap(), Some(record));
}

async fn video_job_moves_forward_and_terminal_is_final(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let done = video_job(&uuid::Uuid::new_v4().to_string());
    store.create_video_job(&done).await.unwrap();
    let progress = |p| VideoJobUpdate::Progress { progress: p };
    assert!(
        store
            .update_video_job(&done.id, &progress(40))
            .await
            .unwrap()
    );
    // A retry on another account restarts at a lower percentage: progress never goes down.
    assert!(
        store
            .update_video_job(&done.id, &progress(10))
            .await
            .unwrap()
    );
    let read = store.get_video_job(&done.id).await.unwrap().unwrap();
    assert_eq!(
        (read.status, read.progress),
        (VideoJobStatus::InProgress, 40)
    );
    assert!(read.updated_at_ms > done.updated_at_ms);
    let completed = VideoJobUpdate::Completed {
        video_key: "video/x.mp4".into(),
        thumbnail_key: Some("image/x.jpg".into()),
        video_bytes: 1234,
    };
    assert!(store.update_video_job(&done.id, &completed).await.unwrap());
    let read = store.get_video_job(&done.id).await.unwrap().unwrap();
    assert_eq!(read.status, VideoJobStatus::Completed);
    assert_eq!(read.progress, 100);
    assert_eq!(read.video_key.as_deref(), Some("video/x.mp4"));
    assert_eq!(read.thumbnail_key.as_deref(), Some("image/x.jpg"));
    assert_eq!(read.video_bytes, Some(1234));
    assert!(read.completed_at_ms.is_some());
    // Terminal: neither a late failure nor late progress changes it.
    let failure = VideoJobUpdate::Failed(VideoJobFailure {
        code: "upstream_error".into(),
        message: "late".into(),
    });
    assert!(!store.update_video_job(&done.id, &failure).await.unwrap());
    assert!(
        !store
            .update_video_job(&done.id, &progress(50))
            .await
            .unwrap()
    );
    assert_eq!(store.get_video_job(&done.id).await.unwrap().unwrap(), read);

    let failed = video_job(&uuid::Uuid::new_v4().to_string());
    store.create_video_job(&failed).await.unwrap();
    assert!(store.update_video_job(&failed.id, &failure).await.unwrap());
    let read = store.get_video_job(&failed.id).await.unwrap().unwrap();
    assert_eq!(read.status, VideoJobStatus::Failed);
    assert_eq!(
        read.error,
        Some(VideoJobFailure {
            code: "upstream_error".into(),
            message: "late".into()
        })
    );
    assert!(
        !store
            .update_video_job(&failed.id, &completed)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_video_job("missing", &progress(1))
            .await
            .unwrap()
    );
}

async fn unfinished_video_jobs_are_listed_oldest_first(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let mut ids = Vec::new();
    for (i, status) in ["queued", "in_progress", "completed", "failed", "queued"]
        .iter()
        .enumerate()
    {
        let mut job = video_job(&uuid::Uuid::new_v4().to_string());
        job.created_at_ms += i as i64;
        job.status = VideoJobStatus::parse(status).unwrap();
        store.create_video_job(&job).await.unwrap();
        ids.push(job.id);
    }
    let unfinished: Vec<String> = store
        .unfinished_video_jobs(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(unfinished, [ids[0].clone(), ids[1].clone(), ids[4].clone()]);
    // The kept job comes back with the record.
    let first = store.unfinished_video_jobs(1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job.as_deref(), Some(r#"{"type":"video"}"#));
}

async fn video_jobs_past_retention_are_deleted(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let cutoff = 1_800_000_000_000;
    let make = |status: &str, updated_at_ms: i64, expires_at_ms: i64| {
        let mut job = video_job(&uuid::Uuid::new_v4().to_string());
        job.status = VideoJobStatus::parse(status).unwrap();
        job.updated_at_ms = updated_at_ms;
        job.expires_at_ms = expires_at_ms;
        job
    };
    let old_done = make("completed", cutoff - 1, cutoff - 1);
    let old_failed = make("failed", cutoff - 10, cutoff + 10);
    let recent_done = make("completed", cutoff + 1, cutoff - 1_000);
    let abandoned = make("queued", cutoff - 5, cutoff - 1);
    let running = make("in_progress", cutoff - 5, cutoff + 1);
    for job in [&old_done, &old_failed, &recent_done, &abandoned, &running] {
        store.create_video_job(job).await.unwrap();
    }
    // A limit smaller than the expired set: the oldest first, the rest on the next call.
    let first = store.delete_video_jobs_before(cutoff, 2).await.unwrap();
    let second = store.delete_video_jobs_before(cutoff, 10).await.unwrap();
    assert_eq!(first.len(), 2);
    let mut deleted: Vec<String> = first.into_iter().chain(second).map(|r| r.id).collect();
    deleted.sort();
    let mut expected = vec![
        old_done.id.clone(),
        old_failed.id.clone(),
        abandoned.id.clone(),
    ];
    expected.sort();
    assert_eq!(deleted, expected);
    for gone in &expected {
        assert_eq!(store.get_video_job(gone).await.unwrap(), None);
    }
    for kept in [&recent_done, &running] {
        assert!(store.get_video_job(&kept.id).await.unwrap().is_some());
    }
    assert!(
        store
            .delete_video_jobs_before(cutoff, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn token_tags_are_replaced(fixture: Fixture) {
    let store = fixture.store(&cipher()).await;
    let records = sample();
    store.replace_tokens(&records).await.unwrap();
    let tags = vec!["nsfw".to_owned(), "team".to_owned()];
    assert!(store.set_token_tags(&records[0].id, &tags).await.unwrap());
    assert!(!store.set_token_tags("missing", &tags).await.unwrap());
    let listed = store.list_tokens().await.unwrap();
    let first = listed.iter().find(|r| r.id == records[0].id).unwrap();
    assert_eq!(first.tags, tags);
    // Nothing else about the token changed.
    assert_eq!(
        TokenRecord {
            tags: records[0].tags.clone(),
            ..first.clone()
        },
        records[0]
    );
    let other = listed.iter().find(|r| r.id == records[1].id).unwrap();
    assert_eq!(other, &records[1]);
}
