//! Following one job's events from the bus: live events first-hand, gaps and lost
//! subscriptions filled from the job's replay log, duplicates dropped, all bounded by the
//! job's deadline. Callers see each event of each attempt once, in order.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shared::bus::{EventBus, EventStream};
use shared::event::{EventBody, JobEvent};
use std::collections::VecDeque;
use tokio::time::Instant;
use uuid::Uuid;

/// Why a feed ended without a terminal event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// The job's deadline passed.
    Timeout,
}

pub struct EventFeed {
    bus: Arc<dyn EventBus>,
    job_id: Uuid,
    live: Option<EventStream>,
    pending: VecDeque<JobEvent>,
    /// `(attempt, seq)` of the last event handed out.
    cursor: Option<(u32, u64)>,
    deadline: Instant,
    finished: bool,
}

/// What to do with an event, given the cursor.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Accept,
    Duplicate,
    /// Something between the cursor and this event is missing.
    Gap,
}

fn judge(cursor: Option<(u32, u64)>, ev: &JobEvent) -> Verdict {
    match cursor {
        None if ev.seq == 1 => Verdict::Accept,
        None => Verdict::Gap,
        Some((attempt, seq)) if ev.attempt == attempt => match ev.seq {
            s if s == seq + 1 => Verdict::Accept,
            s if s <= seq => Verdict::Duplicate,
            _ => Verdict::Gap,
        },
        // A new attempt starts at seq 1; anything from an older attempt is stale.
        Some((attempt, _)) if ev.attempt > attempt => {
            if ev.seq == 1 {
                Verdict::Accept
            } else {
                Verdict::Gap
            }
        }
        Some(_) => Verdict::Duplicate,
    }
}

impl EventFeed {
    /// A feed over a subscription taken before the job was published.
    pub fn new(bus: Arc<dyn EventBus>, job_id: Uuid, live: EventStream, deadline: Instant) -> Self {
        Self {
            bus,
            job_id,
            live: Some(live),
            pending: VecDeque::new(),
            cursor: None,
            deadline,
            finished: false,
        }
    }

    /// A feed that resumes after `cursor` (from `Last-Event-ID`).
    pub async fn resume(
        bus: Arc<dyn EventBus>,
        job_id: Uuid,
        cursor: Option<(u32, u64)>,
        deadline: Instant,
    ) -> Self {
        let mut feed = Self {
            bus,
            job_id,
            live: None,
            pending: VecDeque::new(),
            cursor,
            deadline,
            finished: false,
        };
        feed.resubscribe().await;
        feed
    }

    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    /// The next event, `None` after a terminal event, or an error when the deadline passes.
    pub async fn next(&mut self) -> Option<Result<JobEvent, FeedError>> {
        if self.finished {
            return None;
        }
        loop {
            while let Some(ev) = self.pending.pop_front() {
                if let Some(ev) = self.take(ev, true) {
                    return Some(Ok(ev));
                }
            }
            let Some(live) = self.live.as_mut() else {
                if Instant::now() >= self.deadline {
                    self.finished = true;
                    return Some(Err(FeedError::Timeout));
                }
                tokio::time::sleep(Duration::from_millis(200).min(self.deadline - Instant::now()))
                    .await;
                self.resubscribe().await;
                continue;
            };
            let next = tokio::time::timeout_at(self.deadline, live.next()).await;
            match next {
                Err(_) => {
                    self.finished = true;
                    return Some(Err(FeedError::Timeout));
                }
                // The subscription was dropped (slow consumer, bus reconnect): catch up from
                // the replay log on a fresh one.
                Ok(None) => {
                    self.live = None;
                    self.resubscribe().await;
                }
                Ok(Some(ev)) => {
                    shared::metrics::bus_lag(ev.meta.published_ms);
                    match judge(self.cursor, &ev) {
                        Verdict::Accept => {
                            if let Some(ev) = self.take(ev, false) {
                                return Some(Ok(ev));
                            }
                        }
                        Verdict::Duplicate => {}
                        Verdict::Gap => {
                            self.fill_from_replay().await;
                            self.pending.push_back(ev);
                        }
                    }
                }
            }
        }
    }

