//! Helpers that talk to a spawned simulator the way the project's upstream client does.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sim::{SimConfig, SimHandle};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const CHAT_PATH: &str = "/rest/app-chat/conversations/new";
/// Upper bound on any single wait, so a broken simulator fails a test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn start() -> SimHandle {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> SimHandle {
    sim::spawn(config).await.expect("simulator starts")
}

/// A token no other test uses, carrying the given markers (tier, faults).
pub fn token(markers: &str) -> String {
    format!("{markers}-{}", uuid::Uuid::new_v4().simple())
}

pub fn sso_cookie(token: &str) -> String {
    format!("sso={token}; sso-rw={token}")
}

/// A well-formed signed `x-statsig-id` (70 bytes once decoded).
pub fn signed_statsig() -> String {
    STANDARD.encode([0x5a_u8; 70])
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("HTTP client")
}

pub fn chat_body(prompt: &str, mode: &str) -> Value {
    json!({
        "temporary": true,
        "message": prompt,
        "modeId": mode,
        "fileAttachments": [],
        "imageAttachments": [],
        "disableSearch": false,
        "enableImageGeneration": true,
        "sendFinalMetadata": true,
        "toolOverrides": {},
    })
}

/// A chat request with every header the upstream requires.
pub fn chat_request(sim: &SimHandle, token: &str, prompt: &str) -> reqwest::RequestBuilder {
    chat_request_signed(sim, token, prompt, Some(&signed_statsig()))
}

/// A chat request with the given `x-statsig-id` (none when `None`).
pub fn chat_request_signed(
    sim: &SimHandle,
    token: &str,
    prompt: &str,
    statsig: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = http()
        .post(format!("{}{CHAT_PATH}", sim.base_url()))
        .header("cookie", sso_cookie(token))
        .header("x-xai-request-id", uuid::Uuid::new_v4().to_string())
        .header("origin", "https://grok.com")
        .json(&chat_body(prompt, "fast"));
    if let Some(statsig) = statsig {
        request = request.header("x-statsig-id", statsig);
    }
    request
}

/// What an NDJSON chat body carried.
#[derive(Debug, Default)]
pub struct RestStream {
    pub conversation_id: Option<String>,
    pub reasoning: String,
    pub text: String,
    pub final_message: Option<String>,
    pub soft_stop: bool,
    pub invalid_lines: usize,
    pub lines: usize,
}

pub fn parse_ndjson(body: &str) -> RestStream {
    let mut stream = RestStream::default();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        stream.lines += 1;
        let Ok(frame) = serde_json::from_str::<Value>(line) else {
            stream.invalid_lines += 1;
            continue;
        };
        if let Some(id) = frame.pointer("/result/conversation/conversationId") {
            assert_eq!(stream.lines, 1, "the conversation frame comes first");
            stream.conversation_id = id.as_str().map(str::to_owned);
            continue;
        }
        let response = frame
            .pointer("/result/response")
            .unwrap_or_else(|| panic!("unexpected frame {frame}"));
        assert!(!stream.soft_stop, "nothing follows the soft stop");
        if let Some(token) = response.get("token").and_then(Value::as_str) {
            let thinking = response["isThinking"].as_bool().expect("isThinking");
            let tag = response["messageTag"].as_str().expect("messageTag");
            assert!(response["responseId"].is_string());
            if thinking {
                assert_eq!(tag, "analysis");
                assert!(stream.text.is_empty(), "reasoning precedes the answer");
                stream.reasoning.push_str(token);
            } else {
                assert_eq!(tag, "final");
                stream.text.push_str(token);
            }
        } else if let Some(model_response) = response.get("modelResponse") {
            assert!(model_response["responseId"].is_string());
            stream.final_message = model_response["message"].as_str().map(str::to_owned);
        } else if response.get("isSoftStop") == Some(&json!(true)) {
            assert!(response["finalMetadata"].is_object());
            stream.soft_stop = true;
        } else {
            panic!("unexpected response frame {frame}");
        }
    }
    stream
}

/// Opens the gateway WebSocket as the upstream client does.
pub async fn ws_connect(sim: &SimHandle, token: &str) -> Result<Ws, tungstenite::Error> {
    let uid = sim::user_id_for(token);
    let cookie = format!("{}; cf_clearance=abc; x-userid={uid}", sso_cookie(token));
    ws_connect_with(sim, &uid, Some(&cookie), Some("https://grok.com"), None).await
}

