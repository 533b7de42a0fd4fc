//! What the transport parsers make of upstream frames, independent of the transport.

use std::collections::HashSet;

use serde_json::Value;

use super::{ChatChunk, UpstreamError};

/// Largest frame (WebSocket message or NDJSON line) accepted, as the browser client's read
/// limit; anything bigger is a protocol error rather than unbounded memory.
pub(crate) const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Most distinct citations kept per answer; a runaway source list is cut, not buffered.
const MAX_CITATIONS: usize = 256;

/// One meaningful thing a frame said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Chunk(ChatChunk),
    /// The upstream's normal end of the answer.
    End {
        response_id: Option<String>,
    },
    /// The upstream reported an error; the answer is over.
    Fail(UpstreamError),
}

/// Emits each cited URL once per answer, whichever frames repeat it.
#[derive(Debug, Default)]
pub(crate) struct CitationSet {
    seen: HashSet<String>,
}

impl CitationSet {
    /// Pushes a citation event for `url` unless it was already cited or is not a web URL.
    pub(crate) fn push(&mut self, out: &mut Vec<Event>, url: &str, title: Option<&str>) {
        let url = url.trim();
        let is_web = url.starts_with("https://") || url.starts_with("http://");
        if !is_web || self.seen.len() >= MAX_CITATIONS || !self.seen.insert(url.to_owned()) {
            return;
        }
        let title = title
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        out.push(Event::Chunk(ChatChunk::Citation {
            url: url.to_owned(),
            title,
        }));
    }

    /// Pushes a citation for every `{url, title}` object in `list`.
    pub(crate) fn push_all(&mut self, out: &mut Vec<Event>, list: Option<&Value>) {
        for page in list.and_then(Value::as_array).into_iter().flatten() {
            if let Some(url) = page.get("url").and_then(Value::as_str) {
                self.push(out, url, page.get("title").and_then(Value::as_str));
            }
        }
    }
}

/// A non-empty string field.
pub(crate) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}
