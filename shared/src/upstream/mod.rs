//! Everything that knows Grok's wire format: transports (the chat WebSocket gateway, the
//! REST `conversations/new` NDJSON stream), request builders, frame parsers, headers and
//! `x-statsig-id`, and error classification.
//!
//! Callers use [`UpstreamClient`] (in `client.rs`) and see only [`ChatRequest`],
//! [`ChatChunk`] and [`UpstreamError`]; nothing outside this module parses upstream frames.

pub mod account_ops;
mod assets;
mod body;
mod classify;
mod client;
mod frames;
mod headers;
mod image_edit;
mod imagine;
mod imagine_frames;
pub(crate) mod observe;
mod rest_chat;
mod rest_frames;
mod session;
mod statsig;
mod stream;
mod upload;
mod video;
mod video_frames;
mod ws_chat;
mod ws_frames;

pub use assets::{DownloadedAsset, MediaType, sniff_media_type};
pub use client::UpstreamClient;
pub use image_edit::{EDIT_MODEL_NAME, ImageEditRequest, MAX_EDIT_INPUTS};
pub use imagine::{ImageStream, ImageUpdate, ImagineRequest, MAX_IMAGES_PER_REQUEST};
pub use video::{VIDEO_MODEL_NAME, VideoRequest, VideoStream};
pub use video_frames::{VideoOutcome, VideoUpdate, video_id_from_url};

use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// One chat call, already flattened to the upstream's single-message form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Upstream mode: `fast`, `auto`, `expert`, `heavy`.
    pub mode: String,
    pub message: String,
    pub temperature: f64,
    pub top_p: f64,
    pub reasoning_effort: Option<String>,
    /// Upstream file ids from [`UpstreamClient::upload`](client) calls made with the same token.
    pub file_ids: Vec<String>,
    pub temporary: bool,
    pub disable_memory: bool,
}

/// What a chat stream yields, transport-independent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatChunk {
    /// The upstream accepted the request (first frame seen).
    Started {
        response_id: Option<String>,
    },
    Reasoning(String),
    Text(String),
    /// A web source the answer cites.
    Citation {
        url: String,
        title: Option<String>,
    },
    /// Normal end of the answer.
    Done {
        response_id: Option<String>,
    },
}

pub type ChatStream = BoxStream<'static, Result<ChatChunk, UpstreamError>>;

/// How an upstream failure should be handled by the pool and the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpstreamErrorKind {
    /// 429 or an in-band rate-limit error: cool the account, try another.
    RateLimited { retry_after: Option<Duration> },
    /// 401 / unauthenticated session: counts toward the account's failure threshold.
    Unauthorized,
    /// The account is blocked (`blocked-user`): invalid at once.
    Blocked,
    /// A Cloudflare / anti-bot challenge (HTML 403): says nothing about the account.
    AntiBot,
    /// A JSON 403: an application decision about this request.
    Forbidden,
    /// 400: our request was wrong; retrying will not help.
    BadRequest,
    /// 5xx, connection reset, stream cut: may succeed on retry.
    Transient,
    /// Connect, first-frame or idle timeout.
    Timeout,
    /// A frame we could not make sense of where one was required.
    Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {kind:?} (status {status:?}): {message}")]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    pub status: Option<u16>,
    /// Safe to log and to show: never contains a cookie or token.
    pub message: String,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            message: message.into(),
        }
    }
}
