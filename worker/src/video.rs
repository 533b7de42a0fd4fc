//! Running video jobs: lease an account (720p or longer than 6 s prefers SuperGrok ones),
//! generate, upscale where the account cannot make 720p itself, download and verify the
//! MP4, store it (and its thumbnail) in the blob store, and only then report success.
//!
//! A chat job reports through events (progress lines and the rendered video as text); an
//! asynchronous `/v1/videos` job reports through its store record, which this module moves
//! from `queued` to `in_progress` to `completed` or `failed`. Moderated or missing output is
//! a failure. While no video has been produced, an upstream failure moves the job to another
//! account.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use shared::Secret;
use shared::blob::MediaKind;
use shared::config::VideoFormat;
use shared::event::{EventBody, JobError};
use shared::job::{JobEnvelope, VideoDelivery, VideoJob};
use shared::models::Tier;
use shared::pool::{Lease, LeaseOutcome, LeaseRequest, Settlement};
use shared::store::{VideoJobFailure, VideoJobUpdate};
use shared::time::now_ms;
use shared::upstream::{
    UpstreamError, UpstreamErrorKind, VideoOutcome, VideoRequest, VideoUpdate, sniff_media_type,
    video_id_from_url,
};
use tokio::time::Instant;

use crate::attachments::{Attachment, load};
use crate::chat::{caller_error, no_token_error, settlement_for, short, worth_another_account};
use crate::publisher::EventPublisher;
use crate::{Disposition, Worker};

/// Smallest file accepted as a generated video; anything smaller is a broken result.
pub const MIN_VIDEO_BYTES: usize = 512;
/// Largest generated video downloaded.
pub const MAX_VIDEO_BYTES: usize = 512 * 1024 * 1024;
/// Largest thumbnail downloaded.
const MAX_THUMBNAIL_BYTES: usize = 16 * 1024 * 1024;
/// How often a chat job checks its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(250);

/// A verified video in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVideo {
    /// File name under `/v1/files/video/`.
    pub name: String,
    pub key: String,
    pub size: u64,
    /// File name under `/v1/files/image/`, when a thumbnail was stored.
    pub thumbnail_name: Option<String>,
}

/// How one try with one account ended.
enum TryEnd {
    Stored(StoredVideo),
    Cancelled,
    Moderated,
    Failed(UpstreamError),
    /// The job itself is unusable (a bad input image); no account is to blame.
    Rejected(JobError),
}

/// Runs a video job.
pub async fn run(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &VideoJob,
    attempt: u32,
) -> Disposition {
    let mut run = VideoRun {
        worker,
        envelope,
        job,
        publisher: EventPublisher::new(worker.backends.bus.clone(), envelope.id, attempt),
        last_percent: None,
    };
    if job.delivery == VideoDelivery::Record {
        match worker
            .backends
            .store
            .get_video_job(&envelope.id.to_string())
            .await
        {
            Ok(Some(record)) if record.status.is_terminal() => {
                tracing::info!(job_id = %envelope.id, "video job already settled; redelivery ignored");
                return Disposition::Ack;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(job_id = %envelope.id, "video job has no record; dropped");
                return Disposition::Ack;
            }
            Err(e) => {
                tracing::warn!(job_id = %envelope.id, error = %e, "store unavailable; job handed back");
                return Disposition::Retry;
            }
        }
    }
    let outcome = run.tries().await;
    match run.deliver(outcome).await {
        Ok(()) => Disposition::Ack,
        Err(e) => {
            // Without the bus (chat) or the store (record) the caller cannot hear the
            // outcome: hand the job back so it is retried or dead-lettered.
            tracing::error!(job_id = %envelope.id, error = %e, "could not report the video job's outcome");
            Disposition::Retry
        }
    }
}

/// The account tiers to try, in order: 720p or longer than 6 s prefers SuperGrok accounts
/// (which make them without an upscale), anything else basic ones first.
pub fn tiers_for(job: &VideoJob) -> Vec<Tier> {
    if job.resolution == "720p" || job.seconds > 6 {
        vec![Tier::Super, Tier::Heavy, Tier::Basic]
    } else {
        vec![Tier::Basic, Tier::Super, Tier::Heavy]
    }
}

