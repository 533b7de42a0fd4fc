//! Account batches: quota refresh, NSFW enable and online asset listing and clearing, run
//! for a set of accounts with bounded concurrency, reporting progress as batch events.
//!
//! Each account's result is keyed by its token id; the token itself is read from the store
//! here and never leaves this process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use shared::Secret;
use shared::batch::{AccountJob, AccountOp, BatchProgress, BatchStage};
use shared::event::{EventBody, JobError};
use shared::job::JobEnvelope;
use shared::pool::{Refresh, TokenState};
use shared::store::TokenRuntime;
use shared::time::now_ms;
use shared::upstream::account_ops::{AccountClient, birth_date, infer_tier};
use shared::upstream::{UpstreamError, UpstreamErrorKind};

use crate::publisher::EventPublisher;
use crate::{Disposition, Worker};

/// Accounts worked on at once within one batch.
const BATCH_CONCURRENCY: usize = 8;
/// The modes whose totals tell the tier (protocol reference 9.4).
const QUOTA_MODES: [&str; 2] = ["auto", "fast"];

/// Runs one account batch to its final event.
pub async fn run(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &AccountJob,
    attempt: u32,
) -> Disposition {
    let mut publisher = EventPublisher::new(worker.backends.bus.clone(), envelope.id, attempt);
    match run_batch(worker, envelope, job, &mut publisher).await {
        Ok(()) => Disposition::Ack,
        Err(e) => {
            tracing::error!(job_id = %envelope.id, error = %e, "could not publish batch events");
            Disposition::Retry
        }
    }
}

async fn run_batch(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &AccountJob,
    publisher: &mut EventPublisher,
) -> Result<(), shared::bus::BusError> {
    let total = job.token_ids.len() as u64;
    let mut progress = BatchProgress {
        stage: BatchStage::Progress,
        op: job.op,
        total,
        processed: 0,
        ok: 0,
        fail: 0,
        skipped: job.skipped,
        result: None,
        error: None,
    };
    let client = match AccountClient::new(&worker.config.upstream) {
        Ok(c) => c,
        Err(e) => return fail(publisher, progress, e.message).await,
    };
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    let tokens: HashMap<String, Secret> = match worker.backends.store.list_tokens().await {
        Ok(records) => records
            .into_iter()
            .map(|r| {
                tags.insert(r.id.clone(), r.tags);
                (r.id, r.token)
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "store unavailable for an account batch");
            return fail(publisher, progress, "The store is unavailable".into()).await;
        }
    };
    publisher
        .publish(EventBody::Batch(progress.clone()))
        .await?;
    tracing::info!(op = job.op.as_str(), origin = %job.origin, accounts = total, "account batch started");
    let cancelled = Arc::new(AtomicBool::new(false));
    let mut results = serde_json::Map::new();
    let mut outcomes = futures::stream::iter(job.token_ids.iter().cloned())
        .map(|id| {
            let token = tokens.get(&id).cloned();
            let tags = tags.get(&id).cloned().unwrap_or_default();
            let (client, cancelled) = (&client, cancelled.clone());
            async move {
                if cancelled.load(Ordering::Relaxed)
                    || worker
                        .backends
                        .bus
                        .is_cancelled(envelope.id)
                        .await
                        .unwrap_or(false)
                {
                    cancelled.store(true, Ordering::Relaxed);
                    return (id, None);
                }
                let outcome = match token {
                    Some(token) => one_account(worker, client, job.op, &id, &token).await,
                    None => (false, json!({"success": false, "error": "unknown token"})),
                };
                if outcome.0 && job.op == AccountOp::EnableNsfw {
                    tag_nsfw(worker, &id, tags).await;
                }
                (id, Some(outcome))
            }
        })
        .buffer_unordered(BATCH_CONCURRENCY);
    while let Some((id, outcome)) = outcomes.next().await {
        let Some((ok, value)) = outcome else { continue };
        progress.processed += 1;
        if ok {
            progress.ok += 1;
        } else {
            progress.fail += 1;
        }
        results.insert(id, value);
        publisher
            .publish(EventBody::Batch(progress.clone()))
            .await?;
    }
    drop(outcomes);
    let was_cancelled = cancelled.load(Ordering::Relaxed);
    progress.stage = if was_cancelled {
        BatchStage::Cancelled
    } else {
        BatchStage::Done
    };
    progress.result = Some(Value::Object(results));
    tracing::info!(
        op = job.op.as_str(),
        ok = progress.ok,
        fail = progress.fail,
        cancelled = was_cancelled,
        "account batch finished"
    );
    publisher.publish(EventBody::Batch(progress)).await?;
    publisher
        .publish(EventBody::Done {
            finish_reason: if was_cancelled { "cancelled" } else { "stop" }.into(),
            response_id: None,
        })
        .await
}

async fn fail(
    publisher: &mut EventPublisher,
    mut progress: BatchProgress,
    message: String,
) -> Result<(), shared::bus::BusError> {
    progress.stage = BatchStage::Error;
    progress.error = Some(message.clone());
    publisher.publish(EventBody::Batch(progress)).await?;
    publisher
        .error(JobError::new(503, "service_unavailable", message))
        .await
}

