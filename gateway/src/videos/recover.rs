//! Video jobs left unfinished by a stopped `grok2api serve`.
//!
//! On the in-process queue a job lives only as long as the process: one still queued or
//! running when `serve` stops is gone, while its record still says `queued` or
//! `in_progress`. At the next start each such record is settled: its job (kept in the
//! record) is queued again with the same id and deadline, or, when that cannot be done, the
//! record is marked `failed` with code `interrupted`. A record past its deadline fails with
//! `timeout`. With RabbitMQ nothing is lost and this is not needed.

use shared::backends::Backends;
use shared::job::{JobEnvelope, JobPayload};
use shared::store::{VideoJobFailure, VideoJobRecord, VideoJobUpdate};
use shared::time::now_ms;
use uuid::Uuid;

/// Most records settled in one start.
const MAX_RECORDS: i64 = 10_000;

/// What a recovery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    pub requeued: usize,
    pub failed: usize,
}

/// Queues again (or fails) every unfinished video job. Call before the worker starts.
pub async fn requeue_unfinished(backends: &Backends) -> anyhow::Result<Recovered> {
    let mut done = Recovered::default();
    for record in backends.store.unfinished_video_jobs(MAX_RECORDS).await? {
        let failure = match requeue(backends, &record).await {
            Ok(()) => {
                done.requeued += 1;
                continue;
            }
            Err(failure) => failure,
        };
        tracing::warn!(video_id = %record.id, code = %failure.code, "unfinished video job failed at start");
        backends
            .store
            .update_video_job(&record.id, &VideoJobUpdate::Failed(failure))
            .await?;
        done.failed += 1;
    }
    if done != Recovered::default() {
        tracing::info!(
            requeued = done.requeued,
            failed = done.failed,
            "unfinished video jobs settled"
        );
    }
    Ok(done)
}

async fn requeue(backends: &Backends, record: &VideoJobRecord) -> Result<(), VideoJobFailure> {
    let interrupted = |why: &str| VideoJobFailure {
        code: "interrupted".into(),
        message: format!("The server restarted before the video was finished ({why})"),
    };
    if now_ms() > record.expires_at_ms {
        return Err(VideoJobFailure {
            code: "timeout".into(),
            message: "The video was not finished in time".into(),
        });
    }
    let id = Uuid::try_parse(&record.id).map_err(|_| interrupted("unreadable id"))?;
    let payload: JobPayload = record
        .job
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .filter(|p| matches!(p, JobPayload::Video(_)))
        .ok_or_else(|| interrupted("the job was not kept"))?;
    let mut envelope = JobEnvelope::new(payload, record.expires_at_ms);
    // The record and the job share the id, as when the job was first queued.
    envelope.id = id;
    backends.queue.publish(&envelope).await.map_err(|e| {
        tracing::warn!(video_id = %record.id, error = %e, "could not queue an unfinished video job again");
        interrupted("it could not be queued again")
    })?;
    tracing::info!(video_id = %record.id, "unfinished video job queued again");
    Ok(())
}
