//! The JobQueue contract, written once and run against the in-process queue and RabbitMQ.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use shared::job::{ChatJob, JobEnvelope, JobKind, JobPayload};
use shared::models::Tier;
use shared::queue::memory::MemoryQueue;
use shared::queue::rabbitmq::RabbitQueue;
use shared::queue::{Deliveries, JobQueue, QueueError};

use crate::common::{self, TcpProxy, next_within, stays_quiet};

/// Deliveries a job gets before it is dead-lettered, in every fixture.
const DELIVERY_LIMIT: u32 = 3;

/// How long a negative check ("nothing more arrives") waits.
const QUIET_MS: u64 = 300;

fn chat_job(message: &str) -> JobEnvelope {
    let mut job = JobEnvelope::new(
        JobPayload::Chat(ChatJob {
            model: "grok-4".into(),
            upstream_mode: "auto".into(),
            tier: Tier::Basic,
            cost: 1,
            message: message.into(),
            attachments: vec!["data:image/png;base64,AAAA".into()],
            temperature: 0.7,
            top_p: 0.95,
            reasoning_effort: Some("high".into()),
            want_reasoning: true,
            stream: true,
        }),
        4_102_444_800_000,
    );
    job.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    job
}

fn poison_job(note: &str) -> JobEnvelope {
    JobEnvelope::new(JobPayload::Poison { note: note.into() }, 4_102_444_800_000)
}

async fn next_job(deliveries: &mut Deliveries) -> shared::queue::Delivery {
    next_within(deliveries)
        .await
        .expect("stream ended")
        .expect("delivery error")
}

// ---------------------------------------------------------------------------------------
// The contract, generic over the backend.

async fn round_trip_keeps_the_envelope(queue: Arc<dyn JobQueue>) {
    queue.ping().await.unwrap();
    let first = chat_job("hello");
    let second = chat_job("again");
    queue.publish(&first).await.unwrap();
    queue.publish(&second).await.unwrap();
    assert_eq!(queue.depth(JobKind::Chat).await.unwrap(), 2);

    let mut deliveries = queue.consume(JobKind::Chat, 4).await.unwrap();
    let a = next_job(&mut deliveries).await;
    let b = next_job(&mut deliveries).await;
    assert_eq!(a.job, first, "envelope survives the queue unchanged");
    assert_eq!(b.job, second, "FIFO order");
    assert_eq!((a.delivery_count, b.delivery_count), (1, 1));
    assert_eq!(
        queue.depth(JobKind::Chat).await.unwrap(),
        0,
        "unacked jobs are not waiting"
    );
    a.acker.ack().await.unwrap();
    b.acker.ack().await.unwrap();
    assert!(
        stays_quiet(&mut deliveries, QUIET_MS).await,
        "acked jobs are gone"
    );
}

async fn concurrent_publishes_all_arrive(queue: Arc<dyn JobQueue>) {
    let jobs: Vec<JobEnvelope> = (0..50).map(|i| chat_job(&format!("job {i}"))).collect();
    futures::future::join_all(jobs.iter().map(|job| queue.publish(job)))
        .await
        .into_iter()
        .for_each(|published| published.unwrap());
    assert_eq!(queue.depth(JobKind::Chat).await.unwrap(), 50);
    let mut deliveries = queue.consume(JobKind::Chat, 50).await.unwrap();
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let delivery = next_job(&mut deliveries).await;
        assert!(seen.insert(delivery.job.id), "no duplicate");
        delivery.acker.ack().await.unwrap();
    }
    assert_eq!(seen, jobs.iter().map(|j| j.id).collect::<HashSet<_>>());
}

async fn settling_twice_is_refused(queue: Arc<dyn JobQueue>) {
    queue.publish(&chat_job("once")).await.unwrap();
    let mut deliveries = queue.consume(JobKind::Chat, 1).await.unwrap();
    let delivery = next_job(&mut deliveries).await;
    delivery.acker.ack().await.unwrap();
    assert!(delivery.acker.ack().await.is_err());
    assert!(delivery.acker.retry().await.is_err());
    assert!(delivery.acker.dead_letter().await.is_err());
    drop(delivery);
    assert!(
        stays_quiet(&mut deliveries, QUIET_MS).await,
        "an acked job never comes back"
    );
}

