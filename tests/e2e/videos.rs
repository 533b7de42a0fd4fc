//! Video end to end: through chat (stream and not, rendered as HTML or a URL) and through the
//! asynchronous `/v1/videos` API (create, poll, content byte-identical to what the simulator
//! made, Range requests, moderation, bad input, another key, a gateway restart).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Options, Shape, sse_data, stream_content};

const OTHER_KEY: &str = "sk-test-e2e-other-key";
const MODEL: &str = "grok-imagine-1.0-video";

fn options(extra: &[(&str, &str)]) -> Options {
    let mut env = vec![(
        "GROK2API_APP__API_KEY".to_owned(),
        format!("{API_KEY},{OTHER_KEY}"),
    )];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Options {
        extra_env: env,
        ..Options::default()
    }
}

/// The `src` of the rendered `<video>` element.
fn html_src(content: &str) -> String {
    let at = content.rfind("<video").expect("a video element");
    let video = &content[at..];
    let src = video.split("src=\"").nth(1).expect("a source");
    src[..src.find('"').unwrap()].to_owned()
}

async fn get_bytes(cluster: &Cluster, url: &str) -> (u16, Vec<u8>) {
    let url = if url.starts_with('/') {
        cluster.url(url)
    } else {
        url.to_owned()
    };
    let r = cluster.http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn video_through_chat(shape: Shape) {
    let cluster = Cluster::start_with(shape, "video-chat", options(&[])).await;
    cluster.set_tokens(&["video-chat-basic"], &[]).await;

    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "a red fox"}],
        "video_config": {"video_length": 3, "aspect_ratio": "16:9"}});
    let r = cluster.chat(0, body.clone()).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], MODEL);
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("<video id=\"video\" controls=\"\" preload=\"none\" poster=\""),
        "{content}"
    );
    assert!(
        !content.contains("进度"),
        "no progress lines without a stream: {content}"
    );
    let src = html_src(content);
    assert!(
        src.starts_with("/v1/files/video/") && src.ends_with(".mp4"),
        "{src}"
    );
    let (status, bytes) = get_bytes(&cluster, &src).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, sim::generated_video("a red fox", 3, None));

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let r = cluster.chat(1, streamed).await;
    assert_eq!(r.status(), 200);
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let content = stream_content(&data);
    assert!(content.contains("当前进度1%"), "{content}");
    assert!(content.contains("当前进度95%"), "{content}");
    let src = html_src(&content);
    let (status, bytes) = get_bytes(&cluster, &src).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, sim::generated_video("a red fox", 3, None));

    // Bad video_config: the original's codes.
    let bad = json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
        "video_config": {"video_length": 99}});
    let r = cluster.chat(0, bad).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "video_config.video_length");
    assert_eq!(e["error"]["code"], "invalid_video_length");
}
both_shapes!(video_through_chat);

