//! `GET /ws/mgw/?uid=<uuid>`: chat over the WebSocket gateway.
//!
//! Flow: the client sends `session.create`; the server answers `session.created` and
//! `conversation.attached`; then for each turn the client sends `conversation.item.create`
//! and `response.create`, and the server streams `response.chunk` events ending with
//! `response.done`. Client `ping` events may arrive at any time and are ignored.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use serde_json::{Value, json};

use crate::account::{authenticated_token, cookie, sso_token, user_id_for};
use crate::answer::answer_for;
use crate::faults::{self, Faults};
use crate::script::{self, Step};
use crate::{MODES, SimState};

/// The only origin the gateway accepts.
const ALLOWED_ORIGIN: &str = "https://grok.com";
/// Largest client message accepted, as the upstream's read limit.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long to wait for the client's answer to a close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(5);
/// A text frame that is not valid JSON, for the `malformed` fault.
const MALFORMED_FRAME: &str = "{\"event\":{\"type\":\"response.chunk\",\"chunk\":{\"text\":";

pub(crate) async fn upgrade(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let faults = Faults::for_request(&headers, sso_token(&headers).as_deref());
    if faults.anti_bot {
        return faults::anti_bot_challenge();
    }
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    if origin != Some(ALLOWED_ORIGIN) {
        return faults::forbidden("origin not allowed");
    }
    let Some(token) = authenticated_token(&headers) else {
        return faults::unauthorized();
    };
    let expected_uid = user_id_for(&token);
    let query_uid = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("uid="));
    let cookie_uid = cookie(&headers, "x-userid");
    if query_uid != Some(expected_uid.as_str()) || cookie_uid.as_deref() != query_uid {
        return faults::unauthorized();
    }
    if faults.unauthorized {
        return faults::unauthorized();
    }
    if faults.blocked {
        return faults::blocked();
    }
    if faults.rate_limited {
        return faults::rate_limited(state.config.rate_limit_window_secs);
    }
    if faults.server_error {
        return faults::server_error();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            Gateway {
                socket,
                state,
                token,
                faults,
            }
            .run()
        })
}

/// The connection is over: the client left, the simulator shut down, or it was closed.
struct Ended;

/// What a `session.create` asked for.
struct SessionRequest {
    event_id: String,
    model: String,
    conversation_id: Option<String>,
}

struct Gateway {
    socket: WebSocket,
    state: Arc<SimState>,
    token: String,
    faults: Faults,
}

impl Gateway {
    async fn run(mut self) {
        let _ = self.converse().await;
    }

    async fn converse(&mut self) -> Result<(), Ended> {
        let create = self.next_event().await?;
        let session = match parse_session_create(&create) {
            Ok(session) => session,
            Err(message) => return Err(self.fail(message).await),
        };
        let conversation_id = session
            .conversation_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.feed(json!({"session_id": conversation_id, "event": {
            "type": "session.created",
            "client_event_id": session.event_id,
            "session": {"id": conversation_id, "model": session.model},
        }}))
        .await?;
        self.feed(json!({"event": {
            "type": "conversation.attached",
            "conversation": {"id": conversation_id},
        }}))
        .await?;
        self.flush().await?;

        loop {
            let item = self.next_event().await?;
            let prompt = match parse_item_create(&item, &conversation_id) {
                Ok(prompt) => prompt,
                Err(message) => return Err(self.fail(message).await),
            };
            let response = self.next_event().await?;
            if let Err(message) = check_response_create(&response, &conversation_id) {
                return Err(self.fail(message).await);
            }
            let answer = answer_for(&prompt);
            let steps = script::build(&answer, self.faults, &self.state.config);
            let _in_flight = self.state.stats.begin_call(&self.token, &session.model);
            self.stream(steps).await?;
        }
    }

