//! Image generation over the Imagine WebSocket: `{ws}/ws/imagine/listen`.
//!
//! One connection per request: a reset message, then the request with `num_generations`;
//! the server streams previews and finals per image (see `imagine_frames`). The stream ends
//! once every image is final or moderated; silence longer than the idle timeout, a closed
//! connection or an `error` frame end it with an error.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::client::{UpstreamClient, scrub};
use super::frames::MAX_FRAME_BYTES;
use super::imagine_frames::{ImagineFrame, parse};
use super::{UpstreamError, classify};
use crate::Secret;

/// Most images the upstream makes for one request; bigger `n` need several requests.
pub const MAX_IMAGES_PER_REQUEST: u32 = 6;

/// One Imagine request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagineRequest {
    pub prompt: String,
    /// `1:1`, `2:3`, `3:2`, `9:16`, `16:9`, ... (`auto` lets the upstream choose).
    pub aspect_ratio: String,
    /// Images wanted, 1 to [`MAX_IMAGES_PER_REQUEST`].
    pub n: u32,
    pub enable_pro: bool,
    pub enable_nsfw: bool,
}

/// What an image stream yields, for generation and edit alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUpdate {
    /// Progress of image `index`, without bytes.
    Progress { index: u32, percent: u8 },
    /// A low-resolution preview of image `index`.
    Preview {
        index: u32,
        percent: u8,
        bytes: Bytes,
    },
    /// The final image: its bytes when the upstream sent them inline, else only its URL
    /// (download it with [`UpstreamClient::download_asset`] and the same account).
    Final {
        index: u32,
        url: Option<String>,
        bytes: Option<Bytes>,
    },
    /// The upstream withheld image `index`.
    Moderated { index: u32 },
}

pub type ImageStream = BoxStream<'static, Result<ImageUpdate, UpstreamError>>;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The reset message the web client sends first on every connection.
pub(crate) fn reset_message() -> Value {
    json!({"type": "conversation.item.create", "timestamp": unix_ms(),
        "item": {"type": "message", "content": [{"type": "reset"}]}})
}

/// The generation request.
pub(crate) fn request_message(request: &ImagineRequest) -> Value {
    json!({"type": "conversation.item.create", "timestamp": unix_ms(),
    "item": {"type": "message", "content": [{
        "requestId": uuid::Uuid::new_v4().to_string(),
        "text": request.prompt,
        "type": "input_text",
        "properties": {
            "section_count": 0,
            "is_kids_mode": false,
            "enable_nsfw": request.enable_nsfw,
            "skip_upsampler": false,
            "is_initial": false,
            "aspect_ratio": request.aspect_ratio,
            "enable_side_by_side": true,
            "enable_pro": request.enable_pro,
            "num_generations": request.n,
        },
    }]}})
}

impl UpstreamClient {
    /// Starts one Imagine generation with the account `token`.
    ///
    /// Errors before the connection is up (refused upgrade: 429, 401, anti-bot) are returned
    /// here; later ones end the stream. Dropping the stream closes the connection.
    pub async fn imagine(
        &self,
        token: &Secret,
        request: &ImagineRequest,
    ) -> Result<ImageStream, UpstreamError> {
        super::observe::media_stream("imagine", self.open_imagine(token, request), |u| {
            matches!(u, ImageUpdate::Final { .. } | ImageUpdate::Moderated { .. })
        })
        .await
    }

    async fn open_imagine(
        &self,
        token: &Secret,
        request: &ImagineRequest,
    ) -> Result<ImageStream, UpstreamError> {
        if request.n == 0 || request.n > MAX_IMAGES_PER_REQUEST {
            return Err(UpstreamError::new(
                super::UpstreamErrorKind::BadRequest,
                None,
                format!("n must be between 1 and {MAX_IMAGES_PER_REQUEST}"),
            ));
        }
        let token_for_errors = token.clone();
        let socket = self
            .connect_imagine(token, request)
            .await
            .map_err(|e| scrub(e, token))?;
        let reader = Reader {
            socket,
            idle: self.inner().idle_timeout,
            wanted: request.n,
            done: HashSet::new(),
            finished: false,
        };
        Ok(futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        })
        .map(move |item| item.map_err(|e| scrub(e, &token_for_errors)))
        .boxed())
    }

    async fn connect_imagine(
        &self,
        token: &Secret,
        request: &ImagineRequest,
    ) -> Result<Socket, UpstreamError> {
        let inner = self.inner();
        let url = format!("{}/ws/imagine/listen", inner.ws_url);
        let mut upgrade = url
            .as_str()
            .into_client_request()
            .map_err(classify::from_ws)?;
        upgrade
            .headers_mut()
            .extend(websocket_headers(inner, token)?);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connecting = tokio_tungstenite::connect_async_with_config(upgrade, Some(config), true);
        let (mut socket, _) = tokio::time::timeout(inner.connect_timeout, connecting)
            .await
            .map_err(|_| classify::timeout("connecting to Imagine"))?
            .map_err(classify::from_ws)?;
        for message in [reset_message(), request_message(request)] {
            socket
                .send(Message::text(message.to_string()))
                .await
                .map_err(classify::from_ws)?;
        }
        Ok(socket)
    }
}

