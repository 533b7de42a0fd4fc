//! Voice token jobs: one LiveKit token call with an account from the pool (basic accounts
//! first), answered as a `Delta` event holding `{"token","url"}` and `Done`.
//!
//! Like the original product, the call is not retried on another account and charges no
//! quota; an account the upstream refuses is settled as any other call would settle it.

use std::time::Duration;

use serde_json::json;
use shared::event::{EventBody, JobError};
use shared::job::{JobEnvelope, VoiceJob};
use shared::models::Tier;
use shared::pool::{LeaseOutcome, LeaseRequest, Settlement};
use shared::time::now_ms;
use shared::upstream::account_ops::{AccountClient, LIVEKIT_URL};

use crate::chat::{settlement_for, short};
use crate::publisher::EventPublisher;
use crate::{Disposition, Worker};

pub async fn run(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &VoiceJob,
    attempt: u32,
) -> Disposition {
    let mut publisher = EventPublisher::new(worker.backends.bus.clone(), envelope.id, attempt);
    let published = answer(worker, envelope, job, &mut publisher).await;
    Disposition::after_publishing(envelope.id, published)
}

async fn answer(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &VoiceJob,
    publisher: &mut EventPublisher,
) -> Result<(), shared::bus::BusError> {
    if now_ms() > envelope.deadline_ms {
        return publisher
            .error(JobError::new(
                504,
                "timeout",
                "The request expired before a worker could take it",
            ))
            .await;
    }
    let request = LeaseRequest {
        tiers: vec![Tier::Basic, Tier::Super, Tier::Heavy],
        exclude: vec![],
        ttl: Duration::from_secs(worker.config.token.lease_ttl_secs),
    };
    let lease = match worker.backends.pool.lease(&request).await {
        Ok(LeaseOutcome::Leased(lease)) => lease,
        Ok(LeaseOutcome::Exhausted { .. }) => {
            return publisher
                .error(JobError::new(
                    503,
                    "no_token",
                    "No account is available for voice right now",
                ))
                .await;
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
    let token = match worker.backends.cipher.open(&lease.token_id, &lease.sealed) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(token_id = %short(&lease.token_id), error = %e, "stored token cannot be decrypted");
            worker.settle(&lease, Settlement::Released).await;
            return publisher
                .error(JobError::new(
                    500,
                    "voice_error",
                    "The voice token could not be requested",
                ))
                .await;
        }
    };
    let client = match AccountClient::new(&worker.config.upstream) {
        Ok(c) => c,
        Err(e) => {
            worker.settle(&lease, Settlement::Released).await;
            tracing::error!(error = %e.message, "upstream client unavailable");
            return publisher
                .error(JobError::new(
                    500,
                    "voice_error",
                    "The voice token could not be requested",
                ))
                .await;
        }
    };
    let outcome = client
        .livekit_token(&token, &job.voice, &job.personality, job.speed)
        .await;
    match outcome {
        Ok(livekit) => {
            // A token costs no quota (as in the original product).
            worker.settle(&lease, Settlement::Released).await;
            let body = json!({"token": livekit, "url": LIVEKIT_URL});
            publisher
                .publish(EventBody::Delta {
                    text: body.to_string(),
                })
                .await?;
            publisher
                .publish(EventBody::Done {
                    finish_reason: "stop".into(),
                    response_id: None,
                })
                .await
        }
        Err(error) => {
            tracing::warn!(token_id = %short(&lease.token_id), kind = ?error.kind, status = ?error.status, "voice token call failed");
            worker.settle(&lease, settlement_for(&error)).await;
            publisher
                .error(JobError::new(
                    502,
                    "upstream_error",
                    "The upstream did not give a voice token",
                ))
                .await
        }
    }
}
