//! Turns a transport's frame reader into a [`ChatStream`].
//!
//! The stream owns the connection: dropping it drops the socket or response body, which is
//! how a cancelled call ends at the upstream.

use std::collections::VecDeque;
use std::future::Future;

use futures::StreamExt;

use super::frames::Event;
use super::{ChatChunk, ChatStream, UpstreamError};

/// Items parsed but not yet handed to the caller, and whether the answer is over.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    items: VecDeque<Result<ChatChunk, UpstreamError>>,
    finished: bool,
}

impl Outbox {
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues parsed events; nothing is queued after the end or a failure.
    pub(crate) fn push_events(&mut self, events: Vec<Event>) {
        for event in events {
            if self.finished {
                return;
            }
            match event {
                Event::Chunk(chunk) => self.items.push_back(Ok(chunk)),
                Event::End { response_id } => {
                    self.items.push_back(Ok(ChatChunk::Done { response_id }));
                    self.finished = true;
                }
                Event::Fail(error) => self.fail(error),
            }
        }
    }

    /// Ends the answer with an error.
    pub(crate) fn fail(&mut self, error: UpstreamError) {
        if !self.finished {
            self.items.push_back(Err(error));
            self.finished = true;
        }
    }

    /// Drops what is queued and returns the error that ended the answer, if one did.
    pub(crate) fn take_error(&mut self) -> Option<UpstreamError> {
        self.items.drain(..).find_map(Result::err)
    }

    fn pop(&mut self) -> Option<Result<ChatChunk, UpstreamError>> {
        self.items.pop_front()
    }
}

/// A transport connection that reads frames into its [`Outbox`].
pub(crate) trait FrameSource: Send + 'static {
    fn outbox(&mut self) -> &mut Outbox;

    /// Reads until something is queued or the answer is over (a timeout or transport
    /// failure is queued as an error).
    fn pump(&mut self) -> impl Future<Output = ()> + Send;
}

/// Starts the caller's stream after the first frame was read: an error that came first is
/// returned as the call's error; otherwise the stream opens with `Started`.
pub(crate) fn start<S: FrameSource>(
    mut source: S,
    response_id: Option<String>,
) -> Result<ChatStream, UpstreamError> {
    let outbox = source.outbox();
    if let Some(Err(_)) = outbox.items.front() {
        return Err(outbox
            .pop()
            .and_then(Result::err)
            .expect("the front item is an error"));
    }
    outbox
        .items
        .push_front(Ok(ChatChunk::Started { response_id }));
    Ok(into_stream(source))
}

fn into_stream<S: FrameSource>(source: S) -> ChatStream {
    futures::stream::unfold(source, |mut source| async move {
        loop {
            if let Some(item) = source.outbox().pop() {
                return Some((item, source));
            }
            if source.outbox().is_finished() {
                return None;
            }
            source.pump().await;
        }
    })
    .boxed()
}
