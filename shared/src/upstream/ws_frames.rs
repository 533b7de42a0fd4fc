//! Parser of the chat gateway's server events (`{"event":{"type":...}}` text frames).

use serde_json::Value;

use super::ChatChunk;
use super::classify;
use super::frames::{CitationSet, Event, str_field};

/// What one gateway frame means to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsFrame {
    /// `session.created`: the gateway session exists.
    SessionCreated { session_id: Option<String> },
    /// `conversation.attached`: the conversation the session talks in.
    ConversationAttached { conversation_id: Option<String> },
    /// Anything about the answer (possibly nothing: pongs, progress, unknown events).
    Answer(Vec<Event>),
    /// Not JSON, or JSON without an event type.
    Malformed,
}

/// Per-answer state of the gateway frame parser.
#[derive(Debug, Default)]
pub(crate) struct WsParser {
    response_id: Option<String>,
    done: bool,
    citations: CitationSet,
}

impl WsParser {
    pub(crate) fn response_id(&self) -> Option<String> {
        self.response_id.clone()
    }

    /// Parses one text frame.
    pub(crate) fn frame(&mut self, text: &str) -> WsFrame {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return WsFrame::Malformed;
        };
        let Some(event) = frame.get("event") else {
            return WsFrame::Malformed;
        };
        let Some(kind) = event.get("type").and_then(Value::as_str) else {
            return WsFrame::Malformed;
        };
        let mut out = Vec::new();
        match kind {
            "session.created" => {
                let session_id = str_field(&frame, "session_id")
                    .or_else(|| event.get("session").and_then(|s| str_field(s, "id")))
                    .map(str::to_owned);
                return WsFrame::SessionCreated { session_id };
            }
            "conversation.attached" => {
                let conversation_id = event
                    .get("conversation")
                    .and_then(|c| str_field(c, "id"))
                    .map(str::to_owned);
                return WsFrame::ConversationAttached { conversation_id };
            }
            "response.created" => self.note_response_id(event.get("response")),
            "response.chunk" => self.chunk(event.get("chunk").unwrap_or(&Value::Null), &mut out),
            "response.output_text.delta" => {
                if let Some(delta) = str_field(event, "delta") {
                    out.push(Event::Chunk(ChatChunk::Text(delta.to_owned())));
                }
            }
            "response.search.result" => {
                if let Some(result) = event.get("result") {
                    self.push_citation(result, &mut out);
                }
            }
            "response.grok.output" => {
                if let Some(error) = event.pointer("/output/stream_error") {
                    self.fail(classify::from_in_band(error), &mut out);
                }
            }
            "response.done" => self.response_done(event, &mut out),
            "error" => {
                let error = event.get("error").unwrap_or(&Value::Null);
                self.fail(classify::from_in_band(error), &mut out);
            }
            "session.ended" if !self.done => self.fail(
                classify::transient("upstream session ended before the answer was done"),
                &mut out,
            ),
            // `response.output_text.done` repeats the whole text already streamed as deltas;
            // pongs, tool cards and unknown events carry nothing for the answer.
            _ => {}
        }
        WsFrame::Answer(out)
    }

    fn chunk(&mut self, chunk: &Value, out: &mut Vec<Event>) {
        if let Some(text) = chunk.get("text") {
            let body = str_field(text, "text");
            let channel = text.get("channel").and_then(Value::as_str).unwrap_or("");
            if let Some(body) = body {
                if channel.contains("ANALYSIS") || channel.contains("REASONING") {
                    out.push(Event::Chunk(ChatChunk::Reasoning(body.to_owned())));
                } else if channel == "CHANNEL_ASSISTANT_RESPONSE" {
                    out.push(Event::Chunk(ChatChunk::Text(body.to_owned())));
                }
            }
        }
        if let Some(citation) = chunk.get("render_citation") {
            self.push_citation(citation, out);
        }
        if let Some(pages) = chunk.pointer("/tool_result/web_search/webpages") {
            self.citations.push_all(out, Some(pages));
        }
    }

    fn response_done(&mut self, event: &Value, out: &mut Vec<Event>) {
        let response = event.get("response");
        self.note_response_id(response);
        let status = response
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("completed");
        if let Some(error) = response
            .and_then(|r| r.get("error"))
            .filter(|e| !e.is_null())
        {
            self.fail(classify::from_in_band(error), out);
        } else if matches!(status, "failed" | "cancelled" | "incomplete") {
            self.fail(
                classify::transient(format!("upstream response ended with status {status}")),
                out,
            );
        } else {
            self.done = true;
            out.push(Event::End {
                response_id: self.response_id.clone(),
            });
        }
    }

    fn push_citation(&mut self, source: &Value, out: &mut Vec<Event>) {
        if let Some(url) = str_field(source, "url") {
            self.citations.push(out, url, str_field(source, "title"));
        }
    }

    fn note_response_id(&mut self, response: Option<&Value>) {
        if let Some(id) = response.and_then(|r| str_field(r, "id")) {
            self.response_id = Some(id.to_owned());
        }
    }

    fn fail(&mut self, error: super::UpstreamError, out: &mut Vec<Event>) {
        self.done = true;
        out.push(Event::Fail(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;

    /// Parses a fixture (one frame per line), returning handshake frames and answer events.
    fn parse_all(fixture: &str) -> (Vec<WsFrame>, Vec<Event>) {
        let mut parser = WsParser::default();
        let mut handshake = Vec::new();
        let mut events = Vec::new();
        for line in fixture.lines().filter(|l| !l.trim().is_empty()) {
            match parser.frame(line) {
                WsFrame::Answer(found) => events.extend(found),
                other => handshake.push(other),
            }
        }
        (handshake, events)
    }

    #[test]
    fn full_answer_with_tools_and_citations() {
        let (handshake, events) = parse_all(include_str!("fixtures/ws_answer.jsonl"));
        assert_eq!(
            handshake,
            vec![
                WsFrame::SessionCreated {
                    session_id: Some("sess-1".into())
                },
                WsFrame::ConversationAttached {
                    conversation_id: Some("conversation-1".into())
                },
                WsFrame::Malformed,
            ]
        );
        let example = |url: &str, title: Option<&str>| {
            Event::Chunk(ChatChunk::Citation {
                url: url.into(),
                title: title.map(Into::into),
            })
        };
        assert_eq!(
            events,
            vec![
                Event::Chunk(ChatChunk::Reasoning("thought".into())),
                Event::Chunk(ChatChunk::Reasoning(" more".into())),
                example("https://x.ai/news/grok-4-6", Some("Grok 4.6")),
                example("https://example.com/b", None),
                Event::Chunk(ChatChunk::Text("TOKEN".into())),
                Event::Chunk(ChatChunk::Text(" two".into())),
                example("https://example.com/c", Some("C")),
                Event::End {
                    response_id: Some("response-1".into())
                },
            ]
        );
    }

    #[test]
    fn error_event_is_classified() {
        let (_, events) = parse_all(include_str!("fixtures/ws_error_anti_bot.jsonl"));
        assert!(
            matches!(events.as_slice(), [Event::Fail(e)] if e.kind == UpstreamErrorKind::AntiBot),
            "{events:?}"
        );
        let (_, events) = parse_all(include_str!("fixtures/ws_error_rate_limit.jsonl"));
        assert!(
            matches!(
                events.as_slice(),
                [Event::Chunk(ChatChunk::Text(_)), Event::Fail(e)]
                    if e.kind == UpstreamErrorKind::RateLimited { retry_after: None }
            ),
            "{events:?}"
        );
    }

    #[test]
    fn session_end_before_done_is_an_error_and_after_is_not() {
        let (_, events) = parse_all(include_str!("fixtures/ws_session_ended.jsonl"));
        assert!(
            matches!(
                events.as_slice(),
                [Event::Chunk(ChatChunk::Text(_)), Event::Fail(e)]
                    if e.kind == UpstreamErrorKind::Transient
            ),
            "{events:?}"
        );
        let mut parser = WsParser::default();
        parser.frame(
            r#"{"event":{"type":"response.done","response":{"id":"r","status":"completed"}}}"#,
        );
        assert_eq!(
            parser.frame(r#"{"event":{"type":"session.ended"}}"#),
            WsFrame::Answer(vec![])
        );
    }
}
