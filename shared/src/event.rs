//! Job events: what a worker publishes while it runs a job and the gateway turns into
//! SSE chunks, WebSocket messages or a single JSON answer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event of one attempt of one job. `(job_id, attempt, seq)` identifies it: a consumer
/// drops anything it has already seen, and a new `attempt` tells it the job was redelivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: Uuid,
    pub attempt: u32,
    /// Starts at 1 for every attempt and grows by one per event.
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

impl JobEvent {
    /// The id used for SSE `id:` lines and `Last-Event-ID`.
    pub fn cursor(&self) -> String {
        format!("{}-{}", self.attempt, self.seq)
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.body, EventBody::Done { .. } | EventBody::Error { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    /// The upstream accepted the request; output follows.
    Started {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
    Reasoning {
        text: String,
    },
    Delta {
        text: String,
    },
    Progress {
        percent: u8,
    },
    Usage {
        prompt_tokens: u64,
        completion_tokens: u64,
    },
    Done {
        finish_reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
    Error(JobError),
}

/// A terminal failure, already classified for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// OpenAI-style error code: `rate_limit_exceeded`, `upstream_error`, `timeout`, ...
    pub code: String,
    pub message: String,
    /// The HTTP status the gateway answers with when nothing has been sent yet.
    pub status: u16,
    /// Seconds until a retry makes sense (becomes `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl JobError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_flat_json() {
        let ev = JobEvent {
            job_id: Uuid::nil(),
            attempt: 2,
            seq: 7,
            body: EventBody::Delta { text: "hi".into() },
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event"], "delta");
        assert_eq!(json["text"], "hi");
        assert_eq!(serde_json::from_value::<JobEvent>(json).unwrap(), ev);
        assert_eq!(ev.cursor(), "2-7");
        let err = JobEvent {
            body: EventBody::Error(
                JobError::new(429, "rate_limit_exceeded", "x").with_retry_after(3),
            ),
            ..ev
        };
        assert!(err.is_terminal());
        let back: JobEvent = serde_json::from_str(&serde_json::to_string(&err).unwrap()).unwrap();
        assert_eq!(back, err);
    }
}
