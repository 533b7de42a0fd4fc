//! Chat over REST: `POST {base}/rest/app-chat/conversations/new`, answered in NDJSON.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::body::{ERROR_BODY_LIMIT, LineSplitter, read_error_body};
use super::client::Inner;
use super::frames::MAX_FRAME_BYTES;
use super::rest_frames::RestParser;
use super::stream::{FrameSource, Outbox, start};
use super::{ChatRequest, ChatStream, UpstreamError, UpstreamErrorKind, classify};
use crate::Secret;

pub(crate) const CHAT_PATH: &str = "/rest/app-chat/conversations/new";

/// The request body of the `modeId` era (every field the browser sends).
pub(crate) fn request_body(request: &ChatRequest) -> Value {
    let mut overrides = json!({"temperature": request.temperature, "topP": request.top_p});
    if let Some(effort) = &request.reasoning_effort {
        overrides["reasoningEffort"] = json!(effort);
    }
    json!({
        "collectionIds": [],
        "connectors": [],
        "deviceEnvInfo": {
            "darkModeEnabled": false,
            "devicePixelRatio": 2,
            "screenWidth": 2056,
            "screenHeight": 1329,
            "viewportWidth": 2056,
            "viewportHeight": 1083,
        },
        "disableMemory": request.disable_memory,
        "disableSearch": false,
        "disableSelfHarmShortCircuit": false,
        "disableTextFollowUps": false,
        "enableImageGeneration": true,
        "enableImageStreaming": true,
        "enableSideBySide": true,
        "fileAttachments": request.file_ids,
        "forceConcise": false,
        "forceSideBySide": false,
        "imageAttachments": [],
        "imageGenerationCount": 2,
        "isAsyncChat": false,
        "isReasoning": false,
        "message": request.message,
        "modeId": request.mode,
        "responseMetadata": {"modelConfigOverride": overrides},
        "returnImageBytes": false,
        "returnRawGrokInXaiRequest": false,
        "searchAllConnectors": false,
        "sendFinalMetadata": true,
        "temporary": request.temporary,
        "toolOverrides": {
            "gmailSearch": false,
            "googleCalendarSearch": false,
            "outlookSearch": false,
            "outlookCalendarSearch": false,
            "googleDriveSearch": false,
        },
    })
}

/// Sends the chat request and returns once the first frame of the answer arrived.
pub(crate) async fn open(
    inner: &Inner,
    token: &Secret,
    request: &ChatRequest,
) -> Result<ChatStream, UpstreamError> {
    let body = request_body(request);
    let (response, deadline) = send(inner, token, &body).await?;
    let mut source = RestSource {
        body: response.bytes_stream().boxed(),
        lines: LineSplitter::new(MAX_FRAME_BYTES),
        parser: RestParser::default(),
        outbox: Outbox::default(),
        idle: inner.idle_timeout,
    };
    while source.parser.frames_seen() == 0 && !source.outbox.is_finished() {
        let left = deadline.saturating_duration_since(Instant::now());
        source
            .read_once(left, "waiting for the first upstream frame")
            .await;
    }
    let response_id = source.parser.response_id();
    start(source, response_id)
}

/// Posts the request; with a signed statsig, a 403 re-signs and tries once more. Returns the
/// response with the deadline its first frame must meet (one connect timeout per attempt).
pub(crate) async fn send(
    inner: &Inner,
    token: &Secret,
    body: &Value,
) -> Result<(reqwest::Response, Instant), UpstreamError> {
    let url = format!("{}{CHAT_PATH}", inner.base_url);
    let mut resigned = false;
    loop {
        let statsig = inner
            .statsig
            .value(&inner.http, &inner.headers, token, CHAT_PATH)
            .await;
        let headers = inner.headers.api(token, Some(&statsig))?;
        let deadline = Instant::now() + inner.connect_timeout;
        let sent = inner.http.post(&url).headers(headers).json(body).send();
        let response = tokio::time::timeout_at(deadline, sent)
            .await
            .map_err(|_| classify::timeout("connecting to the upstream"))?
            .map_err(classify::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            return Ok((response, deadline));
        }
        let headers = response.headers().clone();
        let error_body =
            tokio::time::timeout_at(deadline, read_error_body(response, ERROR_BODY_LIMIT))
                .await
                .unwrap_or_default();
        let error = classify::from_http(status.as_u16(), &headers, &error_body);
        let refused_signature = status == reqwest::StatusCode::FORBIDDEN
            && error.kind != UpstreamErrorKind::Blocked
            && inner.statsig.is_signed();
        if refused_signature && !resigned {
            inner.statsig.invalidate(CHAT_PATH, &statsig);
            resigned = true;
            continue;
        }
        return Err(error);
    }
}

/// The NDJSON body being read.
struct RestSource {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    lines: LineSplitter,
    parser: RestParser,
    outbox: Outbox,
    idle: Duration,
}

impl RestSource {
    /// Reads one chunk of the body (waiting at most `wait`) and parses the lines it completes.
    async fn read_once(&mut self, wait: Duration, waiting_for: &str) {
        match tokio::time::timeout(wait, self.body.next()).await {
            Err(_) => self.outbox.fail(classify::timeout(waiting_for)),
            Ok(Some(Err(error))) => {
                let mut error = classify::from_reqwest(error);
                if error.kind != UpstreamErrorKind::Timeout {
                    error.kind = UpstreamErrorKind::Transient;
                }
                self.outbox.fail(error);
            }
            Ok(Some(Ok(chunk))) => {
                self.lines.push(&chunk);
                while !self.outbox.is_finished() {
                    match self.lines.next_line() {
                        Ok(Some(line)) => self.outbox.push_events(self.parser.line(&line)),
                        Ok(None) => break,
                        Err(error) => self.outbox.fail(error),
                    }
                }
            }
            Ok(None) => {
                if let Some(last) = self.lines.finish() {
                    self.outbox.push_events(self.parser.line(&last));
                }
                self.outbox.push_events(self.parser.eof());
            }
        }
    }
}

impl FrameSource for RestSource {
    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    async fn pump(&mut self) {
        let idle = self.idle;
        self.read_once(idle, "upstream stream idle").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_mode_message_and_overrides() {
        let request = ChatRequest {
            mode: "expert".into(),
            message: "hi".into(),
            temperature: 0.5,
            top_p: 0.9,
            reasoning_effort: Some("high".into()),
            file_ids: vec!["f1".into()],
            temporary: true,
            disable_memory: false,
        };
        let body = request_body(&request);
        assert_eq!(body["modeId"], "expert");
        assert_eq!(body["message"], "hi");
        assert_eq!(body["fileAttachments"], json!(["f1"]));
        assert_eq!(body["temporary"], true);
        assert_eq!(body["disableMemory"], false);
        assert!(body.get("modelName").is_none());
        let overrides = &body["responseMetadata"]["modelConfigOverride"];
        assert_eq!(overrides["reasoningEffort"], "high");
        assert_eq!(overrides["topP"], 0.9);
        assert_eq!(body["toolOverrides"]["gmailSearch"], false);
    }
}
