//! Scenario 9, hostile input at the gateway (quality bar 6.4, items 18 to 24): auth probing,
//! oversized, malformed, deep and never-ending bodies, absurd parameters, SSRF URLs in every
//! URL-taking field, traversal in media names, garbage `Last-Event-ID`, and a client that
//! never reads its stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, API_KEY, Cluster, Options, Shape};
use crate::probe::{authority, counter_sum, expect_error, raw_exchange, raw_status, wait_for};

fn ask(prompt: &str, stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "stream": stream,
        "messages": [{"role": "user", "content": prompt}]})
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn jobs_published(c: &Cluster) -> f64 {
    let mut total = 0.0;
    for (_, base) in c.metrics_urls() {
        total += counter_sum(&c.scrape(&base).await, shared::metrics::JOBS_PUBLISHED, &[]);
    }
    total
}

async fn auth_probing_gets_uniform_401s_and_reaches_nothing(shape: Shape) {
    let c = Cluster::start(shape, "authprobe").await;
    c.set_tokens(&["probe-target-token"], &[]).await;
    let published_before = jobs_published(&c).await;

    // Random keys of every length, one differing from the real key in its last byte, the
    // admin key on the client API, and the real key in a query string.
    let mut keys: Vec<String> = (0..300)
        .map(|i| shared::crypto::random_secret(1 + i % 64))
        .collect();
    let mut near = API_KEY.to_owned();
    near.pop();
    near.push('X');
    keys.push(near);
    keys.push(ADMIN_KEY.to_owned());
    let probes = join_all(keys.iter().map(|key| {
        c.http
            .post(c.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&ask("let me in", false))
            .send()
    }))
    .await;
    let mut bodies = std::collections::BTreeSet::new();
    for r in probes {
        let r = r.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        bodies.insert(r.text().await.unwrap());
    }
    // One answer for every wrong key: nothing tells a near miss or a length apart.
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body = bodies.into_iter().next().unwrap();
    assert!(!body.chars().any(|ch| ch.is_ascii_digit()), "{body}");

    for url in [
        format!("/v1/chat/completions?api_key={API_KEY}"),
        format!("/v1/chat/completions?key={API_KEY}"),
    ] {
        let r = c
            .http
            .post(c.url(&url))
            .json(&ask("x", false))
            .send()
            .await
            .unwrap();
        expect_error(r, 401).await;
    }
    for header in ["Bearer", "Bearer ", "Basic c2stdGVzdA==", API_KEY] {
        let r = c
            .http
            .post(c.url("/v1/chat/completions"))
            .header("authorization", header)
            .json(&ask("x", false))
            .send()
            .await
            .unwrap();
        expect_error(r, 401).await;
    }
    // The client key is not an admin key.
    let r = c
        .http
        .get(c.url("/v1/admin/tokens"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    expect_error(r, 401).await;

    // None of it reached a worker, the queue or the upstream.
    assert_eq!(c.sim.stats().await.total_calls, 0);
    assert_eq!(jobs_published(&c).await, published_before);
    // And the real key still works.
    assert_eq!(c.chat(0, ask("hello", false)).await.status(), 200);
    assert_eq!(jobs_published(&c).await, published_before + 1.0);
}
both_shapes!(auth_probing_gets_uniform_401s_and_reaches_nothing);

async fn bad_bodies_and_absurd_parameters_are_refused_cleanly(shape: Shape) {
    let options = Options {
        extra_env: env(&[("GROK2API_SERVER__BODY_READ_TIMEOUT_SECS", "2")]),
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "badbodies", options).await;
    c.set_tokens(&["body-token"], &[]).await;
    let post = |body: Vec<u8>| {
        c.http
            .post(c.url("/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let base = c.gateways[0].clone();
    // Larger than server.max_body_bytes (10 MiB), sent without a length: refused once the
    // limit is crossed.
    let big = format!(
        "{{\"model\":\"grok-4.1-fast\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "a".repeat(11 * 1024 * 1024)
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(1024 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    // A client of its own: the connection is left unusable when the gateway stops reading.
    let sent = reqwest::Client::new()
        .post(c.url("/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    // The gateway may close the connection before the client finished sending; if the
    // answer arrived, it is a 413.
    if let Ok(r) = sent {
        let e = expect_error(r, 413).await;
        assert_eq!(e["code"], "body_too_large");
    }
    // 100 000 levels of nesting, malformed JSON, JSON that is not an object.
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let e = expect_error(post(deep.into_bytes()).await.unwrap(), 400).await;
    assert_eq!(e["code"], "invalid_json");
    for bad in [&b"{\"model\":"[..], b"\xff\xfe{}", b"[1,2,3]", b"null", b""] {
        let r = post(bad.to_vec()).await.unwrap();
        expect_error(r, 400).await;
    }
    // The wrong content type.
    let r = c
        .http
        .post(c.url("/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&ask("x", false)).unwrap())
        .send()
        .await
        .unwrap();
    expect_error(r, 415).await;

    // Absurd and mistyped fields: a 400 naming the field.
    let many: Vec<Value> = (0..5000)
        .map(|_| json!({"role": "user", "content": "hi"}))
        .collect();
    let cases = [
        (
            json!({"model": "grok-4.1-fast", "messages": many}),
            "messages",
        ),
        (
            json!({"model": "grok-4.1-fast", "messages": "hi"}),
            "messages",
        ),
        (
            json!({"model": "grok-4.1-fast", "messages": []}),
            "messages",
        ),
        (
            json!({"model": "grok-4.1-fast", "messages": [{"role": "user", "content": "x"}], "temperature": -1}),
            "temperature",
        ),
        (
            json!({"model": "grok-4.1-fast", "messages": [{"role": "user", "content": "x"}], "temperature": "NaN"}),
            "temperature",
        ),
        (
            json!({"model": "grok-4.1-fast", "messages": [{"role": "user", "content": "x"}], "temperature": 1e308}),
            "temperature",
        ),
        (
            json!({"model": "grok-4.1-fast", "messages": [{"role": "user", "content": "x"}], "stream": {"on": true}}),
            "stream",
        ),
        (
            json!({"model": 42, "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            json!({"model": "x".repeat(100_000), "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            json!({"model": "grok-4.1-fast", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages.0.role",
        ),
    ];
    for (body, param) in cases {
        let e = expect_error(c.chat(0, body).await, 400).await;
        assert_eq!(e["param"], param, "{e}");
        assert!(e["message"].as_str().unwrap().len() < 300, "{e}");
    }
    // Fields the API ignores cannot multiply work: n = 10^9 and a max_tokens of 2^63 - 1
    // still make exactly one upstream call.
    let mut body = ask("just once", false);
    body["n"] = json!(1_000_000_000u64);
    body["max_tokens"] = json!(i64::MAX);
    let r = c.chat(0, body).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["choices"].as_array().unwrap().len(), 1);
    assert_eq!(c.sim.stats().await.total_calls, 1);
    // The images API takes n, and refuses absurd values.
    for n in [json!(1_000_000_000u64), json!(-1), json!("many")] {
        let r = c
            .http
            .post(c.url("/v1/images/generations"))
            .bearer_auth(API_KEY)
            .json(&json!({"prompt": "a cat", "n": n}))
            .send()
            .await
            .unwrap();
        let e = expect_error(r, 400).await;
        assert_eq!(e["param"], "n");
    }

    // A body that never arrives in full (Content-Length says more than is sent, or a
    // chunked body with no last chunk) is abandoned after server.body_read_timeout_secs.
    for (framing, partial) in [
        ("content-length: 1000\r\n", "{\"model\":".to_owned()),
        (
            "transfer-encoding: chunked\r\n",
            "9\r\n{\"model\":\r\n".to_owned(),
        ),
    ] {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n{framing}\r\n{partial}",
            authority(&base)
        );
        let response = raw_exchange(&base, request.as_bytes(), Duration::from_secs(30)).await;
        assert_eq!(
            raw_status(&response),
            Some(400),
            "{framing}: {response:.300}"
        );
    }
    // A Content-Length shorter than the body: the declared bytes are the request.
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{{\"model\":\"grok-4.1-fast\",\"messages\":[]}}"
    );
    let response = raw_exchange(&base, request.as_bytes(), Duration::from_secs(30)).await;
    assert_eq!(raw_status(&response), Some(400), "{response:.300}");

    // Last-Event-ID: garbage is a 400 naming the header; a well-formed id of a job that
    // does not exist (another cluster's, expired, made up) is a 404; neither starts a job.
    let calls_before = c.sim.stats().await.total_calls;
    let long = "9".repeat(10_000);
    let unknown = format!("{}-1-5-0123456789abcdef", uuid::Uuid::now_v7().simple());
    for (value, status) in [
        ("garbage", 400),
        ("99999999999999999999-1", 400),
        ("-1--1", 400),
        (long.as_str(), 400),
        ("", 400),
        (unknown.as_str(), 404),
    ] {
        let r = c
            .http
            .post(c.url("/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .header("last-event-id", value)
            .json(&ask("resume what?", true))
            .send()
            .await
            .unwrap();
        let e = expect_error(r, status).await;
        if status == 400 {
            assert_eq!(e["param"], "Last-Event-ID", "{e}");
        }
    }
    assert_eq!(c.sim.stats().await.total_calls, calls_before);
    // Still healthy after all of it.
    let r = c.http.get(c.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
both_shapes!(bad_bodies_and_absurd_parameters_are_refused_cleanly);

/// A loopback HTTP server that records each request head and answers with `reply`.
struct Recorder {
    addr: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(reply: String) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        Recorder { addr, heads }
    }

    fn requests(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn ssrf_urls_are_refused_in_every_url_field(shape: Shape) {
    // An internal service that must never be reached, and a "public" host (a debug build
    // treats the test host as public) that redirects to it.
    let internal = Recorder::start(
        "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 4\r\nconnection: close\r\n\r\n\u{89}PNG"
            .into(),
    )
    .await;
    let internal_port = internal.addr.rsplit(':').next().unwrap().to_owned();
    let public = Recorder::start(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{internal_port}/secret.png\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ))
    .await;
    let options = Options {
        extra_env: env(&[(
            shared::fetch::TEST_HOSTS_ENV,
            &format!("public.test={}", public.addr),
        )]),
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "ssrf", options).await;
    c.set_tokens(&["ssrf-account-token"], &[]).await;
    let public_port = public.addr.rsplit(':').next().unwrap();
    let targets = [
        format!("http://127.0.0.1:{internal_port}/x.png"),
        "http://127.0.0.1/x.png".into(),
        "http://localhost/x.png".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[::ffff:127.0.0.1]/x.png".into(),
        "http://[::1]/x.png".into(),
        "http://0x7f000001/x.png".into(),
        "http://2130706433/x.png".into(),
        "http://0.0.0.0/x.png".into(),
        "http://10.0.0.1/x.png".into(),
        "http://100.64.0.1/x.png".into(),
        "http://[fc00::1]/x.png".into(),
        "file:///etc/passwd".into(),
        "gopher://127.0.0.1:6379/_INFO".into(),
        "http://example.com:22/x.png".into(),
        "http://user:pass@example.com/x.png".into(),
        // Public at first sight, then a redirect to loopback.
        format!("http://public.test:{public_port}/a.png"),
    ];
    for url in &targets {
        // Chat: image_url, input_audio and file blocks.
        for block in [
            json!({"type": "image_url", "image_url": {"url": url}}),
            json!({"type": "input_audio", "input_audio": {"data": url, "format": "mp3"}}),
            json!({"type": "file", "file": {"file_data": url}}),
        ] {
            let body = json!({"model": "grok-4.1-fast", "messages": [{"role": "user",
                "content": [{"type": "text", "text": "look"}, block]}]});
            let r = c.chat(0, body).await;
            let status = r.status().as_u16();
            assert!(status >= 400, "{url} was accepted in chat");
            expect_error(r, status).await;
        }
        // Video input images: refused at once, or the job fails.
        let r = c
            .http
            .post(c.url("/v1/videos"))
            .bearer_auth(API_KEY)
            .json(&json!({"prompt": "move", "image_url": url}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let job: Value = r.json().await.unwrap();
            let id = job["id"].as_str().unwrap().to_owned();
            let mut last = Value::Null;
            wait_for(
                "the video job to end",
                Duration::from_secs(30),
                async || {
                    let r = c
                        .http
                        .get(c.url(&format!("/v1/videos/{id}")))
                        .bearer_auth(API_KEY)
                        .send()
                        .await
                        .unwrap();
                    last = r.json().await.unwrap();
                    matches!(last["status"].as_str(), Some("failed" | "completed"))
                },
            )
            .await;
            assert_eq!(last["status"], "failed", "{url}: {last}");
        } else {
            let status = r.status().as_u16();
            assert!(status >= 400, "{url}: {status}");
            expect_error(r, status).await;
        }
    }
    // The internal service was never contacted; the public host got plain fetches with no
    // credential of ours.
    assert!(internal.requests().is_empty(), "{:?}", internal.requests());
    for head in public.requests() {
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("cookie:") && !lower.contains("authorization:"),
            "{head}"
        );
        assert!(!head.contains("ssrf-account-token"), "{head}");
    }
    assert_eq!(c.sim.stats().await.total_calls, 0);
}
both_shapes!(ssrf_urls_are_refused_in_every_url_field);

async fn traversal_in_media_names_never_leaves_the_media_root(shape: Shape) {
    let c = Cluster::start(shape, "traversal").await;
    // Files a traversal would reach: next to the media root, and in the data directory.
    std::fs::create_dir_all(c.data_dir.join("media/images")).unwrap();
    std::fs::write(c.data_dir.join("outside.png"), b"\x89PNGsecret").unwrap();
    std::fs::write(c.data_dir.join("media/outside.png"), b"\x89PNGsecret").unwrap();
    let names = [
        "..%2f..%2foutside.png",
        "..%2foutside.png",
        "%2e%2e%2foutside.png",
        "%2e%2e%2f%2e%2e%2foutside.png",
        "%252e%252e%252foutside.png",
        "..%5c..%5coutside.png",
        "..\\outside.png",
        "%2fetc%2fpasswd",
        "%2f..%2foutside.png",
        "outside.png%00.png",
        "a%00b.png",
        "....%2f%2foutside.png",
        "%c0%ae%c0%ae%2foutside.png",
    ];
    let long = format!("{}.png", "a".repeat(4000));
    let mut paths: Vec<String> = names
        .iter()
        .flat_map(|n| {
            [
                format!("/v1/files/image/{n}"),
                format!("/v1/files/video/{n}"),
            ]
        })
        .collect();
    paths.push(format!("/v1/files/image/{long}"));
    paths.push("/v1/files/image/../../outside.png".into());
    paths.push("/v1/files/image/..%2F..%2F..%2F..%2Fetc%2Fpasswd".into());
    let base = c.gateways[0].clone();
    for path in &paths {
        // Raw, so nothing normalises the path on the way.
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            authority(&base)
        );
        let response = raw_exchange(&base, request.as_bytes(), Duration::from_secs(20)).await;
        let status = raw_status(&response);
        assert!(matches!(status, Some(400 | 404)), "{path}: {response:.300}");
        assert!(
            !response.contains("secret"),
            "{path} reached a file: {response:.300}"
        );
        assert!(!response.contains("root:"), "{path}: {response:.300}");
    }
}
both_shapes!(traversal_in_media_names_never_leaves_the_media_root);

async fn a_client_that_never_reads_is_cut_off(shape: Shape) {
    let options = Options {
        extra_env: env(&[
            ("GROK2API_SERVER__SLOW_CLIENT_TIMEOUT_SECS", "2"),
            ("GROK2API_CHAT__TIMEOUT_SECS", "600"),
        ]),
        sim: sim::SimConfig {
            slow_frame_delay_ms: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "noreader", options).await;
    c.set_tokens(&["reader-fault-slow"], &[]).await;
    // About 3 MB of reasoning (the prompt, thought about) in 2 kB frames, more than a
    // reader with a small receive buffer, the gateway's socket and the stream's bounded
    // channel hold, then an answer that would take minutes at this pace.
    let word = "a".repeat(2_000);
    let mut prompt = String::from("[[words:100000]]");
    for _ in 0..1_500 {
        prompt.push(' ');
        prompt.push_str(&word);
    }
    let body = serde_json::to_vec(&ask(&prompt, true)).unwrap();
    let base = c.gateways[0].clone();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket
        .connect(authority(&base).parse().unwrap())
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        authority(&base),
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    // Never read. The upstream call starts...
    wait_for(
        "the upstream call to start",
        Duration::from_secs(180),
        async || {
            c.sim
                .stats()
                .await
                .tokens
                .get("reader-fault-slow")
                .is_some_and(|t| t.in_flight == 1)
        },
    )
    .await;
    // ...and ends long before its answer could have: the gateway gave up on the reader and
    // cancelled the job.
    wait_for(
        "the stalled reader to be cut off",
        Duration::from_secs(180),
        async || c.sim.stats().await.tokens["reader-fault-slow"].in_flight == 0,
    )
    .await;
    drop(socket);
    // The account is free again.
    let r = c.chat(0, ask("next one", false)).await;
    assert_eq!(r.status(), 200);
}
both_shapes!(a_client_that_never_reads_is_cut_off);

/// The WebSocket routes cap message size: an oversized frame ends the session instead of
/// being buffered, and a ping flood is answered without harm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_websocket_frames_end_the_session() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let options = Options {
        extra_env: env(&[("GROK2API_APP__PUBLIC_ENABLED", "true")]),
        ..Default::default()
    };
    let c = Cluster::start_with(Shape::Embedded, "wsframes", options).await;
    let r = c
        .http
        .post(c.url("/v1/public/imagine/start"))
        .json(&json!({"prompt": "a cat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let task: Value = r.json().await.unwrap();
    let task_id = task["task_id"].as_str().unwrap().to_owned();
    let url = format!(
        "ws://{}/v1/public/imagine/ws?task_id={task_id}",
        authority(&c.gateways[0])
    );

    // Pings are answered.
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    for i in 0..500u32 {
        socket
            .send(Message::Ping(i.to_be_bytes().to_vec().into()))
            .await
            .unwrap();
    }
    let mut pongs = 0;
    while pongs < 500 {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
            Ok(Some(Ok(Message::Pong(_)))) => pongs += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("the ping flood broke the session: {other:?}"),
        }
    }

    // A 4 MiB message: the session ends (close frame or dropped connection).
    let _ = socket.send(Message::Text("x".repeat(4 << 20).into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(
        ended,
        Ok(true),
        "an oversized message did not end the session"
    );
    let r = c.http.get(c.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
