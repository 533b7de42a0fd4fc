//! The gateway's request span, HTTP metrics and `/metrics` route, and the time-to-first-
//! token clock of one completion.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use shared::metrics;

use crate::REQUEST_ID;

/// Route label of requests no route matched (404s, probes of random paths): raw paths
/// would make one series per path.
const UNMATCHED: &str = "unmatched";

/// The span every log line of a request is recorded in: it carries the request id (also
/// returned as `x-request-id`) and continues the caller's trace when a `traceparent`
/// header came with the request.
pub fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = route_of(req);
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        method = %req.method(),
        path = %req.uri().path(),
        route,
        request_id = %id
    );
    shared::telemetry::set_parent_from_headers(&span, req.headers());
    span
}

fn route_of<B>(req: &axum::http::Request<B>) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
}

/// Counts and times every request by route template, method and status. For a streamed
/// answer the time is until the stream opens; the stream's life is in `open_streams`.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = route_of(&req).to_owned();
    let method = metrics::method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    metrics::http_request(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn prometheus() -> Response {
    shared::ops::metrics().await
}

/// Records `grok2api_time_to_first_token_seconds` once, at the first content event.
#[derive(Debug)]
pub struct FirstToken {
    model: &'static str,
    started: Instant,
    seen: bool,
}

impl FirstToken {
    /// Starts the clock for a request for `model` that began at `started`.
    pub fn new(model: &'static str, started: Instant) -> Self {
        Self {
            model,
            started,
            seen: false,
        }
    }

    /// A content event (text or reasoning) arrived.
    pub fn content(&mut self) {
        if !self.seen {
            self.seen = true;
            metrics::time_to_first_token(self.model, self.started);
        }
    }
}
