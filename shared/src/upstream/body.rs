//! Bounded reading of HTTP bodies: whole small bodies, and line splitting of streams.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{UpstreamError, classify};

/// Most bytes of an error response kept for classification.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Reads a whole response body, failing with a protocol error past `limit` bytes.
pub(crate) async fn read_limited(
    response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, UpstreamError> {
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(classify::from_reqwest)?;
        if body.len() + chunk.len() > limit {
            return Err(classify::protocol(format!(
                "upstream response body is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads at most `limit` bytes of an error response (the rest is dropped, not an error).
pub(crate) async fn read_error_body(response: reqwest::Response, limit: usize) -> Bytes {
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body.freeze()
}

/// Splits a byte stream into `\n`-terminated lines, refusing a line longer than `max`.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buffer: BytesMut,
    /// Bytes of `buffer` already searched for a newline.
    scanned: usize,
    max: usize,
}

impl LineSplitter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            scanned: 0,
            max,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete line (without `\n`), `Ok(None)` when more bytes are needed, or an
    /// error when the pending line already exceeds the limit.
    pub(crate) fn next_line(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.scanned + offset;
                self.scanned = 0;
                if end > self.max {
                    return Err(self.too_long());
                }
                let mut line = self.buffer.split_to(end + 1);
                line.truncate(end);
                Ok(Some(line.freeze()))
            }
            None => {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.max {
                    return Err(self.too_long());
                }
                Ok(None)
            }
        }
    }

    /// What is left after the body ended (a last line without `\n`).
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.buffer.is_empty()).then(|| self.buffer.split().freeze())
    }

    fn too_long(&self) -> UpstreamError {
        classify::protocol(format!("upstream line longer than {} bytes", self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;

    #[test]
    fn lines_across_chunks() {
        let mut lines = LineSplitter::new(100);
        lines.push(b"ab");
        assert_eq!(lines.next_line().unwrap(), None);
        lines.push(b"c\nde\n\nf");
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"de"[..]));
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(lines.next_line().unwrap(), None);
        assert_eq!(lines.finish().as_deref(), Some(&b"f"[..]));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn an_overlong_line_is_a_protocol_error() {
        let mut lines = LineSplitter::new(4);
        lines.push(b"12345");
        let err = lines.next_line().unwrap_err();
        assert_eq!(err.kind, UpstreamErrorKind::Protocol);
        let mut lines = LineSplitter::new(4);
        lines.push(b"1234\n123456\n");
        assert!(lines.next_line().unwrap().is_some());
        assert!(lines.next_line().is_err());
    }
}
