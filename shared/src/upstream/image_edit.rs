//! Image edit through app-chat: `POST {base}/rest/app-chat/conversations/new` with
//! `modelName: "imagine-image-edit"` and `mediaGenInput.imageToImage` naming 1 to 8
//! uploaded files (their `fileMetadataId`s, uploaded with the same account).
//!
//! The NDJSON answer carries `streamingImageGenerationResponse` progress, then the results
//! as `modelResponse.generatedImageUrls` or as card attachments with an `image_chunk`. The
//! results are URLs on the assets host: download them with the same account.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::LineSplitter;
use super::client::{UpstreamClient, scrub};
use super::frames::MAX_FRAME_BYTES;
use super::{ImageStream, ImageUpdate, UpstreamError, UpstreamErrorKind, classify, rest_chat};
use crate::Secret;

/// The `modelName` of the edit call.
pub const EDIT_MODEL_NAME: &str = "imagine-image-edit";
/// Most input images one edit takes.
pub const MAX_EDIT_INPUTS: usize = 8;

/// One edit call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEditRequest {
    pub prompt: String,
    pub aspect_ratio: String,
    /// `fileMetadataId`s of uploads made with the same account, 1 to [`MAX_EDIT_INPUTS`].
    pub input_file_ids: Vec<String>,
}

/// The request body of the current web client.
pub(crate) fn request_body(request: &ImageEditRequest) -> Value {
    json!({
        "temporary": true,
        "modelName": EDIT_MODEL_NAME,
        "message": request.prompt,
        "enableImageGeneration": true,
        "enableImageStreaming": true,
        "enableSideBySide": true,
        "sendFinalMetadata": true,
        "fileAttachments": [],
        "imageAttachments": [],
        "toolOverrides": {"imageGen": true},
        "mediaGenInput": {"imageToImage": {
            "prompt": request.prompt,
            "inputAssets": request.input_file_ids,
            "aspectRatio": request.aspect_ratio,
        }},
    })
}

impl UpstreamClient {
    /// Starts one image edit with the account `token`. A refusal before the answer streams
    /// (429, 401, a bad input) is returned here.
    pub async fn edit_image(
        &self,
        token: &Secret,
        request: &ImageEditRequest,
    ) -> Result<ImageStream, UpstreamError> {
        super::observe::media_stream("image_edit", self.open_edit(token, request), |u| {
            matches!(u, ImageUpdate::Final { .. } | ImageUpdate::Moderated { .. })
        })
        .await
    }

    async fn open_edit(
        &self,
        token: &Secret,
        request: &ImageEditRequest,
    ) -> Result<ImageStream, UpstreamError> {
        let count = request.input_file_ids.len();
        if count == 0 || count > MAX_EDIT_INPUTS {
            return Err(UpstreamError::new(
                UpstreamErrorKind::BadRequest,
                None,
                format!("an edit takes 1 to {MAX_EDIT_INPUTS} input images"),
            ));
        }
        let inner = self.inner();
        let (response, _deadline) = rest_chat::send(inner, token, &request_body(request))
            .await
            .map_err(|e| scrub(e, token))?;
        let reader = EditReader {
            body: response.bytes_stream().boxed(),
            lines: LineSplitter::new(MAX_FRAME_BYTES),
            parser: EditParser::default(),
            pending: std::collections::VecDeque::new(),
            idle: inner.idle_timeout,
            finished: false,
        };
        let token = token.clone();
        Ok(futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        })
        .map(move |item| item.map_err(|e| scrub(e, &token)))
        .boxed())
    }
}

struct EditReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    lines: LineSplitter,
    parser: EditParser,
    pending: std::collections::VecDeque<Result<ImageUpdate, UpstreamError>>,
    idle: Duration,
    finished: bool,
}

