//! `POST /v1/chat/completions`: validate, publish a chat job, and answer from its events,
//! as one JSON completion or as an SSE stream of chunks.

pub mod resume;
pub mod validate;
pub mod wire;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use shared::config::ReasoningFormat;
use shared::event::{EventBody, JobError, JobEvent};
use shared::job::{ChatJob, JobEnvelope, JobPayload};
use shared::time::{now_ms, now_secs};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::feed::{EventFeed, FeedError};
use crate::jobs::{CancelOnDrop, submit};
use crate::observe::FirstToken;
use crate::state::AppState;
use validate::ChatInput;
use wire::ChunkWriter;

/// SSE events buffered per stream; a client slower than this applies backpressure to the feed.
const STREAM_BUFFER: usize = 64;

pub async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let input = validate::validate(&body)?;
    // A streamed request with `Last-Event-ID` continues its earlier job (see resume.rs).
    let resume_point = if input.stream {
        resume::requested(&headers)?
    } else {
        None
    };
    if matches!(
        input.model.kind,
        shared::models::ModelKind::Image | shared::models::ModelKind::ImageEdit
    ) {
        // The image models answer in the Images API's shape, as the original product does.
        return crate::images::chat::completions(&state, &body, input.model).await;
    }
    let want_reasoning = match &input.reasoning_effort {
        None => state.backends.live.get().app.thinking,
        Some(effort) => effort != "none",
    };
    let (payload, timeout) = if input.model.kind == shared::models::ModelKind::Video {
        crate::videos::chat::payload(&state, &body, &input, want_reasoning)?
    } else {
        let timeout = Duration::from_secs(state.backends.live.get().chat.timeout_secs);
        (JobPayload::Chat(chat_job(&input, want_reasoning)), timeout)
    };
    let owner = resume::Owner::of(&headers);
    let (mut feed, resume_after) = match resume_point {
        Some(point) => (
            resume::feed(&state, &owner, &point, timeout).await?,
            Some(point.after),
        ),
        None => {
            let job = JobEnvelope::new(payload, now_ms() + timeout.as_millis() as i64);
            (submit(&state, &job, timeout).await?, None)
        }
    };
    let job_id = feed.job_id();
    let mut guard = CancelOnDrop::new(state.backends.bus.clone(), job_id);
    let first_token = FirstToken::new(input.model.id, started);

    // Wait for the first event before answering, so a job that fails at once (no token,
    // upstream refused) gets a proper HTTP status instead of a 200 stream with an error.
    let first = match feed.next().await {
        Some(Ok(ev)) => ev,
        Some(Err(FeedError::Timeout)) => return Err(timeout_error()),
        None => return Err(ApiError::internal()),
    };
    if let EventBody::Error(e) = &first.body {
        guard.disarm();
        return Err(ApiError::from(e));
    }
    let writer = ChunkWriter::new(
        format!("chatcmpl-{}", job_id.simple()),
        now_secs(),
        input.model.id,
        state.backends.live.get().app.reasoning_format,
        want_reasoning,
    );
    let mut response = if input.stream {
        let start = StreamStart {
            first,
            resume_after,
            owner,
        };
        stream_response(state, feed, start, writer, guard, first_token)
    } else {
        let meta = CompletionMeta {
            id: format!("chatcmpl-{}", job_id.simple()),
            created: now_secs(),
            model: input.model.id.to_owned(),
            reasoning_field: want_reasoning
                && state.backends.live.get().app.reasoning_format
                    == ReasoningFormat::ReasoningContent,
        };
        collect_response(feed, first, &meta, guard, first_token).await?
    };
    if let Ok(v) = HeaderValue::from_str(&job_id.to_string()) {
        response.headers_mut().insert("x-job-id", v);
    }
    Ok(response)
}

fn chat_job(input: &ChatInput, want_reasoning: bool) -> ChatJob {
    ChatJob {
        model: input.model.id.to_owned(),
        upstream_mode: input.model.upstream_mode.to_owned(),
        tier: input.model.tier,
        cost: input.model.cost,
        message: input.message.clone(),
        attachments: input.attachments.clone(),
        temperature: input.temperature,
        top_p: input.top_p,
        reasoning_effort: input.reasoning_effort.clone(),
        want_reasoning,
        stream: input.stream,
    }
}

