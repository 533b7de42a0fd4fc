//! Publishing a job's events: sequence numbers per attempt, and text coalescing so a fast
//! stream makes a bounded number of bus writes per second.

use std::sync::Arc;
use std::time::Duration;

use shared::bus::{BusError, EventBus};
use shared::event::{EventBody, EventMeta, JobError, JobEvent};
use tokio::time::Instant;
use uuid::Uuid;

/// Numbers and publishes the events of one attempt of one job.
pub struct EventPublisher {
    bus: Arc<dyn EventBus>,
    job_id: Uuid,
    attempt: u32,
    seq: u64,
}

impl EventPublisher {
    pub fn new(bus: Arc<dyn EventBus>, job_id: Uuid, attempt: u32) -> Self {
        Self {
            bus,
            job_id,
            attempt,
            seq: 0,
        }
    }

    pub async fn publish(&mut self, body: EventBody) -> Result<(), BusError> {
        self.seq += 1;
        let event = JobEvent {
            job_id: self.job_id,
            attempt: self.attempt,
            seq: self.seq,
            body,
            meta: EventMeta::now(),
        };
        self.bus.publish(&event).await?;
        crate::observe::note_published(&event.body);
        Ok(())
    }

    pub async fn error(&mut self, error: JobError) -> Result<(), BusError> {
        self.publish(EventBody::Error(error)).await
    }

    /// True once anything has been published for this attempt.
    pub fn has_published(&self) -> bool {
        self.seq > 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Reasoning,
    Text,
}

/// Buffers text pieces of one channel. The first piece after a quiet spell goes out at once
/// (time to first token stays low); later pieces within `window` are merged.
pub struct Coalescer {
    channel: Channel,
    buffer: String,
    last_flush: Option<Instant>,
    window: Duration,
    max_bytes: usize,
}

impl Coalescer {
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        Self {
            channel: Channel::Text,
            buffer: String::new(),
            last_flush: None,
            window,
            max_bytes,
        }
    }

    /// Adds a piece; returns what must be published now, in order.
    pub fn push(&mut self, channel: Channel, text: &str, now: Instant) -> Vec<(Channel, String)> {
        let mut out = Vec::new();
        if channel != self.channel && !self.buffer.is_empty() {
            out.extend(self.take(now));
        }
        self.channel = channel;
        self.buffer.push_str(text);
        let quiet = self.last_flush.is_none_or(|t| now >= t + self.window);
        if quiet || self.buffer.len() >= self.max_bytes {
            out.extend(self.take(now));
        }
        out
    }

    /// When the buffered text must go out, if any is buffered.
    pub fn due(&self) -> Option<Instant> {
        if self.buffer.is_empty() {
            None
        } else {
            Some(
                self.last_flush
                    .map_or_else(Instant::now, |t| t + self.window),
            )
        }
    }

    /// Restarts the window once a publish has completed. Under load publishes slow down;
    /// counting the window from their end merges the pieces that arrived meanwhile into the
    /// next publish, so a busy bus gets fewer, larger writes instead of a backlog of small ones.
    pub fn published(&mut self, now: Instant) {
        if self.last_flush.is_some() {
            self.last_flush = Some(now);
        }
    }

    pub fn take(&mut self, now: Instant) -> Option<(Channel, String)> {
        if self.buffer.is_empty() {
            return None;
        }
        self.last_flush = Some(now);
        Some((self.channel, std::mem::take(&mut self.buffer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_piece_is_immediate_then_merged_within_the_window() {
        let mut c = Coalescer::new(Duration::from_millis(20), 1024);
        let t0 = Instant::now();
        assert_eq!(
            c.push(Channel::Text, "a", t0),
            vec![(Channel::Text, "a".to_owned())]
        );
        assert!(
            c.push(Channel::Text, "b", t0 + Duration::from_millis(5))
                .is_empty()
        );
        assert!(
            c.push(Channel::Text, "c", t0 + Duration::from_millis(10))
                .is_empty()
        );
        assert_eq!(c.due(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(
            c.take(t0 + Duration::from_millis(20)),
            Some((Channel::Text, "bc".to_owned()))
        );
        assert_eq!(c.due(), None);
    }

    #[test]
    fn the_window_restarts_when_a_slow_publish_completes() {
        let mut c = Coalescer::new(Duration::from_millis(20), 1024);
        let t0 = Instant::now();
        assert_eq!(c.push(Channel::Text, "a", t0).len(), 1);
        // The publish of "a" took 50 ms; pieces read right after it are merged, not sent
        // one by one.
        c.published(t0 + Duration::from_millis(50));
        assert!(
            c.push(Channel::Text, "b", t0 + Duration::from_millis(51))
                .is_empty()
        );
        assert!(
            c.push(Channel::Text, "c", t0 + Duration::from_millis(52))
                .is_empty()
        );
        assert_eq!(c.due(), Some(t0 + Duration::from_millis(70)));
    }

    #[test]
    fn a_channel_switch_flushes_in_order_and_size_caps() {
        let mut c = Coalescer::new(Duration::from_secs(10), 4);
        let t0 = Instant::now();
        c.push(Channel::Reasoning, "r", t0);
        assert!(c.push(Channel::Reasoning, "s", t0).is_empty());
        let out = c.push(Channel::Text, "t", t0);
        assert_eq!(out, vec![(Channel::Reasoning, "s".to_owned())]);
        assert_eq!(
            c.push(Channel::Text, "uvw", t0),
            vec![(Channel::Text, "tuvw".to_owned())]
        );
    }
}