impl EditReader {
    async fn next(&mut self) -> Option<Result<ImageUpdate, UpstreamError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => self.fail(classify::timeout("image edit stream idle")),
                Ok(Some(Err(e))) => {
                    let mut error = classify::from_reqwest(e);
                    if error.kind != UpstreamErrorKind::Timeout {
                        error.kind = UpstreamErrorKind::Transient;
                    }
                    self.fail(error);
                }
                Ok(Some(Ok(chunk))) => {
                    self.lines.push(&chunk);
                    loop {
                        match self.lines.next_line() {
                            Ok(Some(line)) => {
                                let parsed = self.parser.line(&line);
                                self.take(parsed);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                self.fail(e);
                                break;
                            }
                        }
                        if self.finished {
                            break;
                        }
                    }
                }
                Ok(None) => {
                    if let Some(last) = self.lines.finish() {
                        let parsed = self.parser.line(&last);
                        self.take(parsed);
                    }
                    if !self.finished {
                        let parsed = self.parser.eof();
                        self.take(parsed);
                        self.finished = true;
                    }
                }
            }
        }
    }

    fn take(&mut self, parsed: Parsed) {
        self.pending.extend(parsed.updates.into_iter().map(Ok));
        if let Some(error) = parsed.error {
            self.fail(error);
        } else if parsed.end {
            self.finished = true;
        }
    }

    fn fail(&mut self, error: UpstreamError) {
        if !self.finished {
            self.pending.push_back(Err(error));
            self.finished = true;
        }
    }
}

/// What one line said.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub updates: Vec<ImageUpdate>,
    pub error: Option<UpstreamError>,
    /// The answer is over.
    pub end: bool,
}

/// Per-answer state of the edit line parser.
#[derive(Debug, Default)]
pub(crate) struct EditParser {
    finals: HashSet<u32>,
    moderated: HashSet<u32>,
    ended: bool,
}

impl EditParser {
    pub(crate) fn line(&mut self, raw: &[u8]) -> Parsed {
        let mut out = Parsed::default();
        if self.ended {
            return out;
        }
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        let text = text.strip_prefix("data:").map_or(text, str::trim);
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return out;
        };
        if let Some(error) = frame
            .get("error")
            .or_else(|| frame.pointer("/result/response/error"))
            .filter(|e| !e.is_null())
        {
            self.ended = true;
            out.error = Some(classify::from_in_band(error));
            return out;
        }
        let Some(response) = frame.pointer("/result/response") else {
            return out;
        };
        if let Some(progress) = response.get("streamingImageGenerationResponse") {
            let index = progress
                .get("imageIndex")
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32;
            let percent = progress
                .get("progress")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(100) as u8;
            if progress.get("moderated").and_then(Value::as_bool) == Some(true) {
                if self.moderated.insert(index) {
                    out.updates.push(ImageUpdate::Moderated { index });
                }
            } else if !self.finals.contains(&index) {
                out.updates.push(ImageUpdate::Progress { index, percent });
            }
        }
        for chunk in card_image_chunks(response) {
            let index = chunk
                .get("imageIndex")
                .and_then(Value::as_u64)
                .map_or(self.finals.len() as u32, |i| i as u32);
            let url = chunk
                .get("imageUrl")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty());
            let moderated = chunk.get("moderated").and_then(Value::as_bool) == Some(true);
            let done = chunk.get("progress").and_then(Value::as_u64) == Some(100);
            if moderated {
                if self.moderated.insert(index) {
                    out.updates.push(ImageUpdate::Moderated { index });
                }
            } else if let (Some(url), true) = (url, done) {
                self.push_final(&mut out, index, url);
            }
        }
        if let Some(urls) = response
            .pointer("/modelResponse/generatedImageUrls")
            .and_then(Value::as_array)
        {
            for (index, url) in urls.iter().enumerate() {
                if let Some(url) = url.as_str().filter(|u| !u.is_empty()) {
                    self.push_final(&mut out, index as u32, url);
                }
            }
        }
        if response.get("isSoftStop").and_then(Value::as_bool) == Some(true) {
            out.end = true;
            out.error = self.empty_error();
            self.ended = true;
        }
        out
    }

    fn push_final(&mut self, out: &mut Parsed, index: u32, url: &str) {
        if self.finals.insert(index) {
            out.updates.push(ImageUpdate::Final {
                index,
                url: Some(url.to_owned()),
                bytes: None,
            });
        }
    }

    /// The body ended without an explicit end.
    pub(crate) fn eof(&mut self) -> Parsed {
        if self.ended {
            return Parsed::default();
        }
        self.ended = true;
        if self.finals.is_empty() && self.moderated.is_empty() {
            return Parsed {
                error: Some(classify::transient(
                    "image edit stream ended before any result",
                )),
                ..Parsed::default()
            };
        }
        Parsed {
            end: true,
            ..Parsed::default()
        }
    }

    /// An answer that ended with neither results nor moderation is an upstream failure.
    fn empty_error(&self) -> Option<UpstreamError> {
        (self.finals.is_empty() && self.moderated.is_empty())
            .then(|| classify::transient("image edit ended without any image"))
    }
}