fn timeout_error() -> ApiError {
    ApiError::new(StatusCode::GATEWAY_TIMEOUT, "The request timed out").with_code("timeout")
}

struct CompletionMeta {
    id: String,
    created: i64,
    model: String,
    reasoning_field: bool,
}

/// Collects the whole answer. A redelivered job simply starts over: the caller has seen
/// nothing yet.
async fn collect_response(
    mut feed: EventFeed,
    first: JobEvent,
    meta: &CompletionMeta,
    mut guard: CancelOnDrop,
    mut first_token: FirstToken,
) -> Result<Response, ApiError> {
    let (mut text, mut reasoning) = (String::new(), String::new());
    let mut attempt = first.attempt;
    let mut next = Some(Ok(first));
    while let Some(item) = next {
        let ev = item.map_err(|FeedError::Timeout| timeout_error())?;
        if ev.attempt != attempt {
            attempt = ev.attempt;
            text.clear();
            reasoning.clear();
        }
        match ev.body {
            EventBody::Delta { text: t } => {
                first_token.content();
                text.push_str(&t)
            }
            EventBody::Reasoning { text: t } => {
                first_token.content();
                reasoning.push_str(&t)
            }
            EventBody::Done { finish_reason, .. } => {
                guard.disarm();
                let reasoning =
                    (meta.reasoning_field && !reasoning.is_empty()).then_some(reasoning.as_str());
                let body = wire::completion(
                    &meta.id,
                    meta.created,
                    &meta.model,
                    &text,
                    reasoning,
                    &finish_reason,
                );
                return Ok(axum::Json(body).into_response());
            }
            EventBody::Error(e) => {
                guard.disarm();
                return Err(ApiError::from(&e));
            }
            EventBody::Started { .. }
            | EventBody::Progress { .. }
            | EventBody::Usage { .. }
            | EventBody::Media(_)
            | EventBody::Batch(_) => {}
        }
        next = feed.next().await;
    }
    Err(ApiError::internal())
}

/// Where a stream begins: its first event and, for a resumed stream, the last event the
/// caller already has (`(attempt, seq)`; nothing up to it is sent again).
struct StreamStart {
    first: JobEvent,
    resume_after: Option<(u32, u64)>,
    /// Whose stream it is: event ids are bound to this key (see resume.rs).
    owner: resume::Owner,
}

