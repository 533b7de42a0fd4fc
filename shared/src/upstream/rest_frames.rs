//! Parser of the REST `conversations/new` stream: one JSON object per line (NDJSON), with
//! SSE-style `data:` prefixes tolerated and unparseable lines skipped.

use serde_json::Value;

use super::ChatChunk;
use super::classify;
use super::frames::{CitationSet, Event, str_field};

/// Per-answer state of the line parser.
#[derive(Debug, Default)]
pub(crate) struct RestParser {
    frames: usize,
    skipped: usize,
    response_id: Option<String>,
    text_seen: bool,
    /// `modelResponse.message`: the whole answer, used only when no text token came.
    full_message: Option<String>,
    model_response_seen: bool,
    ended: bool,
    citations: CitationSet,
}

impl RestParser {
    /// JSON frames parsed so far.
    pub(crate) fn frames_seen(&self) -> usize {
        self.frames
    }

    /// Lines dropped because they were not JSON.
    #[cfg(test)]
    pub(crate) fn lines_skipped(&self) -> usize {
        self.skipped
    }

    pub(crate) fn response_id(&self) -> Option<String> {
        self.response_id.clone()
    }

    /// Parses one line (without its newline).
    pub(crate) fn line(&mut self, raw: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            self.skipped += 1;
            return out;
        };
        let mut text = text.trim();
        if let Some(rest) = text.strip_prefix("data:") {
            text = rest.trim();
        }
        if text.is_empty() || text == "[DONE]" {
            return out;
        }
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            tracing::debug!(
                bytes = text.len(),
                "skipped an upstream line that is not JSON"
            );
            self.skipped += 1;
            return out;
        };
        self.frames += 1;
        self.frame(&frame, &mut out);
        out
    }

    /// The body ended. A stream cut before its end frame is a transient failure; a stream
    /// that delivered its final `modelResponse` but no explicit end marker is complete.
    pub(crate) fn eof(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if self.ended {
        } else if self.model_response_seen {
            self.finish(&mut out);
        } else {
            self.ended = true;
            out.push(Event::Fail(classify::transient(
                "upstream stream ended before the answer was complete",
            )));
        }
        out
    }

    fn frame(&mut self, frame: &Value, out: &mut Vec<Event>) {
        if let Some(error) = non_null(frame.get("error")) {
            self.fail(out, error);
            return;
        }
        let Some(response) = frame.pointer("/result/response") else {
            return;
        };
        if let Some(error) = non_null(response.get("error")) {
            self.fail(out, error);
            return;
        }
        if self.response_id.is_none() {
            self.response_id = str_field(response, "responseId")
                .or_else(|| {
                    response
                        .get("modelResponse")
                        .and_then(|m| str_field(m, "responseId"))
                })
                .map(str::to_owned);
        }
        self.token(response, out);
        self.citations
            .push_all(out, response.pointer("/webSearchResults/results"));
        if let Some(model) = response.get("modelResponse") {
            self.model_response_seen = true;
            if let Some(message) = str_field(model, "message") {
                self.full_message = Some(message.to_owned());
            }
            let first_error = model
                .get("streamErrors")
                .and_then(Value::as_array)
                .and_then(|errors| errors.first());
            if let Some(error) = first_error {
                self.fail(out, error);
                return;
            }
        }
        let soft_stop = response.get("isSoftStop").and_then(Value::as_bool) == Some(true);
        if soft_stop || non_null(response.get("finalMetadata")).is_some() {
            self.finish(out);
        }
    }

    /// Thinking tokens are reasoning; answer tokens carry the `final` tag (or none). Tool
    /// cards, raw tool results and other tagged tokens are not part of the answer.
    fn token(&mut self, response: &Value, out: &mut Vec<Event>) {
        let Some(token) = response.get("token").and_then(Value::as_str) else {
            return;
        };
        if token.is_empty() {
            return;
        }
        let tag = response
            .get("messageTag")
            .and_then(Value::as_str)
            .unwrap_or("");
        let thinking = response.get("isThinking").and_then(Value::as_bool) == Some(true);
        if matches!(tag, "tool_usage_card" | "raw_function_result") {
            return;
        }
        if thinking {
            out.push(Event::Chunk(ChatChunk::Reasoning(token.to_owned())));
        } else if tag.is_empty() || tag == "final" {
            self.text_seen = true;
            out.push(Event::Chunk(ChatChunk::Text(token.to_owned())));
        }
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if !self.text_seen
            && let Some(message) = self.full_message.take()
        {
            out.push(Event::Chunk(ChatChunk::Text(message)));
        }
        out.push(Event::End {
            response_id: self.response_id.clone(),
        });
    }

    fn fail(&mut self, out: &mut Vec<Event>, error: &Value) {
        self.ended = true;
        out.push(Event::Fail(classify::from_in_band(error)));
    }
}

