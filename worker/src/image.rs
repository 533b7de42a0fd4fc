//! Running image jobs (generation over Imagine, edit over app-chat): lease an account, run
//! the upstream call, verify and store each final image, and publish progress and results.
//!
//! A result counts only after it passed verification (known magic bytes, at least
//! [`MIN_IMAGE_BYTES`]) and sits in the blob store; its `Media` event follows the write.
//! Moderated or missing output is a failure. While no final image reached the caller, an
//! upstream failure moves the job to another account.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt;
use shared::Secret;
use shared::blob::MediaKind;
use shared::event::{EventBody, JobError, MediaOutput, MediaStage};
use shared::job::{ImageJob, JobEnvelope};
use shared::pool::{LeaseOutcome, LeaseRequest, Settlement};
use shared::time::now_ms;
use shared::upstream::{
    ImageEditRequest, ImageStream, ImageUpdate, ImagineRequest, MAX_EDIT_INPUTS,
    MAX_IMAGES_PER_REQUEST, UpstreamError, UpstreamErrorKind, sniff_media_type,
};
use tokio::time::Instant;

use crate::chat::{caller_error, no_token_error, settlement_for, short, worth_another_account};
use crate::publisher::EventPublisher;
use crate::{Disposition, Worker};

/// Smallest file accepted as a generated image; anything smaller is a broken result.
pub const MIN_IMAGE_BYTES: usize = 1024;
/// Largest generated image downloaded.
pub const MAX_IMAGE_BYTES: usize = 50 * 1024 * 1024;
/// Largest preview sent inline on the bus; bigger previews are skipped.
const MAX_INLINE_PREVIEW_BYTES: usize = 256 * 1024;
/// Largest input image read back from the blob store.
const MAX_INPUT_BYTES: u64 = 50 * 1024 * 1024;
/// How often a running job checks its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(250);

/// The input images of an edit, as read from the blob store.
struct Input {
    name: String,
    mime: String,
    bytes: Bytes,
}

/// How one try with one account ended.
enum TryEnd {
    Completed,
    Cancelled,
    /// Everything the upstream returned was moderated.
    Moderated,
    /// The blob store refused a result; another account would not help.
    StorageFailed,
    Failed {
        error: UpstreamError,
        output_sent: bool,
    },
}

/// Runs an image job; `inputs` are blob keys of an edit's images (empty: a generation).
pub async fn run(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &ImageJob,
    inputs: &[String],
    attempt: u32,
) -> Disposition {
    let mut publisher = EventPublisher::new(worker.backends.bus.clone(), envelope.id, attempt);
    let published = run_tries(worker, envelope, job, inputs, &mut publisher).await;
    let disposition = Disposition::after_publishing(envelope.id, published);
    if disposition == Disposition::Ack {
        // The inputs were only needed for this job (URLs were never stored).
        for key in inputs.iter().filter(|k| !is_url(k)) {
            let _ = worker.backends.blob.delete(key).await;
        }
    }
    disposition
}

/// An edit input given as a URL (through chat) rather than a stored upload.
fn is_url(input: &str) -> bool {
    input.starts_with("http://") || input.starts_with("https://")
}

async fn load_inputs(worker: &Worker, keys: &[String]) -> Result<Vec<Input>, JobError> {
    // The upstream takes at most 8 references; the most recent ones are kept.
    let keys = &keys[keys.len().saturating_sub(MAX_EDIT_INPUTS)..];
    let mut inputs = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        if is_url(key) {
            // Downloaded under the SSRF policy, without any account cookie.
            let fetched = crate::attachments::load(key, &worker.fetcher).await?;
            let kind = sniff_media_type(&fetched.bytes)
                .filter(|t| t.mime.starts_with("image/"))
                .ok_or_else(|| JobError::new(400, "invalid_image", "An input is not an image"))?;
            inputs.push(Input {
                name: format!("image-{i}.{}", kind.ext),
                mime: kind.mime.to_owned(),
                bytes: fetched.bytes,
            });
            continue;
        }
        let (_, bytes) = worker
            .backends
            .blob
            .get(key, None, MAX_INPUT_BYTES)
            .await
            .map_err(|e| {
                tracing::warn!(%key, error = %e, "edit input unreadable");
                JobError::new(500, "input_unavailable", "An input image could not be read")
            })?;
        let kind = sniff_media_type(&bytes)
            .filter(|t| t.mime.starts_with("image/"))
            .ok_or_else(|| JobError::new(400, "invalid_image", "An input is not an image"))?;
        inputs.push(Input {
            name: format!("image-{i}.{}", kind.ext),
            mime: kind.mime.to_owned(),
            bytes,
        });
    }
    Ok(inputs)
}

