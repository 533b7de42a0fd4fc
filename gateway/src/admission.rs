//! Admission control for the client API: a gateway serves at most `server.max_in_flight`
//! requests at once, and one key of `app.api_key` at most `server.max_in_flight_per_key`
//! (keys made through the admin API have per-minute rate limits instead). Beyond that a
//! request is refused at once (503, or 429 for the per-key cap, both with `Retry-After`)
//! instead of waiting in an unbounded line, so overload costs the caller a quick retry and
//! the gateway no memory.
//!
//! Refusals show in `grok2api_http_requests_total` by status.
//!
//! A streamed answer holds its slot until its body ends, since an open stream is work in
//! progress (a job, an account lease); other answers release it when they are built.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use shared::config::Config;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Seconds a refused caller is asked to wait: slots free up as fast as answers finish.
const RETRY_AFTER_SECS: u64 = 1;

#[derive(Clone)]
pub struct Admission(Arc<Slots>);

struct Slots {
    global: Arc<Semaphore>,
    body_read_timeout: Duration,
    /// One semaphore per configured API key, found by the key's digest.
    per_key: Vec<([u8; 32], Arc<Semaphore>)>,
}

impl Admission {
    pub fn new(config: &Config) -> Self {
        let per_key_cap = config.server.max_in_flight_per_key;
        // Only configured keys get a slot count: with `open_api` any string passes auth, and
        // counting those would let a caller grow this table without bound.
        let per_key = if per_key_cap == 0 {
            Vec::new()
        } else {
            config
                .app
                .api_keys()
                .iter()
                .map(|key| {
                    let digest: [u8; 32] = Sha256::digest(key.expose().as_bytes()).into();
                    (digest, Arc::new(Semaphore::new(per_key_cap)))
                })
                .collect()
        };
        Admission(Arc::new(Slots {
            global: Arc::new(Semaphore::new(config.server.max_in_flight)),
            body_read_timeout: Duration::from_secs(config.server.body_read_timeout_secs),
            per_key,
        }))
    }

    /// The per-key semaphore of the request's key, if that key has a cap.
    fn key_slots(&self, headers: &HeaderMap) -> Option<Arc<Semaphore>> {
        if self.0.per_key.is_empty() {
            return None;
        }
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (_, key) = value.split_once(' ')?;
        let digest = Sha256::digest(key.trim().as_bytes());
        self.0
            .per_key
            .iter()
            .find(|(d, _)| bool::from(d.ct_eq(digest.as_slice())))
            .map(|(_, s)| s.clone())
    }
}

fn overloaded() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server is at capacity, try again shortly",
    )
    .with_code("server_overloaded");
    e.retry_after = Some(RETRY_AFTER_SECS);
    e
}

fn key_busy() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many concurrent requests for this API key, try again shortly",
    )
    .with_code("too_many_concurrent_requests");
    e.retry_after = Some(RETRY_AFTER_SECS);
    e
}

/// Middleware for the client API; it runs after authentication, so callers without a
/// valid key never take a slot.
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let Ok(global) = admission.0.global.clone().try_acquire_owned() else {
        return overloaded().into_response();
    };
    let per_key = match admission.key_slots(request.headers()) {
        None => None,
        Some(slots) => match slots.try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return key_busy().into_response();
            }
        },
    };
    let (parts, body) = request.into_parts();
    let body = with_read_timeout(body, admission.0.body_read_timeout);
    let response = next.run(Request::from_parts(parts, body)).await;
    if is_stream(&response) {
        hold_until_body_ends(response, (global, per_key))
    } else {
        response
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for too long")]
struct BodyStalled;

/// Ends the body with an error when it sends nothing for `idle`, so a client that declares
/// a body and never finishes it cannot hold the request (and its slot) open. The size hint
/// passes through unchanged.
fn with_read_timeout(body: Body, idle: Duration) -> Body {
    Body::new(ReadTimeout {
        inner: body,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
    })
}

struct ReadTimeout {
    inner: Body,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for ReadTimeout {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyStalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn is_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// Moves the permits into the body, so they are released when the stream ends or the
/// client goes away.
fn hold_until_body_ends(
    response: Response,
    permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
) -> Response {
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &permits;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