/// A video in a chat answer, per `app.video_format`.
pub fn render(format: VideoFormat, url: &str, thumbnail: Option<&str>) -> String {
    match format {
        VideoFormat::Url => format!("{url}\n"),
        VideoFormat::Markdown => format!("[video]({url})"),
        VideoFormat::Html => {
            let poster = thumbnail
                .map(|t| format!(" poster=\"{}\"", html_escape(t)))
                .unwrap_or_default();
            format!(
                "<video id=\"video\" controls=\"\" preload=\"none\"{poster}>\n  <source id=\"mp4\" src=\"{}\" type=\"video/mp4\">\n</video>",
                html_escape(url)
            )
        }
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The progress line of a chat answer, as the original product writes it.
fn progress_line(percent: u8) -> String {
    format!("正在生成视频中，当前进度{percent}%\n")
}

/// Checks downloaded bytes are an MP4 (`ftyp` box first) of a plausible size.
pub fn verify_video(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < MIN_VIDEO_BYTES {
        return Err(format!("video of {} bytes is too small", bytes.len()));
    }
    match sniff_media_type(bytes) {
        Some(t) if t.mime == "video/mp4" => Ok(()),
        _ => Err("the downloaded video is not an MP4".into()),
    }
}

/// What the run ends with, before it is reported.
type Outcome = Result<StoredVideo, JobError>;

struct VideoRun<'a> {
    worker: &'a Worker,
    envelope: &'a JobEnvelope,
    job: &'a VideoJob,
    publisher: EventPublisher,
    last_percent: Option<u8>,
}

impl VideoRun<'_> {
    fn is_record(&self) -> bool {
        self.job.delivery == VideoDelivery::Record
    }

    fn record_id(&self) -> String {
        self.envelope.id.to_string()
    }

    /// Every account try; `None` when a chat caller left (nothing to report).
    async fn tries(&mut self) -> Option<Outcome> {
        if now_ms() > self.envelope.deadline_ms {
            return Some(Err(JobError::new(
                504,
                "timeout",
                "The job expired before a worker could take it",
            )));
        }
        if !self.is_record()
            && self
                .worker
                .backends
                .bus
                .is_cancelled(self.envelope.id)
                .await
                .unwrap_or(false)
        {
            return None;
        }
        let image = match &self.job.image {
            Some(source) => match load(source, &self.worker.fetcher).await {
                Ok(a) if a.mime.starts_with("image/") => Some(a),
                Ok(_) => {
                    return Some(Err(JobError::new(
                        400,
                        "invalid_image",
                        "The input is not an image",
                    )));
                }
                Err(e) => return Some(Err(e)),
            },
            None => None,
        };
        let mut exclude: Vec<String> = Vec::new();
        let mut last_error: Option<UpstreamError> = None;
        for _ in 0..self.worker.backends.live.get().retry.max_retry {
            let request = LeaseRequest {
                tiers: tiers_for(self.job),
                exclude: exclude.clone(),
                ttl: Duration::from_secs(self.worker.config.token.lease_ttl_secs),
            };
            let lease = match self.worker.backends.pool.lease(&request).await {
                Ok(LeaseOutcome::Leased(lease)) => lease,
                Ok(LeaseOutcome::Exhausted { retry_after }) => {
                    return Some(Err(match &last_error {
                        Some(e) => caller_error(e),
                        None => no_token_error(retry_after),
                    }));
                }
                Err(e) => {
                    tracing::error!(error = %e, "token pool unavailable");
                    return Some(Err(JobError::new(
                        503,
                        "service_unavailable",
                        "The token pool is unavailable",
                    )
                    .with_retry_after(2)));
                }
            };
            exclude.push(lease.token_id.clone());
            let token = match self
                .worker
                .backends
                .cipher
                .open(&lease.token_id, &lease.sealed)
            {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(token_id = %short(&lease.token_id), error = %e, "stored token cannot be decrypted");
                    self.worker.settle(&lease, Settlement::Released).await;
                    continue;
                }
            };
            let end = self.try_once(&lease, &token, image.as_ref()).await;
            let worker = self.worker;
            match end {
                TryEnd::Stored(video) => {
                    let cost = Settlement::Success {
                        cost: self.job.cost,
                    };
                    worker.settle(&lease, cost).await;
                    return Some(Ok(video));
                }
                TryEnd::Cancelled => {
                    worker.settle(&lease, Settlement::Released).await;
                    return None;
                }
                TryEnd::Rejected(error) => {
                    worker.settle(&lease, Settlement::Released).await;
                    return Some(Err(error));
                }
                TryEnd::Moderated => {
                    // The upstream did the work: the account's quota was spent.
                    let cost = Settlement::Success {
                        cost: self.job.cost,
                    };
                    worker.settle(&lease, cost).await;
                    return Some(Err(JobError::new(
                        400,
                        "content_moderated",
                        "The upstream's content moderation blocked this video",
                    )));
                }
                TryEnd::Failed(error) => {
                    tracing::warn!(job_id = %self.envelope.id, token_id = %short(&lease.token_id), kind = ?error.kind, status = ?error.status, "upstream video call failed");
                    worker.settle(&lease, settlement_for(&error)).await;
                    if !worth_another_account(&error.kind) {
                        return Some(Err(caller_error(&error)));
                    }
                    last_error = Some(error);
                }
            }
        }
        Some(Err(last_error
            .map(|e| caller_error(&e))
            .unwrap_or_else(|| no_token_error(None))))
    }

    /// One account, bounded by the job's deadline.
    async fn try_once(
        &mut self,
        lease: &Lease,
        token: &Secret,
        image: Option<&Attachment>,
    ) -> TryEnd {
        let left = (self.envelope.deadline_ms - now_ms()).max(0) as u64;
        let deadline = Instant::now() + Duration::from_millis(left);
        match tokio::time::timeout_at(deadline, self.generate(lease, token, image)).await {
            Ok(end) => end,
            Err(_) => TryEnd::Rejected(JobError::new(
                504,
                "timeout",
                "The video was not ready before the job's deadline",
            )),
        }
    }

    async fn generate(
        &mut self,
        lease: &Lease,
        token: &Secret,
        image: Option<&Attachment>,
    ) -> TryEnd {
        let upstream = &self.worker.upstream;
        let input_file_id = match image {
            Some(a) => match upstream
                .upload(token, &a.file_name, &a.mime, a.bytes.clone())
                .await
            {
                Ok(id) => Some(id),
                Err(e) => return TryEnd::Failed(e),
            },
            None => None,
        };
        let request = VideoRequest {
            prompt: self.job.prompt.clone(),
            aspect_ratio: self.job.aspect_ratio.clone(),
            duration: self.job.seconds,
            resolution: self.job.resolution.clone(),
            mode: self.job.mode.clone(),
            input_file_id,
        };
        let mut stream = match upstream.generate_video(token, &request).await {
            Ok(s) => s,
            Err(e) => return TryEnd::Failed(e),
        };
        let mut cancel_poll = tokio::time::interval(CANCEL_POLL);
        cancel_poll.tick().await;
        let outcome = loop {
            tokio::select! {
                update = stream.next() => match update {
                    Some(Ok(VideoUpdate::Started { .. })) => {}
                    Some(Ok(VideoUpdate::Progress { percent })) => self.progress(percent).await,
                    Some(Ok(VideoUpdate::Finished(outcome))) => break outcome,
                    Some(Err(e)) => return TryEnd::Failed(e),
                    None => return TryEnd::Failed(UpstreamError::new(
                        UpstreamErrorKind::Transient, None, "the video stream ended early")),
                },
                _ = cancel_poll.tick(), if !self.is_record() => {
                    if self.worker.backends.bus.is_cancelled(self.envelope.id).await.unwrap_or(false) {
                        return TryEnd::Cancelled;
                    }
                }
            }
        };
        drop(stream);
        self.fetch_and_store(lease, token, outcome).await
    }

    /// Reports progress: an event, a chat line, and the record.
    async fn progress(&mut self, percent: u8) {
        if self.last_percent.is_some_and(|p| p >= percent) {
            return;
        }
        self.last_percent = Some(percent);
        let mut bodies = vec![EventBody::Progress { percent }];
        if let VideoDelivery::Chat {
            progress_lines: true,
        } = self.job.delivery
        {
            bodies.push(EventBody::Delta {
                text: progress_line(percent),
            });
        }
        for body in bodies {
            if let Err(e) = self.publisher.publish(body).await {
                tracing::debug!(error = %e, "progress event not published");
            }
        }
        if self.is_record() {
            let update = VideoJobUpdate::Progress {
                progress: i64::from(percent),
            };
            let stored = &self.worker.backends.store;
            if let Err(e) = stored.update_video_job(&self.record_id(), &update).await {
                tracing::warn!(error = %e, "could not record video progress");
            }
        }
    }

    async fn fetch_and_store(
        &mut self,
        lease: &Lease,
        token: &Secret,
        outcome: VideoOutcome,
    ) -> TryEnd {
        if outcome.moderated {
            return TryEnd::Moderated;
        }
        let Some(mut url) = outcome.video_url.clone() else {
            return TryEnd::Failed(UpstreamError::new(
                UpstreamErrorKind::Protocol,
                None,
                "the upstream finished without a video URL",
            ));
        };
        let upstream = &self.worker.upstream;
        // Basic accounts make 480p; the 720p version comes from the upscale call. A failed
        // upscale keeps the original, as the original product does.
        if self.job.resolution == "720p" && lease.tier == Tier::Basic {
            let id = outcome.video_id.clone().or_else(|| video_id_from_url(&url));
            if let Some(id) = id {
                match upstream.upscale_video(token, &id).await {
                    Ok(hd) => url = hd,
                    Err(e) => tracing::warn!(error = %e, "upscale failed; keeping the original"),
                }
            }
        }
        let video = match upstream.download_asset(token, &url, MAX_VIDEO_BYTES).await {
            Ok(v) => v.bytes,
            Err(e) => return TryEnd::Failed(e),
        };
        if let Err(message) = verify_video(&video) {
            return TryEnd::Failed(UpstreamError::new(
                UpstreamErrorKind::Protocol,
                None,
                message,
            ));
        }
        let thumbnail = match &outcome.thumbnail_url {
            Some(t) => match upstream.download_asset(token, t, MAX_THUMBNAIL_BYTES).await {
                Ok(a) => Some(a.bytes),
                Err(e) => {
                    tracing::info!(error = %e, "thumbnail unavailable; the video goes without");
                    None
                }
            },
            None => None,
        };
        match self.store(video, thumbnail).await {
            Ok(stored) => TryEnd::Stored(stored),
            Err(e) => TryEnd::Rejected(e),
        }
    }

    async fn store(&self, video: Bytes, thumbnail: Option<Bytes>) -> Result<StoredVideo, JobError> {
        let blob = &self.worker.backends.blob;
        let name = MediaKind::Video.new_name("mp4");
        let key = MediaKind::Video.key(&name);
        let size = video.len() as u64;
        blob.put(&key, "video/mp4", video).await.map_err(|e| {
            tracing::error!(error = %e, "could not store the video");
            JobError::new(503, "storage_unavailable", "The video could not be stored")
        })?;
        let mut thumbnail_name = None;
        let image = thumbnail.and_then(|b| {
            let kind = sniff_media_type(&b).filter(|t| t.mime.starts_with("image/"))?;
            Some((b, kind))
        });
        if let Some((bytes, kind)) = image {
            let name = MediaKind::Image.new_name(kind.ext);
            match blob
                .put(&MediaKind::Image.key(&name), kind.mime, bytes)
                .await
            {
                Ok(_) => thumbnail_name = Some(name),
                Err(e) => tracing::warn!(error = %e, "could not store the thumbnail"),
            }
        }
        Ok(StoredVideo {
            name,
            key,
            size,
            thumbnail_name,
        })
    }

    /// Tells the caller: the record and/or the events.
    async fn deliver(&mut self, outcome: Option<Outcome>) -> Result<(), String> {
        let Some(outcome) = outcome else {
            tracing::info!(job_id = %self.envelope.id, "video job cancelled by its caller");
            return Ok(());
        };
        if self.is_record() {
            let update = match &outcome {
                Ok(video) => VideoJobUpdate::Completed {
                    video_key: video.key.clone(),
                    thumbnail_key: video
                        .thumbnail_name
                        .as_ref()
                        .map(|n| MediaKind::Image.key(n)),
                    video_bytes: video.size as i64,
                },
                Err(e) => VideoJobUpdate::Failed(VideoJobFailure {
                    code: e.code.clone(),
                    message: e.message.clone(),
                }),
            };
            self.worker
                .backends
                .store
                .update_video_job(&self.record_id(), &update)
                .await
                .map_err(|e| e.to_string())?;
        }
        let published = match outcome {
            Ok(video) => self.announce(&video).await,
            Err(error) => {
                tracing::info!(job_id = %self.envelope.id, code = %error.code, "video job failed");
                self.publisher.error(error).await
            }
        };
        match published {
            Ok(()) => Ok(()),
            // The record already holds the outcome; events are a courtesy there.
            Err(e) if self.is_record() => {
                tracing::debug!(error = %e, "outcome event not published");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn announce(&mut self, video: &StoredVideo) -> Result<(), shared::bus::BusError> {
        if !self.is_record() {
            let live = self.worker.backends.live.get();
            let app = &live.app;
            let url = shared::blob::media_url(&app.app_url, MediaKind::Video, &video.name);
            let poster = video
                .thumbnail_name
                .as_ref()
                .map(|n| shared::blob::media_url(&app.app_url, MediaKind::Image, n));
            let text = render(app.video_format, &url, poster.as_deref());
            self.publisher.publish(EventBody::Delta { text }).await?;
        }
        self.publisher
            .publish(EventBody::Done {
                finish_reason: "stop".into(),
                response_id: None,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(resolution: &str, seconds: u32) -> VideoJob {
        VideoJob {
            model: "grok-imagine-1.0-video".into(),
            cost: 4,
            prompt: "p".into(),
            aspect_ratio: "3:2".into(),
            seconds,
            resolution: resolution.into(),
            mode: "custom".into(),
            image: None,
            delivery: VideoDelivery::Record,
        }
    }

    #[test]
    fn hd_or_long_videos_prefer_super_accounts() {
        assert_eq!(tiers_for(&job("480p", 6))[0], Tier::Basic);
        assert_eq!(tiers_for(&job("720p", 6))[0], Tier::Super);
        assert_eq!(tiers_for(&job("480p", 10))[0], Tier::Super);
        // Every tier stays eligible: preference, not a requirement.
        assert_eq!(tiers_for(&job("720p", 15)).len(), 3);
    }

    #[test]
    fn renders_per_format_and_escapes() {
        assert_eq!(
            render(VideoFormat::Url, "/v1/files/video/a.mp4", None),
            "/v1/files/video/a.mp4\n"
        );
        assert_eq!(render(VideoFormat::Markdown, "u", None), "[video](u)");
        let html = render(
            VideoFormat::Html,
            "http://h/v?a=1&b=\"2\"",
            Some("http://h/t.png"),
        );
        assert!(html.starts_with(
            "<video id=\"video\" controls=\"\" preload=\"none\" poster=\"http://h/t.png\">"
        ));
        assert!(html.contains("src=\"http://h/v?a=1&amp;b=&quot;2&quot;\" type=\"video/mp4\""));
        assert!(!render(VideoFormat::Html, "u", None).contains("poster"));
    }

    #[test]
    fn only_real_mp4s_pass() {
        let mut mp4 = b"\0\0\0\x18ftypisom".to_vec();
        mp4.resize(MIN_VIDEO_BYTES, 0);
        assert!(verify_video(&mp4).is_ok());
        assert!(verify_video(&mp4[..100]).is_err());
        let mut html = b"<html>".to_vec();
        html.resize(MIN_VIDEO_BYTES, b' ');
        assert!(verify_video(&html).is_err());
    }
}
