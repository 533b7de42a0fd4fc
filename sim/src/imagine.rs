//! `GET /ws/imagine/listen`: image generation over the Imagine WebSocket (newest shape).
//!
//! The client sends a reset message, then one `conversation.item.create` whose content
//! carries the prompt and `properties` (`aspect_ratio`, `enable_pro`, `num_generations`,
//! ...). The server answers per image: a `json` frame `start_stage`, `image` frames with
//! previews (`percentage_complete` < 100), the final `image` frame (100), and a `json` frame
//! `completed` (with `moderated`). Prompt markers: `[[moderated]]` withholds every final
//! image, `[[fail]]` sends an `error` frame after the first previews, `[[notimage]]` sends
//! final "images" that are an HTML page.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::SimState;
use crate::account::{authenticated_token, sso_token, user_id_for};
use crate::assets::assets_base;
use crate::faults::{self, Faults};
use crate::png::{FINAL_SIDE, PREVIEW_SIDE, picture};

/// The only origin the endpoint accepts.
const ALLOWED_ORIGIN: &str = "https://grok.com";
/// Aspect ratios the endpoint accepts.
pub const ASPECT_RATIOS: [&str; 14] = [
    "auto", "1:1", "2:3", "3:2", "9:16", "16:9", "4:3", "3:4", "2:1", "1:2", "19.5:9", "9:19.5",
    "20:9", "9:20",
];
/// Most images one request may ask for.
pub const MAX_GENERATIONS: u64 = 6;
/// Preview stages sent before each final image.
const PREVIEW_PERCENTS: [u8; 2] = [33, 66];
/// Largest client message accepted.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// How long the client has to send its two messages.
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// Prompt marker that makes every image of the request moderated.
pub const MODERATED_MARKER: &str = "[[moderated]]";
/// Prompt marker that makes the request fail mid-way with an `error` frame.
pub const FAIL_MARKER: &str = "[[fail]]";
/// Prompt marker that makes every final image something that is not an image (an HTML
/// page), as a broken upstream or CDN might serve.
pub const NOT_IMAGE_MARKER: &str = "[[notimage]]";
/// What a `[[notimage]]` request gets instead of its images.
const NOT_IMAGE_BYTES: &[u8] = b"<!DOCTYPE html><html><body>Service error</body></html>";

/// The final image the simulator generates for `prompt` at position `index` (a PNG).
pub fn imagine_image(prompt: &str, index: u32) -> Vec<u8> {
    picture(format!("imagine|{prompt}|{index}").as_bytes(), FINAL_SIDE)
}

/// A preview frame's image (a small PNG).
pub fn imagine_preview(prompt: &str, index: u32, percent: u8) -> Vec<u8> {
    picture(
        format!("preview|{prompt}|{index}|{percent}").as_bytes(),
        PREVIEW_SIDE,
    )
}

pub(crate) async fn upgrade(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let faults = Faults::for_request(&headers, sso_token(&headers).as_deref());
    if faults.anti_bot {
        return faults::anti_bot_challenge();
    }
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    if origin != Some(ALLOWED_ORIGIN) {
        return faults::forbidden("origin not allowed");
    }
    let Some(token) = authenticated_token(&headers) else {
        return faults::unauthorized();
    };
    if faults.unauthorized {
        return faults::unauthorized();
    }
    if faults.blocked {
        return faults::blocked();
    }
    if faults.rate_limited {
        return faults::rate_limited(state.config.rate_limit_window_secs);
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let base = assets_base(&headers);
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, state, token, faults, base))
}

/// A validated generation request.
struct Generation {
    prompt: String,
    count: u32,
}

fn is_reset(message: &Value) -> bool {
    message["type"] == "conversation.item.create"
        && message["item"]["content"][0]["type"] == "reset"
}

fn parse_request(message: &Value) -> Result<Generation, &'static str> {
    if message["type"] != "conversation.item.create" || !message["timestamp"].is_u64() {
        return Err("expected conversation.item.create with a timestamp");
    }
    let content = &message["item"]["content"][0];
    if content["type"] != "input_text" || !content["requestId"].is_string() {
        return Err("expected an input_text item with a requestId");
    }
    let prompt = content["text"]
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .ok_or("text must be a non-empty string")?;
    let properties = &content["properties"];
    let ratio = properties["aspect_ratio"].as_str().unwrap_or_default();
    if !ASPECT_RATIOS.contains(&ratio) {
        return Err("unsupported aspect_ratio");
    }
    if !properties["enable_pro"].is_boolean() || !properties["enable_nsfw"].is_boolean() {
        return Err("enable_pro and enable_nsfw must be booleans");
    }
    let count = properties["num_generations"]
        .as_u64()
        .filter(|n| (1..=MAX_GENERATIONS).contains(n))
        .ok_or("num_generations must be between 1 and 6")?;
    Ok(Generation {
        prompt: prompt.to_owned(),
        count: count as u32,
    })
}

/// The client went away.
struct Gone;

async fn send(socket: &mut WebSocket, frame: Value) -> Result<(), Gone> {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .map_err(|_| Gone)
}

async fn next_json(socket: &mut WebSocket) -> Option<Value> {
    let message = tokio::time::timeout(REQUEST_WAIT, socket.next())
        .await
        .ok()??
        .ok()?;
    match message {
        Message::Text(text) => serde_json::from_str(text.as_str()).ok(),
        _ => None,
    }
}

