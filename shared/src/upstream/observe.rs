//! Metrics and trace spans for upstream calls: every call counts in
//! `grok2api_upstream_requests_total{operation,outcome}` and
//! `grok2api_upstream_duration_seconds{operation}`, inside an `upstream` client span.
//!
//! One-shot calls go through [`call`]; a streamed answer through [`stream`], which keeps
//! the span open and the clock running until the stream ends or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use futures::stream::BoxStream;
use tracing::Instrument;

use super::{ChatChunk, ChatStream, UpstreamError};
use crate::metrics;

/// A client span for one upstream call, child of the current span.
pub(crate) fn span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "upstream",
        otel.name = %format_args!("upstream {operation}"),
        otel.kind = "client",
        operation,
        outcome = tracing::field::Empty
    )
}

fn finish(span: &tracing::Span, operation: &'static str, outcome: &'static str, started: Instant) {
    span.record("outcome", outcome);
    metrics::upstream_call(operation, outcome, started.elapsed());
}

fn outcome_of<T>(result: &Result<T, UpstreamError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => metrics::upstream_outcome(&e.kind),
    }
}

/// Runs a one-shot upstream call inside its span and records it.
pub(crate) async fn call<T>(
    operation: &'static str,
    fut: impl Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    let span = span(operation);
    let started = Instant::now();
    let result = fut.instrument(span.clone()).await;
    finish(&span, operation, outcome_of(&result), started);
    result
}

/// Opens a streamed call inside its span. A failed open is recorded at once; an opened
/// stream is recorded when it ends (`Done`, an error, or an early end) or is dropped
/// before that (`cancelled`).
pub(crate) async fn stream(
    operation: &'static str,
    open: impl Future<Output = Result<ChatStream, UpstreamError>>,
) -> Result<ChatStream, UpstreamError> {
    let span = span(operation);
    let started = Instant::now();
    match open.instrument(span.clone()).await {
        Ok(inner) => Ok(Box::pin(Observed {
            inner,
            operation,
            started,
            span,
            finished: false,
        })),
        Err(e) => {
            finish(
                &span,
                operation,
                metrics::upstream_outcome(&e.kind),
                started,
            );
            Err(e)
        }
    }
}

/// Opens a streamed media call (images, edits, video) inside its span. The call counts as
/// `ok` at its first output item (`is_output`), as the error's outcome when it fails before
/// that, `transient` when it ends without output, and `cancelled` when dropped first.
pub(crate) async fn media_stream<T: Send + 'static>(
    operation: &'static str,
    open: impl Future<Output = Result<BoxStream<'static, Result<T, UpstreamError>>, UpstreamError>>,
    is_output: fn(&T) -> bool,
) -> Result<BoxStream<'static, Result<T, UpstreamError>>, UpstreamError> {
    let span = span(operation);
    let started = Instant::now();
    match open.instrument(span.clone()).await {
        Ok(inner) => Ok(Box::pin(ObservedMedia {
            inner,
            is_output,
            operation,
            started,
            span,
            finished: false,
        })),
        Err(e) => {
            finish(
                &span,
                operation,
                metrics::upstream_outcome(&e.kind),
                started,
            );
            Err(e)
        }
    }
}

struct ObservedMedia<T> {
    inner: BoxStream<'static, Result<T, UpstreamError>>,
    is_output: fn(&T) -> bool,
    operation: &'static str,
    started: Instant,
    /// Held so the span lasts as long as the answer streams.
    span: tracing::Span,
    finished: bool,
}

impl<T> ObservedMedia<T> {
    fn end(&mut self, outcome: &'static str) {
        if !self.finished {
            self.finished = true;
            finish(&self.span, self.operation, outcome, self.started);
        }
    }
}

impl<T> Stream for ObservedMedia<T> {
    type Item = Result<T, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin (the inner stream is boxed).
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(item))) if (this.is_output)(item) => this.end("ok"),
            Poll::Ready(Some(Err(e))) => this.end(metrics::upstream_outcome(&e.kind)),
            Poll::Ready(None) => this.end("transient"),
            _ => {}
        }
        polled
    }
}

impl<T> Drop for ObservedMedia<T> {
    fn drop(&mut self) {
        self.end("cancelled");
    }
}

struct Observed {
    inner: ChatStream,
    operation: &'static str,
    started: Instant,
    /// Held so the span lasts as long as the answer streams.
    span: tracing::Span,
    finished: bool,
}

impl Observed {
    fn end(&mut self, outcome: &'static str) {
        if !self.finished {
            self.finished = true;
            finish(&self.span, self.operation, outcome, self.started);
        }
    }
}

impl Stream for Observed {
    type Item = Result<ChatChunk, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(ChatChunk::Done { .. }))) => this.end("ok"),
            Poll::Ready(Some(Err(e))) => this.end(metrics::upstream_outcome(&e.kind)),
            // The caller treats an answer that stops without `Done` as a transient failure.
            Poll::Ready(None) => this.end("transient"),
            _ => {}
        }
        polled
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.end("cancelled");
    }
}
