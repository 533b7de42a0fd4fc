//! Video generation through app-chat (`POST {base}/rest/app-chat/conversations/new` with
//! `modelName: "imagine-video-gen"` and `mediaGenInput.textToVideo`), and the 720p upscale
//! `POST {base}/rest/media/video/upscale`.
//!
//! Image-to-video sends `mediaGenInput.imageToVideo` with the uploaded image's
//! `fileMetadataId` in `inputAssets` (a shape inferred from `imageToImage`; the current web
//! client does not offer image-to-video).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{ERROR_BODY_LIMIT, LineSplitter, read_error_body, read_limited};
use super::client::{UpstreamClient, scrub};
use super::frames::{MAX_FRAME_BYTES, str_field};
use super::video_frames::{VideoParser, VideoUpdate};
use super::{UpstreamError, UpstreamErrorKind, classify, rest_chat};
use crate::Secret;

/// The `modelName` of a video call.
pub const VIDEO_MODEL_NAME: &str = "imagine-video-gen";
const UPSCALE_PATH: &str = "/rest/media/video/upscale";
/// Largest upscale answer accepted.
const UPSCALE_ANSWER_LIMIT: usize = 64 * 1024;

/// One video generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoRequest {
    pub prompt: String,
    /// `16:9`, `9:16`, `3:2`, `2:3` or `1:1`.
    pub aspect_ratio: String,
    /// Seconds, 1 to 15.
    pub duration: u32,
    /// `480p` or `720p`.
    pub resolution: String,
    /// The `--mode=` of the message: `custom`, `normal`, `extremely-crazy`,
    /// `extremely-spicy-or-crazy`.
    pub mode: String,
    /// Image-to-video: the `fileMetadataId` of an image uploaded with the same account.
    pub input_file_id: Option<String>,
}

/// The stream of a video answer: `Started`, `Progress`..., then `Finished` or an error.
pub type VideoStream = BoxStream<'static, Result<VideoUpdate, UpstreamError>>;

/// The request body of the current web client.
pub(crate) fn request_body(request: &VideoRequest) -> Value {
    let mut spec = json!({
        "prompt": request.prompt,
        "aspectRatio": request.aspect_ratio,
        "duration": request.duration,
        "resolutionName": request.resolution,
    });
    let input = match &request.input_file_id {
        Some(id) => {
            spec["inputAssets"] = json!([id]);
            json!({"imageToVideo": spec})
        }
        None => json!({"textToVideo": spec}),
    };
    json!({
        "temporary": true,
        "modelName": VIDEO_MODEL_NAME,
        "message": format!("{} --mode={}", request.prompt, request.mode),
        "enableImageStreaming": true,
        "enableSideBySide": true,
        "sendFinalMetadata": true,
        "fileAttachments": [],
        "imageAttachments": [],
        "responseMetadata": {"experiments": [], "modelConfigOverride": {"modelMap": {}}},
        "mediaGenInput": input,
        "kind": "CONVERSATION_KIND_IMAGINE",
    })
}

impl UpstreamClient {
    /// Starts one video generation with the account `token`. A refusal before the answer
    /// streams (429, 401, a bad request) is returned here; afterwards the stream yields
    /// progress and then the outcome, or an error.
    pub async fn generate_video(
        &self,
        token: &Secret,
        request: &VideoRequest,
    ) -> Result<VideoStream, UpstreamError> {
        super::observe::media_stream("video", self.open_video(token, request), |u| {
            matches!(u, VideoUpdate::Finished(_))
        })
        .await
    }