/// `image_chunk` objects of `cardAttachment` / `cardAttachments` (their `jsonData` is a
/// JSON document in a string).
fn card_image_chunks(response: &Value) -> Vec<Value> {
    let mut cards: Vec<&Value> = Vec::new();
    if let Some(card) = response.get("cardAttachment") {
        cards.push(card);
    }
    if let Some(list) = response.get("cardAttachments").and_then(Value::as_array) {
        cards.extend(list);
    }
    cards
        .into_iter()
        .filter_map(|card| {
            let data = card.get("jsonData")?;
            let doc = match data {
                Value::String(s) => serde_json::from_str::<Value>(s).ok()?,
                other => other.clone(),
            };
            doc.get("image_chunk").cloned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fixture: &str) -> (Vec<ImageUpdate>, Option<UpstreamError>) {
        let mut parser = EditParser::default();
        let mut updates = Vec::new();
        for line in fixture.lines() {
            let parsed = parser.line(line.as_bytes());
            updates.extend(parsed.updates);
            if let Some(e) = parsed.error {
                return (updates, Some(e));
            }
            if parsed.end {
                return (updates, None);
            }
        }
        let parsed = parser.eof();
        updates.extend(parsed.updates);
        (updates, parsed.error)
    }

    fn finals(updates: &[ImageUpdate]) -> Vec<(u32, String)> {
        updates
            .iter()
            .filter_map(|u| match u {
                ImageUpdate::Final { index, url, .. } => Some((*index, url.clone().unwrap())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn recorded_answer_yields_progress_then_urls() {
        let (updates, error) = run(include_str!("fixtures/edit_two_images.ndjson"));
        assert!(error.is_none());
        assert!(updates.contains(&ImageUpdate::Progress {
            index: 1,
            percent: 25
        }));
        assert_eq!(
            finals(&updates),
            vec![
                (0, "users/u-1/generated/a/image.jpg".to_owned()),
                (
                    1,
                    "https://assets.grok.com/users/u-1/generated/b/image.jpg".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn card_attachments_are_read() {
        let (updates, error) = run(include_str!("fixtures/edit_card_attachment.ndjson"));
        assert!(error.is_none());
        assert_eq!(
            finals(&updates),
            vec![(0, "users/u-1/generated/c/image.jpg".to_owned())]
        );
    }

    #[test]
    fn moderation_is_reported_and_errors_end_the_answer() {
        let (updates, error) = run(include_str!("fixtures/edit_moderated.ndjson"));
        assert!(error.is_none());
        assert_eq!(updates, vec![ImageUpdate::Moderated { index: 0 }]);
        let (_, error) = run("{\"error\":{\"code\":8,\"message\":\"Too many requests\"}}\n");
        assert!(matches!(
            error.unwrap().kind,
            UpstreamErrorKind::RateLimited { .. }
        ));
        let (_, error) = run("{\"result\":{\"response\":{\"isSoftStop\":true}}}\n");
        assert_eq!(error.unwrap().kind, UpstreamErrorKind::Transient);
        let (_, error) = run("");
        assert_eq!(error.unwrap().kind, UpstreamErrorKind::Transient);
    }

    #[test]
    fn body_has_the_media_gen_input() {
        let body = request_body(&ImageEditRequest {
            prompt: "make it blue".into(),
            aspect_ratio: "1:1".into(),
            input_file_ids: vec!["fm-1".into(), "fm-2".into()],
        });
        assert_eq!(body["modelName"], EDIT_MODEL_NAME);
        let edit = &body["mediaGenInput"]["imageToImage"];
        assert_eq!(edit["inputAssets"], json!(["fm-1", "fm-2"]));
        assert_eq!(edit["prompt"], "make it blue");
        assert!(body.get("modeId").is_none());
    }
}