async fn kinds_are_isolated(queue: Arc<dyn JobQueue>) {
    let chat = chat_job("chat");
    let poison = poison_job("maintenance");
    queue.publish(&chat).await.unwrap();
    queue.publish(&poison).await.unwrap();
    assert_eq!(queue.depth(JobKind::Chat).await.unwrap(), 1);
    assert_eq!(queue.depth(JobKind::Maintenance).await.unwrap(), 1);
    assert_eq!(queue.depth(JobKind::Image).await.unwrap(), 0);

    let mut maintenance = queue.consume(JobKind::Maintenance, 4).await.unwrap();
    let mut image = queue.consume(JobKind::Image, 4).await.unwrap();
    let got = next_job(&mut maintenance).await;
    assert_eq!(got.job, poison);
    got.acker.ack().await.unwrap();
    assert!(
        stays_quiet(&mut maintenance, QUIET_MS).await,
        "no chat job on the maintenance queue"
    );
    assert!(
        stays_quiet(&mut image, 1).await,
        "nothing on the image queue"
    );

    let mut chats = queue.consume(JobKind::Chat, 4).await.unwrap();
    let got = next_job(&mut chats).await;
    assert_eq!(got.job, chat);
    got.acker.ack().await.unwrap();
}

async fn competing_consumers_get_distinct_jobs(queue: Arc<dyn JobQueue>) {
    let mut a = queue.consume(JobKind::Chat, 1).await.unwrap();
    let mut b = queue.consume(JobKind::Chat, 1).await.unwrap();
    let published: Vec<JobEnvelope> = (0..4).map(|i| chat_job(&format!("job {i}"))).collect();
    for job in &published {
        queue.publish(job).await.unwrap();
    }

    let mut seen = Vec::new();
    for _ in 0..2 {
        // Each consumer holds one unsettled job, so neither can take the other's.
        let from_a = next_job(&mut a).await;
        let from_b = next_job(&mut b).await;
        assert_ne!(from_a.job.id, from_b.job.id);
        seen.extend([from_a.job.id, from_b.job.id]);
        from_a.acker.ack().await.unwrap();
        from_b.acker.ack().await.unwrap();
    }
    let expected: HashSet<_> = published.iter().map(|j| j.id).collect();
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen.into_iter().collect::<HashSet<_>>(),
        expected,
        "each job exactly once"
    );
    assert!(stays_quiet(&mut a, QUIET_MS).await);
    assert!(stays_quiet(&mut b, 1).await);
}

async fn prefetch_bounds_unsettled_deliveries(queue: Arc<dyn JobQueue>) {
    for i in 0..3 {
        queue.publish(&chat_job(&format!("job {i}"))).await.unwrap();
    }
    let mut deliveries = queue.consume(JobKind::Chat, 2).await.unwrap();
    let first = next_job(&mut deliveries).await;
    let second = next_job(&mut deliveries).await;
    assert!(
        stays_quiet(&mut deliveries, QUIET_MS).await,
        "a third delivery must wait while two are unsettled"
    );
    first.acker.ack().await.unwrap();
    let third = next_job(&mut deliveries).await;
    assert_eq!(third.delivery_count, 1);
    second.acker.ack().await.unwrap();
    third.acker.ack().await.unwrap();
}

