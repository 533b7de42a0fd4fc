//! Job intake: jobs a publisher gets accepted per second, on the queue publish path the
//! gateway uses (`shared::queue`), confirmed by the broker for RabbitMQ.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::job::{JobEnvelope, JobPayload};
use shared::queue::JobQueue;
use tokio::sync::Semaphore;

/// Intake of one queue backend.
#[derive(Debug, Serialize)]
pub struct Intake {
    pub queue: &'static str,
    pub jobs: usize,
    pub publishers: usize,
    pub accepted: usize,
    pub jobs_per_sec: f64,
    pub first_error: Option<String>,
}

/// A job about as large as a short chat job. Its payload is never run: nothing consumes the
/// bench's queues, and they are deleted afterwards.
fn job() -> JobEnvelope {
    let deadline = 4_102_444_800_000; // far in the future
    JobEnvelope::new(
        JobPayload::Poison {
            note: "x".repeat(600),
        },
        deadline,
    )
}

/// Publishes `jobs` jobs with `publishers` concurrent publishers, each publish awaited
/// (for RabbitMQ: until the broker's confirm).
pub async fn measure(
    queue: Arc<dyn JobQueue>,
    name: &'static str,
    jobs: usize,
    publishers: usize,
) -> Intake {
    let permits = Arc::new(Semaphore::new(publishers));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let r = queue.publish(&job()).await;
            drop(permit);
            r
        }));
    }
    let (mut accepted, mut first_error) = (0, None);
    for t in tasks {
        match t.await {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Intake {
        queue: name,
        jobs,
        publishers,
        accepted,
        jobs_per_sec: accepted as f64 / secs,
        first_error,
    }
}

/// In-process queue and RabbitMQ (a fresh prefix, deleted afterwards).
pub async fn all(amqp_url: &str, jobs: usize, publishers: usize) -> Vec<Intake> {
    let memory: Arc<dyn JobQueue> = Arc::new(shared::queue::memory::MemoryQueue::new(jobs + 1, 3));
    let mut results = vec![measure(memory, "in-process", jobs, publishers).await];
    let prefix = format!(
        "bench-intake-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    match shared::queue::rabbitmq::RabbitQueue::connect(
        amqp_url,
        &prefix,
        3,
        Duration::from_secs(5),
    )
    .await
    {
        Ok(q) => {
            let q = Arc::new(q);
            results.push(measure(q.clone(), "rabbitmq", jobs, publishers).await);
            q.delete_all().await;
        }
        Err(e) => results.push(Intake {
            queue: "rabbitmq",
            jobs,
            publishers,
            accepted: 0,
            jobs_per_sec: 0.0,
            first_error: Some(e.to_string()),
        }),
    }
    results
}
