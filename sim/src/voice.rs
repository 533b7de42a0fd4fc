//! `POST /rest/livekit/tokens`: a LiveKit access token for a voice session. The request is
//! checked as the real service would (a JSON `sessionPayload` string naming a known voice,
//! personality and speed, the LiveKit URL); the answer is a fake, well-formed JWT that names
//! the account and the voice.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::SimState;
use crate::account::{authenticated_token, sso_token, user_id_for};
use crate::faults::{self, Faults};

const VOICES: [&str; 6] = ["ara", "eve", "leo", "rex", "sal", "gork"];
const PERSONALITIES: [&str; 14] = [
    "assistant",
    "custom",
    "therapist",
    "storyteller",
    "kids_story_time",
    "kids_trivia_game",
    "meditation",
    "doc",
    "unhinged",
    "sexy",
    "motivation",
    "conspiracy",
    "romantic",
    "argumentative",
];

pub(crate) async fn livekit_tokens(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = sso_token(&headers);
    let faults = Faults::for_request(&headers, token.as_deref());
    if faults.anti_bot {
        return faults::anti_bot_challenge();
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
    let (voice, personality) = match check(&body) {
        Ok(v) => v,
        Err(message) => return faults::bad_request(message),
    };
    let _call = state.stats.begin_call(&token, "voice");
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({"iss": "sim-livekit", "sub": user_id_for(&token),
        "video": {"room": format!("voice-{voice}-{personality}"), "roomJoin": true}});
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let jwt = format!(
        "{}.{}.{}",
        part(&header),
        part(&claims),
        URL_SAFE_NO_PAD.encode(b"sim-signature")
    );
    Json(json!({"token": jwt})).into_response()
}

/// The voice and personality of a well-formed request.
fn check(body: &[u8]) -> Result<(String, String), &'static str> {
    let body: Value = serde_json::from_slice(body).map_err(|_| "body must be JSON")?;
    let payload = body
        .get("sessionPayload")
        .and_then(Value::as_str)
        .ok_or("sessionPayload must be a string")?;
    let session: Value =
        serde_json::from_str(payload).map_err(|_| "sessionPayload must hold JSON")?;
    let voice = session
        .get("voice")
        .and_then(Value::as_str)
        .filter(|v| VOICES.contains(v))
        .ok_or("unknown voice")?;
    let personality = session
        .get("personality")
        .and_then(Value::as_str)
        .filter(|p| PERSONALITIES.contains(p))
        .ok_or("unknown personality")?;
    let speed = session
        .get("playback_speed")
        .and_then(Value::as_f64)
        .ok_or("playback_speed must be a number")?;
    if !(0.5..=2.0).contains(&speed) {
        return Err("playback_speed must be between 0.5 and 2.0");
    }
    if body.get("livekitUrl").and_then(Value::as_str) != Some("wss://livekit.grok.com") {
        return Err("livekitUrl must be wss://livekit.grok.com");
    }
    if !body
        .get("requestAgentDispatch")
        .is_some_and(Value::is_boolean)
    {
        return Err("requestAgentDispatch must be a boolean");
    }
    Ok((voice.to_owned(), personality.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let good = json!({"sessionPayload": json!({"voice": "ara", "personality": "assistant",
            "playback_speed": 1.0}).to_string(), "requestAgentDispatch": false,
            "livekitUrl": "wss://livekit.grok.com"});
        assert!(check(good.to_string().as_bytes()).is_ok());
        let mut bad = good.clone();
        bad["sessionPayload"] =
            json!({"voice": "bob", "personality": "assistant", "playback_speed": 1.0});
        assert!(check(bad.to_string().as_bytes()).is_err());
        let mut slow = good.clone();
        slow["sessionPayload"] = json!(
            json!({"voice": "ara", "personality": "assistant",
            "playback_speed": 9.0})
            .to_string()
        );
        assert!(check(slow.to_string().as_bytes()).is_err());
    }
}
