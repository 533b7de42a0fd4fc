//! Media requests in their other shapes: `POST /v1/videos` as a multipart form (sent by
//! curl, with an `input_reference` file), the edit model through chat with an http(s) image
//! URL downloaded under the SSRF policy, and the image and video upstream calls counted in
//! the upstream metrics.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Options, Shape};

/// Polls a video until it ends; returns the video object.
async fn wait_done(c: &Cluster, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = c
            .http
            .get(c.url(&format!("/v1/videos/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        if matches!(v["status"].as_str(), Some("completed" | "failed")) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "{v}; logs in {}",
            c.log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn content(c: &Cluster, id: &str) -> Vec<u8> {
    let r = c
        .http
        .get(c.url(&format!("/v1/videos/{id}/content")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

/// `curl -F` against `POST /v1/videos`: the status and the JSON answer.
async fn curl_form(c: &Cluster, fields: Vec<String>) -> (u16, Value) {
    let url = c.url("/v1/videos");
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code}", "-X", "POST", &url])
            .args(["-H", &format!("Authorization: Bearer {API_KEY}")]);
        for f in &fields {
            cmd.args(["-F", f]);
        }
        cmd.output()
    })
    .await
    .unwrap()
    .expect("curl runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn videos_accept_multipart_forms(shape: Shape) {
    let c = Cluster::start(shape, "videos-multipart").await;
    c.set_tokens(&["videos-form-basic"], &[]).await;
    let png = sim::imagine_image("a still lake", 0);
    let input = c.log_dir.join("input.png");
    std::fs::write(&input, &png).unwrap();
    let not_an_image = c.log_dir.join("notes.txt");
    std::fs::write(&not_an_image, "just text").unwrap();

    // Image-to-video: the file part reaches the upstream as the input image.
    let (status, created) = curl_form(
        &c,
        vec![
            "prompt=ripples spreading".into(),
            "model=grok-imagine-1.0-video".into(),
            "seconds=2".into(),
            "size=720x1280".into(),
            format!("input_reference=@{};type=image/png", input.display()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        (created["status"].as_str(), created["seconds"].as_str()),
        (Some("queued"), Some("2"))
    );
    assert_eq!(created["size"], "720x1280");
    let id = created["id"].as_str().unwrap();
    let done = wait_done(&c, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        content(&c, id).await,
        sim::generated_video("ripples spreading", 2, Some(&png))
    );

    // Text fields only: text-to-video.
    let (status, created) =
        curl_form(&c, vec!["prompt=a quiet road".into(), "seconds=3".into()]).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(wait_done(&c, id).await["status"], "completed");
    assert_eq!(
        content(&c, id).await,
        sim::generated_video("a quiet road", 3, None)
    );

    // Bad forms: the same 400s as JSON requests.
    for (fields, param, code) in [
        (
            vec![
                "prompt=x".into(),
                format!("input_reference=@{};type=image/png", not_an_image.display()),
            ],
            "input_reference",
            "invalid_image",
        ),
        (
            vec!["prompt=x".to_owned(), "seconds=99".to_owned()],
            "seconds",
            "invalid_seconds",
        ),
        (
            vec!["model=grok-imagine-1.0-video".to_owned()],
            "prompt",
            "missing_required_parameter",
        ),
    ] {
        let (status, e) = curl_form(&c, fields).await;
        assert_eq!(status, 400, "{e}");
        assert_eq!(
            (e["error"]["param"].as_str(), e["error"]["code"].as_str()),
            (Some(param), Some(code)),
            "{e}"
        );
    }
}
both_shapes!(videos_accept_multipart_forms);

/// A loopback HTTP server answering every request with `body`; counts requests.
async fn image_server(body: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    (addr, hits)
}

async fn chat_edits_take_image_urls(shape: Shape) {
    let png = sim::imagine_image("a red door", 0);
    let (addr, hits) = image_server(png.clone()).await;
    // Another loopback server that no refused URL may reach.
    let (forbidden, forbidden_hits) = image_server(png.clone()).await;
    let mut opts = Options::default();
    // The made-up public name of the test server (read by debug builds only).
    opts.extra_env.push((
        shared::fetch::TEST_HOSTS_ENV.into(),
        format!("edit-input.test={addr}"),
    ));
    let c = Cluster::start_with(shape, "chat-edit-url", opts).await;
    c.set_tokens(&["edit-url-basic"], &[]).await;
    let ask = |url: &str| {
        json!({"model": "grok-imagine-1.0-edit",
            "image_config": {"response_format": "b64_json"},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "paint it green"},
                {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let url = format!("http://edit-input.test:{}/door.png", addr.port());
    let r = c.chat(0, ask(&url)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let b64 = body["data"][0]["b64_json"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes, sim::edited_image("paint it green", &[&png], 0));
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    for (url, code) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "forbidden_media_url",
        ),
        (
            format!("http://127.0.0.1:{}/x.png", forbidden.port()),
            "forbidden_media_url",
        ),
        (
            format!("http://user:pw@edit-input.test:{}/x.png", addr.port()),
            "invalid_media_url",
        ),
        ("ftp://example.com/x.png".to_owned(), "invalid_media"),
    ] {
        let r = c.chat(0, ask(&url)).await;
        assert_eq!(r.status(), 400, "{url}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{url}: {e}");
        assert_eq!(
            e["error"]["param"], "messages.0.content.1.image_url.url",
            "{e}"
        );
    }
    assert_eq!(forbidden_hits.load(Ordering::SeqCst), 0);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
both_shapes!(chat_edits_take_image_urls);

/// Sum of `grok2api_upstream_requests_total` for one operation and outcome over scrapes.
fn upstream_calls(scrapes: &[String], operation: &str, outcome: &str) -> f64 {
    scrapes
        .iter()
        .flat_map(|text| text.lines())
        .filter(|l| l.starts_with("grok2api_upstream_requests_total{"))
        .filter(|l| {
            l.contains(&format!("operation=\"{operation}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn media_upstream_calls_are_counted(shape: Shape) {
    let c = Cluster::start(shape, "media-metrics").await;
    c.set_tokens(&["media-metrics-basic"], &[]).await;
    let r = c
        .http
        .post(c.url("/v1/images/generations"))
        .bearer_auth(API_KEY)
        .json(&json!({"prompt": "a lantern", "n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .http
        .post(c.url("/v1/videos"))
        .bearer_auth(API_KEY)
        .json(&json!({"prompt": "a lantern swinging", "seconds": 1}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_done(&c, &id).await["status"], "completed");

    let mut scrapes = Vec::new();
    for (_, base) in c.metrics_urls() {
        scrapes.push(c.scrape(&base).await);
    }
    for operation in ["imagine", "video", "asset_download"] {
        assert!(
            upstream_calls(&scrapes, operation, "ok") >= 1.0,
            "{operation} not counted"
        );
    }
    let durations = scrapes.iter().flat_map(|t| t.lines()).any(|l| {
        l.starts_with("grok2api_upstream_duration_seconds_count{")
            && l.contains("operation=\"video\"")
    });
    assert!(durations, "no video duration recorded");
}
both_shapes!(media_upstream_calls_are_counted);
