//! Expires video job records: a record that ended (or whose deadline passed) longer ago
//! than `scheduler.job_max_age_secs` is deleted together with its video and thumbnail in
//! the blob store.

use shared::backends::Backends;

/// Records deleted per store call.
const BATCH: i64 = 500;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub blobs: u64,
}

/// Deletes every record that ended before `before_ms`, and its media.
pub async fn run(backends: &Backends, before_ms: i64) -> anyhow::Result<Report> {
    let mut report = Report::default();
    loop {
        let expired = backends
            .store
            .delete_video_jobs_before(before_ms, BATCH)
            .await?;
        for record in &expired {
            report.records += 1;
            for key in [&record.video_key, &record.thumbnail_key]
                .into_iter()
                .flatten()
            {
                // The record is gone either way; a blob left behind is the size cleanup's.
                match backends.blob.delete(key).await {
                    Ok(true) => report.blobs += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(video_id = %record.id, error = %e, "could not delete an expired video's media")
                    }
                }
            }
        }
        if (expired.len() as i64) < BATCH {
            return Ok(report);
        }
    }
}