async fn dropped_delivery_is_redelivered(queue: Arc<dyn JobQueue>) {
    let job = chat_job("crash");
    queue.publish(&job).await.unwrap();

    // A delivery dropped by a worker that is still consuming.
    let mut deliveries = queue.consume(JobKind::Chat, 1).await.unwrap();
    let delivery = next_job(&mut deliveries).await;
    assert_eq!(delivery.delivery_count, 1);
    drop(delivery);
    let again = next_job(&mut deliveries).await;
    assert_eq!(again.job, job);
    assert_eq!(again.delivery_count, 2);

    // A worker that went away entirely: its delivery and its stream are dropped.
    drop(again);
    drop(deliveries);
    let mut other_worker = queue.consume(JobKind::Chat, 1).await.unwrap();
    let third = next_job(&mut other_worker).await;
    assert_eq!(third.job, job);
    assert_eq!(third.delivery_count, 3);
    third.acker.ack().await.unwrap();
}

async fn retries_end_in_the_dead_letter_queue(queue: Arc<dyn JobQueue>) {
    let job = poison_job("always fails");
    queue.publish(&job).await.unwrap();
    let mut dead = queue.consume_dead().await.unwrap();
    let mut deliveries = queue.consume(JobKind::Maintenance, 1).await.unwrap();
    for attempt in 1..=DELIVERY_LIMIT {
        let delivery = next_job(&mut deliveries).await;
        assert_eq!(delivery.job.id, job.id);
        assert_eq!(delivery.delivery_count, attempt);
        delivery.acker.retry().await.unwrap();
    }
    assert!(
        stays_quiet(&mut deliveries, QUIET_MS).await,
        "no delivery beyond the limit"
    );
    let dead_job = next_job(&mut dead).await;
    assert_eq!(dead_job.job, job);
    dead_job.acker.ack().await.unwrap();
    assert_eq!(queue.depth(JobKind::Maintenance).await.unwrap(), 0);
    assert!(stays_quiet(&mut dead, 1).await);
}

async fn dead_letter_moves_the_job_at_once(queue: Arc<dyn JobQueue>) {
    let job = chat_job("bad request");
    let kept = chat_job("fine");
    queue.publish(&job).await.unwrap();
    queue.publish(&kept).await.unwrap();
    let mut deliveries = queue.consume(JobKind::Chat, 1).await.unwrap();
    let delivery = next_job(&mut deliveries).await;
    assert_eq!(delivery.job.id, job.id);
    delivery.acker.dead_letter().await.unwrap();

    let mut dead = queue.consume_dead().await.unwrap();
    let dead_job = next_job(&mut dead).await;
    assert_eq!(dead_job.job, job);
    dead_job.acker.ack().await.unwrap();

    let next = next_job(&mut deliveries).await;
    assert_eq!(next.job.id, kept.id, "only the dead-lettered job moved");
    next.acker.ack().await.unwrap();
    assert!(stays_quiet(&mut dead, QUIET_MS).await);
}

// ---------------------------------------------------------------------------------------
// Fixtures.

/// A queue under test, and what to remove when the test is done.
struct Fixture {
    queue: Arc<dyn JobQueue>,
    rabbit: Option<Arc<RabbitQueue>>,
    prefix: String,
    _cleanup: CleanupOnPanic,
}

impl Fixture {
    fn memory() -> Fixture {
        Fixture {
            queue: Arc::new(MemoryQueue::new(64, DELIVERY_LIMIT)),
            rabbit: None,
            prefix: String::new(),
            _cleanup: CleanupOnPanic(String::new()),
        }
    }

    async fn rabbit(test: &str) -> Fixture {
        let prefix = common::unique_prefix(test);
        let rabbit = Arc::new(connect_rabbit(&common::amqp_url(), &prefix).await);
        Fixture {
            queue: rabbit.clone(),
            rabbit: Some(rabbit),
            _cleanup: CleanupOnPanic(prefix.clone()),
            prefix,
        }
    }

    async fn finish(self) {
        if let Some(rabbit) = self.rabbit {
            rabbit.delete_all().await;
        }
    }
}

/// Deletes a prefix's queues even when the test panics before its own cleanup. The test's
/// runtime is unwinding, so this connects afresh from a thread with a runtime of its own.
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
            runtime.block_on(async {
                connect_rabbit(&common::amqp_url(), &prefix)
                    .await
                    .delete_all()
                    .await;
            });
        })
        .join();
    }
}

