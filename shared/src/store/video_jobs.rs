//! Records of asynchronous video jobs (`/v1/videos`).
//!
//! The gateway creates a record when it accepts a job; the worker moves it forward
//! (`in_progress` with progress, then `completed` or `failed`); every gateway answers status
//! requests from it. A terminal record never changes again, so a redelivered job cannot undo
//! an outcome a caller has already seen.

use serde::{Deserialize, Serialize};

use super::StoreError;

/// Where a video job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoJobStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl VideoJobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VideoJobStatus::Queued => "queued",
            VideoJobStatus::InProgress => "in_progress",
            VideoJobStatus::Completed => "completed",
            VideoJobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<VideoJobStatus> {
        match s {
            "queued" => Some(VideoJobStatus::Queued),
            "in_progress" => Some(VideoJobStatus::InProgress),
            "completed" => Some(VideoJobStatus::Completed),
            "failed" => Some(VideoJobStatus::Failed),
            _ => None,
        }
    }

    /// Completed and failed records are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, VideoJobStatus::Completed | VideoJobStatus::Failed)
    }
}

/// Why a job failed, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoJobFailure {
    pub code: String,
    pub message: String,
}

/// One video job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoJobRecord {
    /// A random UUID (hyphenated): the capability part of the public id.
    pub id: String,
    /// SHA-256 hex of the API key that created the job; only that key may read it.
    pub api_key_sha256: String,
    pub model: String,
    pub prompt: String,
    pub seconds: i64,
    /// The size as the caller asked for it (`1280x720`, ...).
    pub size: String,
    /// Upstream resolution name (`480p`, `720p`).
    pub resolution: String,
    pub status: VideoJobStatus,
    /// 0 to 100.
    pub progress: i64,
    pub error: Option<VideoJobFailure>,
    /// BlobStore key of the MP4 once completed.
    pub video_key: Option<String>,
    pub thumbnail_key: Option<String>,
    pub video_bytes: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    /// Unix ms after which an unfinished job counts as failed (its deadline).
    pub expires_at_ms: i64,
    /// The queued job (a `JobPayload` as JSON), kept so a job lost with an in-process queue
    /// can be queued again when `serve` restarts. `None` for records written before it.
    #[serde(default)]
    pub job: Option<String>,
}

/// A change the worker (or an expiry check) makes to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoJobUpdate {
    /// Running; progress only ever grows.
    Progress {
        progress: i64,
    },
    Completed {
        video_key: String,
        thumbnail_key: Option<String>,
        video_bytes: i64,
    },
    Failed(VideoJobFailure),
}

impl VideoJobUpdate {
    /// The column values this update writes: (status, progress, error code, error message,
    /// video key, thumbnail key, video bytes, completed at).
    #[allow(clippy::type_complexity)]
    pub(crate) fn columns(
        &self,
        now_ms: i64,
    ) -> (
        &'static str,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
    ) {
        match self {
            VideoJobUpdate::Progress { progress } => (
                VideoJobStatus::InProgress.as_str(),
                (*progress).clamp(0, 100),
                None,
                None,
                None,
                None,
                None,
                None,
            ),
            VideoJobUpdate::Completed {
                video_key,
                thumbnail_key,
                video_bytes,
            } => (
                VideoJobStatus::Completed.as_str(),
                100,
                None,
                None,
                Some(video_key.clone()),
                thumbnail_key.clone(),
                Some(*video_bytes),
                Some(now_ms),
            ),
            VideoJobUpdate::Failed(failure) => (
                VideoJobStatus::Failed.as_str(),
                0,
                Some(failure.code.clone()),
                Some(failure.message.clone()),
                None,
                None,
                None,
                Some(now_ms),
            ),
        }
    }
}

/// The columns of `video_jobs`, in [`VideoJobRow`] order.
pub(crate) const VIDEO_JOB_COLUMNS: &str = "id, api_key_sha256, model, prompt, seconds, size, \
    resolution, status, progress, error_code, error_message, video_key, thumbnail_key, \
    video_bytes, created_at_ms, updated_at_ms, completed_at_ms, expires_at_ms, job";

/// Reads a row selected with [`VIDEO_JOB_COLUMNS`].
pub(crate) fn video_job_from_row<R>(row: &R) -> Result<VideoJobRecord, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |e: sqlx::Error| super::sqlx_error(e);
    let id: String = row.try_get(0).map_err(get)?;
    let status: String = row.try_get(7).map_err(get)?;
    let status = VideoJobStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("video job {id}: unknown status {status:?}")))?;
    let error_code: Option<String> = row.try_get(9).map_err(get)?;
    let error_message: Option<String> = row.try_get(10).map_err(get)?;
    Ok(VideoJobRecord {
        api_key_sha256: row.try_get(1).map_err(get)?,
        model: row.try_get(2).map_err(get)?,
        prompt: row.try_get(3).map_err(get)?,
        seconds: row.try_get(4).map_err(get)?,
        size: row.try_get(5).map_err(get)?,
        resolution: row.try_get(6).map_err(get)?,
        status,
        progress: row.try_get(8).map_err(get)?,
        error: error_code.map(|code| VideoJobFailure {
            code,
            message: error_message.unwrap_or_default(),
        }),
        video_key: row.try_get(11).map_err(get)?,
        thumbnail_key: row.try_get(12).map_err(get)?,
        video_bytes: row.try_get(13).map_err(get)?,
        created_at_ms: row.try_get(14).map_err(get)?,
        updated_at_ms: row.try_get(15).map_err(get)?,
        completed_at_ms: row.try_get(16).map_err(get)?,
        expires_at_ms: row.try_get(17).map_err(get)?,
        job: row.try_get(18).map_err(get)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_terminal_ones_are_final() {
        for s in [
            VideoJobStatus::Queued,
            VideoJobStatus::InProgress,
            VideoJobStatus::Completed,
            VideoJobStatus::Failed,
        ] {
            assert_eq!(VideoJobStatus::parse(s.as_str()), Some(s));
        }
        assert!(VideoJobStatus::Failed.is_terminal());
        assert!(!VideoJobStatus::InProgress.is_terminal());
        assert_eq!(VideoJobStatus::parse("done"), None);
    }

    #[test]
    fn progress_is_clamped() {
        assert_eq!(VideoJobUpdate::Progress { progress: 250 }.columns(1).1, 100);
    }
}
