//! Chat over the WebSocket gateway: `{ws}/ws/mgw/?uid=<user id>`.
//!
//! One connection per answer: `session.create`, wait for `session.created` and
//! `conversation.attached`, then `conversation.item.create` and `response.create`, then read
//! the answer events, pinging every 25 s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::client::Inner;
use super::frames::MAX_FRAME_BYTES;
use super::stream::{FrameSource, Outbox, start};
use super::ws_frames::{WsFrame, WsParser};
use super::{ChatRequest, ChatStream, UpstreamError, classify};
use crate::Secret;

/// Heartbeat period of the browser client.
const HEARTBEAT: Duration = Duration::from_secs(25);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// `session.create` for a new, single-turn conversation.
pub(crate) fn session_create(request: &ChatRequest, event_id: &str) -> Value {
    json!({"event": {
        "type": "session.create",
        "event_id": event_id,
        "session": {
            "model": request.mode,
            "x_grok": {
                "protocol_capabilities": ["conversation_attached", "custom_methods_v1"],
                "use_chunk": true,
                "enable_side_by_side": true,
                "force_side_by_side": false,
                "enable_image_generation": true,
                "image_generation_count": 2,
                "disable_text_follow_ups": false,
                "disable_artifact": true,
                "force_concise": false,
                "keep_context": false,
                "is_temporary": request.temporary,
                "disable_memory": request.disable_memory,
            },
        },
    }})
}

/// `conversation.item.create` carrying the prompt and its file mentions.
pub(crate) fn item_create(request: &ChatRequest, session_id: &str) -> Value {
    let mut chunks: Vec<Value> = request
        .file_ids
        .iter()
        .map(|id| json!({"mention": {"target": {"file_mention": {"file_id": id}}}}))
        .collect();
    chunks.push(json!({"text": {"text": request.message}}));
    json!({
        "session_id": session_id,
        "event": {
            "type": "conversation.item.create",
            "event_id": format!("evt_msg_{}", unix_ms()),
            "item": {
                "type": "message",
                "role": "user",
                "x_grok": {
                    "client_message_id": uuid::Uuid::new_v4().to_string(),
                    "input_chunks": chunks,
                },
                "file_attachment_ids": request.file_ids,
            },
            "file_attachment_ids": request.file_ids,
        },
    })
}

pub(crate) fn response_create(session_id: &str) -> Value {
    json!({
        "session_id": session_id,
        "event": {"type": "response.create", "event_id": format!("evt_resp_{}", unix_ms())},
    })
}

fn heartbeat() -> Value {
    json!({"event": {"type": "ping", "event_id": format!("evt_hb_{}", unix_ms())}})
}

/// Connects, sets up the session, sends the prompt and returns once the first answer frame
/// arrived.
pub(crate) async fn open(
    inner: &Inner,
    token: &Secret,
    request: &ChatRequest,
) -> Result<ChatStream, UpstreamError> {
    let user_id = inner.user_id(token).await?;
    let deadline = Instant::now() + inner.connect_timeout;
    let mut url = url::Url::parse(&format!("{}/ws/mgw/", inner.ws_url))
        .map_err(|e| classify::protocol(format!("upstream.ws_url: {e}")))?;
    url.query_pairs_mut().append_pair("uid", &user_id);
    let mut upgrade = url
        .as_str()
        .into_client_request()
        .map_err(classify::from_ws)?;
    upgrade
        .headers_mut()
        .extend(inner.headers.websocket(token, &user_id)?);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(upgrade, Some(config), true);
    let (socket, _) = tokio::time::timeout_at(deadline, connecting)
        .await
        .map_err(|_| classify::timeout("connecting to the chat gateway"))?
        .map_err(classify::from_ws)?;

    let mut source = WsSource {
        socket,
        parser: WsParser::default(),
        outbox: Outbox::default(),
        idle: inner.idle_timeout,
        heartbeat: tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT),
    };
    let init_id = format!("evt_init_{}", uuid::Uuid::new_v4());
    source.send(&session_create(request, &init_id)).await?;
    let session_id = source.await_session(deadline).await?;
    source.send(&item_create(request, &session_id)).await?;
    source.send(&response_create(&session_id)).await?;
    while source.outbox.is_empty() && !source.outbox.is_finished() {
        source
            .read_answer(deadline, "waiting for the first gateway frame")
            .await;
    }
    let response_id = source.parser.response_id();
    start(source, response_id)
}

/// The open gateway connection of one answer.
struct WsSource {
    socket: Socket,
    parser: WsParser,
    outbox: Outbox,
    idle: Duration,
    heartbeat: Interval,
}

