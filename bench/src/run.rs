//! Running many requests at a bounded concurrency and gathering their timings.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::load::Timing;

/// Latency histogram in microseconds, up to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).max(1));
}

/// What a batch of requests gave.
pub struct Batch {
    pub total: Histogram<u64>,
    pub ttft: Histogram<u64>,
    pub gaps: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Batch {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `count` requests, at most `concurrency` at once, each on a task of its own; stops
/// starting new ones once `max_time` has passed.
pub async fn run<F, Fut>(count: usize, concurrency: usize, max_time: Duration, make: F) -> Batch
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Timing>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        if start.elapsed() > max_time {
            break;
        }
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let request = make(i);
        tasks.push(tokio::spawn(async move {
            let result = request.await;
            drop(permit);
            result
        }));
    }
    let mut batch = Batch {
        total: histogram(),
        ttft: histogram(),
        gaps: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        match task.await {
            Ok(Ok(t)) => {
                batch.ok += 1;
                record(&mut batch.total, t.total);
                if let Some(ttft) = t.ttft {
                    record(&mut batch.ttft, ttft);
                }
                for g in t.gaps {
                    record(&mut batch.gaps, g);
                }
            }
            Ok(Err(e)) => {
                batch.errors += 1;
                batch.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                batch.errors += 1;
                batch.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    batch.elapsed = start.elapsed();
    batch
}

/// p50, p99 and p99.9 in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
        }
    }

    /// Product minus baseline, per percentile.
    pub fn minus(self, baseline: Percentiles) -> Percentiles {
        Percentiles {
            p50_ms: self.p50_ms - baseline.p50_ms,
            p99_ms: self.p99_ms - baseline.p99_ms,
            p999_ms: self.p999_ms - baseline.p999_ms,
        }
    }
}

/// Merges `from` into `into` (both from [`histogram`]).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}
