//! Parser of the Imagine WebSocket's server frames (newest shape).
//!
//! - `{"type":"image","image_id"|"id"|"job_id",...,"url","blob","percentage_complete",
//!   "order"|"grid_index"|"side_by_side_index"}`: a preview (< 100 %) or the final image;
//! - `{"type":"json","image_id","current_status","order","moderated"}`: stage changes;
//!   `moderated: true` means that image will never come;
//! - `{"type":"error","err_code","err_msg"}`: the request failed.
//!
//! Frames without `percentage_complete` (older servers) are classified like the fork did:
//! final when the URL ends in `.jpg`/`.jpeg` or the base64 blob is large.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{ImageUpdate, UpstreamError, classify};

/// Base64 length above which an unlabelled image frame is taken as final (the fork's rule).
const FINAL_BLOB_CHARS: usize = 100_000;

/// What one frame says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImagineFrame {
    Update(ImageUpdate),
    Fail(UpstreamError),
    /// A frame that matters to nobody (stage starts, unknown types, non-JSON).
    Ignored,
}

/// The image's position in the request.
fn order(frame: &Value) -> u32 {
    ["order", "grid_index", "side_by_side_index"]
        .iter()
        .find_map(|k| frame.get(*k).and_then(Value::as_u64))
        .unwrap_or(0) as u32
}

/// Decodes a blob, with or without a `data:` prefix.
fn decode_blob(blob: &str) -> Option<Bytes> {
    let payload = match blob.strip_prefix("data:") {
        Some(rest) => rest.split_once(',')?.1,
        None => blob,
    };
    STANDARD.decode(payload.trim()).ok().map(Bytes::from)
}

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> ImagineFrame {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return ImagineFrame::Ignored;
    };
    let index = order(&frame);
    match frame.get("type").and_then(Value::as_str) {
        Some("image") => image(&frame, index),
        Some("json") if frame.get("moderated").and_then(Value::as_bool) == Some(true) => {
            ImagineFrame::Update(ImageUpdate::Moderated { index })
        }
        Some("error") => {
            let code = frame.get("err_code").cloned().unwrap_or(Value::Null);
            let message = frame
                .get("err_msg")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut error = classify::from_in_band(&json!({"code": code, "message": message}));
            if code.as_str().is_some_and(|c| c.contains("rate_limit")) {
                error.kind = super::UpstreamErrorKind::RateLimited { retry_after: None };
            }
            ImagineFrame::Fail(error)
        }
        _ => ImagineFrame::Ignored,
    }
}

fn image(frame: &Value, index: u32) -> ImagineFrame {
    let url = frame
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    let blob = frame
        .get("blob")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty());
    let is_final = match frame.get("percentage_complete").and_then(Value::as_f64) {
        Some(percent) => percent >= 100.0,
        None => {
            let lower = url.unwrap_or_default().to_ascii_lowercase();
            lower.ends_with(".jpg")
                || lower.ends_with(".jpeg")
                || blob.is_some_and(|b| b.len() > FINAL_BLOB_CHARS)
        }
    };
    let bytes = match blob.map(decode_blob) {
        Some(None) => {
            return ImagineFrame::Fail(classify::protocol("image frame blob is not base64"));
        }
        Some(Some(bytes)) => Some(bytes),
        None => None,
    };
    if is_final {
        if bytes.is_none() && url.is_none() {
            return ImagineFrame::Fail(classify::protocol("final image frame without blob or url"));
        }
        return ImagineFrame::Update(ImageUpdate::Final {
            index,
            url: url.map(str::to_owned),
            bytes,
        });
    }
    let percent = frame
        .get("percentage_complete")
        .and_then(Value::as_f64)
        .map_or(50, |p| p.clamp(0.0, 99.0) as u8);
    match bytes {
        Some(bytes) => ImagineFrame::Update(ImageUpdate::Preview {
            index,
            percent,
            bytes,
        }),
        None => ImagineFrame::Update(ImageUpdate::Progress { index, percent }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;

    const RECORDED: &str = include_str!("fixtures/imagine_two_images.jsonl");

    #[test]
    fn a_recorded_session_yields_previews_then_finals() {
        let updates: Vec<ImageUpdate> = RECORDED
            .lines()
            .filter_map(|line| match parse(line) {
                ImagineFrame::Update(u) => Some(u),
                ImagineFrame::Fail(e) => panic!("{e}"),
                ImagineFrame::Ignored => None,
            })
            .collect();
        let previews = updates
            .iter()
            .filter(|u| matches!(u, ImageUpdate::Preview { .. }))
            .count();
        assert_eq!(previews, 4);
        let finals: Vec<(u32, Bytes)> = updates
            .iter()
            .filter_map(|u| match u {
                ImageUpdate::Final { index, bytes, url } => {
                    assert!(url.as_deref().unwrap().ends_with("/image.png"));
                    Some((*index, bytes.clone().unwrap()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(finals.len(), 2);
        assert_eq!((finals[0].0, finals[1].0), (0, 1));
        assert!(finals[0].1.starts_with(b"\x89PNG"));
    }

    #[test]
    fn moderation_and_errors() {
        let moderated = include_str!("fixtures/imagine_moderated.jsonl");
        let parsed: Vec<ImagineFrame> = moderated.lines().map(parse).collect();
        assert!(parsed.contains(&ImagineFrame::Update(ImageUpdate::Moderated { index: 0 })));
        assert!(
            !parsed
                .iter()
                .any(|f| matches!(f, ImagineFrame::Update(ImageUpdate::Final { .. })))
        );
        match parse(r#"{"type":"error","err_code":"rate_limited","err_msg":"Too many requests"}"#) {
            ImagineFrame::Fail(e) => {
                assert!(matches!(e.kind, UpstreamErrorKind::RateLimited { .. }))
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"type":"error","err_code":"internal_error","err_msg":"failed"}"#) {
            ImagineFrame::Fail(e) => assert_eq!(e.kind, UpstreamErrorKind::Transient),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("not json"), ImagineFrame::Ignored);
    }

    #[test]
    fn unlabelled_frames_follow_the_fork_rule() {
        let jpg = r#"{"type":"image","url":"https://x/images/ab-12.jpg","blob":"/9j/4AAQ"}"#;
        assert!(matches!(
            parse(jpg),
            ImagineFrame::Update(ImageUpdate::Final { .. })
        ));
        let small = r#"{"type":"image","url":"https://x/images/ab-12.png","blob":"iVBORw0KGgo="}"#;
        assert!(matches!(
            parse(small),
            ImagineFrame::Update(ImageUpdate::Preview { .. })
        ));
        let data_uri =
            r#"{"type":"image","percentage_complete":100,"blob":"data:image/png;base64,aGk="}"#;
        match parse(data_uri) {
            ImagineFrame::Update(ImageUpdate::Final { bytes, .. }) => {
                assert_eq!(bytes.as_deref(), Some(&b"hi"[..]))
            }
            other => panic!("{other:?}"),
        }
        let bad = r#"{"type":"image","percentage_complete":100,"blob":"@@@"}"#;
        assert!(matches!(parse(bad), ImagineFrame::Fail(_)));
    }
}
