//! `GET /v1/public/voice/token?voice=&personality=&speed=`: a LiveKit access token for the
//! playground's voice page, fetched by a worker with an account from the pool.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::event::EventBody;
use shared::job::{JobEnvelope, JobPayload, VoiceJob};
use shared::time::now_ms;

use crate::error::ApiError;
use crate::feed::FeedError;
use crate::jobs::{CancelOnDrop, submit};
use crate::state::AppState;

pub const VOICES: [&str; 6] = ["ara", "eve", "leo", "rex", "sal", "gork"];
pub const PERSONALITIES: [&str; 14] = [
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
/// How long the token call may take end to end.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
pub struct VoiceQuery {
    voice: Option<String>,
    personality: Option<String>,
    speed: Option<String>,
}

/// Validates the query into a job.
pub fn job(query: &VoiceQuery) -> Result<VoiceJob, ApiError> {
    let voice = query.voice.as_deref().unwrap_or("ara").trim();
    if !VOICES.contains(&voice) {
        return Err(ApiError::invalid(
            "voice",
            "invalid_voice",
            format!("voice must be one of {}", VOICES.join(", ")),
        ));
    }
    let personality = query.personality.as_deref().unwrap_or("assistant").trim();
    if !PERSONALITIES.contains(&personality) {
        return Err(ApiError::invalid(
            "personality",
            "invalid_personality",
            format!("personality must be one of {}", PERSONALITIES.join(", ")),
        ));
    }
    let speed = match query.speed.as_deref().map(str::trim) {
        None | Some("") => 1.0,
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|v| (0.5..=2.0).contains(v))
            .ok_or_else(|| {
                ApiError::invalid(
                    "speed",
                    "invalid_speed",
                    "speed must be a number from 0.5 to 2.0",
                )
            })?,
    };
    Ok(VoiceJob {
        voice: voice.to_owned(),
        personality: personality.to_owned(),
        speed,
    })
}

/// `GET /v1/public/voice/token`
pub async fn token(
    State(state): State<AppState>,
    Query(query): Query<VoiceQuery>,
) -> Result<Json<Value>, ApiError> {
    let voice = job(&query)?;
    let job = JobEnvelope::new(
        JobPayload::Voice(voice),
        now_ms() + TIMEOUT.as_millis() as i64,
    );
    let mut feed = submit(&state, &job, TIMEOUT).await?;
    let mut guard = CancelOnDrop::new(state.backends.bus.clone(), job.id);
    let mut answer: Option<Value> = None;
    loop {
        match feed.next().await {
            Some(Ok(ev)) => match ev.body {
                EventBody::Delta { text } => answer = serde_json::from_str(&text).ok(),
                EventBody::Done { .. } => {
                    guard.disarm();
                    break;
                }
                EventBody::Error(e) => {
                    guard.disarm();
                    return Err(ApiError::from(&e));
                }
                _ => {}
            },
            Some(Err(FeedError::Timeout)) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::GATEWAY_TIMEOUT,
                    "The voice token request timed out",
                )
                .with_code("timeout"));
            }
            None => return Err(ApiError::internal()),
        }
    }
    let answer = answer.ok_or_else(ApiError::internal)?;
    Ok(Json(json!({
        "token": answer["token"],
        "url": answer["url"],
        "participant_name": "",
        "room_name": "",
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(voice: Option<&str>, personality: Option<&str>, speed: Option<&str>) -> VoiceQuery {
        VoiceQuery {
            voice: voice.map(str::to_owned),
            personality: personality.map(str::to_owned),
            speed: speed.map(str::to_owned),
        }
    }

    #[test]
    fn queries_validate_with_codes() {
        let ok = job(&q(None, None, None)).unwrap();
        assert_eq!(
            (ok.voice.as_str(), ok.personality.as_str(), ok.speed),
            ("ara", "assistant", 1.0)
        );
        let code = |v: VoiceQuery| job(&v).unwrap_err().code.unwrap();
        assert_eq!(code(q(Some("bob"), None, None)), "invalid_voice");
        assert_eq!(code(q(None, Some("x"), None)), "invalid_personality");
        assert_eq!(code(q(None, None, Some("3"))), "invalid_speed");
        assert_eq!(code(q(None, None, Some("fast"))), "invalid_speed");
    }
}
