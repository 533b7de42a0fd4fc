//! The EventBus contract, written once and run against the in-process bus and Redis.

use std::sync::Arc;
use std::time::Duration;

use shared::bus::memory::MemoryBus;
use shared::bus::redis::RedisBus;
use shared::bus::{EventBus, EventStream};
use shared::event::{EventBody, EventMeta, JobError, JobEvent};
use uuid::Uuid;

use crate::common::{self, TcpProxy, next_within, stays_quiet};

const REPLAY_TTL: Duration = Duration::from_secs(60);

fn event(job_id: Uuid, attempt: u32, seq: u64) -> JobEvent {
    JobEvent {
        job_id,
        attempt,
        seq,
        body: EventBody::Delta {
            text: format!("text {attempt}-{seq}"),
        },
        // Metadata must cross the bus unchanged (bus lag and trace context depend on it).
        meta: EventMeta {
            published_ms: 1_700_000_000_000 + seq as i64,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        },
    }
}

fn cursors(events: &[JobEvent]) -> Vec<(u32, u64)> {
    events.iter().map(|e| (e.attempt, e.seq)).collect()
}

async fn next_event(stream: &mut EventStream) -> JobEvent {
    next_within(stream).await.expect("live stream ended")
}

// ---------------------------------------------------------------------------------------
// The contract, generic over the backend.

async fn subscriber_gets_events_in_order(bus: Arc<dyn EventBus>) {
    bus.ping().await.unwrap();
    let job = Uuid::now_v7();
    let mut live = bus.subscribe(job).await.unwrap();
    let sent = vec![
        JobEvent {
            body: EventBody::Started {
                response_id: Some("r1".into()),
            },
            ..event(job, 1, 1)
        },
        event(job, 1, 2),
        JobEvent {
            body: EventBody::Usage {
                prompt_tokens: 3,
                completion_tokens: 5,
            },
            ..event(job, 1, 3)
        },
        JobEvent {
            body: EventBody::Error(
                JobError::new(429, "rate_limit_exceeded", "slow down").with_retry_after(2),
            ),
            ..event(job, 1, 4)
        },
    ];
    for e in &sent {
        bus.publish(e).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        got.push(next_event(&mut live).await);
    }
    assert_eq!(got, sent);
}

async fn earlier_events_are_replayed_not_streamed(bus: Arc<dyn EventBus>) {
    let job = Uuid::now_v7();
    let early = event(job, 1, 1);
    bus.publish(&early).await.unwrap();
    let mut live = bus.subscribe(job).await.unwrap();
    let late = event(job, 1, 2);
    bus.publish(&late).await.unwrap();

    assert_eq!(
        next_event(&mut live).await,
        late,
        "the live stream starts at subscribe"
    );
    assert_eq!(bus.replay(job, None).await.unwrap(), vec![early, late]);
}

async fn replay_resumes_after_a_cursor(bus: Arc<dyn EventBus>) {
    let job = Uuid::now_v7();
    // A first attempt cut short, then a redelivery starting again at seq 1.
    let events = [
        event(job, 1, 1),
        event(job, 1, 2),
        event(job, 2, 1),
        event(job, 2, 2),
    ];
    for e in &events {
        bus.publish(e).await.unwrap();
    }
    assert_eq!(bus.replay(job, None).await.unwrap(), events.to_vec());
    assert_eq!(
        cursors(&bus.replay(job, Some((1, 2))).await.unwrap()),
        vec![(2, 1), (2, 2)]
    );
    assert_eq!(
        cursors(&bus.replay(job, Some((2, 1))).await.unwrap()),
        vec![(2, 2)]
    );
    assert!(bus.replay(job, Some((2, 2))).await.unwrap().is_empty());
    assert_eq!(
        cursors(&bus.replay(job, Some((1, 9))).await.unwrap()),
        vec![(2, 1), (2, 2)],
        "an unknown cursor resumes after everything ordered before it"
    );
    assert!(
        bus.replay(Uuid::now_v7(), None).await.unwrap().is_empty(),
        "unknown job"
    );
}

async fn every_subscriber_gets_every_event(bus: Arc<dyn EventBus>) {
    let job = Uuid::now_v7();
    let mut first = bus.subscribe(job).await.unwrap();
    let mut second = bus.subscribe(job).await.unwrap();
    for seq in 1..=3 {
        bus.publish(&event(job, 1, seq)).await.unwrap();
    }
    for seq in 1..=3 {
        assert_eq!(next_event(&mut first).await.seq, seq);
        assert_eq!(next_event(&mut second).await.seq, seq);
    }
}

async fn other_jobs_stay_out(bus: Arc<dyn EventBus>) {
    let job = Uuid::now_v7();
    let other = Uuid::now_v7();
    let mut live = bus.subscribe(job).await.unwrap();
    let mut other_live = bus.subscribe(other).await.unwrap();
    bus.publish(&event(other, 1, 1)).await.unwrap();
    bus.publish(&event(job, 1, 1)).await.unwrap();
    // Had the other job's event leaked in, it would come first.
    assert_eq!(next_event(&mut live).await.job_id, job);
    assert_eq!(next_event(&mut other_live).await.job_id, other);
    assert!(stays_quiet(&mut live, 200).await);
    assert!(stays_quiet(&mut other_live, 1).await);
}

