//! Resuming a streamed chat: a caller that lost its stream (a gateway restarted, a network
//! cut) sends the same request again with `Last-Event-ID` set to the last SSE `id:` it
//! received, to any gateway replica. The answer continues from the job's replay log: the
//! events after that id, then live ones, with no gap and no duplicate.
//!
//! An SSE id is `<job id>-<attempt>-<seq>` (the job id as 32 hex digits), set on the last
//! chunk of each job event, so an id always marks a whole event as received.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;
use crate::feed::EventFeed;
use crate::state::AppState;

/// Where a resumed stream picks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    pub job_id: Uuid,
    /// `(attempt, seq)` of the last event the caller has.
    pub after: (u32, u64),
}

/// The SSE id of the event `(attempt, seq)` of `job_id`.
pub fn event_id(job_id: Uuid, attempt: u32, seq: u64) -> String {
    format!("{}-{attempt}-{seq}", job_id.simple())
}

/// Parses an SSE id made by [`event_id`].
pub fn parse_event_id(value: &str) -> Option<ResumePoint> {
    let mut parts = value.trim().split('-');
    let (job, attempt, seq) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || job.len() != 32 {
        return None;
    }
    let job_id = Uuid::try_parse(job).ok()?;
    let attempt = attempt.parse().ok().filter(|a| *a > 0)?;
    let seq = seq.parse().ok().filter(|s| *s > 0)?;
    Some(ResumePoint {
        job_id,
        after: (attempt, seq),
    })
}

/// The resume point a request asks for: none without `Last-Event-ID`, a 400 naming the
/// header when it is not one of ours.
pub fn requested(headers: &HeaderMap) -> Result<Option<ResumePoint>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(parse_event_id)
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                "Last-Event-ID",
                "invalid_last_event_id",
                "Last-Event-ID must be the id of an event of this API's streams",
            )
        })
}

/// A feed over the whole job from its first event (the chunk writer must see every event
/// to rebuild its state); the caller skips what it already has. A job whose events are
/// gone (never existed, or past `bus.replay_ttl_secs`) or that was cancelled is an error.
pub async fn feed(
    state: &AppState,
    point: ResumePoint,
    timeout: Duration,
) -> Result<EventFeed, ApiError> {
    let bus = state.backends.bus.clone();
    let unavailable =
        |_| ApiError::unavailable("The event bus is unavailable, try again shortly", 2);
    let known = bus.replay(point.job_id, None).await.map_err(unavailable)?;
    if known.is_empty() {
        return Err(ApiError::not_found(
            "No stream to resume: the job is unknown or its events have expired",
        )
        .with_code("resume_not_found"));
    }
    let finished = known.iter().any(|ev| ev.is_terminal());
    if !finished && bus.is_cancelled(point.job_id).await.map_err(unavailable)? {
        return Err(ApiError::new(
            StatusCode::GONE,
            "The job was cancelled when its caller left; send the request again",
        )
        .with_code("job_cancelled"));
    }
    Ok(EventFeed::resume(bus, point.job_id, None, Instant::now() + timeout).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_reject_anything_else() {
        let job = Uuid::now_v7();
        let id = event_id(job, 2, 17);
        assert_eq!(
            parse_event_id(&id),
            Some(ResumePoint {
                job_id: job,
                after: (2, 17)
            })
        );
        for bad in [
            "",
            "garbage",
            "1-2",
            &format!("{}-1", job.simple()),
            &format!("{}-0-1", job.simple()),
            &format!("{}-1-0", job.simple()),
            &format!("{}-1-2-3", job.simple()),
            &format!("{}-1-2", job.hyphenated()),
            &format!("{}-x-2", job.simple()),
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }
}