async fn serve(
    mut socket: WebSocket,
    state: Arc<SimState>,
    token: String,
    faults: Faults,
    base: String,
) {
    let first = next_json(&mut socket).await;
    if !first.as_ref().is_some_and(is_reset) {
        let _ = refuse(&mut socket, "the first message must be a reset").await;
        return;
    }
    let generation = match next_json(&mut socket).await.as_ref().map(parse_request) {
        Some(Ok(g)) => g,
        Some(Err(message)) => {
            let _ = refuse(&mut socket, message).await;
            return;
        }
        None => {
            let _ = refuse(&mut socket, "expected the generation request").await;
            return;
        }
    };
    let _in_flight = state.stats.begin_call(&token, "imagine");
    let shutdown = state.shutdown.clone();
    tokio::select! {
        _ = generate(&mut socket, &state, &token, faults, &base, &generation) => {}
        () = shutdown.cancelled() => {}
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn refuse(socket: &mut WebSocket, message: &str) -> Result<(), Gone> {
    send(
        socket,
        json!({"type": "error", "err_code": "invalid_argument", "err_msg": message}),
    )
    .await?;
    socket.send(Message::Close(None)).await.map_err(|_| Gone)
}

async fn generate(
    socket: &mut WebSocket,
    state: &SimState,
    token: &str,
    faults: Faults,
    base: &str,
    generation: &Generation,
) -> Result<(), Gone> {
    let uid = user_id_for(token);
    let ids: Vec<String> = (0..generation.count)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let delay = if faults.slow {
        Duration::from_millis(state.config.slow_frame_delay_ms)
    } else {
        Duration::from_millis(state.config.frame_delay_ms)
    };
    let prompt = generation.prompt.as_str();
    let url = |id: &str| format!("{base}/users/{uid}/generated/{id}/image.png");
    for (order, id) in ids.iter().enumerate() {
        send(
            socket,
            json!({"type": "json", "image_id": id, "current_status": "start_stage",
                "order": order, "width": FINAL_SIDE, "height": FINAL_SIDE}),
        )
        .await?;
    }
    for (stage, percent) in PREVIEW_PERCENTS.into_iter().enumerate() {
        tokio::time::sleep(delay).await;
        for (order, id) in ids.iter().enumerate() {
            let blob = STANDARD.encode(imagine_preview(prompt, order as u32, percent));
            send(
                socket,
                json!({"type": "image", "image_id": id, "url": url(id), "blob": blob,
                    "percentage_complete": percent, "width": PREVIEW_SIDE, "height": PREVIEW_SIDE,
                    "order": order}),
            )
            .await?;
        }
        if stage == 0 && faults.stall {
            std::future::pending::<()>().await;
        }
        if stage == 0 && prompt.contains(FAIL_MARKER) {
            return send(
                socket,
                json!({"type": "error", "err_code": "internal_error",
                    "err_msg": "image generation failed"}),
            )
            .await;
        }
    }
    tokio::time::sleep(delay).await;
    let moderated = prompt.contains(MODERATED_MARKER);
    for (order, id) in ids.iter().enumerate() {
        if !moderated {
            let bytes = if prompt.contains(NOT_IMAGE_MARKER) {
                NOT_IMAGE_BYTES.to_vec()
            } else {
                imagine_image(prompt, order as u32)
            };
            let path = format!("users/{uid}/generated/{id}/image.png");
            state
                .media
                .add_asset(token, &path, "image/png", Bytes::from(bytes.clone()));
            send(
                socket,
                json!({"type": "image", "image_id": id, "url": url(id),
                    "blob": STANDARD.encode(&bytes), "percentage_complete": 100,
                    "width": FINAL_SIDE, "height": FINAL_SIDE, "order": order}),
            )
            .await?;
        }
        send(
            socket,
            json!({"type": "json", "image_id": id, "current_status": "completed",
                "order": order, "moderated": moderated, "r_rated": false}),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_strictly() {
        let good = json!({"type": "conversation.item.create", "timestamp": 1u64,
            "item": {"type": "message", "content": [{"requestId": "r", "text": "a cat",
                "type": "input_text", "properties": {"aspect_ratio": "2:3", "enable_pro": false,
                "enable_nsfw": true, "num_generations": 2}}]}});
        let g = parse_request(&good).unwrap();
        assert_eq!((g.prompt.as_str(), g.count), ("a cat", 2));
        let mut bad = good.clone();
        bad["item"]["content"][0]["properties"]["num_generations"] = json!(7);
        assert!(parse_request(&bad).is_err());
        let mut bad = good.clone();
        bad["item"]["content"][0]["properties"]["aspect_ratio"] = json!("5:4");
        assert!(parse_request(&bad).is_err());
        assert!(is_reset(&json!({"type": "conversation.item.create",
            "item": {"type": "message", "content": [{"type": "reset"}]}})));
        assert!(!is_reset(&good));
    }

    #[test]
    fn images_are_deterministic_pngs() {
        assert_eq!(imagine_image("x", 0), imagine_image("x", 0));
        assert_ne!(imagine_image("x", 0), imagine_image("x", 1));
        assert!(imagine_preview("x", 0, 33).len() < imagine_image("x", 0).len());
    }
}
