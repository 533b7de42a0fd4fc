//! One request of each kind, against the gateway or straight against the simulator, with
//! the timings the report needs.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::procs::API_KEY;

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The gateway's `/v1/chat/completions`.
    Gateway(String),
    /// The simulator's REST chat call (the baseline), with the account cookie to send.
    Sim(String),
}

/// Timings of one completed request.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    pub total: Duration,
    /// Time to the first chunk carrying answer text (streams only).
    pub ttft: Option<Duration>,
    /// Gaps between consecutive body chunks after the first (streams only).
    pub gaps: Vec<Duration>,
}

/// The text a gateway stream of `prompt` must deliver, in order.
pub fn expected_stream_text(prompt: &str) -> String {
    let answer = sim::answer_for(prompt);
    format!("<think>\n{}\n</think>\n{}", answer.reasoning, answer.text)
}

fn chat_body(prompt: &str, stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "stream": stream,
           "messages": [{"role": "user", "content": prompt}]})
}

/// One non-stream chat; checks the answer is the simulator's.
pub async fn non_stream(
    http: &reqwest::Client,
    target: &Target,
    prompt: &str,
    account: usize,
) -> anyhow::Result<Timing> {
    let start = Instant::now();
    match target {
        Target::Gateway(base) => {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(API_KEY)
                .json(&chat_body(prompt, false))
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await.context("reading the answer")?;
            if !status.is_success() {
                bail!("gateway answered {status}: {body}");
            }
            if body["choices"][0]["message"]["content"] != sim::answer_for(prompt).text.as_str() {
                bail!("wrong answer: {body}");
            }
        }
        Target::Sim(base) => {
            let body = sim_call(http, base, prompt, account).await?.bytes().await?;
            if body.is_empty() {
                bail!("empty simulator answer");
            }
        }
    }
    Ok(Timing {
        total: start.elapsed(),
        ..Timing::default()
    })
}

/// One streamed chat; records TTFT and gaps, and checks every chunk arrived in order.
pub async fn stream(
    http: &reqwest::Client,
    target: &Target,
    prompt: &str,
    account: usize,
) -> anyhow::Result<Timing> {
    let start = Instant::now();
    let response = match target {
        Target::Gateway(base) => {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(API_KEY)
                .json(&chat_body(prompt, true))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("gateway answered {}", r.status());
            }
            r
        }
        Target::Sim(base) => sim_call(http, base, prompt, account).await?,
    };
    // The marker of a chunk carrying answer text differs between the two protocols.
    let text_marker: &[u8] = match target {
        Target::Gateway(_) => b"\"content\":\"",
        Target::Sim(_) => b"\"token\":\"",
    };
    let mut body = Vec::new();
    let mut ttft = None;
    let mut last: Option<Instant> = None;
    let mut gaps = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let now = Instant::now();
        if ttft.is_none() && contains_text(&chunk, text_marker) {
            ttft = Some(now - start);
        }
        if ttft.is_some() {
            if let Some(previous) = last {
                gaps.push(now - previous);
            }
            last = Some(now);
        }
        body.extend_from_slice(&chunk);
    }
    if let Target::Gateway(_) = target {
        let text = sse_content(&body)?;
        let expected = expected_stream_text(prompt);
        if text != expected {
            bail!(
                "stream integrity: got {} bytes, expected {} bytes; chunks lost or reordered",
                text.len(),
                expected.len()
            );
        }
    }
    Ok(Timing {
        total: start.elapsed(),
        ttft,
        gaps,
    })
}

/// Whether `chunk` carries a non-empty text field introduced by `marker`.
fn contains_text(chunk: &[u8], marker: &[u8]) -> bool {
    chunk
        .windows(marker.len() + 1)
        .any(|w| w.starts_with(marker) && w[marker.len()] != b'"')
}

/// Concatenates `delta.content` of an SSE body, requiring it to end with `[DONE]`.
fn sse_content(body: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(body)?;
    let mut content = String::new();
    let mut done = false;
    for frame in text.split("\n\n") {
        for data in frame.lines().filter_map(|l| l.strip_prefix("data:")) {
            let data = data.strip_prefix(' ').unwrap_or(data);
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).context("an SSE event that is not JSON")?;
            if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
                content.push_str(piece);
            }
        }
    }
    if !done {
        bail!("stream ended without [DONE]");
    }
    Ok(content)
}

async fn sim_call(
    http: &reqwest::Client,
    base: &str,
    prompt: &str,
    account: usize,
) -> anyhow::Result<reqwest::Response> {
    let token = format!("bench-token-{account}");
    let statsig = base64::engine::general_purpose::STANDARD.encode(b"x1:bench");
    let r = http
        .post(format!("{base}/rest/app-chat/conversations/new"))
        .header("cookie", format!("sso={token}; sso-rw={token}"))
        .header("x-xai-request-id", uuid::Uuid::new_v4().to_string())
        .header("x-statsig-id", statsig)
        .json(&json!({"message": prompt, "modeId": "fast"}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("simulator answered {}", r.status());
    }
    Ok(r)
}
