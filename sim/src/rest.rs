//! `POST /rest/app-chat/conversations/new`: the REST chat call answering in NDJSON.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::account::{authenticated_token, sso_token};
use crate::answer::answer_for;
use crate::faults::{self, Faults};
use crate::script::{self, Step};
use crate::stats::CallGuard;
use crate::{MODES, SimState, statsig};

/// Bytes gathered before a chunk goes out when frames are not paced.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks buffered between the answer task and the HTTP body.
const CHUNK_QUEUE: usize = 16;
/// A line that is not valid JSON, for the `malformed` fault.
const MALFORMED_LINE: &[u8] = b"{\"result\":{\"response\":{\"token\":\"\n";

/// The validated part of a chat request the simulator acts on.
struct ChatCall {
    message: String,
    mode: String,
}

pub(crate) async fn conversations_new(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let faults = Faults::for_request(&headers, sso_token(&headers).as_deref());
    // The anti-bot layer sits in front of the application, so it answers first.
    if faults.anti_bot {
        return faults::anti_bot_challenge();
    }
    let Some(token) = authenticated_token(&headers) else {
        return faults::unauthorized();
    };
    if faults.unauthorized {
        return faults::unauthorized();
    }
    if faults.blocked {
        return faults::blocked();
    }
    if !statsig::is_accepted(&headers) {
        return faults::anti_bot_challenge();
    }
    if let Ok(request) = serde_json::from_slice::<Value>(&body)
        && crate::image_edit::is_edit(&request)
    {
        return crate::image_edit::respond(&state, &token, &request, faults);
    }
    if let Ok(request) = serde_json::from_slice::<Value>(&body)
        && crate::video::is_video(&request)
    {
        return crate::video::respond(&state, &token, &request, faults);
    }
    let call = match validate(&headers, &body) {
        Ok(call) => call,
        Err(message) => return faults::bad_request(message),
    };
    if faults.rate_limited {
        return faults::rate_limited(state.config.rate_limit_window_secs);
    }
    if faults.server_error {
        return faults::server_error();
    }

    let answer = answer_for(&call.message);
    let steps = script::build(&answer, faults, &state.config);
    let guard = state.stats.begin_call(&token, &call.mode);
    let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
    let writer = NdjsonWriter {
        tx,
        buffer: BytesMut::new(),
        shutdown: state.shutdown.clone(),
    };
    tokio::spawn(stream_answer(writer, steps, guard));

    let body = Body::from_stream(ReceiverStream::new(rx));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn validate(headers: &HeaderMap, body: &[u8]) -> Result<ChatCall, &'static str> {
    let has_request_id = headers
        .get("x-xai-request-id")
        .is_some_and(|v| !v.as_bytes().is_empty());
    if !has_request_id {
        return Err("x-xai-request-id header is required");
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err("Content-Type must be application/json");
    }
    let request: Value =
        serde_json::from_slice(body).map_err(|_| "request body is not valid JSON")?;
    let message = request
        .get("message")
        .and_then(Value::as_str)
        .ok_or("message must be a string")?;
    let mode = request
        .get("modeId")
        .and_then(Value::as_str)
        .filter(|mode| MODES.contains(mode))
        .ok_or("modeId must be one of fast, auto, expert, heavy")?;
    Ok(ChatCall {
        message: message.to_owned(),
        mode: mode.to_owned(),
    })
}

/// The client went away or the simulator is shutting down.
struct Gone;

/// Gathers NDJSON lines and hands them to the response body in chunks.
struct NdjsonWriter {
    /// An `Err` makes the server abort the response mid-body (the `reset` fault).
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: BytesMut,
    shutdown: CancellationToken,
}

impl NdjsonWriter {
    async fn frame(&mut self, frame: &Value) -> Result<(), Gone> {
        let mut line = serde_json::to_vec(frame).expect("a JSON value always serialises");
        line.push(b'\n');
        self.raw(&line).await
    }

    async fn raw(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        self.buffer.put_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.tx.send(Ok(chunk)).await.map_err(|_| Gone)
    }

    /// Sends what is gathered, then aborts the response without its end.
    async fn reset(&mut self) -> Result<(), Gone> {
        self.flush().await?;
        let abort = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset");
        self.tx.send(Err(abort)).await.map_err(|_| Gone)
    }

    /// Sends what is gathered, then waits, giving up early when nobody is listening any more.
    async fn pause(&mut self, delay: Duration) -> Result<(), Gone> {
        self.flush().await?;
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.tx.closed() => Err(Gone),
            () = self.shutdown.cancelled() => Err(Gone),
        }
    }
}

async fn stream_answer(mut out: NdjsonWriter, steps: Vec<Step>, guard: CallGuard) {
    // The guard lives as long as the stream, so the call counts as in flight until it ends.
    let _in_flight = guard;
    let _ = write_answer(&mut out, steps).await;
}

async fn write_answer(out: &mut NdjsonWriter, steps: Vec<Step>) -> Result<(), Gone> {
    let conversation_id = uuid::Uuid::new_v4().to_string();
    let response_id = uuid::Uuid::new_v4().to_string();
    let mut answered = String::new();
    out.frame(&json!({"result": {"conversation": {
        "conversationId": conversation_id,
        "title": "New conversation",
        "temporary": true,
    }}}))
    .await?;
    for step in steps {
        match step {
            Step::Pause(delay) => out.pause(delay).await?,
            Step::Reasoning(token) => out.frame(&token_frame(&token, true, &response_id)).await?,
            Step::Text(token) => {
                answered.push_str(&token);
                out.frame(&token_frame(&token, false, &response_id)).await?;
            }
            Step::Malformed => out.raw(MALFORMED_LINE).await?,
            Step::Cut => return out.flush().await,
            Step::Reset => return out.reset().await,
            Step::Huge => {
                let token = "x".repeat(script::HUGE_FRAME_BYTES);
                out.frame(&token_frame(&token, false, &response_id)).await?
            }
        }
    }
    // The final message repeats the whole streamed text, as the upstream's does.
    out.frame(&json!({"result": {"response": {"modelResponse": {
        "responseId": response_id,
        "message": answered,
        "sender": "ASSISTANT",
    }}}}))
    .await?;
    out.frame(&json!({"result": {"response": {"isSoftStop": true, "finalMetadata": {}}}}))
        .await?;
    out.flush().await
}

fn token_frame(token: &str, thinking: bool, response_id: &str) -> Value {
    json!({"result": {"response": {
        "token": token,
        "isThinking": thinking,
        "messageTag": if thinking { "analysis" } else { "final" },
        "responseId": response_id,
    }}})
}
