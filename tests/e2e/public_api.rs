//! The public (playground) API end to end, on both shapes: the auth matrix, bad input, an
//! imagine task over SSE and over a WebSocket, a video task, a voice token, and `stop` and
//! a departing client really ending the upstream call. On the distributed shape every task
//! is started on one gateway and streamed from the other.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Options, Shape};

const PUBLIC_KEY: &str = "pk-test-e2e-public";

fn public_options(slow_ms: u64) -> Options {
    let sim = sim::SimConfig {
        slow_frame_delay_ms: slow_ms,
        ..Default::default()
    };
    Options {
        extra_env: vec![
            ("GROK2API_APP__PUBLIC_ENABLED".into(), "true".into()),
            ("GROK2API_APP__PUBLIC_KEY".into(), PUBLIC_KEY.into()),
        ],
        sim,
        ..Options::default()
    }
}

/// The gateway tasks are streamed from: the other one on the distributed shape.
fn other(cluster: &Cluster) -> usize {
    cluster.gateways.len() - 1
}

async fn post(
    cluster: &Cluster,
    gateway: usize,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = cluster.http.post(cluster.url_at(gateway, path)).json(&body);
    if let Some(k) = key {
        request = request.bearer_auth(k);
    }
    request.send().await.unwrap()
}

async fn get(
    cluster: &Cluster,
    gateway: usize,
    path: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = cluster.http.get(cluster.url_at(gateway, path));
    if let Some(k) = key {
        request = request.bearer_auth(k);
    }
    request.send().await.unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["error"].clone())
}

/// Reads SSE `data:` payloads as they arrive.
struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next payload, or `None` when the stream ends.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..at + 2).collect();
                let data: Vec<&str> = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if !data.is_empty() {
                    return Some(data.join("\n"));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.stream.next())
                .await
                .expect("the stream stalls")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }

    async fn next_json(&mut self) -> Option<Value> {
        self.next().await.map(|d| serde_json::from_str(&d).unwrap())
    }
}

/// Polls `check` until it holds, failing after a generous deadline.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn in_flight(cluster: &Cluster, token: &str) -> u64 {
    cluster
        .sim
        .stats()
        .await
        .tokens
        .get(token)
        .map(|t| t.in_flight)
        .unwrap_or(0)
}

async fn calls(cluster: &Cluster, token: &str) -> u64 {
    cluster
        .sim
        .stats()
        .await
        .tokens
        .get(token)
        .map(|t| t.calls)
        .unwrap_or(0)
}

