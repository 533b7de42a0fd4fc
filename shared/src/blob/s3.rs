//! A BlobStore on any S3-compatible service (AWS S3, SeaweedFS, MinIO, ...).
//!
//! Path-style addressing with a custom endpoint, the bucket created when missing, multipart
//! uploads above `blob.multipart_threshold_bytes`, presigned GET links. An optional key
//! prefix (`s3://bucket/prefix`) lets several deployments share one bucket.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{BlobError, BlobInfo, BlobReader, BlobStore, validate_key};
use crate::config::{BlobConfig, S3_MIN_PART_BYTES};
use crate::time::now_ms;

/// Parts of one multipart upload sent at once.
const PART_CONCURRENCY: usize = 2;
/// Keys per list request (S3's maximum).
const LIST_PAGE: usize = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Objects in one bucket, under an optional key prefix.
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: u64,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds credentials; only say where the objects are.
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Turns an SDK failure into a BlobError without credentials or request signatures.
fn sdk_error<E: ProvideErrorMetadata>(what: &str, e: &SdkError<E>) -> BlobError {
    let detail = match e {
        SdkError::ServiceError(_) => format!(
            "{} {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or("")
        ),
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(_) => "cannot reach the S3 endpoint".into(),
        _ => "unexpected response".into(),
    };
    BlobError::Unavailable(format!("S3 {what}: {}", detail.trim()))
}

/// The HTTP status of a failed call, when the service answered at all.
fn status_of<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl S3BlobStore {
    /// Connects and makes sure the bucket exists (creating it when missing).
    pub async fn connect(config: &BlobConfig) -> Result<Self, BlobError> {
        let (bucket, prefix) = config.s3_location().ok_or(BlobError::InvalidKey)?;
        let region = if config.region.is_empty() {
            "us-east-1".to_owned()
        } else {
            config.region.clone()
        };
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.clone()));
        if !config.access_key.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                config.access_key.expose(),
                config.secret_key.expose(),
                None,
                None,
                "grok2api-config",
            ));
        }
        let shared = loader
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if !config.endpoint.is_empty() {
            builder = builder
                .endpoint_url(config.endpoint.trim_end_matches('/'))
                .force_path_style(true);
        }
        let store = Self {
            client: Client::from_conf(builder.build()),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            part_size: config.multipart_threshold_bytes.max(S3_MIN_PART_BYTES),
        };
        store.ensure_bucket(&region).await?;
        Ok(store)
    }

    /// Creates the bucket unless it is there. Processes starting together race to create
    /// it, and some servers answer a create that loses the race with an error other than
    /// "already exists" (SeaweedFS: NoSuchBucket); so a failed create is retried after
    /// looking again, and only a bucket still missing after a few rounds is an error.
    async fn ensure_bucket(&self, region: &str) -> Result<(), BlobError> {
        const ROUNDS: u32 = 5;
        let mut last = None;
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(round))).await;
            }
            match self.client.head_bucket().bucket(&self.bucket).send().await {
                Ok(_) => return Ok(()),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(sdk_error("head bucket", &e)),
            }
            let mut create = self.client.create_bucket().bucket(&self.bucket);
            if region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region))
                        .build(),
                );
            }
            match create.send().await {
                Ok(_) => {
                    tracing::info!(bucket = %self.bucket, "created the media bucket");
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => last = Some(sdk_error("create bucket", &e)),
            }
        }
        Err(last.unwrap_or_else(|| BlobError::Unavailable("create bucket: gave up".into())))
    }

    fn full_key(&self, key: &str) -> Result<String, BlobError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    fn strip_prefix<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    async fn put_multipart(
        &self,
        full: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), BlobError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| sdk_error("create multipart upload", &e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BlobError::Unavailable("S3 returned no upload id".into()))?
            .to_owned();
        let part_size = self.part_size as usize;
        let parts: Vec<(i32, Bytes)> = (0..body.len())
            .step_by(part_size)
            .enumerate()
            .map(|(i, start)| {
                let end = (start + part_size).min(body.len());
                (i as i32 + 1, body.slice(start..end))
            })
            .collect();
        let uploaded: Result<Vec<CompletedPart>, BlobError> = futures::stream::iter(parts)
            .map(|(number, chunk)| {
                let upload_id = upload_id.clone();
                async move {
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(ByteStream::from(chunk))
                        .send()
                        .await
                        .map_err(|e| sdk_error("upload part", &e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build())
                }
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("complete multipart upload", &e))
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Abandoned parts cost storage until aborted.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }
}

