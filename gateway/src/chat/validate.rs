//! Validation of `POST /v1/chat/completions` bodies, field by field, with the original
//! product's error codes, and flattening of the conversation into the upstream's single
//! message.

use serde_json::{Map, Value};
use shared::models::{self, ModelKind, ModelSpec};

use crate::error::ApiError;

const ROLES: &[&str] = &["developer", "system", "user", "assistant"];
const USER_BLOCKS: &[&str] = &["text", "image_url", "input_audio", "file"];
const EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh"];
/// Most messages accepted in one request; far beyond any real conversation.
const MAX_MESSAGES: usize = 2048;

/// A validated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatInput {
    pub model: &'static ModelSpec,
    pub stream: bool,
    pub reasoning_effort: Option<String>,
    pub temperature: f64,
    pub top_p: f64,
    /// The conversation flattened for the upstream.
    pub message: String,
    /// `data:` URIs of attachments, files first, then images, in message order.
    pub attachments: Vec<String>,
}

pub fn validate(body: &Value) -> Result<ChatInput, ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::invalid("body", "invalid_body", "Request body must be a JSON object")
    })?;
    let model = parse_model(obj)?;
    let stream = parse_stream(obj.get("stream"))?;
    let reasoning_effort = match obj.get("reasoning_effort") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if EFFORTS.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "reasoning_effort",
                "invalid_reasoning_effort",
                format!("reasoning_effort must be one of {}", EFFORTS.join(", ")),
            ));
        }
    };
    let temperature = parse_range(
        obj.get("temperature"),
        "temperature",
        "invalid_temperature",
        0.0,
        2.0,
        0.8,
    )?;
    let top_p = parse_range(obj.get("top_p"), "top_p", "invalid_top_p", 0.0, 1.0, 0.95)?;
    let messages = parse_messages(obj.get("messages"))?;
    let (message, attachments) = flatten(&messages);
    if message.trim().is_empty() && attachments.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "empty_prompt",
            "The conversation has no text to send",
        ));
    }
    Ok(ChatInput {
        model,
        stream,
        reasoning_effort,
        temperature,
        top_p,
        message,
        attachments,
    })
}

fn parse_model(obj: &Map<String, Value>) -> Result<&'static ModelSpec, ApiError> {
    let id = match obj.get("model") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "model",
                "missing_required_parameter",
                "model is required",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "model",
                "invalid_value",
                "model must be a non-empty string",
            ));
        }
    };
    let spec = models::find(id).ok_or_else(|| {
        ApiError::invalid(
            "model",
            "model_not_found",
            format!("The model `{}` does not exist", truncate(id, 64)),
        )
    })?;
    // The video model runs through chat as the original does (`video_config`).
    let served_here = matches!(
        spec.kind,
        ModelKind::Video | ModelKind::Image | ModelKind::ImageEdit
    );
    if spec.kind != ModelKind::Chat && !served_here {
        return Err(ApiError::invalid(
            "model",
            "model_not_supported",
            format!(
                "The model `{}` generates media, which this server does not offer yet",
                spec.id
            ),
        ));
    }
    Ok(spec)
}

fn parse_stream(value: Option<&Value>) -> Result<bool, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ApiError::invalid(
                "stream",
                "invalid_stream",
                "stream must be a boolean",
            )),
        },
        Some(_) => Err(ApiError::invalid(
            "stream",
            "invalid_stream",
            "stream must be a boolean",
        )),
    }
}

fn parse_range(
    value: Option<&Value>,
    param: &str,
    code: &str,
    min: f64,
    max: f64,
    default: f64,
) -> Result<f64, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && (min..=max).contains(&x) => Ok(x),
            _ => Err(ApiError::invalid(
                param,
                code,
                format!("{param} must be a number between {min} and {max}"),
            )),
        },
    }
}

/// One message reduced to its role, text and attachment URLs.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    role: String,
    text: String,
    files: Vec<String>,
    images: Vec<String>,
}

fn parse_messages(value: Option<&Value>) -> Result<Vec<Message>, ApiError> {
    let list = match value {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "empty_messages",
                "messages must not be empty",
            ));
        }
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "messages",
                "missing_required_parameter",
                "messages is required",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "messages",
                "invalid_value",
                "messages must be an array",
            ));
        }
    };
    if list.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            "too_many_messages",
            format!("At most {MAX_MESSAGES} messages"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect()
}