/// Streams chunks from a task that follows the feed; the channel between them is bounded,
/// and when the client disconnects the task ends and the job is cancelled.
fn stream_response(
    state: AppState,
    feed: EventFeed,
    start: StreamStart,
    writer: ChunkWriter,
    guard: CancelOnDrop,
    first_token: FirstToken,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(STREAM_BUFFER);
    // In the request's span, so the pump's log lines carry its request id.
    let pump = pump(state, feed, start, writer, guard, first_token, tx);
    tokio::spawn(pump.in_current_span());
    let stream = ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// A sender whose every send gives up after `patience`.
struct PatientSender {
    tx: mpsc::Sender<Event>,
    patience: Duration,
}

impl PatientSender {
    async fn send(&self, event: Event) -> Result<(), ()> {
        self.tx
            .send_timeout(event, self.patience)
            .await
            .map_err(|_| ())
    }
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

async fn pump(
    state: AppState,
    feed: EventFeed,
    start: StreamStart,
    mut writer: ChunkWriter,
    mut guard: CancelOnDrop,
    mut first_token: FirstToken,
    tx: mpsc::Sender<Event>,
) {
    let _open = shared::metrics::OpenStream::open();
    let job_id = feed.job_id();
    pump_events(
        state,
        feed,
        start,
        &mut writer,
        &mut guard,
        &mut first_token,
        tx,
    )
    .await;
    tracing::debug!(%job_id, "stream ended");
}

async fn pump_events(
    state: AppState,
    mut feed: EventFeed,
    start: StreamStart,
    writer: &mut ChunkWriter,
    guard: &mut CancelOnDrop,
    first_token: &mut FirstToken,
    tx: mpsc::Sender<Event>,
) {
    let StreamStart {
        first,
        resume_after,
        owner,
    } = start;
    // The attempt whose events the caller is getting; a redelivered job may take over only
    // while no text has gone out.
    let mut attempt = first.attempt;
    let mut text_sent = false;
    // A client that stops reading fills the bounded channel; past this wait it is cut off
    // and its job cancelled, rather than holding the job and its account open forever.
    let patience = Duration::from_secs(state.config.server.slow_client_timeout_secs);
    let tx = PatientSender { tx, patience };
    // A resumed stream already has the opening chunk and every event up to its cursor.
    if resume_after.is_none() && tx.send(data(&writer.role())).await.is_err() {
        return;
    }
    let ids = resume::StreamIds::new(&owner, first.job_id);
    let mut next = Some(Ok(first));
    while let Some(item) = next {
        let mut out: Vec<Value> = Vec::new();
        let mut end: Option<JobError> = None;
        let mut event_id = None;
        let mut replayed = false;
        if let Ok(ev) = &item {
            event_id = Some(ids.event(ev.attempt, ev.seq));
            replayed = resume_after.is_some_and(|after| (ev.attempt, ev.seq) <= after);
        }
        match item {
            Err(FeedError::Timeout) => {
                end = Some(JobError::new(504, "timeout", "The request timed out"))
            }
            Ok(ev) if ev.attempt != attempt && text_sent => {
                // A redelivered job would produce a different answer; splicing it onto what
                // the caller already has would be worse than saying so.
                tracing::warn!(job_id = %feed.job_id(), "job redelivered after partial output");
                end = Some(JobError::new(
                    502,
                    "stream_interrupted",
                    "The answer was interrupted; please retry",
                ));
            }
            Ok(ev) => {
                attempt = ev.attempt;
                match ev.body {
                    EventBody::Delta { text } => {
                        first_token.content();
                        text_sent = true;
                        out.extend(writer.text(&text));
                    }
                    EventBody::Reasoning { text } => {
                        first_token.content();
                        text_sent = true;
                        out.extend(writer.reasoning(&text));
                    }
                    EventBody::Done { finish_reason, .. } => {
                        guard.disarm();
                        out.extend(writer.finish(&finish_reason));
                    }
                    EventBody::Error(e) => end = Some(e),
                    EventBody::Started { .. }
                    | EventBody::Progress { .. }
                    | EventBody::Usage { .. }
                    | EventBody::Media(_)
                    | EventBody::Batch(_) => {}
                }
            }
        }
        if replayed {
            out.clear();
        }
        let last = out.len().saturating_sub(1);
        for (i, chunk) in out.iter().enumerate() {
            let mut event = data(chunk);
            // The id marks the whole job event as received, so it goes on its last chunk.
            if i == last
                && let Some(id) = &event_id
            {
                event = event.id(id.clone());
            }
            if tx.send(event).await.is_err() {
                tracing::debug!(job_id = %feed.job_id(), "client not reading; stream cut off");
                return;
            }
        }
        if let Some(e) = end {
            if e.code != "stream_interrupted" && e.code != "timeout" {
                guard.disarm();
            }
            let body = ApiError::from(&e).body();
            let _ = tx.send(data(&body)).await;
            let _ = tx.send(Event::default().data("[DONE]")).await;
            return;
        }
        next = tokio::select! {
            n = feed.next() => n,
            _ = state.shutdown.cancelled() => {
                let e = JobError::new(503, "server_shutting_down", "The server is restarting; please retry");
                let _ = tx.send(data(&ApiError::from(&e).body())).await;
                let _ = tx.send(Event::default().data("[DONE]")).await;
                return;
            }
        };
        if next.is_none() {
            let _ = tx.send(Event::default().data("[DONE]")).await;
        }
    }
}