/// The total size from `Content-Range: bytes a-b/total`.
fn total_from_content_range(value: &str) -> Option<u64> {
    value.rsplit_once('/')?.1.trim().parse().ok()
}

fn time_ms(t: Option<&aws_sdk_s3::primitives::DateTime>) -> i64 {
    t.and_then(|t| t.to_millis().ok()).unwrap_or(0)
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, content_type: &str, body: Bytes) -> Result<BlobInfo, BlobError> {
        let full = self.full_key(key)?;
        let size = body.len() as u64;
        if size > self.part_size {
            self.put_multipart(&full, content_type, body).await?;
        } else {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .content_type(content_type)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| sdk_error("put", &e))?;
        }
        Ok(BlobInfo {
            key: key.to_owned(),
            size,
            content_type: content_type.to_owned(),
            modified_ms: now_ms(),
        })
    }

    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> Result<BlobReader, BlobError> {
        let full = self.full_key(key)?;
        let mut request = self.client.get_object().bucket(&self.bucket).key(&full);
        if let Some((start, end)) = range {
            if start >= end {
                return Err(BlobError::InvalidRange);
            }
            request = request.range(format!("bytes={start}-{}", end - 1));
        }
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) if status_of(&e) == Some(404) => return Err(BlobError::NotFound),
            Err(e) if status_of(&e) == Some(416) => return Err(BlobError::InvalidRange),
            Err(e) => return Err(sdk_error("get", &e)),
        };
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let (size, served) = match (
            range,
            out.content_range().and_then(total_from_content_range),
        ) {
            (Some((start, _)), Some(total)) => (total, (start, start + length)),
            // A server that ignored the range sent everything.
            _ => (length, (0, length)),
        };
        let info = BlobInfo {
            key: key.to_owned(),
            size,
            content_type: out.content_type().unwrap_or_default().to_owned(),
            modified_ms: time_ms(out.last_modified()),
        };
        let body = futures::stream::try_unfold(out.body, |mut body| async move {
            match body.next().await {
                Some(Ok(chunk)) => Ok(Some((chunk, body))),
                Some(Err(e)) => Err(BlobError::Unavailable(format!("S3 read: {e}"))),
                None => Ok(None),
            }
        })
        .boxed();
        Ok(BlobReader {
            info,
            range: served,
            body,
        })
    }

    async fn head(&self, key: &str) -> Result<BlobInfo, BlobError> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(BlobInfo {
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                content_type: out.content_type().unwrap_or_default().to_owned(),
                modified_ms: time_ms(out.last_modified()),
            }),
            Err(e) if status_of(&e) == Some(404) => Err(BlobError::NotFound),
            Err(e) => Err(sdk_error("head", &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, BlobError> {
        // S3 deletes are silent about whether anything was there; ask first.
        let existed = match self.head(key).await {
            Ok(_) => true,
            Err(BlobError::NotFound) => false,
            Err(e) => return Err(e),
        };
        if existed {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.full_key(key)?)
                .send()
                .await
                .map_err(|e| sdk_error("delete", &e))?;
        }
        Ok(existed)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<BlobInfo>, BlobError> {
        let full_prefix = if self.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .max_keys((limit - out.len()).min(LIST_PAGE) as i32)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("list", &e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                out.push(BlobInfo {
                    key: self.strip_prefix(full).to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    content_type: String::new(),
                    modified_ms: time_ms(object.last_modified()),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.truncate(limit);
        // Some S3-compatible servers list directory by directory rather than in byte order.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, BlobError> {
        let full = self.full_key(key)?;
        let config = PresigningConfig::expires_in(ttl)
            .map_err(|e| BlobError::Unavailable(format!("presign: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .presigned(config)
            .await
            .map_err(|e| sdk_error("presign", &e))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("head bucket", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_size_from_content_range() {
        assert_eq!(total_from_content_range("bytes 0-9/1234"), Some(1234));
        assert_eq!(total_from_content_range("bytes */1234"), Some(1234));
        assert_eq!(total_from_content_range("bytes 0-9/*"), None);
    }
}
