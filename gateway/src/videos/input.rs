//! Validation of video parameters, shared by `POST /v1/videos` and the chat `video_config`.
//! Each bad field is a 400 naming its `param` and a stable `code`.

use serde_json::{Map, Value};
use shared::models::{self, ModelKind, ModelSpec};

use crate::error::ApiError;

/// The only video model.
pub const VIDEO_MODEL: &str = "grok-imagine-1.0-video";
/// Sizes accepted, with the aspect ratio each maps to.
pub const SIZES: [(&str, &str); 5] = [
    ("1280x720", "16:9"),
    ("720x1280", "9:16"),
    ("1792x1024", "3:2"),
    ("1024x1792", "2:3"),
    ("1024x1024", "1:1"),
];
pub const RESOLUTIONS: [&str; 2] = ["480p", "720p"];
/// Presets and the upstream `--mode=` each becomes.
const PRESETS: [(&str, &str); 4] = [
    ("fun", "extremely-crazy"),
    ("normal", "normal"),
    ("spicy", "extremely-spicy-or-crazy"),
    ("custom", "custom"),
];
/// Longest prompt accepted, in characters.
pub const MAX_PROMPT_CHARS: usize = 8000;

/// Validated video parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoParams {
    pub aspect_ratio: String,
    /// The size the ratio corresponds to (`1280x720`, ...).
    pub size: String,
    pub seconds: u32,
    pub resolution: String,
    /// Upstream `--mode=` value.
    pub mode: String,
}

/// The video model for a `model` field (absent: the video model).
pub fn model(value: Option<&Value>) -> Result<&'static ModelSpec, ApiError> {
    let id = match value {
        None | Some(Value::Null) => VIDEO_MODEL,
        Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(
                "model",
                "invalid_value",
                "model must be a non-empty string",
            ));
        }
    };
    match models::find(id) {
        Some(spec) if spec.kind == ModelKind::Video => Ok(spec),
        Some(_) => Err(ApiError::invalid(
            "model",
            "model_not_supported",
            format!("Videos are made by `{VIDEO_MODEL}` only"),
        )),
        None => Err(ApiError::invalid(
            "model",
            "model_not_found",
            format!(
                "The model `{}` does not exist",
                id.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// A required, non-blank prompt.
pub fn prompt(value: Option<&Value>, param: &str) -> Result<String, ApiError> {
    match value {
        Some(Value::String(s)) if s.chars().count() > MAX_PROMPT_CHARS => Err(ApiError::invalid(
            param,
            "prompt_too_long",
            format!("{param} must be at most {MAX_PROMPT_CHARS} characters"),
        )),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::String(_)) => Err(ApiError::invalid(
            param,
            "empty_prompt",
            format!("{param} must not be empty"),
        )),
        None | Some(Value::Null) => Err(ApiError::invalid(
            param,
            "missing_required_parameter",
            format!("{param} is required"),
        )),
        Some(_) => Err(ApiError::invalid(
            param,
            "invalid_value",
            format!("{param} must be a string"),
        )),
    }
}

/// Names of the fields in one of the two request shapes.
pub struct Fields {
    pub seconds: &'static str,
    pub seconds_code: &'static str,
    pub size: &'static str,
}

/// `POST /v1/videos` names.
pub const API_FIELDS: Fields = Fields {
    seconds: "seconds",
    seconds_code: "invalid_seconds",
    size: "size",
};
/// Chat `video_config` names, as the original product has them.
pub const CHAT_FIELDS: Fields = Fields {
    seconds: "video_length",
    seconds_code: "invalid_video_length",
    size: "aspect_ratio",
};

/// Reads the video parameters from `obj`; `prefix` goes before each param name
/// (`video_config.` for chat). Defaults: 6 s, 480p, `custom`, and `default_size`.
pub fn params(
    obj: &Map<String, Value>,
    prefix: &str,
    fields: &Fields,
    default_size: &str,
) -> Result<VideoParams, ApiError> {
    let at = |name: &str| format!("{prefix}{name}");
    let seconds = match obj.get(fields.seconds) {
        None | Some(Value::Null) => 6,
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if (1..=15).contains(&n) => n as u32,
                _ => {
                    return Err(ApiError::invalid(
                        at(fields.seconds),
                        fields.seconds_code,
                        format!(
                            "{} must be a whole number of seconds from 1 to 15",
                            fields.seconds
                        ),
                    ));
                }
            }
        }
    };
    // A size (`1280x720`) or a ratio (`16:9`), in either field.
    let shape = |name: &str, v: Option<&Value>| -> Result<Option<(String, String)>, ApiError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                SIZES
                    .iter()
                    .find(|(size, ratio)| *size == s || *ratio == s)
                    .map(|(size, ratio)| Some(((*size).to_owned(), (*ratio).to_owned())))
                    .ok_or_else(|| shape_error(&at(name), name))
            }
            Some(_) => Err(shape_error(&at(name), name)),
        }
    };
    let from_ratio = shape("aspect_ratio", obj.get("aspect_ratio"))?;
    let from_size = if fields.size == "size" {
        shape("size", obj.get("size"))?
    } else {
        None
    };
    let (size, aspect_ratio) = from_ratio
        .or(from_size)
        .or_else(|| {
            SIZES
                .iter()
                .find(|(size, _)| *size == default_size)
                .map(|(s, r)| ((*s).to_owned(), (*r).to_owned()))
        })
        .expect("the default size is one of SIZES");
    let resolution = match obj.get("resolution_name").or_else(|| obj.get("resolution")) {
        None | Some(Value::Null) => "480p".to_owned(),
        Some(Value::String(s)) if RESOLUTIONS.contains(&s.trim()) => s.trim().to_owned(),
        Some(_) => {
            let name = if obj.contains_key("resolution_name") {
                "resolution_name"
            } else {
                "resolution"
            };
            return Err(ApiError::invalid(
                at(name),
                "invalid_resolution",
                format!("{name} must be one of {}", RESOLUTIONS.join(", ")),
            ));
        }
    };
    let mode = match obj.get("preset") {
        None | Some(Value::Null) => "custom".to_owned(),
        Some(Value::String(s)) => PRESETS
            .iter()
            .find(|(p, _)| *p == s.trim())
            .map(|(_, m)| (*m).to_owned())
            .ok_or_else(preset_error(&at("preset")))?,
        Some(_) => return Err(preset_error(&at("preset"))()),
    };
    Ok(VideoParams {
        aspect_ratio,
        size,
        seconds,
        resolution,
        mode,
    })
}

