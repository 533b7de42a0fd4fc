//! Resuming a streamed chat: a caller that lost its stream (a gateway restarted, a network
//! cut) sends the same request again with `Last-Event-ID` set to the last SSE `id:` it
//! received, to any gateway replica. The answer continues from the job's replay log: the
//! events after that id, then live ones, with no gap and no duplicate.
//!
//! An SSE id is `<job id>-<attempt>-<seq>-<tag>` (the job id as 32 hex digits), set on the
//! last chunk of each job event, so an id always marks a whole event as received. The tag
//! binds the id to the key that asked: a digest of the job id and the caller's bearer key,
//! which nobody without that key can compute. A job id seen elsewhere (a log, a shoulder)
//! resumes nothing for a different key, and no state is kept to check it.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;
use crate::feed::EventFeed;
use crate::state::AppState;

/// Hex digits of the owner tag: 64 bits, far beyond guessing within any rate limit.
const TAG_HEX: usize = 16;

/// Where a resumed stream picks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub job_id: Uuid,
    /// `(attempt, seq)` of the last event the caller has.
    pub after: (u32, u64),
    tag: String,
}

/// Who is asking, as far as resuming goes: the SHA-256 of the bearer key (of nothing when
/// the API is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner([u8; 32]);

impl Owner {
    pub fn of(headers: &HeaderMap) -> Owner {
        let key = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim();
        Owner(Sha256::digest(key.as_bytes()).into())
    }

    fn tag(&self, job_id: Uuid) -> String {
        let mut digest = Sha256::new();
        digest.update(b"grok2api resume\0");
        digest.update(job_id.as_bytes());
        digest.update(self.0);
        let digest = digest.finalize();
        digest[..TAG_HEX / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// True when `point` was made for this owner (compared in constant time).
    pub fn owns(&self, point: &ResumePoint) -> bool {
        shared::crypto::secrets_match(&self.tag(point.job_id), &point.tag)
    }
}

/// The SSE ids of one job's stream for one owner. The digest behind the tag is taken once
/// per stream, not once per event.
pub struct StreamIds {
    job: String,
    tag: String,
}

impl StreamIds {
    pub fn new(owner: &Owner, job_id: Uuid) -> StreamIds {
        StreamIds {
            job: job_id.simple().to_string(),
            tag: owner.tag(job_id),
        }
    }

    /// The SSE id of the event `(attempt, seq)`.
    pub fn event(&self, attempt: u32, seq: u64) -> String {
        format!("{}-{attempt}-{seq}-{}", self.job, self.tag)
    }
}

/// The SSE id of the event `(attempt, seq)` of `job_id`, for `owner`.
#[cfg(test)]
fn event_id(owner: &Owner, job_id: Uuid, attempt: u32, seq: u64) -> String {
    StreamIds::new(owner, job_id).event(attempt, seq)
}

/// Parses an SSE id made by [`event_id`] (without checking whose it is).
pub fn parse_event_id(value: &str) -> Option<ResumePoint> {
    let mut parts = value.trim().split('-');
    let (job, attempt, seq, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || job.len() != 32
        || tag.len() != TAG_HEX
        || !tag.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let job_id = Uuid::try_parse(job).ok()?;
    let attempt = attempt.parse().ok().filter(|a| *a > 0)?;
    let seq = seq.parse().ok().filter(|s| *s > 0)?;
    Some(ResumePoint {
        job_id,
        after: (attempt, seq),
        tag: tag.to_ascii_lowercase(),
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
    owner: &Owner,
    point: &ResumePoint,
    timeout: Duration,
) -> Result<EventFeed, ApiError> {
    let not_found = || {
        ApiError::not_found("No stream to resume: the job is unknown or its events have expired")
            .with_code("resume_not_found")
    };
    // Another key's job answers exactly like an unknown one.
    if !owner.owns(point) {
        return Err(not_found());
    }
    let bus = state.backends.bus.clone();
    let unavailable =
        |_| ApiError::unavailable("The event bus is unavailable, try again shortly", 2);
    let known = bus.replay(point.job_id, None).await.map_err(unavailable)?;
    if known.is_empty() {
        return Err(not_found());
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

    fn owner(key: &str) -> Owner {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        Owner::of(&headers)
    }

    #[test]
    fn event_ids_round_trip_and_reject_anything_else() {
        let job = Uuid::now_v7();
        let id = event_id(&owner("sk-a"), job, 2, 17);
        let point = parse_event_id(&id).unwrap();
        assert_eq!((point.job_id, point.after), (job, (2, 17)));
        let tag = "0123456789abcdef";
        for bad in [
            "",
            "garbage",
            "1-2",
            &format!("{}-1-2", job.simple()),
            &format!("{}-0-1-{tag}", job.simple()),
            &format!("{}-1-0-{tag}", job.simple()),
            &format!("{}-1-2-{tag}-3", job.simple()),
            &format!("{}-1-2-{tag}", job.hyphenated()),
            &format!("{}-x-2-{tag}", job.simple()),
            &format!("{}-1-2-0123456789abcdeg", job.simple()),
            &format!("{}-1-2-0123", job.simple()),
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_key_that_asked_owns_an_id() {
        let job = Uuid::now_v7();
        let point = parse_event_id(&event_id(&owner("sk-a"), job, 1, 3)).unwrap();
        assert!(owner("sk-a").owns(&point));
        assert!(!owner("sk-b").owns(&point));
        assert!(!Owner::of(&HeaderMap::new()).owns(&point));
        // The same position of another job is not owned either.
        let other = parse_event_id(&event_id(&owner("sk-a"), Uuid::now_v7(), 1, 3)).unwrap();
        let forged = format!("{}-1-3-{}", job.simple(), other.tag);
        assert!(!owner("sk-a").owns(&parse_event_id(&forged).unwrap()));
    }
}