/// The upgrade headers: the browser's cookie (`sso`, `sso-rw`, clearance), origin and user
/// agent, without the fetch-only headers.
fn websocket_headers(
    inner: &super::client::Inner,
    token: &Secret,
) -> Result<http::HeaderMap, UpstreamError> {
    let mut headers = inner.headers.fetch(token)?;
    for name in [
        "accept",
        "priority",
        "sec-fetch-dest",
        "sec-fetch-mode",
        "sec-fetch-site",
        "referer",
    ] {
        headers.remove(name);
    }
    Ok(headers)
}

/// Reads the connection until every wanted image is final or moderated.
struct Reader {
    socket: Socket,
    idle: Duration,
    wanted: u32,
    /// Indexes that are final or moderated.
    done: HashSet<u32>,
    finished: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<ImageUpdate, UpstreamError>> {
        if self.finished {
            return None;
        }
        if self.done.len() as u32 >= self.wanted {
            self.finished = true;
            let _ = self.socket.close(None).await;
            return None;
        }
        loop {
            let message = match tokio::time::timeout(self.idle, self.socket.next()).await {
                Err(_) => return self.fail(classify::timeout("Imagine stream idle")),
                Ok(None) => return self.fail(self.closed_early(None)),
                Ok(Some(Err(e))) => return self.fail(classify::from_ws(e)),
                Ok(Some(Ok(message))) => message,
            };
            let text = match message {
                Message::Text(text) => text.to_string(),
                Message::Binary(data) => String::from_utf8_lossy(&data).into_owned(),
                Message::Close(frame) => {
                    let reason = frame.map(|f| classify::excerpt(&f.reason));
                    return self.fail(self.closed_early(reason));
                }
                _ => continue,
            };
            match parse(&text) {
                ImagineFrame::Ignored => continue,
                ImagineFrame::Fail(error) => return self.fail(error),
                ImagineFrame::Update(update) => {
                    let repeated = match &update {
                        // A second final of the same image, or news of a finished one.
                        ImageUpdate::Final { index, .. } | ImageUpdate::Moderated { index } => {
                            !self.done.insert(*index)
                        }
                        ImageUpdate::Preview { index, .. }
                        | ImageUpdate::Progress { index, .. } => self.done.contains(index),
                    };
                    if !repeated {
                        return Some(Ok(update));
                    }
                }
            }
        }
    }

    fn closed_early(&self, reason: Option<String>) -> UpstreamError {
        classify::transient(format!(
            "Imagine closed the connection after {} of {} images{}",
            self.done.len(),
            self.wanted,
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ))
    }

    fn fail(&mut self, error: UpstreamError) -> Option<Result<ImageUpdate, UpstreamError>> {
        self.finished = true;
        Some(Err(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_newest_shape() {
        let reset = reset_message();
        assert_eq!(reset["item"]["content"][0]["type"], "reset");
        let request = ImagineRequest {
            prompt: "a red fox".into(),
            aspect_ratio: "16:9".into(),
            n: 3,
            enable_pro: false,
            enable_nsfw: true,
        };
        let message = request_message(&request);
        let content = &message["item"]["content"][0];
        assert_eq!(content["text"], "a red fox");
        assert_eq!(content["type"], "input_text");
        assert_eq!(content["properties"]["num_generations"], 3);
        assert_eq!(content["properties"]["aspect_ratio"], "16:9");
        assert_eq!(content["properties"]["enable_pro"], false);
        assert!(message["timestamp"].as_u64().unwrap() > 0);
    }
}
