//! Running a chat job: lease an account, stream the upstream answer as job events, settle
//! the account, and fail over to another account while nothing has reached the caller.

use std::time::Duration;

use futures::StreamExt;
use shared::Secret;
use shared::event::{EventBody, JobError};
use shared::job::{ChatJob, JobEnvelope};
use shared::pool::{Lease, LeaseOutcome, LeaseRequest, Settlement};
use shared::time::now_ms;
use shared::upstream::{ChatChunk, ChatRequest, UpstreamError, UpstreamErrorKind};
use tokio::time::Instant;

use crate::attachments::{self, Attachment};
use crate::publisher::{Channel, Coalescer, EventPublisher};
use crate::{Disposition, Worker};

/// How often a running job checks its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(250);
/// Text pieces arriving within this window are merged into one event.
const COALESCE_WINDOW: Duration = Duration::from_millis(20);
const COALESCE_MAX_BYTES: usize = 4096;

/// How one try with one account ended.
enum TryEnd {
    Completed,
    Cancelled,
    Failed {
        error: UpstreamError,
        output_sent: bool,
    },
}

pub async fn run(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &ChatJob,
    attempt: u32,
) -> Disposition {
    let mut publisher = EventPublisher::new(worker.backends.bus.clone(), envelope.id, attempt);
    let published = run_tries(worker, envelope, job, &mut publisher).await;
    Disposition::after_publishing(envelope.id, published)
}

async fn run_tries(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &ChatJob,
    publisher: &mut EventPublisher,
) -> Result<(), shared::bus::BusError> {
    let bus = &worker.backends.bus;
    if now_ms() > envelope.deadline_ms {
        return publisher
            .error(JobError::new(
                504,
                "timeout",
                "The request expired before a worker could take it",
            ))
            .await;
    }
    if bus.is_cancelled(envelope.id).await.unwrap_or(false) {
        tracing::debug!(job_id = %envelope.id, "job cancelled before start");
        return Ok(());
    }
    // Attachments are loaded once, before any account is leased: a slow or refused media
    // URL holds no account, and retries on other accounts do not download again.
    let mut loaded = Vec::with_capacity(job.attachments.len());
    for source in &job.attachments {
        match attachments::load(source, &worker.fetcher).await {
            Ok(a) => loaded.push(a),
            Err(error) => return publisher.error(error).await,
        }
    }
    let mut exclude: Vec<String> = Vec::new();
    let mut last_error: Option<UpstreamError> = None;
    for _ in 0..worker.backends.live.get().retry.max_retry {
        let request = LeaseRequest {
            tiers: job.tier.eligible().to_vec(),
            exclude: exclude.clone(),
            ttl: Duration::from_secs(worker.config.token.lease_ttl_secs),
        };
        let lease = match crate::observe::lease(worker.backends.pool.lease(&request)).await {
            Ok(LeaseOutcome::Leased(lease)) => lease,
            Ok(LeaseOutcome::Exhausted { retry_after }) => {
                let error = match last_error {
                    Some(e) => caller_error(&e),
                    None => no_token_error(retry_after),
                };
                return publisher.error(error).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "token pool unavailable");
                return publisher
                    .error(
                        JobError::new(503, "service_unavailable", "The token pool is unavailable")
                            .with_retry_after(2),
                    )
                    .await;
            }
        };
        exclude.push(lease.token_id.clone());
        let token = match worker.backends.cipher.open(&lease.token_id, &lease.sealed) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(token_id = %lease.token_id, error = %e, "stored token cannot be decrypted");
                worker.settle(&lease, Settlement::Released).await;
                continue;
            }
        };
        let end = match try_once(worker, envelope, job, &loaded, &token, publisher).await {
            Ok(end) => end,
            Err(e) => {
                // The job cannot report anything (the bus failed); give the account back
                // now rather than when the lease expires.
                worker.settle(&lease, Settlement::Released).await;
                return Err(e);
            }
        };
        match end {
            TryEnd::Completed => {
                worker
                    .settle(&lease, Settlement::Success { cost: job.cost })
                    .await;
                return Ok(());
            }
            TryEnd::Cancelled => {
                worker.settle(&lease, Settlement::Released).await;
                tracing::info!(job_id = %envelope.id, "job cancelled by its caller");
                return Ok(());
            }
            TryEnd::Failed { error, output_sent } => {
                tracing::warn!(job_id = %envelope.id, token_id = %short(&lease.token_id), kind = ?error.kind, status = ?error.status, "upstream call failed");
                worker.settle(&lease, settlement_for(&error)).await;
                if output_sent || !worth_another_account(&error.kind) {
                    return publisher.error(caller_error(&error)).await;
                }
                last_error = Some(error);
            }
        }
    }
    let error = last_error
        .map(|e| caller_error(&e))
        .unwrap_or_else(|| no_token_error(None));
    publisher.error(error).await
}

