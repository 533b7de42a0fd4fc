//! Parser of a video generation answer (NDJSON from `conversations/new`).
//!
//! Progress comes as `streamingVideoGenerationResponse {videoId, progress}`; at 100 the same
//! object carries `videoUrl` and `thumbnailImageUrl`, or `moderated: true` and no URL. Newer
//! answers may name the file `contentUrl`, `assetUrl` or `fileUri`, or list it in
//! `modelResponse.fileAttachments`; a location counts as the video once it ends in `.mp4` or
//! contains `/content`.

use serde_json::Value;

use super::frames::str_field;
use super::{UpstreamError, classify};

/// What a video answer said, transport-independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoUpdate {
    /// The upstream accepted the request (first frame seen).
    Started { response_id: Option<String> },
    /// Generation progress, 0 to 99.
    Progress { percent: u8 },
    /// The answer is over.
    Finished(VideoOutcome),
}

/// The end of a video answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VideoOutcome {
    pub video_id: Option<String>,
    /// Relative (`users/...`) or absolute location of the MP4 on the assets host.
    pub video_url: Option<String>,
    pub thumbnail_url: Option<String>,
    /// The upstream refused to show the result.
    pub moderated: bool,
}

/// Per-answer state of the line parser.
#[derive(Debug, Default)]
pub(crate) struct VideoParser {
    started: bool,
    outcome: VideoOutcome,
    /// Progress 100 or the final `modelResponse` was seen: the answer is complete.
    complete: bool,
    last_percent: Option<u8>,
    ended: bool,
}

/// What one line (or the end of the body) produced.
pub(crate) type Parsed = Vec<Result<VideoUpdate, UpstreamError>>;

impl VideoParser {
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// Ends the answer without a result (the transport failed).
    pub(crate) fn abort(&mut self) {
        self.ended = true;
    }

    /// Parses one line (without its newline); lines that are not JSON are skipped.
    pub(crate) fn line(&mut self, raw: &[u8]) -> Parsed {
        let mut out = Vec::new();
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
            out.push(Err(classify::from_in_band(error)));
            return out;
        }
        let Some(response) = frame.pointer("/result/response") else {
            return out;
        };
        if !self.started {
            self.started = true;
            let response_id = str_field(response, "responseId").map(str::to_owned);
            out.push(Ok(VideoUpdate::Started { response_id }));
        }
        if let Some(video) = response.get("streamingVideoGenerationResponse") {
            self.video_frame(video, &mut out);
        }
        if let Some(model) = response.get("modelResponse") {
            self.complete = true;
            if self.outcome.video_url.is_none() {
                self.outcome.video_url = model
                    .get("fileAttachments")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .find(|u| is_video_location(u))
                    .map(str::to_owned);
            }
        }
        if response.get("isSoftStop").and_then(Value::as_bool) == Some(true) && self.complete {
            self.finish(&mut out);
        }
        out
    }

    /// The body ended: a complete answer finishes; anything else was cut short.
    pub(crate) fn eof(&mut self) -> Parsed {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        if self.complete {
            self.finish(&mut out);
        } else {
            self.ended = true;
            out.push(Err(classify::transient(
                "upstream stream ended before the video was ready",
            )));
        }
        out
    }

    fn video_frame(&mut self, video: &Value, out: &mut Parsed) {
        if self.outcome.video_id.is_none() {
            self.outcome.video_id = str_field(video, "videoId").map(str::to_owned);
        }
        if video.get("moderated").and_then(Value::as_bool) == Some(true) {
            self.outcome.moderated = true;
        }
        let url = ["videoUrl", "contentUrl", "assetUrl", "fileUri"]
            .into_iter()
            .filter_map(|k| str_field(video, k))
            .find(|u| is_video_location(u));
        if let Some(url) = url {
            self.outcome.video_url = Some(url.to_owned());
        }
        if let Some(thumb) = str_field(video, "thumbnailImageUrl") {
            self.outcome.thumbnail_url = Some(thumb.to_owned());
        }
        let percent = video
            .get("progress")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(100) as u8;
        if percent >= 100 {
            self.complete = true;
        } else if self.last_percent != Some(percent) {
            self.last_percent = Some(percent);
            out.push(Ok(VideoUpdate::Progress { percent }));
        }
    }

    fn finish(&mut self, out: &mut Parsed) {
        self.ended = true;
        if self.outcome.moderated {
            // A moderated video is never handed out, even if a URL slipped through.
            self.outcome.video_url = None;
            self.outcome.thumbnail_url = None;
        }
        out.push(Ok(VideoUpdate::Finished(std::mem::take(&mut self.outcome))));
    }
}

