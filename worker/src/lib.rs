//! The worker role: consumes jobs, leases accounts from the pool, calls Grok, and publishes
//! the jobs' events.
//!
//! Every delivery is settled exactly once, after its terminal event is published: acked,
//! handed back for redelivery, or dead-lettered. A handler that panics hands its job back.

pub mod attachments;
pub mod chat;
pub mod image;
pub mod maintenance;
pub mod observe;
pub mod publisher;
pub mod video;
pub mod voice;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shared::backends::Backends;
use shared::config::Config;
use shared::event::{EventBody, JobError, JobEvent};
use shared::job::{JobEnvelope, JobKind, JobPayload};
use shared::queue::Delivery;
use shared::upstream::UpstreamClient;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What to do with a delivery once its handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    Retry,
    DeadLetter,
}

impl Disposition {
    /// The disposition of a handler whose outcome went out on the bus, or could not: then
    /// the caller cannot hear it, so the job is handed back to be retried (or
    /// dead-lettered) rather than acknowledged in silence.
    pub fn after_publishing(
        job_id: uuid::Uuid,
        published: Result<(), shared::bus::BusError>,
    ) -> Disposition {
        match published {
            Ok(()) => Disposition::Ack,
            Err(e) => {
                tracing::error!(%job_id, error = %e, "could not publish job events");
                Disposition::Retry
            }
        }
    }
}

pub struct Worker {
    pub config: Arc<Config>,
    pub backends: Backends,
    pub upstream: UpstreamClient,
    /// Downloads of user media URLs, under the SSRF policy (`shared::fetch`).
    pub fetcher: shared::fetch::SafeFetcher,
    /// Feeds the queue age gauge.
    pub queue_ages: observe::QueueAges,
}

impl Worker {
    pub fn new(config: Arc<Config>, backends: Backends) -> anyhow::Result<Arc<Self>> {
        let upstream = UpstreamClient::new(&config.upstream)?;
        let fetcher =
            shared::fetch::SafeFetcher::new(shared::fetch::FetchPolicy::from_config(&config.fetch));
        Ok(Arc::new(Self {
            config,
            backends,
            upstream,
            fetcher,
            queue_ages: observe::QueueAges::default(),
        }))
    }