/// One upstream call with one account, relayed as events.
async fn try_once(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &ChatJob,
    loaded: &[Attachment],
    token: &Secret,
    publisher: &mut EventPublisher,
) -> Result<TryEnd, shared::bus::BusError> {
    let mut file_ids = Vec::with_capacity(loaded.len());
    for attachment in loaded {
        match worker
            .upstream
            .upload(
                token,
                &attachment.file_name,
                &attachment.mime,
                attachment.bytes.clone(),
            )
            .await
        {
            Ok(id) => file_ids.push(id),
            Err(error) => {
                return Ok(TryEnd::Failed {
                    error,
                    output_sent: false,
                });
            }
        }
    }
    let request = ChatRequest {
        mode: job.upstream_mode.clone(),
        message: job.message.clone(),
        temperature: job.temperature,
        top_p: job.top_p,
        reasoning_effort: job.reasoning_effort.clone(),
        file_ids,
        temporary: worker.backends.live.get().app.temporary,
        disable_memory: worker.backends.live.get().app.disable_memory,
    };
    let mut stream = match worker.upstream.chat(token, &request).await {
        Ok(s) => s,
        Err(error) => {
            return Ok(TryEnd::Failed {
                error,
                output_sent: false,
            });
        }
    };
    let mut coalescer = Coalescer::new(COALESCE_WINDOW, COALESCE_MAX_BYTES);
    let mut relay = Relay {
        publisher,
        started: false,
        response_id: None,
        output_sent: false,
        text_seen: false,
    };
    let mut cancel_poll = tokio::time::interval(CANCEL_POLL);
    cancel_poll.tick().await;
    let deadline =
        Instant::now() + Duration::from_millis((envelope.deadline_ms - now_ms()).max(0) as u64);
    loop {
        let flush_at = coalescer.due();
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(ChatChunk::Started { response_id })) => relay.response_id = response_id,
                Some(Ok(ChatChunk::Reasoning(t))) => {
                    if job.want_reasoning {
                        let pieces = coalescer.push(Channel::Reasoning, &t, Instant::now());
                        relay.send_then_restart(pieces, &mut coalescer).await?;
                    }
                }
                Some(Ok(ChatChunk::Text(t))) => {
                    relay.text_seen |= !t.is_empty();
                    let pieces = coalescer.push(Channel::Text, &t, Instant::now());
                    relay.send_then_restart(pieces, &mut coalescer).await?;
                }
                Some(Ok(ChatChunk::Citation { .. })) => {}
                Some(Ok(ChatChunk::Done { response_id })) => {
                    if !relay.text_seen {
                        let error = UpstreamError::new(UpstreamErrorKind::Transient, None, "the upstream returned an empty answer");
                        relay.send(coalescer.take(Instant::now()).into_iter().collect()).await?;
                        return Ok(TryEnd::Failed { error, output_sent: relay.output_sent });
                    }
                    relay.send(coalescer.take(Instant::now()).into_iter().collect()).await?;
                    let response_id = response_id.or(relay.response_id.take());
                    relay.publisher.publish(EventBody::Done { finish_reason: "stop".into(), response_id }).await?;
                    return Ok(TryEnd::Completed);
                }
                Some(Err(error)) => {
                    // What was already sent stays sent; buffered text is only worth sending
                    // if the caller has output already (otherwise another account retries).
                    if relay.output_sent {
                        relay.send(coalescer.take(Instant::now()).into_iter().collect()).await?;
                    }
                    return Ok(TryEnd::Failed { error, output_sent: relay.output_sent });
                }
                None => {
                    let error = UpstreamError::new(UpstreamErrorKind::Transient, None, "the upstream stream ended early");
                    if relay.output_sent {
                        relay.send(coalescer.take(Instant::now()).into_iter().collect()).await?;
                    }
                    return Ok(TryEnd::Failed { error, output_sent: relay.output_sent });
                }
            },
            _ = sleep_until_opt(flush_at) => {
                let pieces = coalescer.take(Instant::now()).into_iter().collect();
                relay.send_then_restart(pieces, &mut coalescer).await?;
            }
            _ = cancel_poll.tick() => {
                if worker.backends.bus.is_cancelled(envelope.id).await.unwrap_or(false) {
                    return Ok(TryEnd::Cancelled);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let error = UpstreamError::new(UpstreamErrorKind::Timeout, None, "the job's deadline passed");
                return Ok(TryEnd::Failed { error, output_sent: true });
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Publishes coalesced pieces, preceded once by `Started`.
struct Relay<'a> {
    publisher: &'a mut EventPublisher,
    started: bool,
    response_id: Option<String>,
    output_sent: bool,
    text_seen: bool,
}

impl Relay<'_> {
    /// Sends what the coalescer released and, only if something went out, restarts its
    /// window from the end of that publish (see `Coalescer::published`).
    async fn send_then_restart(
        &mut self,
        pieces: Vec<(Channel, String)>,
        coalescer: &mut Coalescer,
    ) -> Result<(), shared::bus::BusError> {
        if pieces.is_empty() {
            return Ok(());
        }
        self.send(pieces).await?;
        coalescer.published(Instant::now());
        Ok(())
    }

    async fn send(&mut self, pieces: Vec<(Channel, String)>) -> Result<(), shared::bus::BusError> {
        for (channel, text) in pieces {
            if !self.started {
                // Started goes out with the first output, so anything that fails before
                // that still reaches the caller as a plain HTTP error.
                self.publisher
                    .publish(EventBody::Started {
                        response_id: self.response_id.clone(),
                    })
                    .await?;
                self.started = true;
            }
            self.output_sent = true;
            let body = match channel {
                Channel::Reasoning => EventBody::Reasoning { text },
                Channel::Text => EventBody::Delta { text },
            };
            self.publisher.publish(body).await?;
        }
        Ok(())
    }
}