async fn public_auth_and_input(shape: Shape) {
    let cluster = Cluster::start_with(shape, "public-auth", public_options(0)).await;
    cluster.set_tokens(&["public-auth-basic"], &[]).await;

    // The key is required, in the header only, and only the public key opens these routes.
    let (status, e) = error_of(get(&cluster, 0, "/v1/public/verify", None).await).await;
    assert_eq!((status, e["code"].as_str()), (401, Some("invalid_api_key")));
    let (status, _) = error_of(get(&cluster, 0, "/v1/public/verify", Some("wrong")).await).await;
    assert_eq!(status, 401);
    let (status, _) = error_of(get(&cluster, 0, "/v1/public/verify", Some(API_KEY)).await).await;
    assert_eq!(status, 401, "the API key is not the public key");
    let r = get(&cluster, 0, "/v1/public/verify", Some(PUBLIC_KEY)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "success"})
    );
    let r = get(
        &cluster,
        0,
        &format!("/v1/public/verify?public_key={PUBLIC_KEY}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 401, "a key in the URL is not accepted");
    // The public key never opens the OpenAI-compatible API.
    let body = json!({"model": "grok-4.1-fast", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _) = error_of(
        post(
            &cluster,
            0,
            "/v1/chat/completions",
            Some(PUBLIC_KEY),
            body.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);
    // ...but the playground's own chat twin works with it.
    let r = post(
        &cluster,
        0,
        "/v1/public/chat/completions",
        Some(PUBLIC_KEY),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Echo: hi")
    );
    let (status, _) =
        error_of(post(&cluster, 0, "/v1/public/chat/completions", None, body).await).await;
    assert_eq!(status, 401);
    let r = get(&cluster, 0, "/v1/public/models", Some(PUBLIC_KEY)).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<Value>().await.unwrap()["data"]
            .as_array()
            .unwrap()
            .len()
            > 5
    );
    // The config read needs no key.
    let r = get(&cluster, 0, "/v1/public/imagine/config", None).await;
    assert_eq!(r.status(), 200);
    let config: Value = r.json().await.unwrap();
    assert_eq!(config["final_min_bytes"], 100_000);
    // Every keyed route refuses a missing key.
    for (method, path) in [
        ("POST", "/v1/public/imagine/start"),
        ("POST", "/v1/public/imagine/stop"),
        ("POST", "/v1/public/video/start"),
        ("POST", "/v1/public/video/stop"),
        ("GET", "/v1/public/voice/token"),
    ] {
        let r = if method == "POST" {
            post(&cluster, 0, path, None, json!({"prompt": "x"})).await
        } else {
            get(&cluster, 0, path, None).await
        };
        assert_eq!(r.status(), 401, "{path}");
    }

    // Bad input: OpenAI errors naming the field.
    let k = Some(PUBLIC_KEY);
    for (path, body, param, code) in [
        (
            "/v1/public/imagine/start",
            json!({}),
            "prompt",
            "missing_required_parameter",
        ),
        (
            "/v1/public/imagine/start",
            json!({"prompt": "  "}),
            "prompt",
            "empty_prompt",
        ),
        (
            "/v1/public/imagine/start",
            json!({"prompt": "x", "aspect_ratio": "4:3"}),
            "aspect_ratio",
            "invalid_aspect_ratio",
        ),
        (
            "/v1/public/imagine/start",
            json!({"prompt": "x", "nsfw": "on"}),
            "nsfw",
            "invalid_value",
        ),
        (
            "/v1/public/imagine/stop",
            json!({"task_ids": "abc"}),
            "task_ids",
            "invalid_value",
        ),
        (
            "/v1/public/video/start",
            json!({"prompt": "x", "preset": "wild"}),
            "preset",
            "invalid_preset",
        ),
        (
            "/v1/public/video/start",
            json!({"prompt": "x", "video_length": 60}),
            "video_length",
            "invalid_video_length",
        ),
        (
            "/v1/public/video/start",
            json!({"prompt": "x", "resolution_name": "4k"}),
            "resolution_name",
            "invalid_resolution",
        ),
        (
            "/v1/public/video/start",
            json!({"prompt": "x", "reasoning_effort": "max"}),
            "reasoning_effort",
            "invalid_reasoning_effort",
        ),
        (
            "/v1/public/video/stop",
            json!({}),
            "task_ids",
            "missing_required_parameter",
        ),
    ] {
        let (status, e) = error_of(post(&cluster, 0, path, k, body.clone()).await).await;
        assert_eq!(
            (status, e["param"].as_str(), e["code"].as_str()),
            (400, Some(param), Some(code)),
            "{path} {body}"
        );
    }
    let r = cluster
        .http
        .post(cluster.url("/v1/public/imagine/start"))
        .bearer_auth(PUBLIC_KEY)
        .body("prompt=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    for (path, param, code) in [
        ("/v1/public/voice/token?voice=bob", "voice", "invalid_voice"),
        ("/v1/public/voice/token?speed=9", "speed", "invalid_speed"),
        (
            "/v1/public/voice/token?personality=x",
            "personality",
            "invalid_personality",
        ),
    ] {
        let (status, e) = error_of(get(&cluster, 0, path, k).await).await;
        assert_eq!(
            (status, e["param"].as_str(), e["code"].as_str()),
            (400, Some(param), Some(code)),
            "{path}"
        );
    }
    // Streams need a live task id; nothing else opens them.
    for path in ["/v1/public/imagine/sse", "/v1/public/video/sse"] {
        let (status, e) = error_of(get(&cluster, 0, path, k).await).await;
        assert_eq!(
            (status, e["param"].as_str()),
            (400, Some("task_id")),
            "{path}"
        );
        let unknown = format!("{path}?task_id={}", "0".repeat(32));
        let (status, e) = error_of(get(&cluster, 0, &unknown, k).await).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (404, Some("task_not_found")),
            "{path}"
        );
        let (status, _) =
            error_of(get(&cluster, 0, &format!("{path}?task_id=../x"), k).await).await;
        assert_eq!(status, 404);
    }
    // Stopping unknown tasks removes nothing.
    let r = post(
        &cluster,
        0,
        "/v1/public/imagine/stop",
        k,
        json!({"task_ids": ["0".repeat(32)]}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "success", "removed": 0})
    );

    // Edit mode's route: the Images API edit, behind the public key.
    let boundary = "e2epublicedit";
    let png = sim::imagine_image("a source picture", 0);
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nmake it blue\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\nb64_json\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&png);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // (Refused before the body is read, so this one carries none.)
    let r = post(&cluster, 0, "/v1/public/images/edits", None, json!({})).await;
    assert_eq!(r.status(), 401);
    let r = cluster
        .http
        .post(cluster.url_at(other(&cluster), "/v1/public/images/edits"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .bearer_auth(PUBLIC_KEY)
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let edited: Value = r.json().await.unwrap();
    let b64 = edited["data"][0]["b64_json"]
        .as_str()
        .expect("an edited image");
    assert!(!STANDARD.decode(b64).unwrap().is_empty());

    // Voice: a LiveKit token from an account of the pool.
    let r = get(
        &cluster,
        other(&cluster),
        "/v1/public/voice/token?voice=eve&personality=storyteller&speed=1.5",
        k,
    )
    .await;
    assert_eq!(r.status(), 200);
    let voice: Value = r.json().await.unwrap();
    assert_eq!(voice["url"], "wss://livekit.grok.com");
    let jwt = voice["token"].as_str().unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["video"]["room"], "voice-eve-storyteller");
    assert_eq!(claims["sub"], sim::user_id_for("public-auth-basic"));
}
both_shapes!(public_auth_and_input);