    /// Consumes until `shutdown`, then drains in-flight jobs within the grace period.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let consumers = [
            (JobKind::Chat, self.config.worker.chat_concurrency),
            (JobKind::Image, self.config.worker.image_concurrency),
            (JobKind::Video, self.config.worker.video_concurrency),
            (JobKind::Maintenance, 4),
        ];
        let mut loops = Vec::new();
        for (kind, concurrency) in consumers {
            let (worker, tracker, shutdown) = (self.clone(), tracker.clone(), shutdown.clone());
            loops.push(tokio::spawn(async move {
                worker.consume(kind, concurrency, tracker, shutdown).await
            }));
        }
        let (worker, dead_shutdown) = (self.clone(), shutdown.clone());
        loops.push(tokio::spawn(async move {
            worker.consume_dead(dead_shutdown).await
        }));
        loops.push(tokio::spawn(
            self.queue_ages
                .clone()
                .sample(self.backends.clone(), shutdown.clone()),
        ));
        tracing::info!("worker consuming");
        let drained = async {
            for l in loops {
                let _ = l.await;
            }
            tracker.close();
            tracker.wait().await;
        };
        // In-flight jobs get `server.shutdown_grace_secs` from the start of the drain; past
        // it the worker stops anyway, and the broker hands their deliveries to another
        // worker when this process's connection closes.
        let grace = Duration::from_secs(self.config.server.shutdown_grace_secs);
        let grace_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            _ = drained => {}
            _ = grace_over => tracing::warn!("drain grace period over with jobs still running"),
        }
        tracing::info!("worker stopped");
    }

    async fn consume(
        self: Arc<Self>,
        kind: JobKind,
        concurrency: usize,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(concurrency));
        let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
        while !shutdown.is_cancelled() {
            let mut deliveries = match self.backends.queue.consume(kind, prefetch).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(kind = kind.as_str(), error = %e, "cannot consume; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            loop {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                    _ = shutdown.cancelled() => break,
                };
                let next = tokio::select! {
                    d = deliveries.next() => d,
                    _ = shutdown.cancelled() => break,
                };
                match next {
                    Some(Ok(delivery)) => {
                        let worker = self.clone();
                        tracker.spawn(async move {
                            worker.handle(delivery).await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(kind = kind.as_str(), error = %e, "consumer failed; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
            if shutdown.is_cancelled() {
                // Keep the consumer open until in-flight jobs settle their deliveries (`run`
                // bounds the wait by the grace period).
                tracker.close();
                tracker.wait().await;
                drop(deliveries);
            }
        }
    }

    /// Runs one delivery's handler in its own task, so a panic hands the job back instead of
    /// leaving the delivery unsettled.
    async fn handle(self: Arc<Self>, delivery: Delivery) {
        let Delivery {
            job,
            delivery_count,
            acker,
        } = delivery;
        let job_id = job.id;
        self.queue_ages.taken(job.kind, job_id);
        let worker = self.clone();
        let outcome = tokio::spawn(async move {
            let kind = job.kind;
            observe::track(kind, worker.dispatch(&job, delivery_count))
                .await
                .0
        })
        .await;
        let disposition = outcome.unwrap_or_else(|e| {
            tracing::error!(%job_id, error = %e, "job handler panicked");
            Disposition::Retry
        });
        let settled = match disposition {
            Disposition::Ack => acker.ack().await,
            Disposition::Retry => acker.retry().await,
            Disposition::DeadLetter => acker.dead_letter().await,
        };
        if let Err(e) = settled {
            tracing::warn!(%job_id, error = %e, "could not settle delivery; the broker redelivers it");
        }
    }

    async fn dispatch(&self, job: &JobEnvelope, attempt: u32) -> Disposition {
        let span = tracing::info_span!(
            "job",
            otel.name = %format_args!("job {}", job.kind.as_str()),
            otel.kind = "consumer",
            job_id = %job.id,
            kind = job.kind.as_str(),
            attempt
        );
        // The span continues the trace of the request that published the job.
        shared::telemetry::set_parent(&span, job.traceparent.as_deref());
        async move {
            match &job.payload {
                JobPayload::Chat(chat) => chat::run(self, job, chat, attempt).await,
                JobPayload::ImageGenerate(image) => {
                    image::run(self, job, image, &[], attempt).await
                }
                JobPayload::ImageEdit(edit) => {
                    image::run(self, job, &edit.image, &edit.inputs, attempt).await
                }
                JobPayload::Video(video) => video::run(self, job, video, attempt).await,
                JobPayload::Account(account) => maintenance::run(self, job, account, attempt).await,
                JobPayload::Voice(voice) => voice::run(self, job, voice, attempt).await,
                JobPayload::Poison { .. } => {
                    tracing::warn!("poison job refused");
                    Disposition::Retry
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Tells the callers of dead-lettered jobs that their job will not run.
    async fn consume_dead(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut dead = match self.backends.queue.consume_dead().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot consume dead letters; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    d = dead.next() => d,
                    _ = shutdown.cancelled() => break,
                };
                let Some(Ok(delivery)) = next else { break };
                let job_id = delivery.job.id;
                shared::metrics::job_outcome(
                    delivery.job.kind,
                    shared::metrics::JobOutcome::DeadLettered,
                );
                tracing::error!(%job_id, deliveries = delivery.delivery_count, "job dead-lettered");
                let event = JobEvent {
                    job_id,
                    // Past every real attempt, so a caller's feed takes it as the last word.
                    attempt: u32::MAX,
                    seq: 1,
                    body: EventBody::Error(JobError::new(
                        500,
                        "job_failed",
                        "The job failed repeatedly and was abandoned",
                    )),
                    meta: shared::event::EventMeta::now(),
                };
                let settled = match self.backends.bus.publish(&event).await {
                    Ok(()) => delivery.acker.ack().await,
                    Err(e) => {
                        tracing::warn!(%job_id, error = %e, "could not report dead job");
                        delivery.acker.retry().await
                    }
                };
                if let Err(e) = settled {
                    tracing::warn!(%job_id, error = %e, "could not settle dead letter");
                }
            }
        }
    }
}
