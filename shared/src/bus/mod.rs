//! The EventBus seam: job events from workers back to whichever gateway holds the caller.
//!
//! Two implementations: [`memory`] (in-process broadcast plus a short replay buffer) and
//! [`redis`] (`PUBLISH` for live fan-out plus a capped, expiring Redis Stream per job for
//! replay). Both pass `shared/tests/it/bus_conformance.rs`.
//!
//! Contract:
//! - `subscribe` returns only once the subscription is live: an event published after it
//!   returns is delivered to it. Gateways subscribe *before* publishing the job.
//! - Live subscriptions are bounded; a subscriber that falls too far behind loses its
//!   subscription (the stream ends) rather than growing memory, and recovers with `replay`.
//! - `replay` returns the job's recorded events after a cursor, in publish order, for as
//!   long as the retention lasts (`bus.replay_ttl_secs`, `bus.replay_max_events`).
//! - `cancel` sets the job's cancel flag (with the same retention); workers poll
//!   `is_cancelled` and stop the upstream call.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::event::JobEvent;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event bus error: {0}")]
    Other(String),
}

pub type EventStream = BoxStream<'static, JobEvent>;

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Live events of one job, from the moment this returns.
    async fn subscribe(&self, job_id: Uuid) -> Result<EventStream, BusError>;

    /// Records the event for replay and fans it out to live subscribers.
    async fn publish(&self, event: &JobEvent) -> Result<(), BusError>;

    /// Recorded events of one job in publish order; with `after`, only those recorded
    /// after the event with that `(attempt, seq)`.
    async fn replay(
        &self,
        job_id: Uuid,
        after: Option<(u32, u64)>,
    ) -> Result<Vec<JobEvent>, BusError>;

    /// Asks whoever runs the job to stop.
    async fn cancel(&self, job_id: Uuid) -> Result<(), BusError>;

    async fn is_cancelled(&self, job_id: Uuid) -> Result<bool, BusError>;

    async fn ping(&self) -> Result<(), BusError>;
}