async fn run_tries(
    worker: &Worker,
    envelope: &JobEnvelope,
    job: &ImageJob,
    input_keys: &[String],
    publisher: &mut EventPublisher,
) -> Result<(), shared::bus::BusError> {
    if now_ms() > envelope.deadline_ms {
        return publisher
            .error(JobError::new(
                504,
                "timeout",
                "The request expired before a worker could take it",
            ))
            .await;
    }
    if worker
        .backends
        .bus
        .is_cancelled(envelope.id)
        .await
        .unwrap_or(false)
    {
        return Ok(());
    }
    let inputs = if input_keys.is_empty() {
        None
    } else {
        match load_inputs(worker, input_keys).await {
            Ok(inputs) => Some(inputs),
            Err(error) => return publisher.error(error).await,
        }
    };
    let mut run = ImageRun {
        worker,
        envelope,
        job,
        publisher,
        started: false,
        finals: 0,
    };
    let mut exclude: Vec<String> = Vec::new();
    let mut last_error: Option<UpstreamError> = None;
    for _ in 0..worker.backends.live.get().retry.max_retry {
        let request = LeaseRequest {
            tiers: job.tier.eligible().to_vec(),
            exclude: exclude.clone(),
            ttl: Duration::from_secs(worker.config.token.lease_ttl_secs),
        };
        let lease = match worker.backends.pool.lease(&request).await {
            Ok(LeaseOutcome::Leased(lease)) => lease,
            Ok(LeaseOutcome::Exhausted { retry_after }) => {
                let error = match &last_error {
                    Some(e) => caller_error(e),
                    None => no_token_error(retry_after),
                };
                return run.publisher.error(error).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "token pool unavailable");
                let error =
                    JobError::new(503, "service_unavailable", "The token pool is unavailable")
                        .with_retry_after(2);
                return run.publisher.error(error).await;
            }
        };
        exclude.push(lease.token_id.clone());
        let token = match worker.backends.cipher.open(&lease.token_id, &lease.sealed) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(token_id = %short(&lease.token_id), error = %e, "stored token cannot be decrypted");
                worker.settle(&lease, Settlement::Released).await;
                continue;
            }
        };
        let end = run.try_once(&token, inputs.as_deref()).await?;
        match end {
            TryEnd::Completed => {
                worker
                    .settle(&lease, Settlement::Success { cost: job.cost })
                    .await;
                return Ok(());
            }
            TryEnd::Cancelled => {
                worker.settle(&lease, Settlement::Released).await;
                tracing::info!(job_id = %envelope.id, "image job cancelled by its caller");
                return Ok(());
            }
            TryEnd::StorageFailed => {
                worker.settle(&lease, Settlement::Released).await;
                let error = JobError::new(
                    503,
                    "storage_unavailable",
                    "Generated images could not be stored; try again shortly",
                )
                .with_retry_after(2);
                return run.publisher.error(error).await;
            }
            TryEnd::Moderated => {
                worker
                    .settle(&lease, Settlement::Success { cost: job.cost })
                    .await;
                let error = JobError::new(
                    400,
                    "content_moderated",
                    "The upstream moderated every image of this request",
                );
                return run.publisher.error(error).await;
            }
            TryEnd::Failed { error, output_sent } => {
                tracing::warn!(job_id = %envelope.id, token_id = %short(&lease.token_id), kind = ?error.kind, status = ?error.status, "upstream image call failed");
                worker.settle(&lease, settlement_for(&error)).await;
                if output_sent || !worth_another_account(&error.kind) {
                    return run.publisher.error(caller_error(&error)).await;
                }
                last_error = Some(error);
            }
        }
    }
    let error = last_error
        .map(|e| caller_error(&e))
        .unwrap_or_else(|| no_token_error(None));
    run.publisher.error(error).await
}

/// The state of one job across its tries.
struct ImageRun<'a> {
    worker: &'a Worker,
    envelope: &'a JobEnvelope,
    job: &'a ImageJob,
    publisher: &'a mut EventPublisher,
    started: bool,
    /// Final images stored and announced so far (the next one gets this index).
    finals: u32,
}

