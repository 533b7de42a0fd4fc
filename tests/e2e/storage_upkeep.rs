//! The blob store as a dependency: `/readyz` names it when it is down, and the scheduler's
//! `blob_cleanup` task trims it by age and by size (oldest first, down to 80 % of the
//! limit) in the local directory and in a real S3 bucket.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_shapes;
use crate::harness::{Cluster, Options, Shape, s3_endpoint};

/// A TCP forwarder to the S3 test server that can be cut.
struct Forwarder {
    port: u16,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Forwarder {
    async fn start(target: &str) -> Forwarder {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let links = tasks.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links.lock().unwrap().push(link.abort_handle());
            }
        });
        tasks.lock().unwrap().push(acceptor.abort_handle());
        Forwarder { port, tasks }
    }

    /// Closes the listener and every open connection: the port refuses from now on.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn readyz(c: &Cluster, base: &str) -> (u16, Value) {
    let r = c.http.get(format!("{base}/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The gateways reach S3 through a forwarder; once it is cut, their `/readyz` is 503 and
/// names the blob store, while the workers (which reach S3 directly) stay ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_blob_store_that_is_down() {
    let forwarder = Forwarder::start(&s3_endpoint()).await;
    let opts = Options {
        role_env: vec![(
            "gateway",
            "GROK2API_BLOB__ENDPOINT".into(),
            format!("http://127.0.0.1:{}", forwarder.port),
        )],
        ..Options::default()
    };
    let c = Cluster::start_with(Shape::Distributed, "readyz-blob", opts).await;
    let (status, body) = readyz(&c, &c.gateways[0].clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["blob"]["ok"], true, "{body}");
    assert_eq!(body["down"], serde_json::json!([]), "{body}");

    forwarder.cut();
    let start = Instant::now();
    let body = loop {
        let (status, body) = readyz(&c, &c.gateways[0].clone()).await;
        if status == 503 {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["down"], serde_json::json!(["blob"]), "{body}");
    assert_eq!(body["checks"]["blob"]["ok"], false, "{body}");
    for other in ["queue", "bus", "pool", "store"] {
        assert_eq!(body["checks"][other]["ok"], true, "{other}: {body}");
    }
    // Workers check the blob store too.
    let (_, worker) = c.metrics[0].clone();
    let (status, body) = readyz(&c, &worker).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["blob"]["ok"], true, "{body}");
}

fn run_cleanup(c: &Cluster, limit_mb: &str, max_age_secs: &str) -> String {
    let out = c.run_command(
        &["scheduler", "run-once", "blob_cleanup"],
        &[
            ("GROK2API_SCHEDULER__BLOB_LIMIT_MB", limit_mb),
            ("GROK2API_SCHEDULER__BLOB_MAX_AGE_SECS", max_age_secs),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn blob_cleanup_trims_by_age_and_size(shape: Shape) {
    let c = Cluster::start(shape, "blob-cleanup").await;
    let blob = c.blob_store().await;
    let stored = |key: String| {
        let blob = blob.clone();
        async move { blob.head(&key).await.is_ok() }
    };

    // By age: an object older than the limit goes, a fresh one stays.
    let old = "images/cleanup-a-old.png".to_owned();
    blob.put(&old, "image/png", vec![1u8; 100].into())
        .await
        .unwrap();
    let put_at = Instant::now();
    // S3 keeps modification times in whole seconds; wait until the first object is
    // clearly past a 4 s limit.
    while put_at.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = "images/cleanup-b-fresh.png".to_owned();
    blob.put(&fresh, "image/png", vec![2u8; 100].into())
        .await
        .unwrap();
    let summary = run_cleanup(&c, "0", "4");
    assert!(
        summary.contains("1 objects (100 bytes) removed"),
        "{summary}"
    );
    assert!(!stored(old).await);
    assert!(stored(fresh.clone()).await);

    // By size: 100 + 6 × 200 KiB is over 1 MiB; the oldest go until at most 80 % is left
    // (the fresh object, then the first two large ones).
    let large: Vec<String> = (0..6)
        .map(|i| format!("images/cleanup-c-large-{i}.png"))
        .collect();
    for key in &large {
        blob.put(key, "image/png", vec![3u8; 200 * 1024].into())
            .await
            .unwrap();
    }
    let summary = run_cleanup(&c, "1", "0");
    assert!(
        summary.contains(&format!(
            "3 objects ({} bytes) removed",
            100 + 2 * 200 * 1024
        )),
        "{summary}"
    );
    assert!(!stored(fresh).await);
    for (i, key) in large.iter().enumerate() {
        assert_eq!(stored(key.clone()).await, i >= 2, "{key}");
    }
    let listed = blob.list("", 100).await.unwrap();
    let total: u64 = listed.iter().map(|o| o.size).sum();
    assert!(total <= 1024 * 1024 / 10 * 8, "{total}");
}
both_shapes!(blob_cleanup_trims_by_age_and_size);
