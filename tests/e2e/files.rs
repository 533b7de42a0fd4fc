//! Media files served from the BlobStore (`/v1/files/...`), and media URLs in chat fetched
//! only when safe. Objects are put into the cluster's store directly (the local directory
//! when embedded, the cluster's S3 bucket when distributed).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use serde_json::{Value, json};
use shared::blob::{BlobStore, MediaKind};

use crate::both_shapes;
use crate::harness::{Cluster, Shape};

fn png_bytes() -> Bytes {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend((0..4000u32).map(|i| (i * 7 % 251) as u8));
    b.into()
}

fn video_bytes() -> Bytes {
    let mut b = b"\0\0\0\x18ftypmp42".to_vec();
    b.extend((0..200_000u32).map(|i| (i * 13 % 253) as u8));
    b.into()
}

async fn put(
    store: &Arc<dyn BlobStore>,
    kind: MediaKind,
    ext: &str,
    ct: &str,
    body: Bytes,
) -> String {
    let name = kind.new_name(ext);
    store.put(&kind.key(&name), ct, body).await.unwrap();
    name
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["error"].clone())
}

async fn media_is_served_byte_identical_without_a_key(shape: Shape) {
    let c = Cluster::start(shape, "files").await;
    let store = c.blob_store().await;
    let png = png_bytes();
    let image = put(&store, MediaKind::Image, "png", "image/png", png.clone()).await;
    // Every gateway serves it (in the distributed shape, from the shared bucket).
    for gw in 0..c.gateways.len() {
        let r = c
            .http
            .get(c.url_at(gw, &format!("/v1/files/image/{image}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "image/png");
        assert_eq!(
            h["content-disposition"].to_str().unwrap(),
            format!("inline; filename=\"{image}\"")
        );
        assert!(
            h["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age=31536000")
        );
        assert_eq!(h["content-length"], png.len().to_string().as_str());
        assert_eq!(r.bytes().await.unwrap(), png);
    }
    // HEAD: the headers, no body.
    let r = c
        .http
        .head(c.url(&format!("/v1/files/image/{image}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        png.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());

    let video = video_bytes();
    let name = put(&store, MediaKind::Video, "mp4", "video/mp4", video.clone()).await;
    let path = format!("/v1/files/video/{name}");
    let r = c.http.get(c.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap(), video);
    let total = video.len();
    for (range, start, end) in [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, total),
        ("bytes=-500", total - 500, total),
        ("bytes=199000-999999", 199_000, total),
    ] {
        let r = c
            .http
            .get(c.url(&path))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes {start}-{}/{total}", end - 1),
            "{range}"
        );
        assert_eq!(r.bytes().await.unwrap(), video.slice(start..end), "{range}");
    }
    let r = c
        .http
        .get(c.url(&path))
        .header("range", format!("bytes={total}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{total}")
    );
    let (_, error) = error_of(r).await;
    assert_eq!(error["code"], "range_not_satisfiable");
}
both_shapes!(media_is_served_byte_identical_without_a_key);

async fn bad_names_and_missing_media_get_openai_errors(shape: Shape) {
    let c = Cluster::start(shape, "files-bad").await;
    let store = c.blob_store().await;
    // Something a traversal would love to reach.
    std::fs::create_dir_all(&c.data_dir).unwrap();
    std::fs::write(c.data_dir.join("secret.png"), "do not serve").unwrap();
    let _ = put(&store, MediaKind::Image, "png", "image/png", png_bytes()).await;
    for name in [
        "%2e%2e%2fsecret.png",
        "..%2fsecret.png",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2Fetc%2Fpasswd.png",
        "a%00.png",
        "..png",
        "a..png",
        "x.exe",
        "x.mp4",
        "%5c..%5csecret.png",
    ] {
        let r = c
            .http
            .get(c.url(&format!("/v1/files/image/{name}")))
            .send()
            .await
            .unwrap();
        let (status, error) = error_of(r).await;
        assert_eq!(status, 400, "{name}");
        assert_eq!(error["message"], "Invalid filename", "{name}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let long = format!("{}.png", "a".repeat(200));
    let r = c
        .http
        .get(c.url(&format!("/v1/files/image/{long}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for (kind, message) in [("image", "Image not found"), ("video", "Video not found")] {
        let ext = if kind == "image" { "png" } else { "mp4" };
        let r = c
            .http
            .get(c.url(&format!(
                "/v1/files/{kind}/{}.{ext}",
                uuid::Uuid::new_v4().simple()
            )))
            .send()
            .await
            .unwrap();
        let (status, error) = error_of(r).await;
        assert_eq!(status, 404);
        assert_eq!(error["message"], message);
        assert_eq!(error["code"], "not_found");
    }
}
both_shapes!(bad_names_and_missing_media_get_openai_errors);

/// A loopback server that counts connections: no refused URL may ever reach it.
async fn counting_target() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

async fn unsafe_media_urls_in_chat_are_refused(shape: Shape) {
    let c = Cluster::start(shape, "ssrf").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let (port, hits) = counting_target().await;
    let ask = |url: &str| {
        json!({"model": "grok-4.1-fast", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}]})
    };
    for (url, code) in [
        (
            format!("http://127.0.0.1:{port}/x.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://localhost:{port}/x.png"),
            "forbidden_media_url",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "forbidden_media_url",
        ),
        (
            "http://[::ffff:127.0.0.1]/x.png".to_owned(),
            "forbidden_media_url",
        ),
        ("http://0x7f000001/x.png".to_owned(), "forbidden_media_url"),
        ("http://2130706433/x.png".to_owned(), "forbidden_media_url"),
        // Passes every check that needs no lookup; the worker's resolution refuses it.
        ("http://localhost/x.png".to_owned(), "forbidden_media_url"),
        ("file:///etc/passwd".to_owned(), "invalid_media"),
        (
            format!("http://user:pw@127.0.0.1:{port}/x.png"),
            "invalid_media_url",
        ),
        ("gopher://example.com/".to_owned(), "invalid_media"),
    ] {
        let r = c.chat(0, ask(&url)).await;
        let (status, error) = error_of(r).await;
        assert_eq!(status, 400, "{url}: {error}");
        assert_eq!(error["code"], code, "{url}: {error}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused URL was connected to"
    );
    // No account was spent on a refused request.
    let stats = c.sim.stats().await;
    assert_eq!(
        stats
            .tokens
            .get("basic-token-1")
            .map(|t| t.calls)
            .unwrap_or(0),
        0
    );
}
both_shapes!(unsafe_media_urls_in_chat_are_refused);
