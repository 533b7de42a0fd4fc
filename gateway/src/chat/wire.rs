//! OpenAI chat completion wire objects: stream chunks and the final completion, built from
//! job events. Reasoning goes inline as `<think>` text or as `reasoning_content`, per config.

use serde_json::{Value, json};
use shared::config::ReasoningFormat;

/// Turns reasoning and text pieces into `chat.completion.chunk` objects for one response.
pub struct ChunkWriter {
    id: String,
    created: i64,
    model: String,
    format: ReasoningFormat,
    want_reasoning: bool,
    think_open: bool,
}

impl ChunkWriter {
    pub fn new(
        id: String,
        created: i64,
        model: &str,
        format: ReasoningFormat,
        want_reasoning: bool,
    ) -> Self {
        Self {
            id,
            created,
            model: model.to_owned(),
            format,
            want_reasoning,
            think_open: false,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        })
    }

    /// The opening chunk that names the role.
    pub fn role(&self) -> Value {
        self.chunk(json!({"role": "assistant", "content": ""}), None)
    }

    pub fn reasoning(&mut self, text: &str) -> Option<Value> {
        if !self.want_reasoning || text.is_empty() {
            return None;
        }
        Some(match self.format {
            ReasoningFormat::ReasoningContent => {
                self.chunk(json!({"reasoning_content": text}), None)
            }
            ReasoningFormat::ThinkTags => {
                let content = if self.think_open {
                    text.to_owned()
                } else {
                    format!("<think>\n{text}")
                };
                self.think_open = true;
                self.chunk(json!({"content": content}), None)
            }
        })
    }

    pub fn text(&mut self, text: &str) -> Option<Value> {
        if text.is_empty() {
            return None;
        }
        let content = if self.think_open {
            format!("\n</think>\n{text}")
        } else {
            text.to_owned()
        };
        self.think_open = false;
        Some(self.chunk(json!({"content": content}), None))
    }

    /// Closes an open think block (if any) and ends the choice.
    pub fn finish(&mut self, finish_reason: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if self.think_open {
            out.push(self.chunk(json!({"content": "\n</think>\n"}), None));
            self.think_open = false;
        }
        out.push(self.chunk(json!({}), Some(finish_reason)));
        out
    }
}

/// Zero usage, as the upstream reports none.
pub fn empty_usage() -> Value {
    json!({
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 0, "text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        "completion_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "reasoning_tokens": 0},
    })
}

/// The non-streaming `chat.completion`.
pub fn completion(
    id: &str,
    created: i64,
    model: &str,
    content: &str,
    reasoning: Option<&str>,
    finish_reason: &str,
) -> Value {
    let mut message =
        json!({"role": "assistant", "content": content, "refusal": null, "annotations": []});
    if let Some(r) = reasoning {
        message["reasoning_content"] = Value::from(r);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": empty_usage(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(v: &Value) -> &str {
        v["choices"][0]["delta"]["content"].as_str().unwrap()
    }

    #[test]
    fn think_tags_wrap_reasoning_once() {
        let mut w = ChunkWriter::new("c".into(), 1, "grok-4", ReasoningFormat::ThinkTags, true);
        assert_eq!(w.role()["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(content(&w.reasoning("a ").unwrap()), "<think>\na ");
        assert_eq!(content(&w.reasoning("b").unwrap()), "b");
        assert_eq!(content(&w.text("Hi").unwrap()), "\n</think>\nHi");
        assert_eq!(content(&w.text("!").unwrap()), "!");
        let end = w.finish("stop");
        assert_eq!(end.len(), 1);
        assert_eq!(end[0]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn reasoning_content_and_hidden_reasoning() {
        let mut w = ChunkWriter::new("c".into(), 1, "m", ReasoningFormat::ReasoningContent, true);
        assert_eq!(
            w.reasoning("r").unwrap()["choices"][0]["delta"]["reasoning_content"],
            "r"
        );
        assert_eq!(content(&w.text("t").unwrap()), "t");
        let mut hidden = ChunkWriter::new("c".into(), 1, "m", ReasoningFormat::ThinkTags, false);
        assert!(hidden.reasoning("r").is_none());
        assert_eq!(content(&hidden.text("t").unwrap()), "t");
    }

    #[test]
    fn finish_closes_a_dangling_think_block() {
        let mut w = ChunkWriter::new("c".into(), 1, "m", ReasoningFormat::ThinkTags, true);
        w.reasoning("r");
        let end = w.finish("stop");
        assert_eq!(content(&end[0]), "\n</think>\n");
        assert_eq!(end.len(), 2);
    }
}