/// `app.video_format = "url"` with an `app.app_url`: the answer is the absolute link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_through_chat_as_a_url() {
    let cluster = Cluster::start_with(
        Shape::Embedded,
        "video-chat-url",
        options(&[
            ("GROK2API_APP__VIDEO_FORMAT", "url"),
            ("GROK2API_APP__APP_URL", "http://media.example"),
        ]),
    )
    .await;
    cluster.set_tokens(&["video-url-basic"], &[]).await;
    let r = cluster
        .chat(
            0,
            json!({"model": MODEL, "messages": [{"role": "user", "content": "waves"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let path = content
        .trim_end()
        .strip_prefix("http://media.example")
        .unwrap_or_else(|| panic!("an absolute link: {content}"));
    assert!(path.starts_with("/v1/files/video/"), "{content}");
    let (status, bytes) = get_bytes(&cluster, path).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, sim::generated_video("waves", 6, None));
}

async fn create(cluster: &Cluster, gateway: usize, key: &str, body: Value) -> reqwest::Response {
    cluster
        .http
        .post(cluster.url_at(gateway, "/v1/videos"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(cluster: &Cluster, gateway: usize, key: &str, path: &str) -> reqwest::Response {
    cluster
        .http
        .get(cluster.url_at(gateway, path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// Polls until the job is completed or failed; returns the last video object.
async fn wait_done(cluster: &Cluster, gateway: usize, id: &str) -> Value {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let r = get(cluster, gateway, API_KEY, &format!("/v1/videos/{id}")).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let status = v["status"].as_str().unwrap().to_owned();
        assert!(
            ["queued", "in_progress", "completed", "failed"].contains(&status.as_str()),
            "{v}"
        );
        if status == "completed" || status == "failed" {
            return v;
        }
        seen.push(status);
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "still {seen:?}; logs in {}",
            cluster.log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn videos_api(shape: Shape) {
    let cluster = Cluster::start_with(shape, "videos-api", options(&[])).await;
    cluster.set_tokens(&["videos-api-basic"], &[]).await;

    let r = create(
        &cluster,
        0,
        API_KEY,
        json!({"model": MODEL, "prompt": "a lighthouse at dusk", "seconds": "4", "size": "720x1280"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("video_") && id.len() == 6 + 32, "{id}");
    assert_eq!(created["object"], "video");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["seconds"], "4");
    assert_eq!(created["size"], "720x1280");

    // Any gateway answers for the job.
    let done = wait_done(&cluster, 1, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["completed_at"].as_i64().is_some());

    let expected = sim::generated_video("a lighthouse at dusk", 4, None);
    let r = get(&cluster, 0, API_KEY, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.bytes().await.unwrap().to_vec(), expected);
    let r = cluster
        .http
        .get(cluster.url(&format!("/v1/videos/{id}/content")))
        .bearer_auth(API_KEY)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().to_vec(), expected[..100].to_vec());
    let r = get(
        &cluster,
        1,
        API_KEY,
        &format!("/v1/videos/{id}/content?variant=thumbnail"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        sim::video_thumbnail(&expected)
    );

    // Another key cannot see the job or its content: the same 404 as an unknown id.
    for path in [
        format!("/v1/videos/{id}"),
        format!("/v1/videos/{id}/content"),
    ] {
        let r = get(&cluster, 0, OTHER_KEY, &path).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = get(
        &cluster,
        0,
        API_KEY,
        "/v1/videos/video_00000000000000000000000000000000",
    )
    .await;
    assert_eq!(r.status(), 404);

    // Moderated: a failure with a reason, never a video.
    let r = create(
        &cluster,
        0,
        API_KEY,
        json!({"prompt": "[[moderated]] something"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_done(&cluster, 0, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "content_moderated");
    let r = get(&cluster, 0, API_KEY, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(r.status(), 409);

    // Image-to-video: the input image reaches the upstream through an upload.
    let png = sim::imagine_image("input picture", 0);
    let data_uri = format!(
        "data:image/png;base64,{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &png)
    );
    let r = create(
        &cluster,
        1,
        API_KEY,
        json!({"prompt": "make it move", "seconds": 2, "input_reference": data_uri}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_done(&cluster, 1, &id).await["status"], "completed");
    let r = get(&cluster, 1, API_KEY, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        sim::generated_video("make it move", 2, Some(&png))
    );

    // 720p on a basic account: the upscaled video.
    let r = create(
        &cluster,
        0,
        API_KEY,
        json!({"prompt": "hd", "seconds": 1, "resolution": "720p"}),
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_done(&cluster, 0, &id).await["status"], "completed");
    let r = get(&cluster, 0, API_KEY, &format!("/v1/videos/{id}/content")).await;
    let sd = sim::generated_video("hd", 1, None);
    assert_eq!(r.bytes().await.unwrap().to_vec(), sim::upscaled_video(&sd));

    // Bad input: 400 with param and code, and no job.
    for (body, param, code) in [
        (json!({}), "prompt", "missing_required_parameter"),
        (json!({"prompt": "  "}), "prompt", "empty_prompt"),
        (
            json!({"prompt": "x", "seconds": 16}),
            "seconds",
            "invalid_seconds",
        ),
        (
            json!({"prompt": "x", "size": "640x480"}),
            "size",
            "invalid_size",
        ),
        (
            json!({"prompt": "x", "resolution": "4k"}),
            "resolution",
            "invalid_resolution",
        ),
        (
            json!({"prompt": "x", "model": "grok-4"}),
            "model",
            "model_not_supported",
        ),
        (
            json!({"prompt": "x", "input_reference": "http://169.254.169.254/latest/meta-data/"}),
            "input_reference",
            "forbidden_media_url",
        ),
        (
            json!({"prompt": "x", "input_reference": "file:///etc/passwd"}),
            "input_reference",
            "invalid_media",
        ),
    ] {
        let r = create(&cluster, 0, API_KEY, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{body}");
        assert_eq!(e["error"]["code"], code, "{body}");
    }
}
both_shapes!(videos_api);

/// The record is the truth: a gateway killed and restarted while the job runs still
/// reports the job, which a worker finishes meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_job_survives_a_gateway_restart() {
    let mut opts = options(&[]);
    // Five progress frames 500 ms apart: the job is still running across the restart.
    opts.sim.frame_delay_ms = 500;
    let mut cluster = Cluster::start_with(Shape::Distributed, "video-restart", opts).await;
    cluster.set_tokens(&["video-restart-basic"], &[]).await;
    let r = create(
        &cluster,
        0,
        API_KEY,
        json!({"prompt": "a slow river", "seconds": 2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Killed only once the worker has reported progress.
    let start = Instant::now();
    loop {
        let v: Value = get(&cluster, 0, API_KEY, &format!("/v1/videos/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "in_progress" {
            break;
        }
        assert_eq!(v["status"], "queued", "{v}");
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.restart_gateway(0).await;
    let done = wait_done(&cluster, 0, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let r = get(&cluster, 0, API_KEY, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        sim::generated_video("a slow river", 2, None)
    );
}
