//! The in-process job queue: one bounded FIFO per job kind plus a bounded dead-letter FIFO.
//!
//! It mirrors the broker's semantics closely enough that workers cannot tell the
//! difference: competing consumers share a kind's FIFO, each consumer holds at most
//! `prefetch` unsettled deliveries, and a delivery dropped without being settled (its
//! worker task panicked or was aborted) goes back to the queue and counts as a delivery,
//! exactly as a quorum queue counts a delivery returned by a closed channel.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Acker, Deliveries, Delivery, JobQueue, QueueError};
use crate::job::{JobEnvelope, JobKind};

/// Most unsettled dead-letter deliveries one `consume_dead` stream holds.
const DEAD_PREFETCH: usize = 16;

/// An in-process [`JobQueue`]; clones share the same queues.
#[derive(Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

struct Shared {
    kinds: HashMap<JobKind, Fifo>,
    dead: Fifo,
    capacity: usize,
    delivery_limit: u32,
}

/// A job waiting in a FIFO, with how often it has been handed out so far.
struct Waiting {
    job: JobEnvelope,
    deliveries: u32,
}

#[derive(Default)]
struct Fifo {
    items: Mutex<VecDeque<Waiting>>,
    /// Woken on every push; waiting consumers race for the item.
    pushed: Notify,
}

impl Fifo {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiting>> {
        // A panic while holding this lock cannot leave the deque half-updated.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, item: Waiting) {
        self.lock().push_back(item);
        self.pushed.notify_waiters();
    }

    /// Waits for the next item. Registers for the wake-up before looking, so a push
    /// between the look and the wait is not missed.
    async fn pop(&self) -> Waiting {
        loop {
            let notified = self.pushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.lock().pop_front() {
                return item;
            }
            notified.await;
        }
    }
}

/// Which FIFO a delivery came from, which decides where it goes when handed back.
#[derive(Clone, Copy)]
enum Origin {
    Kind(JobKind),
    Dead,
}

impl MemoryQueue {
    /// A queue holding at most `capacity` waiting jobs per kind (and as many dead ones),
    /// that dead-letters a job instead of handing it out more than `delivery_limit` times.
    pub fn new(capacity: usize, delivery_limit: u32) -> MemoryQueue {
        let kinds = JobKind::ALL
            .iter()
            .map(|kind| (*kind, Fifo::default()))
            .collect();
        MemoryQueue {
            shared: Arc::new(Shared {
                kinds,
                dead: Fifo::default(),
                capacity: capacity.max(1),
                delivery_limit: delivery_limit.max(1),
            }),
        }
    }
}

impl Shared {
    fn fifo(&self, origin: Origin) -> &Fifo {
        match origin {
            Origin::Kind(kind) => &self.kinds[&kind],
            Origin::Dead => &self.dead,
        }
    }

    /// Hands a job back after an unsuccessful delivery: redelivery while it has deliveries
    /// left, the dead-letter FIFO once it has used them up.
    fn hand_back(&self, origin: Origin, item: Waiting) {
        match origin {
            Origin::Kind(_) if item.deliveries >= self.delivery_limit => {
                tracing::warn!(
                    job_id = %item.job.id,
                    kind = item.job.kind.as_str(),
                    deliveries = item.deliveries,
                    "job reached its delivery limit; dead-lettering it"
                );
                self.push_dead(item);
            }
            // Hand-backs are not refused at capacity: the job was already accepted, and the
            // FIFO cannot exceed capacity plus what consumers hold unsettled.
            _ => self.fifo(origin).push(item),
        }
    }

    fn push_dead(&self, mut item: Waiting) {
        // Deliveries from the dead-letter FIFO count afresh, as they do on the broker.
        item.deliveries = 0;
        let mut items = self.dead.lock();
        if items.len() >= self.capacity
            && let Some(oldest) = items.pop_front()
        {
            // Nobody is draining the dead letters; keep memory bounded and say so.
            tracing::error!(
                job_id = %oldest.job.id,
                "dead-letter queue full; discarding its oldest job"
            );
        }
        items.push_back(item);
        drop(items);
        self.dead.pushed.notify_waiters();
    }

    /// A stream of deliveries from one FIFO, at most `prefetch` of them unsettled.
    fn deliveries(self: &Arc<Self>, origin: Origin, prefetch: usize) -> Deliveries {
        let permits = Arc::new(Semaphore::new(prefetch.max(1)));
        futures::stream::unfold(
            (self.clone(), permits),
            move |(shared, permits)| async move {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the consumer's semaphore is never closed");
                let mut item = shared.fifo(origin).pop().await;
                item.deliveries += 1;
                let delivery = Delivery {
                    job: item.job.clone(),
                    delivery_count: item.deliveries,
                    acker: Box::new(MemoryAcker {
                        shared: shared.clone(),
                        origin,
                        unsettled: Mutex::new(Some((item, permit))),
                    }),
                };
                Some((Ok(delivery), (shared, permits)))
            },
        )
        .boxed()
    }
}

/// Settles one in-process delivery. Holds the job until settled, and the consumer's
/// prefetch permit with it.
struct MemoryAcker {
    shared: Arc<Shared>,
    origin: Origin,
    unsettled: Mutex<Option<(Waiting, OwnedSemaphorePermit)>>,
}

impl MemoryAcker {
    fn take(&self) -> Result<Waiting, QueueError> {
        let taken = self
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The permit is dropped here, freeing the consumer's prefetch slot.
        taken
            .map(|(item, _permit)| item)
            .ok_or_else(|| QueueError::Other("delivery already settled".into()))
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), QueueError> {
        self.take().map(drop)
    }

    async fn retry(&self) -> Result<(), QueueError> {
        let item = self.take()?;
        self.shared.hand_back(self.origin, item);
        Ok(())
    }

    async fn dead_letter(&self) -> Result<(), QueueError> {
        let item = self.take()?;
        match self.origin {
            Origin::Kind(_) => self.shared.push_dead(item),
            // Already dead: keep it where it is rather than losing it.
            Origin::Dead => self.shared.dead.push(item),
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    /// An unsettled delivery whose holder went away is handed back, as a broker does
    /// when a consumer's channel closes.
    fn drop(&mut self) {
        let unsettled = self
            .unsettled
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((item, _permit)) = unsettled {
            self.shared.hand_back(self.origin, item);
        }
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn publish(&self, job: &JobEnvelope) -> Result<(), QueueError> {
        let fifo = self.shared.fifo(Origin::Kind(job.kind));
        let mut items = fifo.lock();
        if items.len() >= self.shared.capacity {
            return Err(QueueError::Full);
        }
        items.push_back(Waiting {
            job: job.clone(),
            deliveries: 0,
        });
        drop(items);
        fifo.pushed.notify_waiters();
        Ok(())
    }

    async fn consume(&self, kind: JobKind, prefetch: u16) -> Result<Deliveries, QueueError> {
        Ok(self
            .shared
            .deliveries(Origin::Kind(kind), usize::from(prefetch)))
    }

    async fn consume_dead(&self) -> Result<Deliveries, QueueError> {
        Ok(self.shared.deliveries(Origin::Dead, DEAD_PREFETCH))
    }

    async fn depth(&self, kind: JobKind) -> Result<u64, QueueError> {
        Ok(self.shared.fifo(Origin::Kind(kind)).lock().len() as u64)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