async fn cancel_sets_the_flag_of_one_job(bus: Arc<dyn EventBus>) {
    let job = Uuid::now_v7();
    let other = Uuid::now_v7();
    assert!(!bus.is_cancelled(job).await.unwrap());
    bus.cancel(job).await.unwrap();
    assert!(bus.is_cancelled(job).await.unwrap());
    assert!(!bus.is_cancelled(other).await.unwrap());
    bus.cancel(job).await.unwrap();
    assert!(
        bus.is_cancelled(job).await.unwrap(),
        "cancelling twice is harmless"
    );
}

async fn a_dropped_subscriber_does_not_disturb_others(bus: Arc<dyn EventBus>) {
    let job = Uuid::now_v7();
    let mut leaving = bus.subscribe(job).await.unwrap();
    let mut staying = bus.subscribe(job).await.unwrap();
    bus.publish(&event(job, 1, 1)).await.unwrap();
    assert_eq!(next_event(&mut leaving).await.seq, 1);
    drop(leaving);
    bus.publish(&event(job, 1, 2)).await.unwrap();
    bus.publish(&event(job, 1, 3)).await.unwrap();
    assert_eq!(next_event(&mut staying).await.seq, 1);
    assert_eq!(next_event(&mut staying).await.seq, 2);
    assert_eq!(next_event(&mut staying).await.seq, 3);

    // The last subscriber leaves and a new one arrives at once: the new one must not be
    // caught by the departure of the old ones.
    drop(staying);
    let mut newcomer = bus.subscribe(job).await.unwrap();
    bus.publish(&event(job, 1, 4)).await.unwrap();
    assert_eq!(next_event(&mut newcomer).await.seq, 4);
}

async fn a_subscriber_that_falls_behind_is_cut_off(bus: Arc<dyn EventBus>) {
    let job = Uuid::now_v7();
    let mut slow = bus.subscribe(job).await.unwrap();
    let mut reader = bus.subscribe(job).await.unwrap();
    // Far more than any live buffer, while `slow` reads nothing and `reader` keeps up.
    let total = 1_000;
    for seq in 1..=total {
        bus.publish(&event(job, 1, seq)).await.unwrap();
        assert_eq!(
            next_event(&mut reader).await.seq,
            seq,
            "the reader that keeps up stays"
        );
    }
    let mut received = 0;
    while let Some(_event) = next_within(&mut slow).await {
        received += 1;
    }
    assert!(
        received < total,
        "the stream ended early instead of buffering everything"
    );
    assert_eq!(
        bus.replay(job, Some((1, total - 1))).await.unwrap().len(),
        1,
        "replay still has it"
    );
}

// ---------------------------------------------------------------------------------------
// Fixtures.

/// A bus under test, and what to remove when the test is done.
struct Fixture {
    bus: Arc<dyn EventBus>,
    redis_prefix: Option<String>,
    _cleanup: CleanupOnPanic,
}

impl Fixture {
    fn memory() -> Fixture {
        Fixture {
            bus: Arc::new(MemoryBus::new(10_000, REPLAY_TTL)),
            redis_prefix: None,
            _cleanup: CleanupOnPanic(String::new()),
        }
    }

    async fn redis(test: &str) -> Fixture {
        let prefix = common::unique_prefix(test);
        let bus = RedisBus::connect(&common::redis_url(), &prefix, 10_000, REPLAY_TTL)
            .await
            .expect("connect to Redis");
        Fixture {
            bus: Arc::new(bus),
            _cleanup: CleanupOnPanic(prefix.clone()),
            redis_prefix: Some(prefix),
        }
    }

    async fn finish(self) {
        if let Some(prefix) = self.redis_prefix {
            delete_keys(&prefix).await;
        }
    }
}

/// Deletes a prefix's keys even when the test panics before its own cleanup. The test's
/// runtime is unwinding, so this runs from a thread with a runtime of its own.
struct CleanupOnPanic(String);

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() || self.0.is_empty() {
            return;
        }
        let prefix = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(delete_keys(&prefix));
        })
        .join();
    }
}