pub(crate) fn settlement_for(error: &UpstreamError) -> Settlement {
    match &error.kind {
        UpstreamErrorKind::RateLimited { retry_after } => Settlement::RateLimited {
            retry_after: *retry_after,
        },
        UpstreamErrorKind::Unauthorized => Settlement::Unauthorized,
        UpstreamErrorKind::Blocked => Settlement::Blocked,
        _ => Settlement::Released,
    }
}

/// Failures that say something about the account or the moment, not about the request.
pub(crate) fn worth_another_account(kind: &UpstreamErrorKind) -> bool {
    !matches!(
        kind,
        UpstreamErrorKind::BadRequest | UpstreamErrorKind::Forbidden
    )
}

pub(crate) fn no_token_error(retry_after: Option<Duration>) -> JobError {
    // With nothing cooling, nothing comes back by itself: suggest a modest wait anyway.
    let secs = retry_after.map(|d| d.as_secs().max(1)).unwrap_or(60);
    JobError::new(
        429,
        "rate_limit_exceeded",
        "No available tokens. Please try again later.",
    )
    .with_retry_after(secs)
}

/// What the caller is told about an upstream failure.
pub(crate) fn caller_error(error: &UpstreamError) -> JobError {
    match &error.kind {
        UpstreamErrorKind::RateLimited { retry_after } => {
            let secs = retry_after.map(|d| d.as_secs().max(1)).unwrap_or(60);
            JobError::new(
                429,
                "rate_limit_exceeded",
                "Every available account is rate limited. Please try again later.",
            )
            .with_retry_after(secs)
        }
        UpstreamErrorKind::Timeout => JobError::new(
            504,
            "upstream_timeout",
            "The upstream did not answer in time",
        ),
        UpstreamErrorKind::AntiBot => JobError::new(
            502,
            "upstream_challenge",
            "The upstream's anti-bot check refused the request",
        ),
        UpstreamErrorKind::BadRequest => {
            JobError::new(502, "upstream_error", "The upstream rejected the request")
        }
        UpstreamErrorKind::Unauthorized | UpstreamErrorKind::Blocked => {
            JobError::new(502, "upstream_error", "The upstream rejected the account")
        }
        _ => JobError::new(
            502,
            "upstream_error",
            format!("Upstream error: {}", error.message),
        ),
    }
}

/// A token id prefix: enough to find it in the admin list.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Worker {
    /// Settles a lease and, when the account's status changed, records it in the store.
    pub(crate) async fn settle(&self, lease: &Lease, outcome: Settlement) {
        let changed = !matches!(outcome, Settlement::Success { .. } | Settlement::Released);
        match self.backends.pool.settle(lease, outcome).await {
            Ok(Some(state)) if changed => {
                let runtime = shared::store::TokenRuntime {
                    status: state.status,
                    quota: state.quota,
                    use_count: state.use_count as i64,
                    fail_count: state.fail_count as i64,
                    last_used_at_ms: (state.last_used_ms > 0).then_some(state.last_used_ms),
                    last_fail_reason: None,
                };
                if let Err(e) = self
                    .backends
                    .store
                    .update_token_runtime(&state.id, &runtime)
                    .await
                {
                    tracing::warn!(error = %e, "could not record token state");
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(token_id = %short(&lease.token_id), "lease had expired before it was settled")
            }
            Err(e) => tracing::warn!(error = %e, "could not settle lease; it expires on its own"),
        }
    }
}
