//! The in-process event bus: per job a bounded broadcast channel for live subscribers and
//! a bounded replay buffer, both forgotten once the job has been quiet for the retention
//! time. Expired jobs and cancel flags are swept lazily by the operations themselves, so
//! memory stays bounded without a background task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::{BusError, EventBus, EventStream};
use crate::event::JobEvent;

/// Events a live subscriber may fall behind by before it loses its subscription (it then
/// catches up from the replay buffer). A broadcast channel allocates all its slots up
/// front, so this is paid per open stream: coalesced publishing keeps 64 ample.
const LIVE_BUFFER: usize = 64;

/// An in-process [`EventBus`].
pub struct MemoryBus {
    state: Mutex<State>,
    replay_max_events: usize,
    replay_ttl: Duration,
}

struct State {
    jobs: HashMap<Uuid, JobChannel>,
    /// Cancel flags and when they lapse.
    cancels: HashMap<Uuid, Instant>,
    next_sweep: Instant,
}

struct JobChannel {
    /// Only while someone listens: an idle job keeps just its replay buffer.
    live: Option<broadcast::Sender<JobEvent>>,
    replay: VecDeque<JobEvent>,
    expires_at: Instant,
}

impl MemoryBus {
    /// A bus keeping at most `replay_max_events` events per job, for `replay_ttl` after the
    /// job's last event (or subscription).
    pub fn new(replay_max_events: usize, replay_ttl: Duration) -> MemoryBus {
        MemoryBus {
            state: Mutex::new(State {
                jobs: HashMap::new(),
                cancels: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            replay_max_events: replay_max_events.max(1),
            replay_ttl,
        }
    }

    /// Locks the state, first dropping what expired if a sweep is due. Sweeps run at most
    /// a few times per retention period, so their cost is spread over many operations.
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the maps consistent, so a poisoned lock is usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now >= state.next_sweep {
            // A job someone still listens to stays, so its subscribers are not cut off.
            state.jobs.retain(|_, job| {
                if job.live.as_ref().is_some_and(|l| l.receiver_count() == 0) {
                    job.live = None;
                }
                job.expires_at > now || job.live.is_some()
            });
            state.cancels.retain(|_, expires_at| *expires_at > now);
            state.next_sweep = now + (self.replay_ttl / 4).max(Duration::from_millis(10));
        }
        state
    }

    fn job<'a>(&self, state: &'a mut State, job_id: Uuid) -> &'a mut JobChannel {
        let expires_at = Instant::now() + self.replay_ttl;
        let job = state.jobs.entry(job_id).or_insert_with(|| JobChannel {
            live: None,
            replay: VecDeque::new(),
            expires_at,
        });
        job.expires_at = expires_at;
        job
    }
}