impl WsSource {
    async fn send(&mut self, event: &Value) -> Result<(), UpstreamError> {
        let text = event.to_string();
        self.socket
            .send(Message::text(text))
            .await
            .map_err(classify::from_ws)
    }

    /// Waits for `session.created` and `conversation.attached`; returns the id later events
    /// are addressed to (the session's, else the conversation's).
    async fn await_session(&mut self, deadline: Instant) -> Result<String, UpstreamError> {
        let mut session = None;
        let mut conversation = None;
        let waiting = "waiting for the gateway session";
        while session.is_none() || conversation.is_none() {
            match self.next_frame(deadline, waiting).await? {
                WsFrame::SessionCreated { session_id } => session = Some(session_id),
                WsFrame::ConversationAttached { conversation_id } => {
                    conversation = Some(conversation_id)
                }
                WsFrame::Answer(events) => {
                    self.outbox.push_events(events);
                    if self.outbox.is_finished() {
                        return Err(self.outbox.take_error().unwrap_or_else(|| {
                            classify::protocol("the gateway ended the answer before the prompt")
                        }));
                    }
                }
                WsFrame::Malformed => skipped_frame(),
            }
        }
        session
            .flatten()
            .or(conversation.flatten())
            .ok_or_else(|| classify::protocol("the gateway named neither session nor conversation"))
    }

    /// Reads one frame of the answer (waiting until `until`) into the outbox.
    async fn read_answer(&mut self, until: Instant, waiting_for: &str) {
        match self.next_frame(until, waiting_for).await {
            Ok(WsFrame::Answer(events)) => self.outbox.push_events(events),
            Ok(WsFrame::Malformed) => skipped_frame(),
            Ok(_) => {}
            Err(error) => self.outbox.fail(error),
        }
    }

    /// The next text frame, answering the heartbeat while waiting.
    async fn next_frame(
        &mut self,
        until: Instant,
        waiting_for: &str,
    ) -> Result<WsFrame, UpstreamError> {
        loop {
            tokio::select! {
                message = self.socket.next() => match message {
                    None => return Err(classify::transient("the chat gateway closed the connection")),
                    Some(Err(error)) => return Err(classify::from_ws(error)),
                    Some(Ok(Message::Text(text))) => return Ok(self.parser.frame(text.as_str())),
                    Some(Ok(Message::Binary(data))) => {
                        return Ok(std::str::from_utf8(&data)
                            .map_or(WsFrame::Malformed, |text| self.parser.frame(text)));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| format!(" ({}: {})", u16::from(f.code), classify::excerpt(&f.reason)));
                        return Err(classify::transient(format!(
                            "the chat gateway closed the connection{}",
                            reason.unwrap_or_default()
                        )));
                    }
                    Some(Ok(_)) => {}
                },
                () = tokio::time::sleep_until(until) => return Err(classify::timeout(waiting_for)),
                _ = self.heartbeat.tick() => self.send(&heartbeat()).await?,
            }
        }
    }
}

/// A frame that is not a gateway event is dropped; the answer goes on.
fn skipped_frame() {
    tracing::debug!("skipped a gateway frame that is not a JSON event");
}

impl FrameSource for WsSource {
    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    async fn pump(&mut self) {
        let until = Instant::now() + self.idle;
        self.read_answer(until, "upstream stream idle").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            mode: "auto".into(),
            message: "hello".into(),
            temperature: 0.8,
            top_p: 0.95,
            reasoning_effort: None,
            file_ids: vec!["file-1".into()],
            temporary: true,
            disable_memory: true,
        }
    }

    #[test]
    fn client_events_have_the_gateway_shape() {
        let create = session_create(&request(), "evt_init_x");
        assert_eq!(create["event"]["type"], "session.create");
        assert_eq!(create["event"]["session"]["model"], "auto");
        assert_eq!(create["event"]["session"]["x_grok"]["is_temporary"], true);
        let item = item_create(&request(), "sess-1");
        assert_eq!(item["session_id"], "sess-1");
        let chunks = &item["event"]["item"]["x_grok"]["input_chunks"];
        assert_eq!(
            chunks[0]["mention"]["target"]["file_mention"]["file_id"],
            "file-1"
        );
        assert_eq!(chunks[1]["text"]["text"], "hello");
        assert_eq!(item["event"]["file_attachment_ids"], json!(["file-1"]));
        assert_eq!(
            response_create("sess-1")["event"]["type"],
            "response.create"
        );
        assert!(
            heartbeat()["event"]["event_id"]
                .as_str()
                .unwrap()
                .starts_with("evt_hb_")
        );
    }
}
