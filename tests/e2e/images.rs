//! Image generation and edit end to end, on both shapes: every image that comes back is
//! compared byte for byte with what the simulator generated.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Shape};

async fn generate(c: &Cluster, body: Value) -> reqwest::Response {
    c.http
        .post(c.url("/v1/images/generations"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A multipart body: text fields, then `image` parts (name, content type, bytes).
fn multipart(fields: &[(&str, &str)], images: &[(&str, &str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = format!("e2e{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (file, mime, bytes) in images {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{file}\"\r\nContent-Type: {mime}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn edit(
    c: &Cluster,
    fields: &[(&str, &str)],
    images: &[(&str, &str, Vec<u8>)],
) -> reqwest::Response {
    let (content_type, body) = multipart(fields, images);
    c.http
        .post(c.url("/v1/images/edits"))
        .bearer_auth(API_KEY)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Fetches a returned link (relative while `app.app_url` is empty) without any key.
async fn fetch(c: &Cluster, url: &str) -> Vec<u8> {
    assert!(url.starts_with("/v1/files/image/"), "{url}");
    let r = c.http.get(c.url(url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert_eq!(r.headers()["content-type"], "image/png");
    r.bytes().await.unwrap().to_vec()
}

async fn generation_returns_the_generated_bytes(shape: Shape) {
    let c = Cluster::start(shape, "img-gen").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let prompt = "a lighthouse at dusk";
    let r = generate(
        &c,
        json!({"model": "grok-imagine-1.0", "prompt": prompt, "n": 3, "size": "1280x720"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{body}");
    assert_eq!(body["usage"]["total_tokens"], 0);
    for (i, entry) in data.iter().enumerate() {
        let bytes = fetch(&c, entry["url"].as_str().unwrap()).await;
        assert_eq!(bytes, sim::imagine_image(prompt, i as u32), "image {i}");
    }
    let r = generate(&c, json!({"prompt": prompt, "response_format": "b64_json"})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let b64 = body["data"][0]["b64_json"].as_str().unwrap();
    assert_eq!(STANDARD.decode(b64).unwrap(), sim::imagine_image(prompt, 0));
    assert_eq!(c.sim.stats().await.tokens["basic-token-1"].calls, 2);
}
both_shapes!(generation_returns_the_generated_bytes);

/// `(event name, data)` of each SSE frame.
async fn sse_events(r: reqwest::Response) -> Vec<(String, Value)> {
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|frame| {
            let name = frame.lines().find_map(|l| l.strip_prefix("event:"))?;
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            Some((name.trim().to_owned(), serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

async fn streaming_sends_partials_then_the_completed_image(shape: Shape) {
    let c = Cluster::start(shape, "img-stream").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let prompt = "a paper boat";
    let r = generate(
        &c,
        json!({"prompt": prompt, "stream": true, "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(r).await;
    let partials: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "image_generation.partial_image")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(partials.len(), 2, "{events:?}");
    assert_eq!(partials[0]["type"], "image_generation.partial_image");
    assert_eq!(partials[1]["partial_image_index"], 1);
    let preview = STANDARD
        .decode(partials[0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(preview, sim::imagine_preview(prompt, 0, 33));
    let (name, completed) = events.last().unwrap();
    assert_eq!(name, "image_generation.completed");
    assert_eq!(completed["index"], 0);
    let bytes = STANDARD
        .decode(completed["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, sim::imagine_image(prompt, 0));

    // A failure after previews reached the caller ends the stream with an error event; the
    // same failure of a non-streamed request is a plain HTTP error.
    let failing = format!("boom {}", sim::FAIL_MARKER);
    let r = generate(&c, json!({"prompt": failing, "stream": true})).await;
    assert_eq!(r.status(), 200);
    let events = sse_events(r).await;
    let (name, error) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(error["error"]["code"], "upstream_error");
    let r = generate(&c, json!({"prompt": failing})).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
}
both_shapes!(streaming_sends_partials_then_the_completed_image);

async fn edits_use_every_uploaded_image(shape: Shape) {
    let c = Cluster::start(shape, "img-edit").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let a = sim::imagine_image("input a", 0);
    let b = sim::imagine_image("input b", 0);
    let prompt = "make it blue";
    let r = edit(
        &c,
        &[("prompt", prompt), ("model", "grok-imagine-1.0-edit")],
        &[("a.png", "image/png", a.clone())],
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let url = body["data"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&c, &url).await, sim::edited_image(prompt, &[&a], 0));

    let r = edit(
        &c,
        &[
            ("prompt", prompt),
            ("n", "2"),
            ("response_format", "b64_json"),
        ],
        &[
            ("a.png", "image/png", a.clone()),
            ("b.png", "application/octet-stream", b.clone()),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, entry) in data.iter().enumerate() {
        let bytes = STANDARD
            .decode(entry["b64_json"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            bytes,
            sim::edited_image(prompt, &[&a, &b], i as u32),
            "image {i}"
        );
    }
}
both_shapes!(edits_use_every_uploaded_image);

async fn moderated_output_is_an_error(shape: Shape) {
    let c = Cluster::start(shape, "img-moderated").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let prompt = format!("something {}", sim::MODERATED_MARKER);
    let r = generate(&c, json!({"prompt": prompt})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_moderated");
    let input = sim::imagine_image("input", 0);
    let r = edit(&c, &[("prompt", &prompt)], &[("a.png", "image/png", input)]).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_moderated");
}
both_shapes!(moderated_output_is_an_error);

async fn a_rate_limited_token_fails_over(shape: Shape) {
    let c = Cluster::start(shape, "img-failover").await;
    c.post_tokens(json!({"ssoBasic": [{"token": "rl-fault-429", "quota": 100}, {"token": "good-token", "quota": 10}]})).await;
    let prompt = "failover picture";
    let r = generate(&c, json!({"prompt": prompt, "response_format": "b64_json"})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let bytes = STANDARD
        .decode(body["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, sim::imagine_image(prompt, 0));
    let stats = c.sim.stats().await;
    assert_eq!(stats.tokens["good-token"].calls, 1);
    assert!(
        !stats.tokens.contains_key("rl-fault-429"),
        "refused before the answer stage"
    );
}
both_shapes!(a_rate_limited_token_fails_over);

async fn bad_inputs_get_400s(shape: Shape) {
    let c = Cluster::start(shape, "img-bad").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    for (body, param, code) in [
        (json!({"prompt": "x", "n": 11}), "n", "invalid_n"),
        (
            json!({"prompt": "x", "size": "10x10"}),
            "size",
            "invalid_size",
        ),
        (
            json!({"prompt": "x", "response_format": "gif"}),
            "response_format",
            "invalid_response_format",
        ),
        (
            json!({"prompt": "x", "n": 3, "stream": true}),
            "n",
            "invalid_stream_n",
        ),
        (json!({"prompt": " "}), "prompt", "empty_prompt"),
        (
            json!({"prompt": "x", "model": "dall-e-3"}),
            "model",
            "model_not_supported",
        ),
    ] {
        let r = generate(&c, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{body}");
        assert_eq!(e["error"]["code"], code, "{body}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    let r = edit(&c, &[("prompt", "x")], &[]).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "missing_image");
    let r = edit(
        &c,
        &[("prompt", "x")],
        &[("a.png", "image/png", b"<html>not an image</html>".to_vec())],
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["error"]["param"].as_str(), e["error"]["code"].as_str()),
        (Some("image.0"), Some("invalid_image"))
    );
    let r = c
        .http
        .post(c.url("/v1/images/edits"))
        .bearer_auth(API_KEY)
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Nothing reached the upstream.
    assert_eq!(c.sim.stats().await.total_calls, 0);
}
both_shapes!(bad_inputs_get_400s);

async fn image_models_work_through_chat_completions(shape: Shape) {
    let c = Cluster::start(shape, "img-chat").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let r = c
        .chat(
            0,
            json!({"model": "grok-imagine-1.0", "messages": [
            {"role": "user", "content": "a snowy owl"}],
            "image_config": {"n": 2, "response_format": "b64_json"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{body}");
    let second = STANDARD
        .decode(data[1]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(second, sim::imagine_image("a snowy owl", 1));
    let input = sim::imagine_image("owl input", 0);
    let uri = format!("data:image/png;base64,{}", STANDARD.encode(&input));
    let r = c
        .chat(
            1,
            json!({"model": "grok-imagine-1.0-edit", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "add a hat"},
                {"type": "image_url", "image_url": {"url": uri}}]}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let url = body["data"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        fetch(&c, &url).await,
        sim::edited_image("add a hat", &[&input], 0)
    );
    let r = c
        .chat(
            0,
            json!({"model": "grok-imagine-1.0", "messages": [{"role": "user", "content": "x"}],
            "image_config": {"size": "3x3"}}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "image_config.size");
}
both_shapes!(image_models_work_through_chat_completions);

fn python() -> PathBuf {
    std::env::var_os("GROK2API_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python"))
}

async fn the_official_openai_client_generates_and_edits(shape: Shape) {
    let c = Cluster::start(shape, "img-openai").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let input_path = c.data_dir.join("input.png");
    std::fs::create_dir_all(&c.data_dir).unwrap();
    let input = sim::imagine_image("python input", 0);
    std::fs::write(&input_path, &input).unwrap();
    let (gen_prompt, edit_prompt) = ("a python in the grass", "make it green");
    let generated = STANDARD.encode(sim::imagine_image(gen_prompt, 0));
    let edited = STANDARD.encode(sim::edited_image(edit_prompt, &[&input], 0));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_images.py");
    let python = python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test",
        python.display()
    );
    let args = vec![
        c.gateways.last().unwrap().clone(),
        API_KEY.to_owned(),
        gen_prompt.to_owned(),
        generated,
        edit_prompt.to_owned(),
        input_path.display().to_string(),
        edited,
    ];
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).args(args).output())
            .await
            .unwrap()
            .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for check in ["generate: ok", "generate url: ok", "edit: ok", "errors: ok"] {
        assert!(stdout.contains(check), "{check} missing in:\n{stdout}");
    }
}
both_shapes!(the_official_openai_client_generates_and_edits);