fn is_video_location(location: &str) -> bool {
    let path = location.split(['?', '#']).next().unwrap_or_default();
    path.ends_with(".mp4") || path.contains("/content")
}

/// The video id inside an asset URL: the segment after `/generated/`, or the one before
/// `/generated_video`.
pub fn video_id_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let is_id = |s: &str| {
        (32..=36).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    };
    segments
        .windows(2)
        .find_map(|w| (w[0] == "generated" && is_id(w[1])).then(|| w[1].to_owned()))
        .or_else(|| {
            segments.windows(2).find_map(|w| {
                (w[1].starts_with("generated_video") && is_id(w[0])).then(|| w[0].to_owned())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;

    fn parse(fixture: &str) -> Vec<Result<VideoUpdate, UpstreamError>> {
        let mut parser = VideoParser::default();
        let mut out: Vec<_> = fixture
            .lines()
            .flat_map(|l| parser.line(l.as_bytes()))
            .collect();
        out.extend(parser.eof());
        out
    }

    #[test]
    fn text_to_video_yields_progress_then_the_urls() {
        let out = parse(include_str!("fixtures/video_text_to_video.ndjson"));
        let updates: Vec<VideoUpdate> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            updates,
            vec![
                VideoUpdate::Started {
                    response_id: Some("r1".into())
                },
                VideoUpdate::Progress { percent: 1 },
                VideoUpdate::Progress { percent: 50 },
                VideoUpdate::Progress { percent: 95 },
                VideoUpdate::Finished(VideoOutcome {
                    video_id: Some("v1".into()),
                    video_url: Some("users/u1/generated/v1/generated_video.mp4".into()),
                    thumbnail_url: Some("users/u1/generated/v1/preview_image.jpg".into()),
                    moderated: false,
                }),
            ]
        );
    }

    #[test]
    fn moderated_has_no_url() {
        let out = parse(include_str!("fixtures/video_moderated.ndjson"));
        let Some(Ok(VideoUpdate::Finished(outcome))) = out.last() else {
            panic!("{out:?}");
        };
        assert!(outcome.moderated);
        assert_eq!(outcome.video_url, None);
    }

    #[test]
    fn file_attachments_are_a_fallback() {
        let out = parse(include_str!("fixtures/video_file_attachment.ndjson"));
        let Some(Ok(VideoUpdate::Finished(outcome))) = out.last() else {
            panic!("{out:?}");
        };
        assert_eq!(
            outcome.video_url.as_deref(),
            Some("https://assets.grok.com/users/u3/v3/content")
        );
    }

    #[test]
    fn a_cut_stream_and_an_error_frame_fail() {
        let cut = parse(
            r#"{"result":{"response":{"streamingVideoGenerationResponse":{"videoId":"v","progress":10}}}}"#,
        );
        let err = cut.last().unwrap().as_ref().unwrap_err();
        assert_eq!(err.kind, UpstreamErrorKind::Transient);
        let failed = parse(r#"{"error":{"code":8,"message":"Too many requests"}}"#);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].is_err());
    }

    #[test]
    fn video_ids_come_out_of_urls() {
        let id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert_eq!(
            video_id_from_url(&format!("users/u/generated/{id}/generated_video.mp4")).as_deref(),
            Some(id)
        );
        assert_eq!(
            video_id_from_url(&format!("https://a/b/{id}/generated_video.mp4?x=1")).as_deref(),
            Some(id)
        );
        assert_eq!(video_id_from_url("users/u/x.mp4"), None);
    }
}