fn non_null(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;

    fn parse_all(fixture: &str) -> (RestParser, Vec<Event>) {
        let mut parser = RestParser::default();
        let mut events = Vec::new();
        for line in fixture.split('\n') {
            events.extend(parser.line(line.as_bytes()));
        }
        events.extend(parser.eof());
        (parser, events)
    }

    fn chunk(c: ChatChunk) -> Event {
        Event::Chunk(c)
    }

    #[test]
    fn answer_with_reasoning_search_and_soft_stop() {
        let (parser, events) = parse_all(include_str!("fixtures/rest_answer.ndjson"));
        assert_eq!(
            events,
            vec![
                chunk(ChatChunk::Reasoning("Let me check".into())),
                chunk(ChatChunk::Reasoning("thinking ".into())),
                chunk(ChatChunk::Text("Hello! ".into())),
                chunk(ChatChunk::Text("hello".into())),
                chunk(ChatChunk::Citation {
                    url: "https://example.com".into(),
                    title: None
                }),
                chunk(ChatChunk::Text(" world".into())),
                chunk(ChatChunk::Citation {
                    url: "https://example.org/a".into(),
                    title: Some("A".into())
                }),
                Event::End {
                    response_id: Some("a9c2".into())
                },
            ]
        );
        // The `data:` framed line counts, the garbage line and `[DONE]` do not.
        assert_eq!(parser.lines_skipped(), 1);
    }

    #[test]
    fn full_message_is_used_only_without_tokens() {
        let (_, events) = parse_all(include_str!("fixtures/rest_model_response_only.ndjson"));
        assert_eq!(
            events,
            vec![
                chunk(ChatChunk::Text("Hello! Here is your answer.".into())),
                Event::End {
                    response_id: Some("r-full".into())
                },
            ]
        );
    }

    #[test]
    fn in_band_errors_end_the_stream() {
        let (_, events) = parse_all(include_str!("fixtures/rest_error_top_level.ndjson"));
        assert!(
            matches!(
                events.as_slice(),
                [Event::Fail(e)] if e.kind == UpstreamErrorKind::RateLimited { retry_after: None }
            ),
            "{events:?}"
        );
        let (_, events) = parse_all(include_str!("fixtures/rest_error_in_response.ndjson"));
        assert!(
            matches!(
                events.as_slice(),
                [Event::Chunk(ChatChunk::Text(t)), Event::Fail(e)]
                    if t == "partial" && e.kind == UpstreamErrorKind::RateLimited { retry_after: None }
            ),
            "{events:?}"
        );
    }

    #[test]
    fn cut_stream_is_transient() {
        let (_, events) = parse_all(include_str!("fixtures/rest_cut.ndjson"));
        assert!(
            matches!(
                events.as_slice(),
                [Event::Chunk(ChatChunk::Text(_)), Event::Fail(e)]
                    if e.kind == UpstreamErrorKind::Transient
            ),
            "{events:?}"
        );
    }

    #[test]
    fn tool_cards_and_raw_results_are_not_text() {
        let (_, events) = parse_all(include_str!("fixtures/rest_tool_card.ndjson"));
        assert_eq!(
            events,
            vec![
                chunk(ChatChunk::Text("Found it.".into())),
                Event::End { response_id: None },
            ]
        );
    }
}