/// What one upstream call produced.
#[derive(Default)]
struct CallTally {
    finals: u32,
    moderated: u32,
}

impl ImageRun<'_> {
    /// One account: as many upstream calls as it takes to get `n` images.
    async fn try_once(
        &mut self,
        token: &Secret,
        inputs: Option<&[Input]>,
    ) -> Result<TryEnd, shared::bus::BusError> {
        let upstream = &self.worker.upstream;
        let mut file_ids = Vec::new();
        if let Some(inputs) = inputs {
            for input in inputs {
                match upstream
                    .upload(token, &input.name, &input.mime, input.bytes.clone())
                    .await
                {
                    Ok(id) => file_ids.push(id),
                    Err(error) => return Ok(self.failed(error)),
                }
            }
        }
        let mut moderated = 0;
        // Each call makes at least one image, so n calls always suffice.
        for _ in 0..self.job.n {
            let wanted = self.job.n - self.finals;
            if wanted == 0 {
                break;
            }
            let opened = if inputs.is_some() {
                let request = ImageEditRequest {
                    prompt: self.job.prompt.clone(),
                    aspect_ratio: self.job.aspect_ratio.clone(),
                    input_file_ids: file_ids.clone(),
                };
                upstream.edit_image(token, &request).await
            } else {
                let request = ImagineRequest {
                    prompt: self.job.prompt.clone(),
                    aspect_ratio: self.job.aspect_ratio.clone(),
                    n: wanted.min(MAX_IMAGES_PER_REQUEST),
                    enable_pro: self.worker.backends.live.get().image.enable_pro,
                    enable_nsfw: self.worker.backends.live.get().image.nsfw,
                };
                upstream.imagine(token, &request).await
            };
            let stream = match opened {
                Ok(stream) => stream,
                Err(error) => return Ok(self.failed(error)),
            };
            let tally = match self.relay(token, stream).await? {
                Ok(tally) => tally,
                Err(end) => return Ok(end),
            };
            moderated += tally.moderated;
            if tally.finals == 0 {
                break;
            }
        }
        if self.finals == 0 {
            if moderated > 0 {
                return Ok(TryEnd::Moderated);
            }
            let error = UpstreamError::new(
                UpstreamErrorKind::Transient,
                None,
                "the upstream returned no image",
            );
            return Ok(self.failed(error));
        }
        self.publisher
            .publish(EventBody::Done {
                finish_reason: "stop".into(),
                response_id: None,
            })
            .await?;
        Ok(TryEnd::Completed)
    }

    fn failed(&self, error: UpstreamError) -> TryEnd {
        TryEnd::Failed {
            error,
            output_sent: self.finals > 0,
        }
    }

    /// Follows one upstream call; `Err(end)` when the try is over.
    async fn relay(
        &mut self,
        token: &Secret,
        mut stream: ImageStream,
    ) -> Result<Result<CallTally, TryEnd>, shared::bus::BusError> {
        let mut tally = CallTally::default();
        let base = self.finals;
        let mut cancel_poll = tokio::time::interval(CANCEL_POLL);
        cancel_poll.tick().await;
        let left = (self.envelope.deadline_ms - now_ms()).max(0) as u64;
        let deadline = Instant::now() + Duration::from_millis(left);
        loop {
            let update = tokio::select! {
                update = stream.next() => update,
                _ = cancel_poll.tick() => {
                    if self.worker.backends.bus.is_cancelled(self.envelope.id).await.unwrap_or(false) {
                        return Ok(Err(TryEnd::Cancelled));
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {
                    let error = UpstreamError::new(UpstreamErrorKind::Timeout, None, "the job's deadline passed");
                    return Ok(Err(TryEnd::Failed { error, output_sent: true }));
                }
            };
            match update {
                None => return Ok(Ok(tally)),
                Some(Err(error)) => {
                    if tally.finals > 0 {
                        // Keep what this call already delivered; the try ends here.
                        tracing::warn!(kind = ?error.kind, "image call failed after some results");
                        return Ok(Ok(tally));
                    }
                    return Ok(Err(self.failed(error)));
                }
                Some(Ok(ImageUpdate::Moderated { .. })) => tally.moderated += 1,
                Some(Ok(ImageUpdate::Progress { index, percent })) => {
                    if self.job.stream && base + index < self.job.n {
                        self.progress(base + index, percent, None).await?;
                    }
                }
                Some(Ok(ImageUpdate::Preview {
                    index,
                    percent,
                    bytes,
                })) => {
                    if self.job.stream && base + index < self.job.n {
                        self.progress(base + index, percent, Some(bytes)).await?;
                    }
                }
                Some(Ok(ImageUpdate::Final { url, bytes, .. })) => {
                    if self.finals >= self.job.n {
                        continue;
                    }
                    let bytes = match (bytes, url) {
                        (Some(bytes), _) => bytes,
                        (None, Some(url)) => {
                            match self
                                .worker
                                .upstream
                                .download_asset(token, &url, MAX_IMAGE_BYTES)
                                .await
                            {
                                Ok(asset) => asset.bytes,
                                Err(error) => {
                                    tracing::warn!(kind = ?error.kind, "generated image download failed");
                                    continue;
                                }
                            }
                        }
                        (None, None) => continue,
                    };
                    match self.store_final(bytes).await? {
                        Stored::Yes => tally.finals += 1,
                        Stored::Unusable => continue,
                        Stored::StoreFailed => return Ok(Err(TryEnd::StorageFailed)),
                    }
                }
            }
        }
    }

    async fn start(&mut self) -> Result<(), shared::bus::BusError> {
        if !self.started {
            self.started = true;
            self.publisher
                .publish(EventBody::Started { response_id: None })
                .await?;
        }
        Ok(())
    }

    async fn progress(
        &mut self,
        index: u32,
        percent: u8,
        preview: Option<Bytes>,
    ) -> Result<(), shared::bus::BusError> {
        self.start().await?;
        let preview = preview
            .filter(|b| b.len() <= MAX_INLINE_PREVIEW_BYTES)
            .and_then(|b| sniff_media_type(&b).map(|t| (t, b)));
        let (content_type, size, b64) = match preview {
            Some((kind, bytes)) => (
                kind.mime.to_owned(),
                bytes.len() as u64,
                Some(STANDARD.encode(&bytes)),
            ),
            None => (String::new(), 0, None),
        };
        self.publisher
            .publish(EventBody::Media(MediaOutput {
                index,
                stage: MediaStage::Preview,
                progress: percent.min(99),
                key: None,
                content_type,
                size,
                b64,
            }))
            .await
    }

    /// Verifies and stores one final image, then announces it.
    async fn store_final(&mut self, bytes: Bytes) -> Result<Stored, shared::bus::BusError> {
        let Some(kind) = verify_image(&bytes) else {
            tracing::warn!(size = bytes.len(), "generated image failed verification");
            return Ok(Stored::Unusable);
        };
        let name = MediaKind::Image.new_name(kind.ext);
        let key = MediaKind::Image.key(&name);
        let size = bytes.len() as u64;
        if let Err(e) = self.worker.backends.blob.put(&key, kind.mime, bytes).await {
            tracing::error!(error = %e, "could not store a generated image");
            return Ok(Stored::StoreFailed);
        }
        self.start().await?;
        let index = self.finals;
        self.finals += 1;
        self.publisher
            .publish(EventBody::Media(MediaOutput {
                index,
                stage: MediaStage::Final,
                progress: 100,
                key: Some(key),
                content_type: kind.mime.to_owned(),
                size,
                b64: None,
            }))
            .await?;
        Ok(Stored::Yes)
    }
}

/// What became of one final image.
enum Stored {
    Yes,
    /// It failed verification (not an image, too small).
    Unusable,
    /// The blob store refused it.
    StoreFailed,
}

/// The image's type when it is a real, complete-looking image.
pub fn verify_image(bytes: &[u8]) -> Option<shared::upstream::MediaType> {
    if bytes.len() < MIN_IMAGE_BYTES {
        return None;
    }
    sniff_media_type(bytes).filter(|t| t.mime.starts_with("image/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_wants_magic_bytes_and_size() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        assert!(verify_image(&png).is_none(), "too small");
        png.resize(MIN_IMAGE_BYTES, 0);
        assert_eq!(verify_image(&png).unwrap().ext, "png");
        let html = vec![b'<'; 4096];
        assert!(verify_image(&html).is_none());
        let mut mp4 = b"\0\0\0\x18ftypmp42".to_vec();
        mp4.resize(4096, 0);
        assert!(verify_image(&mp4).is_none(), "not an image");
    }
}