    async fn stream(&mut self, steps: Vec<Step>) -> Result<(), Ended> {
        for step in steps {
            match step {
                Step::Pause(delay) => {
                    self.flush().await?;
                    self.pause(delay).await?;
                }
                Step::Reasoning(token) => self.feed(chunk(&token, "CHANNEL_ANALYSIS")).await?,
                Step::Text(token) => {
                    self.feed(chunk(&token, "CHANNEL_ASSISTANT_RESPONSE"))
                        .await?;
                }
                Step::Malformed => self.feed_text(MALFORMED_FRAME.to_owned()).await?,
                Step::Cut => {
                    self.close(close_code::NORMAL, "").await;
                    return Err(Ended);
                }
                // Dropping the socket without a close frame is what a reset looks like.
                Step::Reset => {
                    self.flush().await?;
                    return Err(Ended);
                }
                Step::Huge => {
                    let token = "x".repeat(script::HUGE_FRAME_BYTES);
                    self.feed(chunk(&token, "CHANNEL_ASSISTANT_RESPONSE"))
                        .await?;
                }
            }
        }
        let response_id = format!("response-{}", uuid::Uuid::new_v4());
        self.feed(json!({"event": {
            "type": "response.done",
            "response": {"id": response_id, "status": "completed"},
        }}))
        .await?;
        self.flush().await
    }

    /// The next client event, skipping pings; protocol violations end the connection.
    async fn next_event(&mut self) -> Result<Value, Ended> {
        loop {
            let message = tokio::select! {
                message = self.socket.recv() => message,
                () = self.state.shutdown.cancelled() => return Err(Ended),
            };
            if let Some(event) = self.accept(message).await? {
                return Ok(event);
            }
        }
    }

    /// Waits while streaming, still answering what the client sends meanwhile.
    async fn pause(&mut self, delay: Duration) -> Result<(), Ended> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            let message = tokio::select! {
                () = &mut sleep => return Ok(()),
                () = self.state.shutdown.cancelled() => return Err(Ended),
                message = self.socket.recv() => message,
            };
            if self.accept(message).await?.is_some() {
                return Err(self.fail("a response is already in progress").await);
            }
        }
    }

    /// Classifies one received message: `None` for what needs no answer (pings), the event
    /// for anything else, `Ended` when the client left or sent something unacceptable.
    async fn accept(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
    ) -> Result<Option<Value>, Ended> {
        let text = match message {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(Ended),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(None),
            Some(Ok(Message::Binary(_))) => {
                return Err(self.fail("binary frames are not accepted").await);
            }
            Some(Ok(Message::Text(text))) => text,
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
            return Err(self.fail("message is not valid JSON").await);
        };
        if event.pointer("/event/type").and_then(Value::as_str) == Some("ping") {
            return Ok(None);
        }
        Ok(Some(event))
    }

    async fn feed(&mut self, event: Value) -> Result<(), Ended> {
        self.feed_text(event.to_string()).await
    }

    /// Queues a frame; it goes out at the next flush or when the write buffer fills.
    async fn feed_text(&mut self, text: String) -> Result<(), Ended> {
        self.socket
            .feed(Message::Text(text.into()))
            .await
            .map_err(|_| Ended)
    }

    async fn flush(&mut self) -> Result<(), Ended> {
        SinkExt::<Message>::flush(&mut self.socket)
            .await
            .map_err(|_| Ended)
    }

    /// Reports a protocol violation in-band and closes the connection.
    async fn fail(&mut self, message: &str) -> Ended {
        let error = json!({"event": {
            "type": "error",
            "error": {"code": "invalid_request", "message": message},
        }});
        if self.feed(error).await.is_ok() {
            self.close(close_code::POLICY, "invalid_request").await;
        }
        Ended
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if self.socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // Let the client answer the close, so it sees an orderly closing handshake.
        let _ = tokio::time::timeout(CLOSE_DRAIN, async {
            while let Some(Ok(_)) = self.socket.recv().await {}
        })
        .await;
    }
}

fn chunk(token: &str, channel: &str) -> Value {
    json!({"event": {
        "type": "response.chunk",
        "chunk": {"text": {"text": token, "channel": channel}},
    }})
}

fn event_of<'a>(message: &'a Value, kind: &str) -> Result<&'a Value, &'static str> {
    let event = message.get("event").ok_or("event is required")?;
    if event.get("type").and_then(Value::as_str) != Some(kind) {
        return Err("unexpected event type");
    }
    let has_id = event
        .get("event_id")
        .and_then(Value::as_str)
        .is_some_and(|id| !id.is_empty());
    if !has_id {
        return Err("event.event_id is required");
    }
    Ok(event)
}