async fn public_imagine_and_video(shape: Shape) {
    let cluster = Cluster::start_with(shape, "public-tasks", public_options(0)).await;
    cluster.set_tokens(&["public-tasks-basic"], &[]).await;
    let k = Some(PUBLIC_KEY);

    // Imagine over SSE: started on one gateway, streamed from the other.
    let r = post(
        &cluster,
        0,
        "/v1/public/imagine/start",
        k,
        json!({"prompt": "a lighthouse", "aspect_ratio": "16:9"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let started: Value = r.json().await.unwrap();
    assert_eq!(started["aspect_ratio"], "16:9");
    let task = started["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task.len(), 32);
    let r = get(
        &cluster,
        other(&cluster),
        &format!("/v1/public/imagine/sse?task_id={task}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut sse = SseReader::new(r);
    let first = sse.next_json().await.unwrap();
    assert_eq!(
        (first["type"].as_str(), first["status"].as_str()),
        (Some("status"), Some("running"))
    );
    assert_eq!(first["prompt"], "a lighthouse");
    let expected: Vec<Vec<u8>> = (0..2)
        .map(|i| sim::imagine_image("a lighthouse", i))
        .collect();
    let mut sequences = vec![];
    while sequences.len() < 3 {
        let ev = sse.next_json().await.expect("images keep coming");
        assert_eq!(ev["type"], "image", "{ev}");
        let bytes = STANDARD.decode(ev["b64_json"].as_str().unwrap()).unwrap();
        assert!(expected.contains(&bytes), "an image the simulator made");
        assert!(ev["url"].as_str().unwrap().contains("/v1/files/image/"));
        assert_eq!(ev["aspect_ratio"], "16:9");
        sequences.push(ev["sequence"].as_u64().unwrap());
    }
    assert_eq!(
        sequences,
        vec![1, 2, 3],
        "rounds continue until the client leaves"
    );
    // The client leaves: the task is dropped with its stream.
    drop(sse);
    let sse_path = format!("/v1/public/imagine/sse?task_id={task}");
    eventually("the imagine task to be dropped", || async {
        get(&cluster, 0, &sse_path, None).await.status() == 404
    })
    .await;

    // Imagine over a WebSocket: start, images, stop from the other gateway's API.
    let r = post(
        &cluster,
        0,
        "/v1/public/imagine/start",
        k,
        json!({"prompt": "a harbour"}),
    )
    .await;
    let task = r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws_url = cluster
        .url_at(
            other(&cluster),
            &format!("/v1/public/imagine/ws?task_id={task}"),
        )
        .replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    ws.send(Message::Text("not json".into())).await.unwrap();
    let ev = next_ws_json(&mut ws).await;
    assert_eq!(
        (ev["type"].as_str(), ev["code"].as_str()),
        (Some("error"), Some("invalid_payload"))
    );
    ws.send(Message::Text(json!({"type": "dance"}).to_string().into()))
        .await
        .unwrap();
    let ev = next_ws_json(&mut ws).await;
    assert_eq!(ev["code"], "invalid_action");
    ws.send(Message::Text(
        json!({"type": "start", "prompt": "a harbour at night", "aspect_ratio": "1:1"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let ev = next_ws_json(&mut ws).await;
    assert_eq!(
        (ev["status"].as_str(), ev["aspect_ratio"].as_str()),
        (Some("running"), Some("1:1"))
    );
    let ev = next_ws_json(&mut ws).await;
    assert_eq!(ev["type"], "image", "{ev}");
    let bytes = STANDARD.decode(ev["b64_json"].as_str().unwrap()).unwrap();
    assert!((0..2).any(|i| sim::imagine_image("a harbour at night", i) == bytes));
    let r = post(
        &cluster,
        0,
        "/v1/public/imagine/stop",
        k,
        json!({"task_ids": [task]}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "success", "removed": 1})
    );
    // The run ends with a `stopped` status and a normal close.
    let mut stopped = false;
    let close = loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("the socket closes");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["status"] == "stopped" {
                    stopped = true;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(stopped);
    assert_eq!(u16::from(close.unwrap().code), 1000);
    // An unknown task is refused with 1008.
    let bad = cluster
        .url(&format!("/v1/public/imagine/ws?task_id={}", "f".repeat(32)))
        .replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(bad.as_str())
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(u16::from(close.unwrap().code), 1008);

    // Video: started on one gateway, streamed as chat chunks from the other.
    let r = post(&cluster, 0, "/v1/public/video/start", k, json!({"prompt": "a red kite", "aspect_ratio": "16:9", "video_length": 6, "preset": "normal"})).await;
    assert_eq!(r.status(), 200);
    let started: Value = r.json().await.unwrap();
    assert_eq!(started["aspect_ratio"], "16:9");
    let task = started["task_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/public/video/sse?task_id={task}");
    let data = crate::harness::sse_data(get(&cluster, other(&cluster), &path, None).await).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let content = crate::harness::stream_content(&data);
    assert!(content.contains("<video"), "{content}");
    let src = content.rsplit("src=\"").next().unwrap();
    let src = &src[..src.find('"').unwrap()];
    let r = cluster.http.get(cluster.url(src)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        sim::generated_video("a red kite", 6, None)
    );
    // A task runs once.
    assert_eq!(get(&cluster, 0, &path, None).await.status(), 404);
}
both_shapes!(public_imagine_and_video);

async fn next_ws_json<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a message")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// `stop` and a departing client end the upstream call, seen from the simulator.
async fn public_stop_cancels(shape: Shape) {
    let cluster = Cluster::start_with(shape, "public-stop", public_options(1500)).await;
    let token = "public-stop-fault-slow";
    cluster.set_tokens(&[token], &[]).await;
    let k = Some(PUBLIC_KEY);

    // A video task stopped from the gateway that did not stream it.
    let r = post(
        &cluster,
        0,
        "/v1/public/video/start",
        k,
        json!({"prompt": "slow tide"}),
    )
    .await;
    let task = r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = get(
        &cluster,
        other(&cluster),
        &format!("/v1/public/video/sse?task_id={task}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut sse = SseReader::new(r);
    eventually("the video call to reach the simulator", || async {
        in_flight(&cluster, token).await > 0
    })
    .await;
    let r = post(
        &cluster,
        0,
        "/v1/public/video/stop",
        k,
        json!({"task_ids": [task]}),
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["removed"], 1);
    eventually("the upstream video call to end", || async {
        in_flight(&cluster, token).await == 0
    })
    .await;
    let mut last_error = None;
    while let Some(d) = sse.next().await {
        if let Ok(v) = serde_json::from_str::<Value>(&d)
            && v["type"] == "error"
        {
            last_error = Some(v);
        }
        if d == "[DONE]" {
            break;
        }
    }
    assert_eq!(last_error.expect("an error event")["code"], "stopped");
    // The worker saw the cancel flag (not merely the end of the video).
    eventually("the worker to cancel the video job", || async {
        cluster.logs().contains("video job cancelled by its caller")
    })
    .await;

    // An imagine client that disconnects mid-round: the upstream call ends too.
    let before = calls(&cluster, token).await;
    let r = post(
        &cluster,
        0,
        "/v1/public/imagine/start",
        k,
        json!({"prompt": "slow clouds"}),
    )
    .await;
    let task = r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = get(
        &cluster,
        other(&cluster),
        &format!("/v1/public/imagine/sse?task_id={task}"),
        None,
    )
    .await;
    let mut sse = SseReader::new(r);
    assert_eq!(sse.next_json().await.unwrap()["status"], "running");
    eventually("the imagine call to reach the simulator", || async {
        calls(&cluster, token).await > before && in_flight(&cluster, token).await > 0
    })
    .await;
    drop(sse);
    eventually("the upstream imagine call to end", || async {
        in_flight(&cluster, token).await == 0
    })
    .await;
    eventually("the worker to cancel the image job", || async {
        cluster.logs().contains("image job cancelled by its caller")
    })
    .await;
    // No further round starts for a departed client.
    let after = calls(&cluster, token).await;
    let sse_path = format!("/v1/public/imagine/sse?task_id={task}");
    eventually("the imagine task to be dropped", || async {
        get(&cluster, 0, &sse_path, None).await.status() == 404
    })
    .await;
    assert_eq!(calls(&cluster, token).await, after);
}
both_shapes!(public_stop_cancels);

/// Public mode off (the default): every public route and page is absent, even with a
/// configured public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_mode_off_hides_everything() {
    let options = Options {
        extra_env: vec![("GROK2API_APP__PUBLIC_KEY".into(), PUBLIC_KEY.into())],
        ..Options::default()
    };
    let cluster = Cluster::start_with(Shape::Embedded, "public-off", options).await;
    for path in [
        "/v1/public/verify",
        "/v1/public/imagine/config",
        "/v1/public/voice/token",
        "/login",
        "/chat",
        "/imagine",
        "/video",
        "/voice",
    ] {
        let r = get(&cluster, 0, path, Some(PUBLIC_KEY)).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = post(
        &cluster,
        0,
        "/v1/public/imagine/start",
        Some(PUBLIC_KEY),
        json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = cluster.http.get(cluster.url("/")).send().await.unwrap();
    assert_eq!(r.url().path(), "/admin/login", "/ leads to the admin login");
}
