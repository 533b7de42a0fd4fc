//! The playground pages in headless Chromium against the real binary and the simulator:
//! log in with the public key, chat with a streamed answer (seen growing, then complete) and
//! with streaming off, generate images on /imagine, videos on /video (with and without live
//! progress) and a voice token on /voice, saving
//! screenshots under `target/browser-artifacts/`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_shapes;
use crate::browser::Browser;
use crate::harness::{Cluster, Options, Shape};

const PUBLIC_KEY: &str = "pk-test-e2e-playground";

fn options() -> Options {
    // Slow enough frames that a streamed answer is visibly partial for a while.
    let sim = sim::SimConfig {
        frame_delay_ms: 120,
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

/// Runs `script` until it returns something other than null, failing after a deadline.
async fn poll_eval(b: &Browser, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = b.eval(script, vec![]).await;
        if !v.is_null() {
            return v;
        }
        if Instant::now() > deadline {
            b.fail(&format!("timed out waiting for {what}")).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn playground_in_browser(shape: Shape) {
    let c = Cluster::start_with(shape, "playground-browser", options()).await;
    c.set_tokens(&["playground-browser-basic"], &[]).await;
    let test = match shape {
        Shape::Embedded => "playground_embedded",
        Shape::Distributed => "playground_distributed",
    };
    let mut b = Browser::start(test, &c.gateways[0]).await;

    // `/` leads to the playground login; a wrong key is refused in place.
    b.goto("/").await;
    b.wait_for_path("/login").await;
    b.fill("#public-key", "not-the-key").await;
    b.click("#login-submit").await;
    b.wait_for_text("#login-error", "not accepted").await;
    b.fill("#public-key", PUBLIC_KEY).await;
    b.screenshot("login").await;
    b.click("#login-submit").await;
    b.wait_for_path("/chat").await;
    assert!(!b.path().await.contains(PUBLIC_KEY));

    // Chat: the model list comes from the server; the answer streams in and completes.
    b.wait_for("#model option[value=\"grok-4.1-fast\"]").await;
    b.select("#model", "grok-4.1-fast").await;
    let prompt = "tell me about the lighthouse keeper and the long winter on the northern island";
    b.fill("#prompt", prompt).await;
    b.click("#send").await;
    let partial = poll_eval(
        &b,
        "a partial answer",
        "const a = [...document.querySelectorAll('.bubble-assistant')].pop();
         if (!a || a.dataset.done) return null;
         const t = a.querySelector('.bubble-body').innerText;
         return t.includes('Echo') ? t : null;",
    )
    .await;
    let partial = partial.as_str().unwrap().to_owned();
    b.screenshot("chat-streaming").await;
    b.wait_for(".bubble-assistant[data-done=\"true\"]").await;
    let full = b.text(".bubble-assistant .bubble-body").await;
    assert!(full.contains(&format!("Echo: {prompt}")), "{full}");
    assert!(
        partial.len() < full.len(),
        "the answer grew: {partial:?} then {full:?}"
    );
    // Reasoning is shown as a collapsible section; copy and retry are offered.
    b.wait_for(".bubble-assistant details.think").await;
    b.wait_for(".bubble-assistant .retry").await;
    b.screenshot("chat-done").await;

    // Stream off: the request asks for `stream: false` and the whole answer lands at once.
    b.eval(
        "window.chatRequests = [];
         const original = window.fetch;
         window.fetch = (path, init) => {
           if (String(path).includes('/chat/completions')) window.chatRequests.push(JSON.parse(init.body));
           return original(path, init);
         };
         return null;",
        vec![],
    )
    .await;
    b.click("#clear-chat").await;
    b.click("#stream").await;
    let prompt = "and what did the keeper write in the logbook when the ice finally broke";
    b.fill("#prompt", prompt).await;
    b.click("#send").await;
    b.wait_for(".bubble-assistant[data-done=\"true\"]").await;
    let whole = b.text(".bubble-assistant .bubble-body").await;
    assert!(whole.contains(&format!("Echo: {prompt}")), "{whole}");
    let sent = b.eval("return window.chatRequests;", vec![]).await;
    assert_eq!(sent[0]["stream"], json!(false), "{sent}");
    b.screenshot("chat-non-stream").await;

    // Imagine: images land in the waterfall with a status tag.
    b.goto("/imagine").await;
    b.fill("#prompt", "a lighthouse in a storm").await;
    b.click("#start").await;
    b.wait_for(".tile[data-state=\"done\"] img.tile-image")
        .await;
    let loaded = poll_eval(
        &b,
        "a decoded image",
        "const i = document.querySelector('.tile[data-state=\"done\"] img.tile-image');
         return i && i.complete && i.naturalWidth > 0 ? i.naturalWidth : null;",
    )
    .await;
    assert!(loaded.as_u64().unwrap() > 0);
    b.wait_for_text(".tile[data-state=\"done\"] .tile-tag", "done")
        .await;
    b.screenshot("imagine").await;
    b.click("#stop").await;
    b.wait_for_text("#status", "stopped").await;
    let count: u64 = b.text("#count").await.parse().unwrap();
    assert!(count >= 1);

    // Imagine edit mode: a reference image and a prompt give an edited image.
    b.goto("/imagine").await;
    b.click("#mode-edit").await;
    let source =
        std::env::temp_dir().join(format!("playground-{}.png", uuid::Uuid::new_v4().simple()));
    std::fs::write(&source, sim::imagine_image("an edit source", 0)).unwrap();
    b.client()
        .find(fantoccini::Locator::Css("#edit-file"))
        .await
        .unwrap()
        .send_keys(source.to_str().unwrap())
        .await
        .unwrap();
    b.wait_for("#edit-preview").await;
    b.fill("#edit-prompt", "paint it blue").await;
    b.click("#edit-run").await;
    b.wait_for(".tile[data-state=\"done\"] img.tile-image")
        .await;
    b.screenshot("imagine-edit").await;
    let _ = std::fs::remove_file(&source);

    // Video: one video in single mode; the player loads it.
    b.goto("/video").await;
    b.fill("#prompt", "waves on a pebble beach").await;
    b.select("#length", "6").await;
    b.click("#generate").await;
    b.wait_for("#player video").await;
    let src = poll_eval(
        &b,
        "the video metadata",
        "const v = document.querySelector('#player video');
         return v && v.readyState >= 1 ? v.getAttribute('src') : null;",
    )
    .await;
    assert!(src.as_str().unwrap().contains("/v1/files/video/"), "{src}");
    b.wait_for_text("#single-status", "done").await;
    // Live progress (the default) showed the progress lines.
    b.wait_for_text("#single-progress", "%").await;
    b.wait_for_text("#history", "waves on a pebble beach").await;
    b.screenshot("video").await;

    // Live progress off: only "generating…" shows until the player appears.
    b.eval(
        "window.progressSeen = [];
         const log = document.querySelector('#single-progress');
         new MutationObserver(() => window.progressSeen.push(log.textContent))
           .observe(log, { childList: true, characterData: true, subtree: true });
         return null;",
        vec![],
    )
    .await;
    b.click("#stream").await;
    b.click("#generate").await;
    // The observer saw the run start (the player was cleared then), so a player and
    // "done" afterwards belong to this run.
    poll_eval(
        &b,
        "the video without live progress",
        "const started = window.progressSeen.includes('generating…');
         const done = document.querySelector('#single-status').textContent === 'done';
         return started && done && document.querySelector('#player video') ? true : null;",
    )
    .await;
    let seen = b.eval("return window.progressSeen;", vec![]).await;
    let seen = seen.as_array().unwrap();
    assert!(
        seen.iter().all(|t| t == "generating…" || t == ""),
        "no progress while live progress is off: {seen:?}"
    );
    b.click("#stream").await;

    // Waterfall mode: videos keep coming until a graceful stop lets the running ones finish.
    b.click("#mode-waterfall").await;
    b.select("#concurrency", "2").await;
    b.click("#generate").await;
    b.wait_for("#wf-grid .tile[data-state=\"done\"] video")
        .await;
    b.click("#stop").await;
    poll_eval(
        &b,
        "the waterfall to stop",
        "return document.querySelector('#generate').disabled ? null : true;",
    )
    .await;
    let generating = b
        .eval(
            "return document.querySelectorAll('#wf-grid .tile[data-state=\"generating\"]').length;",
            vec![],
        )
        .await;
    assert_eq!(
        generating,
        json!(0),
        "a graceful stop lets running videos finish"
    );
    b.screenshot("video-waterfall").await;

    // Voice: a session token, with the note that the LiveKit client is not bundled.
    b.goto("/voice").await;
    b.click("#connect").await;
    b.wait_for_text("#voice-status", "ready").await;
    b.wait_for_text("#session-url", "wss://livekit.grok.com")
        .await;
    b.wait_for_text("#sdk-notice", "LiveKit").await;
    b.screenshot("voice").await;

    // Signing out forgets the key.
    b.click("#sign-out").await;
    b.wait_for_path("/login").await;
    let stored = b
        .eval(
            "return localStorage.getItem('grok2api_public_key');",
            vec![],
        )
        .await;
    assert_eq!(stored, json!(null));
    b.close().await;
}
both_shapes!(playground_in_browser);