    async fn open_video(
        &self,
        token: &Secret,
        request: &VideoRequest,
    ) -> Result<VideoStream, UpstreamError> {
        let inner = self.inner();
        let (response, _deadline) = rest_chat::send(inner, token, &request_body(request))
            .await
            .map_err(|e| scrub(e, token))?;
        let reader = VideoReader {
            body: response.bytes_stream().boxed(),
            lines: LineSplitter::new(MAX_FRAME_BYTES),
            parser: VideoParser::default(),
            pending: VecDeque::new(),
            idle: inner.idle_timeout,
        };
        let token = token.clone();
        Ok(futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        })
        .map(move |item| item.map_err(|e| scrub(e, &token)))
        .boxed())
    }

    /// Asks for the 720p version of a generated video; returns its `hdMediaUrl`.
    pub async fn upscale_video(
        &self,
        token: &Secret,
        video_id: &str,
    ) -> Result<String, UpstreamError> {
        super::observe::call("video_upscale", self.upscale(token, video_id)).await
    }

    async fn upscale(&self, token: &Secret, video_id: &str) -> Result<String, UpstreamError> {
        let inner = self.inner();
        let call = async {
            let statsig = inner
                .statsig
                .value(&inner.http, &inner.headers, token, UPSCALE_PATH)
                .await;
            let mut headers = inner.headers.api(token, Some(&statsig))?;
            headers.insert(
                http::header::REFERER,
                http::HeaderValue::from_static("https://grok.com"),
            );
            let response = inner
                .http
                .post(format!("{}{UPSCALE_PATH}", inner.base_url))
                .headers(headers)
                .json(&json!({"videoId": video_id}))
                .send()
                .await
                .map_err(classify::from_reqwest)?;
            let status = response.status();
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = read_error_body(response, ERROR_BODY_LIMIT).await;
                return Err(classify::from_http(status.as_u16(), &headers, &body));
            }
            let answer = read_limited(response, UPSCALE_ANSWER_LIMIT).await?;
            let answer: Value = serde_json::from_slice(&answer)
                .map_err(|_| classify::protocol("upscale answer is not JSON"))?;
            str_field(&answer, "hdMediaUrl")
                .map(str::to_owned)
                .ok_or_else(|| classify::protocol("upscale answer without hdMediaUrl"))
        };
        let limit = inner.connect_timeout + inner.idle_timeout;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| classify::timeout("video upscale"))?
            .map_err(|e| scrub(e, token))
    }
}

struct VideoReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    lines: LineSplitter,
    parser: VideoParser,
    pending: VecDeque<Result<VideoUpdate, UpstreamError>>,
    idle: Duration,
}

impl VideoReader {
    async fn next(&mut self) -> Option<Result<VideoUpdate, UpstreamError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.parser.is_ended() {
                return None;
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => self.fail(classify::timeout("video stream idle")),
                Ok(Some(Err(e))) => {
                    let mut error = classify::from_reqwest(e);
                    if error.kind != UpstreamErrorKind::Timeout {
                        error.kind = UpstreamErrorKind::Transient;
                    }
                    self.fail(error);
                }
                Ok(Some(Ok(chunk))) => {
                    self.lines.push(&chunk);
                    while !self.parser.is_ended() {
                        match self.lines.next_line() {
                            Ok(Some(line)) => self.pending.extend(self.parser.line(&line)),
                            Ok(None) => break,
                            Err(e) => self.fail(e),
                        }
                    }
                }
                Ok(None) => {
                    if let Some(last) = self.lines.finish() {
                        self.pending.extend(self.parser.line(&last));
                    }
                    self.pending.extend(self.parser.eof());
                }
            }
        }
    }

    fn fail(&mut self, error: UpstreamError) {
        if !self.parser.is_ended() {
            self.parser.abort();
            self.pending.push_back(Err(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(input: Option<&str>) -> VideoRequest {
        VideoRequest {
            prompt: "a cat".into(),
            aspect_ratio: "16:9".into(),
            duration: 6,
            resolution: "720p".into(),
            mode: "custom".into(),
            input_file_id: input.map(str::to_owned),
        }
    }

    #[test]
    fn text_to_video_body_matches_the_web_client() {
        let body = request_body(&request(None));
        assert_eq!(body["modelName"], "imagine-video-gen");
        assert_eq!(body["message"], "a cat --mode=custom");
        assert_eq!(body["kind"], "CONVERSATION_KIND_IMAGINE");
        let spec = &body["mediaGenInput"]["textToVideo"];
        assert_eq!(spec["prompt"], "a cat");
        assert_eq!(spec["aspectRatio"], "16:9");
        assert_eq!(spec["duration"], 6);
        assert_eq!(spec["resolutionName"], "720p");
        assert!(body.get("modeId").is_none());
    }

    #[test]
    fn image_to_video_names_the_upload() {
        let body = request_body(&request(Some("fm-1")));
        assert!(body["mediaGenInput"].get("textToVideo").is_none());
        assert_eq!(
            body["mediaGenInput"]["imageToVideo"]["inputAssets"],
            json!(["fm-1"])
        );
    }
}