fn parse_message(i: usize, value: &Value) -> Result<Message, ApiError> {
    let at = format!("messages.{i}");
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::invalid(&at, "invalid_value", "Each message must be an object"))?;
    let role = match obj.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                "invalid_role",
                format!("role must be one of {}", ROLES.join(", ")),
            ));
        }
    };
    let mut msg = Message {
        role,
        text: String::new(),
        files: vec![],
        images: vec![],
    };
    let content_at = format!("{at}.content");
    match obj.get("content") {
        Some(Value::String(s)) => {
            if s.trim().is_empty() {
                return Err(ApiError::invalid(
                    content_at,
                    "empty_content",
                    "Message content must not be empty",
                ));
            }
            msg.text = s.trim().to_owned();
        }
        Some(Value::Array(blocks)) => {
            if blocks.is_empty() {
                return Err(ApiError::invalid(
                    content_at,
                    "empty_content",
                    "Message content must not be empty",
                ));
            }
            let mut texts = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                parse_block(&format!("{content_at}.{j}"), block, &mut msg, &mut texts)?;
            }
            msg.text = texts.join("\n");
        }
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                content_at,
                "empty_content",
                "Message content must not be empty",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                content_at,
                "invalid_content",
                "content must be a string or an array of blocks",
            ));
        }
    }
    Ok(msg)
}

fn parse_block(
    at: &str,
    block: &Value,
    msg: &mut Message,
    texts: &mut Vec<String>,
) -> Result<(), ApiError> {
    let obj = block.as_object().ok_or_else(|| {
        ApiError::invalid(at, "invalid_block", "Each content block must be an object")
    })?;
    let kind = match obj.get("type") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                "missing_type",
                "Content block needs a type",
            ));
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                "empty_type",
                "Content block type must not be empty",
            ));
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                "invalid_type",
                "Content block type must be a string",
            ));
        }
    };
    let allowed: &[&str] = if msg.role == "user" {
        USER_BLOCKS
    } else {
        &["text"]
    };
    if !allowed.contains(&kind) {
        return Err(ApiError::invalid(
            format!("{at}.type"),
            "invalid_type",
            format!(
                "Blocks of a {} message must be one of: {}",
                msg.role,
                allowed.join(", ")
            ),
        ));
    }
    match kind {
        "text" => {
            let text = obj.get("text").and_then(Value::as_str).unwrap_or("");
            if text.trim().is_empty() {
                return Err(ApiError::invalid(
                    format!("{at}.text"),
                    "empty_text",
                    "Text block must not be empty",
                ));
            }
            texts.push(text.trim().to_owned());
        }
        "image_url" => {
            let url = media_field(
                obj.get("image_url"),
                "url",
                &format!("{at}.image_url"),
                "missing_url",
            )?;
            msg.images.push(url);
        }
        "input_audio" => {
            let data = media_field(
                obj.get("input_audio"),
                "data",
                &format!("{at}.input_audio"),
                "missing_audio",
            )?;
            msg.files.push(data);
        }
        _ => {
            let data = media_field(
                obj.get("file"),
                "file_data",
                &format!("{at}.file"),
                "missing_file",
            )?;
            msg.files.push(data);
        }
    }
    Ok(())
}

/// Reads `{<key>: "<url>"}` (or a bare string) and checks it is a data URI or an http(s)
/// URL that may be fetched.
fn media_field(
    value: Option<&Value>,
    key: &str,
    at: &str,
    missing: &str,
) -> Result<String, ApiError> {
    let url = match value {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => match o.get(key) {
            Some(Value::String(s)) => s.as_str(),
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.{key}"),
                    missing,
                    format!("{key} is required"),
                ));
            }
        },
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.{key}"),
                missing,
                format!("{key} is required"),
            ));
        }
    };
    let url = url.trim();
    let param = format!("{at}.{key}");
    if url.is_empty() {
        return Err(ApiError::invalid(
            param,
            "empty_media",
            format!("{key} must not be empty"),
        ));
    }
    if url.starts_with("data:") {
        if !url.contains(";base64,") {
            return Err(ApiError::invalid(
                param,
                "invalid_media",
                "data URIs must be base64-encoded",
            ));
        }
        return Ok(url.to_owned());
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        // What can be refused without a lookup is refused here; the worker checks every
        // resolved address again when it downloads.
        return match shared::fetch::precheck_url(url) {
            Ok(checked) => Ok(checked.to_string()),
            Err(e) => Err(ApiError::invalid(param, e.code(), e.to_string())),
        };
    }
    if url.len() >= 32
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    {
        return Err(ApiError::invalid(
            param,
            "invalid_media",
            "Base64 content must be provided as a data URI (data:<mime>;base64,...)",
        ));
    }
    Err(ApiError::invalid(
        param,
        "invalid_media",
        format!("{key} must be an http(s) URL or a data URI"),
    ))
}

