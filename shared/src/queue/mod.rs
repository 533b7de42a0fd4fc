//! The JobQueue seam: durable delivery of job envelopes from gateways to workers.
//!
//! Two implementations: [`memory`] (bounded in-process channels, for `serve` on embedded
//! backends) and [`rabbitmq`] (durable queue per job kind, publisher confirms, manual acks,
//! prefetch, dead-letter exchange and a delivery limit). Both pass the same conformance
//! suite in `shared/tests/it/queue_conformance.rs`.
//!
//! Contract:
//! - `publish` returns only once the job is durably accepted (a publisher confirm on
//!   RabbitMQ); a full in-process queue answers [`QueueError::Full`] at once.
//! - A consumer holds at most `prefetch` unsettled deliveries.
//! - Every [`Delivery`] is settled exactly once: `ack` after the job's terminal event,
//!   `retry` to hand it back for redelivery (counts toward the delivery limit), or
//!   `dead_letter` to move it to the dead-letter queue at once.
//! - A delivery that is neither acked nor settled because its consumer died is redelivered.
//! - After `delivery_limit` deliveries a job goes to the dead-letter queue instead of being
//!   redelivered; [`JobQueue::consume_dead`] yields those so their callers can be told.

pub mod memory;
pub mod rabbitmq;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::job::{JobEnvelope, JobKind};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The bounded queue is at capacity: the caller should answer 503 with `Retry-After`.
    #[error("job queue is full")]
    Full,
    /// The broker is unreachable, refused the message, or did not confirm in time.
    #[error("job queue unavailable: {0}")]
    Unavailable(String),
    #[error("job queue error: {0}")]
    Other(String),
}

/// Settles one delivery. Implemented by each backend.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), QueueError>;
    /// Hand the job back for redelivery (to any consumer).
    async fn retry(&self) -> Result<(), QueueError>;
    /// Move the job to the dead-letter queue now.
    async fn dead_letter(&self) -> Result<(), QueueError>;
}

/// One delivered job, to be settled exactly once.
pub struct Delivery {
    pub job: JobEnvelope,
    /// 1 on the first delivery, 2 on the first redelivery, ...
    pub delivery_count: u32,
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("job_id", &self.job.id)
            .field("kind", &self.job.kind)
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}

pub type Deliveries = BoxStream<'static, Result<Delivery, QueueError>>;

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Publishes durably; returns once the backend has accepted the job.
    async fn publish(&self, job: &JobEnvelope) -> Result<(), QueueError>;

    /// Consumes one job kind, holding at most `prefetch` unsettled deliveries.
    async fn consume(&self, kind: JobKind, prefetch: u16) -> Result<Deliveries, QueueError>;

    /// Jobs that exhausted their delivery limit or were dead-lettered, across all kinds.
    async fn consume_dead(&self) -> Result<Deliveries, QueueError>;

    /// Jobs waiting in one kind's queue (not counting unacked deliveries).
    async fn depth(&self, kind: JobKind) -> Result<u64, QueueError>;

    /// Checks the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), QueueError>;
}
