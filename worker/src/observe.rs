//! The worker's metrics: how each delivery ended, how long jobs waited and ran, lease
//! requests, and the per-kind queue age gauge.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::backends::Backends;
use shared::event::EventBody;
use shared::job::JobKind;
use shared::metrics::{self, JobOutcome};
use shared::pool::{LeaseOutcome, PoolError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Disposition;

tokio::task_local! {
    /// The terminal event a job's handler published: `Some(true)` for `done`,
    /// `Some(false)` for an error, `None` while there was none.
    static TERMINAL: Cell<Option<bool>>;
}

/// Called for every event a handler publishes; remembers the terminal one.
pub fn note_published(body: &EventBody) {
    let terminal = match body {
        EventBody::Done { .. } => true,
        EventBody::Error(_) => false,
        _ => return,
    };
    // Outside a tracked handler (the dead-letter reporter) there is nothing to note.
    let _ = TERMINAL.try_with(|t| t.set(Some(terminal)));
}

/// Runs a delivery's handler and reports what its outcome counts as.
pub async fn track(
    kind: JobKind,
    handler: impl Future<Output = Disposition>,
) -> (Disposition, Option<JobOutcome>) {
    let started = Instant::now();
    let (disposition, terminal) = TERMINAL
        .scope(Cell::new(None), async {
            let disposition = handler.await;
            (disposition, TERMINAL.with(Cell::get))
        })
        .await;
    metrics::job_duration(kind, started.elapsed());
    let outcome = outcome(disposition, terminal);
    if let Some(outcome) = outcome {
        metrics::job_outcome(kind, outcome);
    }
    (disposition, outcome)
}

/// What a settled delivery counts as. A dead-lettered one is not counted here: the
/// dead-letter reporter counts every dead letter once, whoever sent it there.
fn outcome(disposition: Disposition, terminal: Option<bool>) -> Option<JobOutcome> {
    match (disposition, terminal) {
        (Disposition::Retry, _) => Some(JobOutcome::Retried),
        (Disposition::DeadLetter, _) => None,
        (Disposition::Ack, Some(true)) => Some(JobOutcome::Completed),
        (Disposition::Ack, Some(false)) => Some(JobOutcome::Failed),
        (Disposition::Ack, None) => Some(JobOutcome::Cancelled),
    }
}

/// Asks the pool for a lease, recording how long it took and how it ended.
pub async fn lease(
    request: impl Future<Output = Result<LeaseOutcome, PoolError>>,
) -> Result<LeaseOutcome, PoolError> {
    let started = Instant::now();
    let result = request.await;
    let outcome = match &result {
        Ok(LeaseOutcome::Leased(_)) => "leased",
        Ok(LeaseOutcome::Exhausted { .. }) => "exhausted",
        Err(_) => "error",
    };
    metrics::lease(outcome, started.elapsed());
    result
}

/// The newest job this worker took, per kind: the basis of
/// `grok2api_queue_oldest_age_seconds` (see [`metrics::QUEUE_OLDEST_AGE`]).
#[derive(Clone, Default)]
pub struct QueueAges {
    newest_taken: Arc<Mutex<HashMap<JobKind, Uuid>>>,
}

impl QueueAges {
    /// A delivery of `job_id` was taken: records its queue wait.
    pub fn taken(&self, kind: JobKind, job_id: Uuid) {
        metrics::queue_wait(kind, job_id);
        let mut newest = self.newest_taken.lock().unwrap_or_else(|e| e.into_inner());
        let replace = newest
            .get(&kind)
            .is_none_or(|old| metrics::created_ms(*old) <= metrics::created_ms(job_id));
        if replace {
            newest.insert(kind, job_id);
        }
    }

    /// Updates the gauge of every kind this worker has taken jobs of, every
    /// [`metrics::SAMPLE_INTERVAL`], until `shutdown`.
    pub async fn sample(self, backends: Backends, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(metrics::SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let newest: Vec<(JobKind, Uuid)> = self
                .newest_taken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, id)| (*k, *id))
                .collect();
            for (kind, job_id) in newest {
                match backends.queue.depth(kind).await {
                    Ok(0) => metrics::queue_oldest_age(kind, Duration::ZERO),
                    Ok(_) => {
                        let created = metrics::created_ms(job_id).unwrap_or_default();
                        let age_ms = (shared::time::now_ms() - created).max(0) as u64;
                        metrics::queue_oldest_age(kind, Duration::from_millis(age_ms));
                    }
                    Err(e) => {
                        tracing::debug!(kind = kind.as_str(), error = %e, "queue depth unavailable")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_disposition_and_the_terminal_event() {
        assert_eq!(
            outcome(Disposition::Ack, Some(true)),
            Some(JobOutcome::Completed)
        );
        assert_eq!(
            outcome(Disposition::Ack, Some(false)),
            Some(JobOutcome::Failed)
        );
        assert_eq!(outcome(Disposition::Ack, None), Some(JobOutcome::Cancelled));
        assert_eq!(
            outcome(Disposition::Retry, Some(true)),
            Some(JobOutcome::Retried)
        );
        assert_eq!(outcome(Disposition::DeadLetter, None), None);
    }

    #[tokio::test]
    async fn the_terminal_event_is_seen_by_the_tracker() {
        let (disposition, outcome) = track(JobKind::Chat, async {
            note_published(&EventBody::Delta { text: "a".into() });
            note_published(&EventBody::Error(shared::event::JobError::new(
                500, "x", "y",
            )));
            Disposition::Ack
        })
        .await;
        assert_eq!(disposition, Disposition::Ack);
        assert_eq!(outcome, Some(JobOutcome::Failed));
    }
}