/// The upstream takes one message: every message rendered as `<role>: <text>`, joined by
/// blank lines, except the last user message, which goes bare.
fn flatten(messages: &[Message]) -> (String, Vec<String>) {
    let last_user = messages.iter().rposition(|m| m.role == "user");
    let parts: Vec<String> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.text.is_empty())
        .map(|(i, m)| {
            if Some(i) == last_user {
                m.text.clone()
            } else {
                format!("{}: {}", m.role, m.text)
            }
        })
        .collect();
    let mut attachments: Vec<String> = messages
        .iter()
        .flat_map(|m| m.files.iter().cloned())
        .collect();
    attachments.extend(messages.iter().flat_map(|m| m.images.iter().cloned()));
    (parts.join("\n\n"), attachments)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: Value) -> (String, String) {
        let e = validate(&body).unwrap_err();
        (e.param.unwrap_or_default(), e.code.unwrap_or_default())
    }

    fn ok(body: Value) -> ChatInput {
        validate(&body).unwrap()
    }

    #[test]
    fn flattens_like_the_web_client() {
        let input = ok(json!({"model": "grok-4.1-fast", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "user", "content": [{"type": "text", "text": " What is 2+2? "}, {"type": "text", "text": "Answer"}]},
        ]}));
        assert_eq!(
            input.message,
            "system: Be brief.\n\nuser: Hi\n\nassistant: Hello\n\nWhat is 2+2?\nAnswer"
        );
        assert_eq!(input.model.upstream_mode, "fast");
        assert!(!input.stream);
        assert_eq!((input.temperature, input.top_p), (0.8, 0.95));
    }

    #[test]
    fn collects_attachments_files_first() {
        let input = ok(
            json!({"model": "grok-4", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "file", "file": {"file_data": "data:text/plain;base64,QQ=="}},
                {"type": "text", "text": "describe"},
            ]}]}),
        );
        assert_eq!(
            input.attachments,
            vec!["data:text/plain;base64,QQ==", "data:image/png;base64,AAAA"]
        );
    }

    #[test]
    fn each_bad_field_names_param_and_code() {
        let m = |content: Value| json!({"model": "grok-4", "messages": [{"role": "user", "content": content}]});
        assert_eq!(
            err(json!({"messages": []})),
            ("model".into(), "missing_required_parameter".into())
        );
        assert_eq!(
            err(json!({"model": "nope", "messages": []})),
            ("model".into(), "model_not_found".into())
        );
        assert_eq!(
            err(json!({"model": "grok-4"})),
            ("messages".into(), "missing_required_parameter".into())
        );
        assert_eq!(
            err(json!({"model": "grok-4", "messages": [{"role": "robot", "content": "x"}]})),
            ("messages.0.role".into(), "invalid_role".into())
        );
        assert_eq!(
            err(m(json!("  "))),
            ("messages.0.content".into(), "empty_content".into())
        );
        assert_eq!(
            err(m(json!([]))),
            ("messages.0.content".into(), "empty_content".into())
        );
        assert_eq!(
            err(m(json!(5))),
            ("messages.0.content".into(), "invalid_content".into())
        );
        assert_eq!(
            err(m(json!(["x"]))),
            ("messages.0.content.0".into(), "invalid_block".into())
        );
        assert_eq!(
            err(m(json!([{"text": "x"}]))),
            ("messages.0.content.0.type".into(), "missing_type".into())
        );
        assert_eq!(
            err(m(json!([{"type": ""}]))),
            ("messages.0.content.0.type".into(), "empty_type".into())
        );
        assert_eq!(
            err(m(json!([{"type": "video"}]))),
            ("messages.0.content.0.type".into(), "invalid_type".into())
        );
        assert_eq!(
            err(m(json!([{"type": "text", "text": " "}]))),
            ("messages.0.content.0.text".into(), "empty_text".into())
        );
        assert_eq!(
            err(m(json!([{"type": "image_url", "image_url": {}}]))),
            (
                "messages.0.content.0.image_url.url".into(),
                "missing_url".into()
            )
        );
        assert_eq!(
            err(m(json!([{"type": "image_url", "image_url": {"url": ""}}]))),
            (
                "messages.0.content.0.image_url.url".into(),
                "empty_media".into()
            )
        );
        assert_eq!(
            err(m(
                json!([{"type": "image_url", "image_url": {"url": "ftp://x"}}])
            )),
            (
                "messages.0.content.0.image_url.url".into(),
                "invalid_media".into()
            )
        );
        assert_eq!(
            err(m(json!([{"type": "input_audio", "input_audio": {}}]))),
            (
                "messages.0.content.0.input_audio.data".into(),
                "missing_audio".into()
            )
        );
        assert_eq!(
            err(m(json!([{"type": "file", "file": {}}]))),
            (
                "messages.0.content.0.file.file_data".into(),
                "missing_file".into()
            )
        );
        let sys_image = json!({"model": "grok-4", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]});
        assert_eq!(
            err(sys_image),
            ("messages.0.content.0.type".into(), "invalid_type".into())
        );
        let base = |k: &str, v: Value| {
            let mut b = m(json!("hi"));
            b[k] = v;
            err(b)
        };
        assert_eq!(
            base("stream", json!("maybe")),
            ("stream".into(), "invalid_stream".into())
        );
        assert_eq!(
            base("reasoning_effort", json!("max")),
            ("reasoning_effort".into(), "invalid_reasoning_effort".into())
        );
        assert_eq!(
            base("temperature", json!(2.5)),
            ("temperature".into(), "invalid_temperature".into())
        );
        assert_eq!(
            base("temperature", json!(-1)),
            ("temperature".into(), "invalid_temperature".into())
        );
        assert_eq!(
            base("top_p", json!("high")),
            ("top_p".into(), "invalid_top_p".into())
        );
        assert_eq!(err(json!([1])), ("body".into(), "invalid_body".into()));
    }

    #[test]
    fn media_urls_are_accepted_when_fetchable() {
        let with = |url: &str| {
            json!({"model": "grok-4", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": url}},
            ]}]})
        };
        let input = ok(with("https://example.com/cat.png"));
        assert_eq!(input.attachments, vec!["https://example.com/cat.png"]);
        let param = "messages.0.content.1.image_url.url".to_owned();
        for (url, code) in [
            ("http://127.0.0.1/x.png", "forbidden_media_url"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "forbidden_media_url",
            ),
            ("http://[::ffff:127.0.0.1]/", "forbidden_media_url"),
            ("http://0x7f000001/", "forbidden_media_url"),
            ("http://example.com:22/", "forbidden_media_url"),
            ("http://user:pw@example.com/x.png", "invalid_media_url"),
        ] {
            assert_eq!(err(with(url)), (param.clone(), code.to_owned()), "{url}");
        }
        assert_eq!(
            err(with("file:///etc/passwd")),
            (param.clone(), "invalid_media".to_owned())
        );
    }

    #[test]
    fn bare_base64_gets_a_data_uri_hint() {
        let b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaA==";
        let e = validate(&json!({"model": "grok-4", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": b64}}]}]})).unwrap_err();
        assert!(e.message.contains("data URI"), "{}", e.message);
    }

    #[test]
    fn accepts_string_booleans_and_media_models() {
        let input = ok(
            json!({"model": "grok-4", "stream": "yes", "reasoning_effort": "high", "messages": [{"role": "user", "content": "x"}]}),
        );
        assert!(input.stream);
        assert_eq!(input.reasoning_effort.as_deref(), Some("high"));
        let image = ok(
            json!({"model": "grok-imagine-1.0", "messages": [{"role": "user", "content": "a cat"}]}),
        );
        assert_eq!(image.model.kind, ModelKind::Image);
    }
}
