//! The BlobStore conformance suite: every case runs against the local directory store and
//! against S3 on the real S3-compatible test server (`scripts/s3`), each S3 case in a bucket
//! of its own that is emptied and removed afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use shared::Secret;
use shared::blob::local::LocalBlobStore;
use shared::blob::s3::S3BlobStore;
use shared::blob::{BlobError, BlobStore};
use shared::config::BlobConfig;

use crate::common::run_then_cleanup;

const MIB: usize = 1024 * 1024;

pub fn s3_endpoint() -> String {
    std::env::var("GROK2API_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8333".into())
}

/// Settings for a store in `bucket` on the test server, with the smallest part size.
pub fn s3_config(url: &str) -> BlobConfig {
    BlobConfig {
        url: url.to_owned(),
        endpoint: s3_endpoint(),
        region: "us-east-1".into(),
        access_key: Secret::new(
            std::env::var("GROK2API_TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "AKIATEST".into()),
        ),
        secret_key: Secret::new(
            std::env::var("GROK2API_TEST_S3_SECRET_KEY").unwrap_or_else(|_| "testsecret".into()),
        ),
        presign_secs: 300,
        multipart_threshold_bytes: 5 * MIB as u64,
    }
}

/// A raw client, to look at the server behind the store's back.
async fn raw_client() -> aws_sdk_s3::Client {
    let c = s3_config("s3://unused");
    let creds = aws_sdk_s3::config::Credentials::new(
        c.access_key.expose(),
        c.secret_key.expose(),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(c.endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn unique_bucket() -> String {
    format!(
        "t-blob-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..20]
    )
}

enum Backing {
    Local { dir: PathBuf },
    S3 { bucket: String },
}

struct Fixture {
    store: Arc<dyn BlobStore>,
    backing: Backing,
}

async fn run_local<F, Fut>(case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let dir = std::env::temp_dir().join(format!("g2a-blob-{}", uuid::Uuid::new_v4().simple()));
    // The store's root sits one level down, so a test can watch its parent for escapes.
    let store = LocalBlobStore::open(&dir.join("media")).await.unwrap();
    let fixture = Fixture {
        store: Arc::new(store),
        backing: Backing::Local { dir: dir.clone() },
    };
    run_then_cleanup(case(fixture), async {
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

async fn run_s3<F, Fut>(case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let bucket = unique_bucket();
    let store = S3BlobStore::connect(&s3_config(&format!("s3://{bucket}")))
        .await
        .expect("S3 test server (start it with scripts/s3)");
    let fixture = Fixture {
        store: Arc::new(store),
        backing: Backing::S3 {
            bucket: bucket.clone(),
        },
    };
    run_then_cleanup(case(fixture), remove_bucket(&bucket)).await;
}

/// Empties and removes a test bucket, aborting unfinished uploads.
pub async fn remove_bucket(bucket: &str) {
    let client = raw_client().await;
    loop {
        let Ok(page) = client.list_objects_v2().bucket(bucket).send().await else {
            return;
        };
        if page.contents().is_empty() {
            break;
        }
        for object in page.contents() {
            if let Some(key) = object.key() {
                let _ = client.delete_object().bucket(bucket).key(key).send().await;
            }
        }
    }
    if let Ok(uploads) = client.list_multipart_uploads().bucket(bucket).send().await {
        for u in uploads.uploads() {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(u.key().unwrap_or_default())
                .upload_id(u.upload_id().unwrap_or_default())
                .send()
                .await;
        }
    }
    let _ = client.delete_bucket().bucket(bucket).send().await;
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn local() {
                    super::run_local(super::$case).await;
                }

                #[tokio::test]
                async fn s3() {
                    super::run_s3(super::$case).await;
                }
            }
        )*
    };
}

conformance!(
    put_get_head_delete_round_trip,
    overwrite_replaces_bytes_and_type,
    list_by_prefix_in_key_order,
    byte_ranges,
    streamed_read_matches,
    large_object_goes_up_in_parts,
    presigned_get_is_byte_identical,
    missing_key_is_not_found,
    hostile_keys_are_refused,
    ping_answers,
);

/// Deterministic bytes that no two offsets share by accident.
fn pattern(len: usize, seed: u8) -> Bytes {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

async fn put_get_head_delete_round_trip(f: Fixture) {
    let body = pattern(1000, 1);
    let info = f
        .store
        .put("images/a.png", "image/png", body.clone())
        .await
        .unwrap();
    assert_eq!((info.key.as_str(), info.size), ("images/a.png", 1000));
    let (got, bytes) = f.store.get("images/a.png", None, u64::MAX).await.unwrap();
    assert_eq!(bytes, body);
    assert_eq!(got.size, 1000);
    assert_eq!(got.content_type, "image/png");
    let head = f.store.head("images/a.png").await.unwrap();
    assert_eq!((head.size, head.content_type.as_str()), (1000, "image/png"));
    assert!(head.modified_ms > 1_600_000_000_000, "{}", head.modified_ms);
    assert!(f.store.delete("images/a.png").await.unwrap());
    assert!(!f.store.delete("images/a.png").await.unwrap());
    assert!(matches!(
        f.store.head("images/a.png").await,
        Err(BlobError::NotFound)
    ));
    // Empty objects are objects too.
    f.store
        .put("empty.bin", "application/octet-stream", Bytes::new())
        .await
        .unwrap();
    let (info, bytes) = f.store.get("empty.bin", None, 10).await.unwrap();
    assert_eq!((info.size, bytes.len()), (0, 0));
}

async fn overwrite_replaces_bytes_and_type(f: Fixture) {
    f.store
        .put("v/x", "text/plain", pattern(50, 2))
        .await
        .unwrap();
    f.store
        .put("v/x", "image/png", pattern(20, 3))
        .await
        .unwrap();
    let (info, bytes) = f.store.get("v/x", None, u64::MAX).await.unwrap();
    assert_eq!(bytes, pattern(20, 3));
    assert_eq!(info.content_type, "image/png");
    assert_eq!(f.store.list("v/", 10).await.unwrap().len(), 1);
}

async fn list_by_prefix_in_key_order(f: Fixture) {
    // Names chosen so that byte order differs from a naive directory walk.
    let keys = [
        "images/a/b.png",
        "images/a-c.png",
        "images/a.png",
        "images/a0.png",
        "images/b.png",
        "videos/a.mp4",
    ];
    for (i, k) in keys.iter().enumerate() {
        f.store
            .put(k, "application/octet-stream", pattern(i + 1, i as u8))
            .await
            .unwrap();
    }
    let listed: Vec<(String, u64)> = f
        .store
        .list("images/", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.key, i.size))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("images/a-c.png".to_owned(), 2),
            ("images/a.png".to_owned(), 3),
            ("images/a/b.png".to_owned(), 1),
            ("images/a0.png".to_owned(), 4),
            ("images/b.png".to_owned(), 5),
        ]
    );
    let partial: Vec<String> = f
        .store
        .list("images/a", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(partial.len(), 2, "{partial:?}");
    for extra in ["videos/b.mp4", "videos/c.mp4"] {
        f.store
            .put(extra, "video/mp4", pattern(1, 9))
            .await
            .unwrap();
    }
    let first_two: Vec<String> = f
        .store
        .list("videos/", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(first_two, vec!["videos/a.mp4", "videos/b.mp4"]);
    assert_eq!(f.store.list("", 100).await.unwrap().len(), keys.len() + 2);
    assert!(f.store.list("nothing/", 100).await.unwrap().is_empty());
    assert!(f.store.list("../", 100).await.unwrap().is_empty());
}

async fn byte_ranges(f: Fixture) {
    let body = pattern(10_000, 4);
    f.store
        .put("videos/r.mp4", "video/mp4", body.clone())
        .await
        .unwrap();
    let reader = f
        .store
        .open("videos/r.mp4", Some((100, 200)))
        .await
        .unwrap();
    assert_eq!(reader.range, (100, 200));
    assert_eq!(reader.info.size, 10_000, "size is the whole object's");
    let (_, mid) = f
        .store
        .get("videos/r.mp4", Some((100, 200)), u64::MAX)
        .await
        .unwrap();
    assert_eq!(mid, body.slice(100..200));
    // An end past the object is cut to it.
    let reader = f
        .store
        .open("videos/r.mp4", Some((9_990, 20_000)))
        .await
        .unwrap();
    assert_eq!(reader.range, (9_990, 10_000));
    let (_, tail) = f
        .store
        .get("videos/r.mp4", Some((9_990, 20_000)), u64::MAX)
        .await
        .unwrap();
    assert_eq!(tail, body.slice(9_990..));
    for bad in [(10_000, 10_001), (20_000, 30_000), (5, 5)] {
        assert!(
            matches!(
                f.store.open("videos/r.mp4", Some(bad)).await,
                Err(BlobError::InvalidRange)
            ),
            "{bad:?}"
        );
    }
    // A buffered read refuses more than the caller allows.
    assert!(matches!(
        f.store.get("videos/r.mp4", None, 9_999).await,
        Err(BlobError::TooLarge(_))
    ));
}

async fn streamed_read_matches(f: Fixture) {
    let body = pattern(3 * MIB / 2, 5);
    f.store
        .put("videos/s.mp4", "video/mp4", body.clone())
        .await
        .unwrap();
    let reader = f.store.open("videos/s.mp4", None).await.unwrap();
    assert_eq!(reader.range, (0, body.len() as u64));
    let chunks: Vec<Bytes> = reader.body.map(|c| c.unwrap()).collect().await;
    assert!(chunks.len() > 1, "a large object arrives in several chunks");
    assert_eq!(chunks.concat(), body.to_vec());
}

async fn large_object_goes_up_in_parts(f: Fixture) {
    let body = pattern(12 * MIB, 6);
    let info = f
        .store
        .put("videos/big.mp4", "video/mp4", body.clone())
        .await
        .unwrap();
    assert_eq!(info.size, body.len() as u64);
    let (head, bytes) = f.store.get("videos/big.mp4", None, u64::MAX).await.unwrap();
    assert_eq!(head.size, body.len() as u64);
    assert!(bytes == body, "12 MiB object read back differs");
    if let Backing::S3 { bucket } = &f.backing {
        // A multipart object's ETag ends in `-<parts>`: 12 MiB in 5 MiB parts is 3.
        let raw = raw_client().await;
        let out = raw
            .head_object()
            .bucket(bucket)
            .key("videos/big.mp4")
            .send()
            .await
            .unwrap();
        let etag = out.e_tag().unwrap_or_default();
        assert!(etag.trim_matches('"').ends_with("-3"), "etag {etag}");
        let uploads = raw
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        assert!(uploads.uploads().is_empty(), "no upload left open");
    }
}

async fn presigned_get_is_byte_identical(f: Fixture) {
    let body = pattern(70_000, 7);
    f.store
        .put("images/p.webp", "image/webp", body.clone())
        .await
        .unwrap();
    let url = f
        .store
        .presign_get("images/p.webp", Duration::from_secs(60))
        .await
        .unwrap();
    match (&f.backing, url) {
        (Backing::Local { .. }, None) => {}
        (Backing::S3 { .. }, Some(url)) => {
            let response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["content-type"].to_str().unwrap(),
                "image/webp"
            );
            assert_eq!(response.bytes().await.unwrap(), body);
            // The signature is what grants access: a tampered link is refused.
            let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=00");
            assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
        }
        (_, other) => panic!("unexpected presign result {other:?}"),
    }
}

async fn missing_key_is_not_found(f: Fixture) {
    assert!(matches!(
        f.store.head("images/none.png").await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        f.store.open("images/none.png", None).await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        f.store.open("images/none.png", Some((0, 10))).await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        f.store.get("none", None, 10).await,
        Err(BlobError::NotFound)
    ));
    assert!(!f.store.delete("images/none.png").await.unwrap());
}

async fn hostile_keys_are_refused(f: Fixture) {
    let hostile = [
        "../escape.png",
        "images/../../escape.png",
        "/etc/passwd",
        "images//x.png",
        "images/.hidden",
        ".meta/images/a.png",
        "a\\..\\b",
        "a\0b",
        "%2e%2e/escape",
        "",
    ];
    for key in hostile {
        let put = f.store.put(key, "text/plain", Bytes::from("x")).await;
        assert!(matches!(put, Err(BlobError::InvalidKey)), "put {key:?}");
        assert!(
            matches!(f.store.head(key).await, Err(BlobError::InvalidKey)),
            "head {key:?}"
        );
        assert!(
            matches!(f.store.open(key, None).await, Err(BlobError::InvalidKey)),
            "open {key:?}"
        );
        assert!(
            matches!(f.store.delete(key).await, Err(BlobError::InvalidKey)),
            "delete {key:?}"
        );
        assert!(
            matches!(
                f.store.presign_get(key, Duration::from_secs(5)).await,
                Err(BlobError::InvalidKey)
            ),
            "presign {key:?}"
        );
    }
    if let Backing::Local { dir } = &f.backing {
        // Nothing landed beside the store's root, and a file there stays out of reach.
        std::fs::write(dir.join("secret.txt"), "outside").unwrap();
        assert!(!dir.join("escape.png").exists());
        assert!(matches!(
            f.store.get("../secret.txt", None, 100).await,
            Err(BlobError::InvalidKey)
        ));
        let entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
    }
    assert!(f.store.list("", 100).await.unwrap().is_empty());
}

async fn ping_answers(f: Fixture) {
    f.store.ping().await.unwrap();
    if let Backing::S3 { bucket } = &f.backing {
        // The store created its bucket, and connecting again to it is fine.
        raw_client()
            .await
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        S3BlobStore::connect(&s3_config(&format!("s3://{bucket}")))
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();
    }
}

/// A key prefix keeps two deployments apart in one bucket.
#[tokio::test]
async fn s3_key_prefix_isolates_stores() {
    let bucket = unique_bucket();
    let case = {
        let bucket = bucket.clone();
        async move {
            let a = S3BlobStore::connect(&s3_config(&format!("s3://{bucket}/one")))
                .await
                .unwrap();
            let b = S3BlobStore::connect(&s3_config(&format!("s3://{bucket}/two/deep")))
                .await
                .unwrap();
            a.put("images/x.png", "image/png", Bytes::from_static(b"a"))
                .await
                .unwrap();
            b.put("images/x.png", "image/png", Bytes::from_static(b"bb"))
                .await
                .unwrap();
            let (_, got) = a.get("images/x.png", None, 10).await.unwrap();
            assert_eq!(&got[..], b"a");
            let listed = b.list("images/", 10).await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(
                (listed[0].key.as_str(), listed[0].size),
                ("images/x.png", 2)
            );
            let raw = raw_client().await;
            raw.head_object()
                .bucket(&bucket)
                .key("two/deep/images/x.png")
                .send()
                .await
                .unwrap();
        }
    };
    run_then_cleanup(case, remove_bucket(&bucket)).await;
}

/// Wrong credentials fail at connect with a message that carries no secret.
#[tokio::test]
async fn s3_bad_credentials_fail_without_leaking() {
    let mut config = s3_config(&format!("s3://{}", unique_bucket()));
    config.secret_key = Secret::new("wrong-secret-value-123");
    let err = S3BlobStore::connect(&config).await.unwrap_err().to_string();
    assert!(!err.contains("wrong-secret-value-123"), "{err}");
    assert!(!err.contains("AKIATEST"), "{err}");
    assert!(err.starts_with("blob store unavailable"), "{err}");
}