fn shape_error(param: &str, name: &str) -> ApiError {
    let (code, what) = if name == "size" {
        ("invalid_size", "size")
    } else {
        ("invalid_aspect_ratio", "aspect_ratio")
    };
    let sizes: Vec<&str> = SIZES.iter().map(|(s, _)| *s).collect();
    let ratios: Vec<&str> = SIZES.iter().map(|(_, r)| *r).collect();
    ApiError::invalid(
        param,
        code,
        format!(
            "{what} must be one of {} or {}",
            sizes.join(", "),
            ratios.join(", ")
        ),
    )
}

fn preset_error(param: &str) -> impl FnOnce() -> ApiError + '_ {
    move || {
        ApiError::invalid(
            param,
            "invalid_preset",
            "preset must be one of fun, normal, spicy, custom",
        )
    }
}

/// An input image given as a string or `{"url": ...}`: a `data:` URI of an image, or an
/// http(s) URL that passes the checks possible without a lookup.
pub fn image(value: Option<&Value>, param: &str) -> Result<Option<String>, ApiError> {
    let url = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim(),
        Some(Value::Object(o)) => match o.get("url") {
            Some(Value::String(s)) => s.trim(),
            _ => {
                return Err(ApiError::invalid(
                    format!("{param}.url"),
                    "missing_url",
                    "url is required",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid(
                param,
                "invalid_media",
                format!("{param} must be a URL or a data URI"),
            ));
        }
    };
    if url.is_empty() {
        return Err(ApiError::invalid(
            param,
            "empty_media",
            format!("{param} must not be empty"),
        ));
    }
    if let Some(rest) = url.strip_prefix("data:") {
        let is_image_b64 = rest
            .split_once(',')
            .is_some_and(|(meta, _)| meta.starts_with("image/") && meta.ends_with(";base64"));
        if !is_image_b64 {
            return Err(ApiError::invalid(
                param,
                "invalid_media",
                "data URIs must be base64-encoded images (data:image/<type>;base64,...)",
            ));
        }
        return Ok(Some(url.to_owned()));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return match shared::fetch::precheck_url(url) {
            Ok(checked) => Ok(Some(checked.to_string())),
            Err(e) => Err(ApiError::invalid(param, e.code(), e.to_string())),
        };
    }
    Err(ApiError::invalid(
        param,
        "invalid_media",
        format!("{param} must be an http(s) URL or a data URI"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(body: Value) -> Result<VideoParams, (String, String)> {
        params(body.as_object().unwrap(), "", &API_FIELDS, "1280x720")
            .map_err(|e| (e.param.unwrap_or_default(), e.code.unwrap_or_default()))
    }

    #[test]
    fn defaults_and_mappings() {
        let p = api(json!({})).unwrap();
        assert_eq!(
            (
                p.size.as_str(),
                p.aspect_ratio.as_str(),
                p.seconds,
                p.resolution.as_str(),
                p.mode.as_str()
            ),
            ("1280x720", "16:9", 6, "480p", "custom")
        );
        let p = api(
            json!({"size": "1024x1792", "seconds": "10", "resolution": "720p", "preset": "fun"}),
        )
        .unwrap();
        assert_eq!((p.aspect_ratio.as_str(), p.seconds), ("2:3", 10));
        assert_eq!(
            (p.resolution.as_str(), p.mode.as_str()),
            ("720p", "extremely-crazy")
        );
        assert_eq!(
            api(json!({"aspect_ratio": "1:1", "size": "1280x720"}))
                .unwrap()
                .aspect_ratio,
            "1:1"
        );
        let chat = params(
            json!({"aspect_ratio": "1792x1024", "video_length": 15})
                .as_object()
                .unwrap(),
            "video_config.",
            &CHAT_FIELDS,
            "1792x1024",
        )
        .unwrap();
        assert_eq!((chat.aspect_ratio.as_str(), chat.seconds), ("3:2", 15));
    }

    #[test]
    fn bad_fields_name_param_and_code() {
        assert_eq!(
            api(json!({"seconds": 0})).unwrap_err(),
            ("seconds".into(), "invalid_seconds".into())
        );
        assert_eq!(
            api(json!({"seconds": 16})).unwrap_err().1,
            "invalid_seconds"
        );
        assert_eq!(
            api(json!({"seconds": "six"})).unwrap_err().1,
            "invalid_seconds"
        );
        assert_eq!(
            api(json!({"size": "640x480"})).unwrap_err(),
            ("size".into(), "invalid_size".into())
        );
        assert_eq!(
            api(json!({"aspect_ratio": "4:3"})).unwrap_err().1,
            "invalid_aspect_ratio"
        );
        assert_eq!(
            api(json!({"resolution": "1080p"})).unwrap_err().1,
            "invalid_resolution"
        );
        assert_eq!(
            api(json!({"preset": "wild"})).unwrap_err(),
            ("preset".into(), "invalid_preset".into())
        );
        let chat = params(
            json!({"video_length": 20}).as_object().unwrap(),
            "video_config.",
            &CHAT_FIELDS,
            "1792x1024",
        )
        .unwrap_err();
        assert_eq!(chat.param.as_deref(), Some("video_config.video_length"));
        assert_eq!(chat.code.as_deref(), Some("invalid_video_length"));
    }

    #[test]
    fn models_prompts_and_images() {
        assert_eq!(model(None).unwrap().id, VIDEO_MODEL);
        assert_eq!(
            model(Some(&json!("grok-4"))).unwrap_err().code.as_deref(),
            Some("model_not_supported")
        );
        assert_eq!(
            model(Some(&json!("sora-2"))).unwrap_err().code.as_deref(),
            Some("model_not_found")
        );
        assert_eq!(
            prompt(None, "prompt").unwrap_err().code.as_deref(),
            Some("missing_required_parameter")
        );
        assert_eq!(
            prompt(Some(&json!("  ")), "prompt")
                .unwrap_err()
                .code
                .as_deref(),
            Some("empty_prompt")
        );
        assert_eq!(prompt(Some(&json!(" cat ")), "prompt").unwrap(), "cat");
        assert_eq!(image(None, "image").unwrap(), None);
        assert!(
            image(Some(&json!("data:image/png;base64,AAAA")), "image")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            image(Some(&json!("data:text/plain;base64,AA")), "image")
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_media")
        );
        assert_eq!(
            image(Some(&json!("http://127.0.0.1/x.png")), "image")
                .unwrap_err()
                .code
                .as_deref(),
            Some("forbidden_media_url")
        );
        assert_eq!(
            image(Some(&json!({"url": "https://example.com/a.png"})), "image")
                .unwrap()
                .as_deref(),
            Some("https://example.com/a.png")
        );
        assert_eq!(
            image(Some(&json!("file:///etc/passwd")), "image")
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_media")
        );
    }
}