    /// Hands out `ev` if it comes next; after a replay (`lenient`) a remaining gap is
    /// accepted, since the missing events are gone for good.
    fn take(&mut self, ev: JobEvent, lenient: bool) -> Option<JobEvent> {
        let verdict = judge(self.cursor, &ev);
        let accept = verdict == Verdict::Accept || (lenient && verdict == Verdict::Gap);
        if !accept {
            return None;
        }
        if verdict == Verdict::Gap {
            tracing::warn!(job_id = %self.job_id, cursor = ?self.cursor, got = %ev.cursor(), "events missing from the replay log");
        }
        if self.cursor.is_none() || ev.is_terminal() {
            received(&ev);
        }
        self.cursor = Some((ev.attempt, ev.seq));
        if ev.is_terminal() {
            self.finished = true;
        }
        Some(ev)
    }

    async fn fill_from_replay(&mut self) {
        match self.bus.replay(self.job_id, self.cursor).await {
            Ok(events) => self.pending.extend(events),
            Err(e) => tracing::warn!(job_id = %self.job_id, error = %e, "replay failed"),
        }
    }

    async fn resubscribe(&mut self) {
        match self.bus.subscribe(self.job_id).await {
            Ok(live) => {
                self.live = Some(live);
                self.fill_from_replay().await;
            }
            Err(e) => {
                tracing::warn!(job_id = %self.job_id, error = %e, "subscribe failed; retrying")
            }
        }
    }
}

/// Records the arrival of a job's first and last event as a span in the worker's trace
/// (the event carries the publishing span's context), so a trace shows the way back too.
fn received(ev: &JobEvent) {
    let kind = match &ev.body {
        EventBody::Started { .. } => "started",
        EventBody::Reasoning { .. } => "reasoning",
        EventBody::Delta { .. } => "delta",
        EventBody::Progress { .. } => "progress",
        EventBody::Usage { .. } => "usage",
        EventBody::Done { .. } => "done",
        EventBody::Error(_) => "error",
        #[allow(unreachable_patterns)]
        _ => "other",
    };
    let span = tracing::info_span!(
        "event received",
        otel.kind = "consumer",
        job_id = %ev.job_id,
        event = kind,
        attempt = ev.attempt,
        seq = ev.seq
    );
    shared::telemetry::set_parent(&span, ev.meta.traceparent.as_deref());
}

/// Parses a `Last-Event-ID` of the form `<attempt>-<seq>`.
pub fn parse_cursor(value: &str) -> Option<(u32, u64)> {
    let (a, s) = value.trim().split_once('-')?;
    Some((a.parse().ok()?, s.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(attempt: u32, seq: u64) -> JobEvent {
        JobEvent {
            job_id: Uuid::nil(),
            attempt,
            seq,
            body: EventBody::Delta {
                text: String::new(),
            },
            meta: Default::default(),
        }
    }

    #[test]
    fn judging_orders_dedupes_and_detects_gaps() {
        assert_eq!(judge(None, &ev(1, 1)), Verdict::Accept);
        assert_eq!(judge(None, &ev(1, 2)), Verdict::Gap);
        assert_eq!(judge(Some((1, 1)), &ev(1, 2)), Verdict::Accept);
        assert_eq!(judge(Some((1, 2)), &ev(1, 2)), Verdict::Duplicate);
        assert_eq!(judge(Some((1, 2)), &ev(1, 4)), Verdict::Gap);
        assert_eq!(judge(Some((1, 5)), &ev(2, 1)), Verdict::Accept);
        assert_eq!(judge(Some((2, 1)), &ev(1, 6)), Verdict::Duplicate);
        assert_eq!(judge(Some((1, 5)), &ev(2, 3)), Verdict::Gap);
    }

    #[test]
    fn cursors_parse_strictly() {
        assert_eq!(parse_cursor("2-15"), Some((2, 15)));
        assert_eq!(parse_cursor("garbage"), None);
        assert_eq!(parse_cursor("1-"), None);
        assert_eq!(parse_cursor("-1-2"), None);
    }
}