pub async fn ws_connect_with(
    sim: &SimHandle,
    uid: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    fault: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("{}/ws/mgw/?uid={uid}", sim.ws_url())
        .into_client_request()
        .expect("valid WebSocket URL");
    let headers = request.headers_mut();
    for (name, value) in [
        ("cookie", cookie),
        ("origin", origin),
        ("x-sim-fault", fault),
    ] {
        if let Some(value) = value {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        }
    }
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("WebSocket connect in time")?;
    Ok(ws)
}

/// The HTTP response of a refused upgrade: status, `Retry-After`, body.
pub fn refusal(result: Result<Ws, tungstenite::Error>) -> (u16, Option<String>, String) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                retry_after,
                String::from_utf8(body).unwrap(),
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send to the gateway");
}

/// The next text frame, raw; `None` when the server closed the connection.
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("gateway frame in time");
        match message {
            Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn next_event(ws: &mut Ws) -> Value {
    let text = next_text(ws).await.expect("an event, not a close");
    serde_json::from_str(&text).expect("a JSON event")
}

pub fn session_create(model: &str) -> Value {
    json!({"event": {"type": "session.create", "event_id": "evt_init_test", "session": {
        "model": model,
        "x_grok": {"protocol_capabilities": ["conversation_attached", "custom_methods_v1"],
            "use_chunk": true, "is_temporary": true, "disable_memory": true},
    }}})
}

/// Sends `session.create` and returns the attached conversation id.
pub async fn open_session(ws: &mut Ws, model: &str) -> String {
    send(ws, session_create(model)).await;
    let created = next_event(ws).await;
    assert_eq!(created["event"]["type"], "session.created");
    assert_eq!(created["event"]["client_event_id"], "evt_init_test");
    let attached = next_event(ws).await;
    assert_eq!(attached["event"]["type"], "conversation.attached");
    attached["event"]["conversation"]["id"]
        .as_str()
        .expect("conversation id")
        .to_owned()
}

pub fn item_create(conversation: &str, prompt: &str) -> Value {
    json!({"session_id": conversation, "event": {
        "type": "conversation.item.create",
        "event_id": "evt_msg_1",
        "item": {"type": "message", "role": "user", "x_grok": {
            "client_message_id": uuid::Uuid::new_v4().to_string(),
            "input_chunks": [{"text": {"text": prompt}}],
        }},
    }})
}

pub fn response_create(conversation: &str) -> Value {
    json!({"session_id": conversation, "event": {"type": "response.create", "event_id": "evt_resp_1"}})
}

pub async fn ask(ws: &mut Ws, conversation: &str, prompt: &str) {
    send(ws, item_create(conversation, prompt)).await;
    send(ws, response_create(conversation)).await;
}

/// What the gateway streamed for one response.
#[derive(Debug, Default)]
pub struct WsStream {
    pub reasoning: String,
    pub text: String,
    pub done: bool,
    pub closed: bool,
    pub invalid_frames: usize,
    pub errors: Vec<Value>,
}

/// Reads one response until `response.done`, an error event, or the end of the connection.
pub async fn collect(ws: &mut Ws) -> WsStream {
    let mut stream = WsStream::default();
    loop {
        let Some(text) = next_text(ws).await else {
            stream.closed = true;
            return stream;
        };
        let Ok(event) = serde_json::from_str::<Value>(&text) else {
            stream.invalid_frames += 1;
            continue;
        };
        match event["event"]["type"].as_str() {
            Some("response.chunk") => {
                let chunk = &event["event"]["chunk"]["text"];
                let token = chunk["text"].as_str().expect("chunk text");
                match chunk["channel"].as_str() {
                    Some("CHANNEL_ANALYSIS") => {
                        assert!(stream.text.is_empty(), "reasoning precedes the answer");
                        stream.reasoning.push_str(token);
                    }
                    Some("CHANNEL_ASSISTANT_RESPONSE") => stream.text.push_str(token),
                    other => panic!("unexpected channel {other:?}"),
                }
            }
            Some("response.done") => {
                assert_eq!(event["event"]["response"]["status"], "completed");
                assert!(event["event"]["response"]["id"].is_string());
                stream.done = true;
                return stream;
            }
            Some("error") => {
                stream.errors.push(event);
                return stream;
            }
            other => panic!("unexpected event {other:?}: {event}"),
        }
    }
}

/// Polls the in-process stats until `check` holds, failing after [`WAIT`].
pub async fn wait_for_stats(sim: &SimHandle, check: impl Fn(&sim::SimStats) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = sim.stats().await;
        if check(&stats) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never reached the expected state: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
