//! Scenario 3: a poison job (one no worker can ever finish) is dead-lettered after the
//! delivery limit, its caller hears an error, and other jobs keep flowing meanwhile.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use shared::bus::EventBus;
use shared::event::EventBody;
use shared::job::{JobEnvelope, JobPayload};
use shared::queue::JobQueue;

use crate::support::{self, ask, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_is_dead_lettered_and_its_caller_told() {
    let (c, _proxies) = support::start("poison", support::options(&[])).await;
    c.set_tokens(&["poison-token"], &[]).await;
    let amqp = std::env::var("GROK2API_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let redis = std::env::var("GROK2API_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    // The same seams a gateway uses, on the cluster's prefix: follow the job's events,
    // then publish it.
    let queue =
        shared::queue::rabbitmq::RabbitQueue::connect(&amqp, c.prefix(), 3, Duration::from_secs(5))
            .await
            .unwrap();
    let bus =
        shared::bus::redis::RedisBus::connect(&redis, c.prefix(), 100, Duration::from_secs(60))
            .await
            .unwrap();
    let job = JobEnvelope::new(
        JobPayload::Poison {
            note: "fails on every worker".into(),
        },
        shared::time::now_ms() + 60_000,
    );
    let mut events = bus.subscribe(job.id).await.unwrap();
    queue.publish(&job).await.unwrap();

    // While it bounces between the workers, chats are answered as usual.
    for i in 0..3 {
        let r = c
            .chat(i % 2, ask(&format!("still served {i}"), false))
            .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("Echo: still served {i}")
        );
    }

    let last = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("the caller hears about the dead job")
        .expect("the subscription stays open");
    let EventBody::Error(error) = &last.body else {
        panic!("not an error event: {last:?}")
    };
    assert_eq!(error.code, "job_failed");

    // It went through the dead-letter queue: a worker counted it there.
    let workers: Vec<String> = c
        .metrics
        .iter()
        .filter(|(n, _)| n.starts_with("worker"))
        .map(|(_, base)| base.clone())
        .collect();
    eventually(
        Duration::from_secs(10),
        "a dead-lettered job is counted",
        || {
            let workers = workers.clone();
            let c = &c;
            async move {
                for base in &workers {
                    let text = c.scrape(base).await;
                    if text.lines().any(|l| {
                        l.starts_with("grok2api_jobs_total")
                            && l.contains("kind=\"maintenance\"")
                            && l.contains("outcome=\"dead_lettered\"")
                            && !l.ends_with(" 0")
                    }) {
                        return Some(());
                    }
                }
                None
            }
        },
    )
    .await;
    // Nothing is left behind: the job queue and the dead-letter queue are empty again.
    eventually(Duration::from_secs(10), "the queue drains", || async {
        (queue.depth(shared::job::JobKind::Maintenance).await.ok()? == 0).then_some(())
    })
    .await;
}