fn parse_session_create(message: &Value) -> Result<SessionRequest, &'static str> {
    let event = event_of(message, "session.create")?;
    let session = event.get("session").ok_or("event.session is required")?;
    let model = session
        .get("model")
        .and_then(Value::as_str)
        .filter(|model| MODES.contains(model))
        .ok_or("session.model must be one of fast, auto, expert, heavy")?;
    if !session.get("x_grok").is_some_and(Value::is_object) {
        return Err("session.x_grok must be an object");
    }
    let conversation_id = match session.get("conversation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(_) => return Err("session.conversation_id must be a string"),
    };
    Ok(SessionRequest {
        event_id: event["event_id"].as_str().unwrap_or_default().to_owned(),
        model: model.to_owned(),
        conversation_id,
    })
}

fn check_session_id(message: &Value, conversation_id: &str) -> Result<(), &'static str> {
    if message.get("session_id").and_then(Value::as_str) != Some(conversation_id) {
        return Err("session_id does not match the attached conversation");
    }
    Ok(())
}

/// Validates a `conversation.item.create` and returns its prompt (all text chunks, joined).
fn parse_item_create(message: &Value, conversation_id: &str) -> Result<String, &'static str> {
    check_session_id(message, conversation_id)?;
    let event = event_of(message, "conversation.item.create")?;
    let item = event.get("item").ok_or("event.item is required")?;
    if item.get("type").and_then(Value::as_str) != Some("message") {
        return Err("item.type must be message");
    }
    if item.get("role").and_then(Value::as_str) != Some("user") {
        return Err("item.role must be user");
    }
    let chunks = item
        .pointer("/x_grok/input_chunks")
        .and_then(Value::as_array)
        .ok_or("item.x_grok.input_chunks must be an array")?;
    let mut prompt = String::new();
    let mut has_text = false;
    for chunk in chunks {
        if let Some(text) = chunk.get("text") {
            let text = text
                .get("text")
                .and_then(Value::as_str)
                .ok_or("a text chunk must carry text.text")?;
            prompt.push_str(text);
            has_text = true;
        }
    }
    if !has_text {
        return Err("input_chunks must contain a text chunk");
    }
    Ok(prompt)
}

fn check_response_create(message: &Value, conversation_id: &str) -> Result<(), &'static str> {
    check_session_id(message, conversation_id)?;
    event_of(message, "response.create").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_create_needs_event_id_model_and_x_grok() {
        let good = json!({"event": {"type": "session.create", "event_id": "evt_init_1",
            "session": {"model": "fast", "x_grok": {}}}});
        let session = parse_session_create(&good).ok().unwrap();
        assert_eq!(
            (session.event_id.as_str(), session.model.as_str()),
            ("evt_init_1", "fast")
        );
        assert!(session.conversation_id.is_none());
        for bad in [
            json!({"event": {"type": "session.create", "session": {"model": "fast", "x_grok": {}}}}),
            json!({"event": {"type": "session.create", "event_id": "e",
                "session": {"model": "grok-4", "x_grok": {}}}}),
            json!({"event": {"type": "session.create", "event_id": "e",
                "session": {"model": "fast"}}}),
            json!({"event": {"type": "response.create", "event_id": "e"}}),
        ] {
            assert!(parse_session_create(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn item_create_joins_text_chunks_and_checks_the_session() {
        let item = json!({"session_id": "c1", "event": {"type": "conversation.item.create",
            "event_id": "evt_msg_1", "item": {"type": "message", "role": "user",
            "x_grok": {"input_chunks": [
                {"mention": {"target": {"file_mention": {"file_id": "f"}}}},
                {"text": {"text": "hello "}}, {"text": {"text": "world"}}]}}}});
        assert_eq!(parse_item_create(&item, "c1").unwrap(), "hello world");
        assert!(parse_item_create(&item, "c2").is_err());
        let mut no_text = item.clone();
        no_text["event"]["item"]["x_grok"]["input_chunks"] = json!([]);
        assert!(parse_item_create(&no_text, "c1").is_err());
        let mut assistant = item.clone();
        assistant["event"]["item"]["role"] = json!("assistant");
        assert!(parse_item_create(&assistant, "c1").is_err());
    }
}
