//! Submitting a job: subscribe to its events, then publish it, and cancel it if the caller
//! goes away before it ends.

use std::sync::Arc;
use std::time::Duration;

use shared::bus::EventBus;
use shared::job::JobEnvelope;
use shared::queue::QueueError;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ApiError;
use crate::feed::EventFeed;
use crate::state::AppState;

/// Publishes `job` and returns the feed of its events. The subscription is taken first,
/// because a live bus drops events nobody listens to.
pub async fn submit(
    state: &AppState,
    job: &JobEnvelope,
    timeout: Duration,
) -> Result<EventFeed, ApiError> {
    let bus = state.backends.bus.clone();
    let live = bus.subscribe(job.id).await.map_err(|e| {
        tracing::error!(error = %e, "event bus subscribe failed");
        ApiError::unavailable("The event bus is unavailable, try again shortly", 2)
    })?;
    let published = state
        .backends
        .queue
        .publish(job)
        .instrument(tracing::info_span!("publish", otel.kind = "producer", job_id = %job.id))
        .await;
    let outcome = match &published {
        Ok(()) => "ok",
        Err(QueueError::Full) => "full",
        Err(_) => "unavailable",
    };
    shared::metrics::job_published(job.kind, outcome);
    published.map_err(|e| match e {
        QueueError::Full => {
            ApiError::unavailable("The server is at capacity, try again shortly", 1)
        }
        other => {
            tracing::error!(error = %other, "job publish failed");
            ApiError::unavailable("The job queue is unavailable, try again shortly", 2)
        }
    })?;
    Ok(EventFeed::new(bus, job.id, live, Instant::now() + timeout))
}

/// Sets the job's cancel flag when dropped, unless disarmed because the job ended.
/// Dropping happens when the caller disconnects (axum drops the handler or the body stream).
pub struct CancelOnDrop {
    bus: Arc<dyn EventBus>,
    job_id: Uuid,
    armed: bool,
}

impl CancelOnDrop {
    pub fn new(bus: Arc<dyn EventBus>, job_id: Uuid) -> Self {
        Self {
            bus,
            job_id,
            armed: true,
        }
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (bus, job_id) = (self.bus.clone(), self.job_id);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // Dropped inside the request's span: keep its request id on these lines.
            let span = tracing::Span::current();
            handle.spawn(
                async move {
                    if let Err(e) = bus.cancel(job_id).await {
                        tracing::warn!(%job_id, error = %e, "could not cancel abandoned job");
                    } else {
                        tracing::debug!(%job_id, "caller left; job cancelled");
                    }
                }
                .instrument(span),
            );
        }
    }
}