/// One account: whether it succeeded, and what to report for it.
async fn one_account(
    worker: &Worker,
    client: &AccountClient,
    op: AccountOp,
    id: &str,
    token: &Secret,
) -> (bool, Value) {
    match op {
        AccountOp::Refresh => refresh(worker, client, id, token).await,
        AccountOp::EnableNsfw => match enable_nsfw(client, token).await {
            Ok(()) => (true, json!({"success": true})),
            Err((step, e)) => {
                note_failure(worker, id, &e).await;
                (
                    false,
                    json!({"success": false, "http_status": e.status, "error": format!("{step} failed: {}", e.message)}),
                )
            }
        },
        AccountOp::ClearAssets => match client.list_assets(token).await {
            Ok(assets) => {
                let mut deleted = 0u64;
                for asset in &assets {
                    if client.delete_asset(token, asset).await.is_ok() {
                        deleted += 1;
                    }
                }
                let failed = assets.len() as u64 - deleted;
                let result = json!({"total": assets.len(), "success": deleted, "failed": failed});
                (failed == 0, json!({"status": "success", "result": result}))
            }
            Err(e) => {
                note_failure(worker, id, &e).await;
                (false, json!({"status": "error", "error": e.message}))
            }
        },
        AccountOp::LoadAssets => match client.list_assets(token).await {
            Ok(assets) => (true, json!({"status": "ok", "count": assets.len()})),
            Err(e) => {
                note_failure(worker, id, &e).await;
                (false, json!({"status": "error", "error": e.message}))
            }
        },
    }
}

/// Marks an account whose NSFW switch is on, so later batches can skip it
/// (`skip_tagged`).
async fn tag_nsfw(worker: &Worker, id: &str, mut tags: Vec<String>) {
    const NSFW_TAG: &str = "nsfw";
    if tags.iter().any(|t| t == NSFW_TAG) {
        return;
    }
    tags.push(NSFW_TAG.to_owned());
    if let Err(e) = worker.backends.store.set_token_tags(id, &tags).await {
        tracing::warn!(token_id = %crate::chat::short(id), error = %e, "could not tag an account nsfw");
    }
}

/// Both terms calls, the birth date, then the feature control; names the step that failed.
async fn enable_nsfw(
    client: &AccountClient,
    token: &Secret,
) -> Result<(), (&'static str, UpstreamError)> {
    client
        .accept_tos(token)
        .await
        .map_err(|e| ("Accept ToS", e))?;
    let seed = now_ms() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    client
        .set_birth_date(token, &birth_date(now_ms(), seed))
        .await
        .map_err(|e| ("Set birth date", e))?;
    client
        .enable_nsfw(token)
        .await
        .map_err(|e| ("Enable NSFW", e))
}

/// Asks the quota of each mode, infers the tier, and applies it all to the pool.
async fn refresh(
    worker: &Worker,
    client: &AccountClient,
    id: &str,
    token: &Secret,
) -> (bool, Value) {
    let mut modes = serde_json::Map::new();
    let mut totals: HashMap<&str, i64> = HashMap::new();
    let mut best: Option<shared::upstream::account_ops::ModeQuota> = None;
    for mode in QUOTA_MODES {
        match client.rate_limits(token, mode).await {
            Ok(q) => {
                modes.insert(
                    mode.into(),
                    json!({"remaining": q.remaining, "total": q.total}),
                );
                totals.insert(mode, q.total);
                // The account can serve while any mode has quota left.
                if best.is_none_or(|b| q.remaining > b.remaining) {
                    best = Some(q);
                }
            }
            Err(e) => {
                note_failure(worker, id, &e).await;
                return (false, json!({"success": false, "error": e.message}));
            }
        }
    }
    let Some(quota) = best else {
        return (false, json!({"success": false, "error": "no quota answer"}));
    };
    // Media quota is informative; an account without Imagine access still refreshed fine.
    let media: Value = match client.imagine_quota(token).await {
        Ok(buckets) => buckets
            .into_iter()
            .map(|b| (b.kind, json!(b.remaining)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Err(_) => Value::Null,
    };
    let tier = infer_tier(totals.get("auto").copied(), totals.get("fast").copied());
    let applied = Refresh::Quota {
        remaining: quota.remaining,
        total: quota.total,
        tier,
        window_reset: (quota.window_secs > 0).then(|| Duration::from_secs(quota.window_secs)),
    };
    let state = apply(worker, id, &applied).await;
    (
        true,
        json!({"success": true, "quota": quota.remaining, "tier": tier.map(|t| t.as_str()),
               "status": state.map(|s| s.status.as_str()), "modes": modes, "media": media}),
    )
}

/// A refusal that says something about the account counts against it in the pool.
async fn note_failure(worker: &Worker, id: &str, error: &UpstreamError) {
    let refresh = match error.kind {
        UpstreamErrorKind::Unauthorized => Refresh::Unauthorized,
        UpstreamErrorKind::Blocked => Refresh::Blocked,
        _ => return,
    };
    apply(worker, id, &refresh).await;
}

async fn apply(worker: &Worker, id: &str, refresh: &Refresh) -> Option<TokenState> {
    let state = match worker.backends.pool.apply_refresh(id, refresh).await {
        Ok(state) => state?,
        Err(e) => {
            tracing::warn!(error = %e, "could not apply a quota refresh to the pool");
            return None;
        }
    };
    let runtime = TokenRuntime {
        status: state.status,
        quota: state.quota,
        use_count: state.use_count as i64,
        fail_count: state.fail_count as i64,
        last_used_at_ms: (state.last_used_ms > 0).then_some(state.last_used_ms),
        last_fail_reason: None,
    };
    if let Err(e) = worker
        .backends
        .store
        .update_token_runtime(id, &runtime)
        .await
    {
        tracing::warn!(error = %e, "could not record a refreshed token in the store");
    }
    Some(state)
}