async fn connect_rabbit(url: &str, prefix: &str) -> RabbitQueue {
    RabbitQueue::connect(url, prefix, DELIVERY_LIMIT, Duration::from_secs(5))
        .await
        .expect("connect to RabbitMQ")
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = super::Fixture::memory();
                    super::$case(fixture.queue.clone()).await;
                    fixture.finish().await;
                }
            )*
        }

        mod rabbitmq {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = super::Fixture::rabbit(stringify!($case)).await;
                    super::$case(fixture.queue.clone()).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

conformance!(
    round_trip_keeps_the_envelope,
    concurrent_publishes_all_arrive,
    settling_twice_is_refused,
    kinds_are_isolated,
    competing_consumers_get_distinct_jobs,
    prefetch_bounds_unsettled_deliveries,
    dropped_delivery_is_redelivered,
    retries_end_in_the_dead_letter_queue,
    dead_letter_moves_the_job_at_once,
);

// ---------------------------------------------------------------------------------------
// Backend-specific behaviour.

#[tokio::test]
async fn memory_queue_is_bounded_per_kind() {
    let queue = MemoryQueue::new(2, DELIVERY_LIMIT);
    queue.publish(&chat_job("1")).await.unwrap();
    queue.publish(&chat_job("2")).await.unwrap();
    assert!(matches!(
        queue.publish(&chat_job("3")).await,
        Err(QueueError::Full)
    ));
    // Another kind has its own bound.
    queue.publish(&poison_job("other kind")).await.unwrap();

    let mut deliveries = queue.consume(JobKind::Chat, 1).await.unwrap();
    let delivery = next_job(&mut deliveries).await;
    queue
        .publish(&chat_job("3"))
        .await
        .expect("room again once a job was taken");
    assert!(matches!(
        queue.publish(&chat_job("4")).await,
        Err(QueueError::Full)
    ));
    // A job handed back is never refused, even at capacity.
    delivery.acker.retry().await.unwrap();
    assert_eq!(queue.depth(JobKind::Chat).await.unwrap(), 3);
}

#[tokio::test]
async fn rabbitmq_declares_durable_quorum_queues_with_the_limit() {
    let prefix = common::unique_prefix("topology");
    let _cleanup = CleanupOnPanic(prefix.clone());
    let queue = RabbitQueue::connect(
        &common::amqp_url(),
        &prefix,
        DELIVERY_LIMIT,
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    // Inspect the broker through a connection of our own.
    let connection = lapin::Connection::connect(&common::amqp_url(), Default::default())
        .await
        .unwrap();
    let declare = |name: String, options: QueueDeclareOptions, args: FieldTable| {
        let connection = &connection;
        async move {
            // A refused declare closes its channel, so each gets a fresh one.
            let channel = connection.create_channel().await.unwrap();
            channel
                .queue_declare(name.as_str().into(), options, args)
                .await
        }
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));

    for kind in JobKind::ALL {
        let name = format!("{prefix}.jobs.{}", kind.as_str());
        declare(name, passive, FieldTable::default())
            .await
            .expect("job queue exists");
    }
    declare(
        format!("{prefix}.jobs.dead"),
        passive,
        FieldTable::default(),
    )
    .await
    .expect("dead-letter queue exists");

    let chat = format!("{prefix}.jobs.chat");
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), text("quorum"));
    quorum.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(DELIVERY_LIMIT) - 1),
    );
    quorum.insert(
        "x-dead-letter-exchange".into(),
        text(&format!("{prefix}.dlx")),
    );
    quorum.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    quorum.insert("x-overflow".into(), text("reject-publish"));
    declare(chat.clone(), durable, quorum.clone())
        .await
        .expect("an equivalent declaration is accepted");

    let mut classic = FieldTable::default();
    classic.insert("x-queue-type".into(), text("classic"));
    assert!(
        declare(chat.clone(), durable, classic).await.is_err(),
        "the broker refuses to call a quorum queue classic"
    );
    assert!(
        declare(chat.clone(), QueueDeclareOptions::default(), quorum)
            .await
            .is_err(),
        "the broker refuses to call the durable queue transient"
    );

    queue.delete_all().await;
    assert!(
        declare(chat, passive, FieldTable::default()).await.is_err(),
        "cleaned up"
    );
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn rabbitmq_publish_fails_when_no_queue_takes_the_job() {
    let fixture = Fixture::rabbit("unroutable").await;
    let connection = lapin::Connection::connect(&common::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let chat = format!("{}.jobs.chat", fixture.prefix);
    channel
        .queue_delete(chat.as_str().into(), Default::default())
        .await
        .unwrap();

    match fixture.queue.publish(&chat_job("lost")).await {
        Err(QueueError::Unavailable(_)) => {}
        other => panic!("a job no queue accepted must not count as published: {other:?}"),
    }
    fixture
        .queue
        .publish(&poison_job("other kinds unaffected"))
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    fixture.finish().await;
}

#[tokio::test]
async fn rabbitmq_survives_a_broken_connection() {
    let proxy = TcpProxy::start(&common::amqp_url()).await;
    let prefix = common::unique_prefix("broken_link");
    let _cleanup = CleanupOnPanic(prefix.clone());
    let queue = Arc::new(connect_rabbit(&proxy.url, &prefix).await);
    let before = chat_job("before");
    queue.publish(&before).await.unwrap();
    let mut deliveries = queue.consume(JobKind::Chat, 1).await.unwrap();
    let held = next_job(&mut deliveries).await;
    assert_eq!(held.job, before);

    proxy.cut();
    match next_within(&mut deliveries).await {
        Some(Err(QueueError::Unavailable(_))) => {}
        other => panic!("expected the stream to report the lost connection, got {other:?}"),
    }
    assert!(next_within(&mut deliveries).await.is_none(), "then it ends");
    assert!(
        held.acker.ack().await.is_err(),
        "a delivery of the lost channel cannot be acked"
    );

    let after = chat_job("after");
    queue.publish(&after).await.expect("publish reconnects");
    let mut deliveries = queue
        .consume(JobKind::Chat, 2)
        .await
        .expect("consume again");
    let redelivered = next_job(&mut deliveries).await;
    assert_eq!(
        redelivered.job, before,
        "the unacked job went back to the queue"
    );
    assert_eq!(redelivered.delivery_count, 2);
    let next = next_job(&mut deliveries).await;
    assert_eq!(next.job, after);
    redelivered.acker.ack().await.unwrap();
    next.acker.ack().await.unwrap();
    assert!(proxy.accepted() >= 2, "a second connection was opened");
    queue.delete_all().await;
}

#[tokio::test]
async fn rabbitmq_rejects_undecodable_messages_to_the_dead_letter_queue() {
    let fixture = Fixture::rabbit("undecodable").await;
    let prefix = &fixture.prefix;

    let connection = lapin::Connection::connect(&common::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // Confirmed before the good job is published, so it is first in the queue.
    channel.confirm_select(Default::default()).await.unwrap();
    channel
        .basic_publish(
            "".into(),
            format!("{prefix}.jobs.chat").as_str().into(),
            Default::default(),
            b"{not json",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let good = chat_job("good");
    fixture.queue.publish(&good).await.unwrap();

    let mut deliveries = fixture.queue.consume(JobKind::Chat, 1).await.unwrap();
    let delivery = next_job(&mut deliveries).await;
    assert_eq!(
        delivery.job, good,
        "the garbage message is skipped, not yielded"
    );
    delivery.acker.ack().await.unwrap();

    // consume_dead cannot decode the garbage either, so read the dead queue directly.
    let mut dead = channel
        .basic_consume(
            format!("{prefix}.jobs.dead").as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let message = next_within(&mut dead).await.unwrap().unwrap();
    assert_eq!(message.data, b"{not json");
    message.acker.ack(Default::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    fixture.finish().await;
}
