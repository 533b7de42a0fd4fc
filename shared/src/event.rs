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
    /// Observability metadata; absent in events from older workers.
    #[serde(default, skip_serializing_if = "EventMeta::is_empty")]
    pub meta: EventMeta,
}

/// Metadata carried by every event for metrics and tracing, not for the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    /// Unix milliseconds when the worker published the event (0: unknown).
    #[serde(default)]
    pub published_ms: i64,
    /// W3C trace context of the worker span that published the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl EventMeta {
    /// Stamps the publish time and the current span's trace context.
    pub fn now() -> Self {
        Self {
            published_ms: crate::time::now_ms(),
            traceparent: crate::telemetry::current_traceparent(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.published_ms == 0 && self.traceparent.is_none()
    }
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
    /// Progress of an account batch (`crate::batch`).
    Batch(crate::batch::BatchProgress),
    /// An image (or its progress) of a media job. Final images are in the blob store
    /// before this event is published.
    Media(MediaOutput),
}

/// How far one output of a media job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaStage {
    /// Progress only, or a low-resolution preview.
    Preview,
    /// The verified, stored result.
    Final,
}

/// One output of a media job. Bus messages stay small: final bytes live in the blob store
/// (`key`); only small previews travel inline (`b64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaOutput {
    /// Position of the output in the request (0-based).
    pub index: u32,
    pub stage: MediaStage,
    /// Percent complete, 0 to 100.
    pub progress: u8,
    /// Blob key of a final output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Content type of the bytes (empty for progress without bytes).
    #[serde(default)]
    pub content_type: String,
    /// Size of the bytes, 0 for progress without bytes.
    #[serde(default)]
    pub size: u64,
    /// Base64 of a small preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64: Option<String>,
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
            meta: EventMeta::default(),
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

    #[test]
    fn event_metadata_round_trips_and_defaults_when_absent() {
        let ev = JobEvent {
            job_id: Uuid::nil(),
            attempt: 1,
            seq: 1,
            body: EventBody::Delta { text: "x".into() },
            meta: EventMeta {
                published_ms: 1_700_000_000_000,
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            },
        };
        let back: JobEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
        let old = r#"{"job_id":"00000000-0000-0000-0000-000000000000","attempt":1,"seq":1,"event":"delta","text":"x"}"#;
        let parsed: JobEvent = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.meta, EventMeta::default());
        assert!(!serde_json::to_string(&parsed).unwrap().contains("meta"));
    }
}