async fn redis_commands() -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn delete_keys(prefix: &str) {
    let mut redis = redis_commands().await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = ::redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = super::Fixture::memory();
                    super::$case(fixture.bus.clone()).await;
                    fixture.finish().await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = super::Fixture::redis(stringify!($case)).await;
                    super::$case(fixture.bus.clone()).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

conformance!(
    subscriber_gets_events_in_order,
    earlier_events_are_replayed_not_streamed,
    replay_resumes_after_a_cursor,
    every_subscriber_gets_every_event,
    other_jobs_stay_out,
    cancel_sets_the_flag_of_one_job,
    a_dropped_subscriber_does_not_disturb_others,
    a_subscriber_that_falls_behind_is_cut_off,
);

// ---------------------------------------------------------------------------------------
// Redis specifics.

async fn pttl(redis: &mut ::redis::aio::MultiplexedConnection, key: &str) -> i64 {
    ::redis::cmd("PTTL")
        .arg(key)
        .query_async(redis)
        .await
        .unwrap()
}

async fn subscribers_of(redis: &mut ::redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: (String, i64) = ::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(redis)
        .await
        .unwrap();
    reply.1
}

#[tokio::test]
async fn redis_keys_expire() {
    let fixture = Fixture::redis("expiry").await;
    let prefix = fixture.redis_prefix.clone().unwrap();
    let job = Uuid::now_v7();
    fixture.bus.publish(&event(job, 1, 1)).await.unwrap();
    fixture.bus.cancel(job).await.unwrap();

    let mut redis = redis_commands().await;
    let ttl_ms = REPLAY_TTL.as_millis() as i64;
    for key in [
        format!("{prefix}:ev:{job}"),
        format!("{prefix}:cancel:{job}"),
    ] {
        let left = pttl(&mut redis, &key).await;
        assert!(left > 0 && left <= ttl_ms, "{key} expires (PTTL {left})");
    }
    fixture.finish().await;
}

#[tokio::test]
async fn redis_replay_is_capped() {
    let prefix = common::unique_prefix("capped");
    let _cleanup = CleanupOnPanic(prefix.clone());
    let bus = RedisBus::connect(&common::redis_url(), &prefix, 10, REPLAY_TTL)
        .await
        .unwrap();
    let job = Uuid::now_v7();
    for seq in 1..=1_000 {
        bus.publish(&event(job, 1, seq)).await.unwrap();
    }
    let kept = bus.replay(job, None).await.unwrap();
    // `MAXLEN ~` trims whole stream nodes (100 entries by default), so the cap is loose.
    assert!(
        kept.len() < 1_000,
        "old events were trimmed, {} kept",
        kept.len()
    );
    assert_eq!(kept.last().unwrap().seq, 1_000, "the newest event is kept");
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn redis_many_subscriptions_share_one_connection() {
    let proxy = TcpProxy::start(&common::redis_url()).await;
    let prefix = common::unique_prefix("many");
    let _cleanup = CleanupOnPanic(prefix.clone());
    let bus = Arc::new(
        RedisBus::connect(&proxy.url, &prefix, 100, REPLAY_TTL)
            .await
            .unwrap(),
    );
    let jobs: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();

    let subscriptions = futures::future::join_all(jobs.iter().map(|job| bus.subscribe(*job))).await;
    let mut streams: Vec<EventStream> = subscriptions.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        proxy.accepted(),
        2,
        "one command connection and one pub/sub connection"
    );

    let events: Vec<JobEvent> = jobs.iter().map(|job| event(*job, 1, 1)).collect();
    futures::future::join_all(events.iter().map(|e| bus.publish(e)))
        .await
        .into_iter()
        .for_each(Result::unwrap);
    for (job, stream) in jobs.iter().zip(streams.iter_mut()) {
        assert_eq!(next_event(stream).await.job_id, *job);
    }

    // The connection leaves a job's channel when its last subscriber goes.
    let mut redis = redis_commands().await;
    let channel = format!("{prefix}:live:{}", jobs[0]);
    assert_eq!(subscribers_of(&mut redis, &channel).await, 1);
    drop(streams.remove(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while subscribers_of(&mut redis, &channel).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "channel still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let still = format!("{prefix}:live:{}", jobs[1]);
    assert_eq!(
        subscribers_of(&mut redis, &still).await,
        1,
        "the others stay subscribed"
    );
    drop(streams);
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn redis_lost_pubsub_connection_ends_streams_and_recovers() {
    let proxy = TcpProxy::start(&common::redis_url()).await;
    let prefix = common::unique_prefix("lost");
    let _cleanup = CleanupOnPanic(prefix.clone());
    let bus = RedisBus::connect(&proxy.url, &prefix, 100, REPLAY_TTL)
        .await
        .unwrap();
    let job = Uuid::now_v7();
    let mut live = bus.subscribe(job).await.unwrap();
    bus.publish(&event(job, 1, 1)).await.unwrap();
    assert_eq!(next_event(&mut live).await.seq, 1);

    proxy.cut();
    assert!(
        next_within(&mut live).await.is_none(),
        "the stream ends, so the caller resumes"
    );

    // The command connection reconnects on its own; its first command may fail.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bus.ping().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis commands never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut resumed = bus
        .subscribe(job)
        .await
        .expect("subscribe opens a new connection");
    bus.publish(&event(job, 1, 2)).await.unwrap();
    assert_eq!(next_event(&mut resumed).await.seq, 2);
    assert_eq!(
        cursors(&bus.replay(job, Some((1, 1))).await.unwrap()),
        vec![(1, 2)]
    );
    delete_keys(&prefix).await;
}
