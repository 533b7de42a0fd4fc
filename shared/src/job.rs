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
            // The span creating the job (the caller's request) becomes the parent of the
            // worker's span for it.
            traceparent: crate::telemetry::current_traceparent(),
            payload,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobPayload {
    Chat(ChatJob),
    /// Image generation over the Imagine WebSocket.
    ImageGenerate(ImageJob),
    /// Image edit: `inputs` are blob keys of the caller's images, stored by the gateway.
    ImageEdit(ImageEditJob),
    /// Video generation, for a chat completion or an asynchronous `/v1/videos` job.
    Video(VideoJob),
    /// An operation on a set of accounts (quota refresh, NSFW, online assets).
    Account(crate::batch::AccountJob),
    /// A LiveKit voice token for the playground's voice page.
    Voice(VoiceJob),
    /// A job whose handler always fails; lets tests and operators check dead-lettering.
    Poison {
        note: String,
    },
}

impl JobPayload {
    pub fn kind(&self) -> JobKind {
        match self {
            JobPayload::Chat(_) => JobKind::Chat,
            JobPayload::ImageGenerate(_) | JobPayload::ImageEdit(_) => JobKind::Image,
            JobPayload::Video(_) => JobKind::Video,
            JobPayload::Poison { .. } => JobKind::Maintenance,
            JobPayload::Account(_) => JobKind::Maintenance,
            // One short upstream call: it rides with chat, whose workers answer fast.
            JobPayload::Voice(_) => JobKind::Chat,
        }
    }
}

/// A LiveKit voice token request, already validated by the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceJob {
    pub voice: String,
    pub personality: String,
    pub speed: f64,
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

/// An image generation, already validated by the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageJob {
    /// Public model id (for the response).
    pub model: String,
    pub tier: Tier,
    pub cost: u32,
    pub prompt: String,
    /// Images wanted (1 to 10).
    pub n: u32,
    /// Upstream aspect ratio (`1:1`, `2:3`, `16:9`, ...).
    pub aspect_ratio: String,
    /// Whether the caller streams, so previews are worth publishing.
    pub stream: bool,
}

/// An image edit: the generation fields plus the input images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEditJob {
    #[serde(flatten)]
    pub image: ImageJob,
    /// Blob keys of the input images, in the caller's order (at most 8 reach the upstream).
    pub inputs: Vec<String>,
}

/// A video generation, already validated by the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoJob {
    /// Public model id (for the response).
    pub model: String,
    pub cost: u32,
    pub prompt: String,
    /// Upstream aspect ratio: `16:9`, `9:16`, `3:2`, `2:3` or `1:1`.
    pub aspect_ratio: String,
    /// Length in seconds, 1 to 15.
    pub seconds: u32,
    /// `480p` or `720p`.
    pub resolution: String,
    /// Upstream `--mode=` value (`custom`, `normal`, `extremely-crazy`, ...).
    pub mode: String,
    /// Image-to-video: the input image as a `data:` URI or an http(s) URL (fetched by the
    /// worker under the SSRF policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub delivery: VideoDelivery,
}

/// How a video job reports its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum VideoDelivery {
    /// A chat completion: progress lines (when `progress_lines`) and the rendered video as
    /// text events.
    Chat { progress_lines: bool },
    /// An asynchronous `/v1/videos` job: the store record with the job's id is the outcome;
    /// events carry progress only.
    Record,
}
