//! Job envelopes: what the gateway publishes and a worker consumes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::models::Tier;

/// Each job kind has its own durable queue, so a flood of one kind cannot starve another
/// and each can get its own worker concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Chat,
    Image,
    Video,
    Maintenance,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Chat,
        JobKind::Image,
        JobKind::Video,
        JobKind::Maintenance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Chat => "chat",
            JobKind::Image => "image",
            JobKind::Video => "video",
            JobKind::Maintenance => "maintenance",
        }
    }
}

/// The message on the queue. Everything a worker needs to run the job, plus what it needs
/// to decide not to (deadline) and to continue the caller's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEnvelope {
    pub id: Uuid,
    pub kind: JobKind,
    /// Unix milliseconds after which nobody waits for the answer any more.
    pub deadline_ms: i64,
    /// W3C trace context of the request that created the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub payload: JobPayload,
}

impl JobEnvelope {
    pub fn new(payload: JobPayload, deadline_ms: i64) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind: payload.kind(),
            deadline_ms,
            traceparent: None,
            payload,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobPayload {
    Chat(ChatJob),
    /// A job whose handler always fails; lets tests and operators check dead-lettering.
    Poison {
        note: String,
    },
}

impl JobPayload {
    pub fn kind(&self) -> JobKind {
        match self {
            JobPayload::Chat(_) => JobKind::Chat,
            JobPayload::Poison { .. } => JobKind::Maintenance,
        }
    }
}

/// A chat completion, already validated and flattened by the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatJob {
    /// Public model id (for the response) and what it maps to upstream.
    pub model: String,
    pub upstream_mode: String,
    pub tier: Tier,
    pub cost: u32,
    /// The conversation flattened to one prompt, as the upstream web client sends it.
    pub message: String,
    /// `http(s)` or `data:` URLs of attachments, in order (files, then images).
    #[serde(default)]
    pub attachments: Vec<String>,
    pub temperature: f64,
    pub top_p: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Whether the caller wants reasoning at all; the worker skips publishing it otherwise.
    pub want_reasoning: bool,
    pub stream: bool,
}