/// Events recorded after the cursor: those following the event with exactly that
/// `(attempt, seq)`, or, if that event is not (or no longer) recorded, those ordered
/// after it.
pub(crate) fn after_cursor<'a>(
    events: impl IntoIterator<Item = &'a JobEvent>,
    after: Option<(u32, u64)>,
) -> Vec<JobEvent> {
    let events: Vec<&JobEvent> = events.into_iter().collect();
    let Some(cursor) = after else {
        return events.into_iter().cloned().collect();
    };
    match events.iter().position(|e| (e.attempt, e.seq) == cursor) {
        Some(index) => events[index + 1..].iter().map(|e| (*e).clone()).collect(),
        None => events
            .into_iter()
            .filter(|e| (e.attempt, e.seq) > cursor)
            .cloned()
            .collect(),
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn subscribe(&self, job_id: Uuid) -> Result<EventStream, BusError> {
        let receiver = {
            let mut state = self.state();
            let job = self.job(&mut state, job_id);
            match &job.live {
                Some(live) => live.subscribe(),
                None => {
                    let (live, receiver) = broadcast::channel(LIVE_BUFFER);
                    job.live = Some(live);
                    receiver
                }
            }
        };
        // A lagging subscriber's stream ends; it recovers with `replay`.
        let stream = BroadcastStream::new(receiver)
            .take_while(|item| futures::future::ready(item.is_ok()))
            .filter_map(|item| futures::future::ready(item.ok()));
        Ok(stream.boxed())
    }

    async fn publish(&self, event: &JobEvent) -> Result<(), BusError> {
        let mut state = self.state();
        let job = self.job(&mut state, event.job_id);
        if job.replay.len() >= self.replay_max_events {
            job.replay.pop_front();
        }
        job.replay.push_back(event.clone());
        // Sent under the lock, so live order equals replay order.
        if let Some(live) = &job.live
            && live.send(event.clone()).is_err()
        {
            // Every subscriber has gone: free the channel's buffer.
            job.live = None;
        }
        if event.is_terminal() {
            // Nothing follows a terminal event: subscribers still drain what was sent, and
            // the buffer goes with the last of them instead of at the next sweep.
            job.live = None;
        }
        Ok(())
    }

    async fn replay(
        &self,
        job_id: Uuid,
        after: Option<(u32, u64)>,
    ) -> Result<Vec<JobEvent>, BusError> {
        let state = self.state();
        Ok(match state.jobs.get(&job_id) {
            Some(job) if job.expires_at > Instant::now() => after_cursor(&job.replay, after),
            _ => Vec::new(),
        })
    }

    async fn cancel(&self, job_id: Uuid) -> Result<(), BusError> {
        let expires_at = Instant::now() + self.replay_ttl;
        self.state().cancels.insert(job_id, expires_at);
        Ok(())
    }

    async fn is_cancelled(&self, job_id: Uuid) -> Result<bool, BusError> {
        let state = self.state();
        Ok(state
            .cancels
            .get(&job_id)
            .is_some_and(|expires_at| *expires_at > Instant::now()))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBody;

    fn event(attempt: u32, seq: u64) -> JobEvent {
        JobEvent {
            job_id: Uuid::nil(),
            attempt,
            seq,
            body: EventBody::Delta {
                text: format!("{attempt}-{seq}"),
            },
            meta: Default::default(),
        }
    }

    fn cursors(events: &[JobEvent]) -> Vec<(u32, u64)> {
        events.iter().map(|e| (e.attempt, e.seq)).collect()
    }

    #[test]
    fn after_cursor_follows_the_matching_event_in_recorded_order() {
        // A redelivered job starts again at seq 1 with a higher attempt.
        let events = [event(1, 1), event(1, 2), event(2, 1), event(2, 2)];
        assert_eq!(cursors(&after_cursor(&events, None)).len(), 4);
        assert_eq!(
            cursors(&after_cursor(&events, Some((1, 2)))),
            vec![(2, 1), (2, 2)]
        );
        assert_eq!(cursors(&after_cursor(&events, Some((2, 2)))), vec![]);
    }

    #[test]
    fn after_cursor_falls_back_to_ordering_when_the_cursor_was_trimmed() {
        let events = [event(1, 5), event(1, 6), event(2, 1)];
        assert_eq!(
            cursors(&after_cursor(&events, Some((1, 3)))),
            vec![(1, 5), (1, 6), (2, 1)]
        );
        assert_eq!(cursors(&after_cursor(&events, Some((1, 9)))), vec![(2, 1)]);
    }

    #[tokio::test]
    async fn expired_jobs_and_cancel_flags_are_forgotten() {
        let bus = MemoryBus::new(10, Duration::from_millis(40));
        let job_id = Uuid::now_v7();
        bus.publish(&JobEvent {
            job_id,
            ..event(1, 1)
        })
        .await
        .unwrap();
        bus.cancel(job_id).await.unwrap();
        assert_eq!(bus.replay(job_id, None).await.unwrap().len(), 1);
        assert!(bus.is_cancelled(job_id).await.unwrap());

        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(bus.replay(job_id, None).await.unwrap().is_empty());
        assert!(!bus.is_cancelled(job_id).await.unwrap());
        let state = bus.state();
        assert!(state.jobs.is_empty(), "expired job state is swept");
        assert!(state.cancels.is_empty(), "expired cancel flag is swept");
    }

    #[tokio::test]
    async fn an_unwatched_job_keeps_no_live_buffer() {
        let bus = MemoryBus::new(10, Duration::from_secs(60));
        let job_id = Uuid::nil();
        let live = bus.subscribe(job_id).await.unwrap();
        bus.publish(&event(1, 1)).await.unwrap();
        assert!(bus.state().jobs[&job_id].live.is_some());
        drop(live);
        bus.publish(&event(1, 2)).await.unwrap();
        assert!(bus.state().jobs[&job_id].live.is_none());
        assert_eq!(bus.replay(job_id, None).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_terminal_event_frees_the_live_buffer_after_delivery() {
        let bus = MemoryBus::new(10, Duration::from_secs(60));
        let job_id = Uuid::nil();
        let mut live = bus.subscribe(job_id).await.unwrap();
        bus.publish(&event(1, 1)).await.unwrap();
        let done = JobEvent {
            body: EventBody::Done {
                finish_reason: "stop".into(),
                response_id: None,
            },
            ..event(1, 2)
        };
        bus.publish(&done).await.unwrap();
        assert!(bus.state().jobs[&job_id].live.is_none());
        // The subscriber still gets both events, then its stream ends.
        assert_eq!(live.next().await.map(|e| e.seq), Some(1));
        assert_eq!(live.next().await.map(|e| e.seq), Some(2));
        assert!(live.next().await.is_none());
    }

    #[tokio::test]
    async fn replay_keeps_only_the_newest_events() {
        let bus = MemoryBus::new(3, Duration::from_secs(60));
        for seq in 1..=5 {
            bus.publish(&event(1, seq)).await.unwrap();
        }
        let kept = bus.replay(Uuid::nil(), None).await.unwrap();
        assert_eq!(cursors(&kept), vec![(1, 3), (1, 4), (1, 5)]);
    }
}
