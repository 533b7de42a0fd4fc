//! Prometheus metrics: every metric name the service exports, and one small recording
//! helper per metric, so call sites stay one line and nothing else knows the exporter.
//!
//! Durations are histograms in seconds. Label values come from closed sets (route
//! templates, job kinds, outcome words, catalog model ids), never from raw input, so the
//! number of series stays bounded. `docs/OBSERVABILITY.md` describes each metric.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use uuid::Uuid;

use crate::job::JobKind;
use crate::upstream::UpstreamErrorKind;

/// `{version,role}` gauge, always 1: which build runs in which role.
pub const BUILD_INFO: &str = "grok2api_build_info";

/// Gateway: `{route,method,status}` requests answered (route is the matched template).
pub const HTTP_REQUESTS: &str = "grok2api_http_requests_total";
/// Gateway: `{route,method}` time until the response head (for SSE: until the stream opens).
pub const HTTP_REQUEST_DURATION: &str = "grok2api_http_request_duration_seconds";
/// Gateway: SSE streams open now.
pub const OPEN_STREAMS: &str = "grok2api_open_streams";
/// Gateway: `{model}` request start to the first content event, streamed or not.
pub const TIME_TO_FIRST_TOKEN: &str = "grok2api_time_to_first_token_seconds";
/// Gateway: `{kind,outcome}` publish attempts; outcome `ok`, `full` or `unavailable`.
pub const JOBS_PUBLISHED: &str = "grok2api_jobs_published_total";
/// Gateway: an event's publish by a worker to its arrival at the gateway (live events).
pub const BUS_LAG: &str = "grok2api_bus_lag_seconds";

/// Worker: `{kind,outcome}` deliveries handled; outcome `completed`, `failed`, `cancelled`,
/// `retried` or `dead_lettered`.
pub const JOBS: &str = "grok2api_jobs_total";
/// Worker: `{kind}` time one delivery's handler ran.
pub const JOB_DURATION: &str = "grok2api_job_duration_seconds";
/// Worker: `{kind}` job creation (its UUIDv7 id) to a worker taking the delivery.
pub const QUEUE_WAIT: &str = "grok2api_queue_wait_seconds";
/// Worker: `{operation,outcome}` upstream calls; see [`upstream_outcome`].
pub const UPSTREAM_REQUESTS: &str = "grok2api_upstream_requests_total";
/// Worker: `{operation}` upstream call time (a chat call: until its stream ends).
pub const UPSTREAM_DURATION: &str = "grok2api_upstream_duration_seconds";
/// Worker: time one lease request to the token pool took.
pub const LEASE_WAIT: &str = "grok2api_lease_wait_seconds";
/// Worker: `{outcome}` lease requests; outcome `leased`, `exhausted` or `error`.
pub const LEASES: &str = "grok2api_leases_total";

/// Scheduler: `{kind}` jobs waiting in the queue.
pub const QUEUE_DEPTH: &str = "grok2api_queue_depth";
/// Worker: `{kind}` an upper bound of the oldest waiting job's age: 0 when the queue is
/// empty, else the age of the newest job this worker took of that kind (the queue is FIFO,
/// so everything still waiting is younger). Aggregate across workers with `min`.
pub const QUEUE_OLDEST_AGE: &str = "grok2api_queue_oldest_age_seconds";
/// Scheduler: `{tier,status}` accounts in the pool.
pub const TOKENS: &str = "grok2api_tokens";
/// Scheduler: `{tier}` quota left on usable (active or cooling) accounts.
pub const TOKEN_QUOTA_REMAINING: &str = "grok2api_token_quota_remaining";
/// Scheduler: `{tier}` upstream calls running on leased accounts.
pub const TOKENS_IN_FLIGHT: &str = "grok2api_tokens_in_flight";

/// How often the service-level gauges are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

const FAST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const TTFT_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0,
];
const LONG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn build() -> PrometheusHandle {
    let buckets: [(&str, &[f64]); 8] = [
        (HTTP_REQUEST_DURATION, HTTP_BUCKETS),
        (TIME_TO_FIRST_TOKEN, TTFT_BUCKETS),
        (BUS_LAG, FAST_BUCKETS),
        (QUEUE_WAIT, FAST_BUCKETS),
        (LEASE_WAIT, FAST_BUCKETS),
        (JOB_DURATION, LONG_BUCKETS),
        (UPSTREAM_DURATION, LONG_BUCKETS),
        // Anything added later without its own buckets still renders as a histogram.
        ("", LONG_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        let matcher = if name.is_empty() {
            Matcher::Suffix("_seconds".into())
        } else {
            Matcher::Full(name.into())
        };
        builder = builder
            .set_buckets_for_metric(matcher, values)
            .expect("bucket lists are non-empty");
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Fails only if a recorder is already installed (a test harness); then this handle
    // renders nothing, which is harmless.
    let _ = metrics::set_global_recorder(recorder);
    handle
}

/// The process-wide exporter, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(build)
}

/// Installs the exporter and records `grok2api_build_info` for `role`. Inside a Tokio
/// runtime it also starts the exporter's periodic upkeep (which bounds histogram memory
/// between scrapes).
pub fn install(role: &'static str) {
    let first = HANDLE.get().is_none();
    let handle = handle();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "role" => role).set(1.0);
    if first && let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    handle().render()
}

/// HTTP method as a label: the standard ones by name, anything else as `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// One answered HTTP request. `route` is the matched template (or `unmatched`).
pub fn http_request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method, "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_REQUEST_DURATION, "route" => route.to_owned(), "method" => method)
        .record(elapsed.as_secs_f64());
}

/// Counts one open SSE stream for as long as it lives.
#[derive(Debug)]
pub struct OpenStream(());

impl OpenStream {
    pub fn open() -> Self {
        gauge!(OPEN_STREAMS).increment(1.0);
        OpenStream(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!(OPEN_STREAMS).decrement(1.0);
    }
}

/// The first content event of a request arrived `started.elapsed()` after it began.
pub fn time_to_first_token(model: &str, started: Instant) {
    histogram!(TIME_TO_FIRST_TOKEN, "model" => model.to_owned())
        .record(started.elapsed().as_secs_f64());
}

/// One publish attempt; `outcome` is `ok`, `full` or `unavailable`.
pub fn job_published(kind: JobKind, outcome: &'static str) {
    counter!(JOBS_PUBLISHED, "kind" => kind.as_str(), "outcome" => outcome).increment(1);
}

/// A live event published at `published_ms` (Unix ms; 0 = unknown) arrived now.
pub fn bus_lag(published_ms: i64) {
    if published_ms > 0 {
        let lag_ms = (crate::time::now_ms() - published_ms).max(0);
        histogram!(BUS_LAG).record(lag_ms as f64 / 1000.0);
    }
}

/// How a delivery's handling ended, as `grok2api_jobs_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The job's last event was `done`.
    Completed,
    /// The job's last event was an error.
    Failed,
    /// Acknowledged without a terminal event: its caller cancelled it.
    Cancelled,
    /// Handed back to the queue for another delivery.
    Retried,
    /// Moved to the dead-letter queue (by the worker or by the broker's delivery limit).
    DeadLettered,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed => "failed",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::Retried => "retried",
            JobOutcome::DeadLettered => "dead_lettered",
        }
    }
}

/// Counts one handled delivery.
pub fn job_outcome(kind: JobKind, outcome: JobOutcome) {
    counter!(JOBS, "kind" => kind.as_str(), "outcome" => outcome.as_str()).increment(1);
}

/// A delivery's handler ran for `elapsed`.
pub fn job_duration(kind: JobKind, elapsed: Duration) {
    histogram!(JOB_DURATION, "kind" => kind.as_str()).record(elapsed.as_secs_f64());
}

/// When the job with this UUIDv7 id was created, in Unix ms.
pub fn created_ms(job_id: Uuid) -> Option<i64> {
    let (secs, nanos) = job_id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// A worker took the job now; records how long it waited since creation.
pub fn queue_wait(kind: JobKind, job_id: Uuid) {
    if let Some(created) = created_ms(job_id) {
        let waited_ms = (crate::time::now_ms() - created).max(0);
        histogram!(QUEUE_WAIT, "kind" => kind.as_str()).record(waited_ms as f64 / 1000.0);
    }
}

/// The outcome label of an upstream failure.
pub fn upstream_outcome(kind: &UpstreamErrorKind) -> &'static str {
    match kind {
        UpstreamErrorKind::RateLimited { .. } => "rate_limited",
        UpstreamErrorKind::Unauthorized => "unauthorized",
        UpstreamErrorKind::Blocked => "blocked",
        UpstreamErrorKind::AntiBot => "anti_bot",
        UpstreamErrorKind::Forbidden => "forbidden",
        UpstreamErrorKind::BadRequest => "bad_request",
        UpstreamErrorKind::Transient => "transient",
        UpstreamErrorKind::Timeout => "timeout",
        UpstreamErrorKind::Protocol => "protocol",
    }
}

/// One finished upstream call: `outcome` is `ok`, an [`upstream_outcome`] word, or
/// `cancelled` for a chat stream dropped before its end.
pub fn upstream_call(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(UPSTREAM_REQUESTS, "operation" => operation, "outcome" => outcome).increment(1);
    histogram!(UPSTREAM_DURATION, "operation" => operation).record(elapsed.as_secs_f64());
}

/// One lease request: `outcome` is `leased`, `exhausted` or `error`.
pub fn lease(outcome: &'static str, elapsed: Duration) {
    counter!(LEASES, "outcome" => outcome).increment(1);
    histogram!(LEASE_WAIT).record(elapsed.as_secs_f64());
}

pub fn queue_depth(kind: JobKind, depth: u64) {
    gauge!(QUEUE_DEPTH, "kind" => kind.as_str()).set(depth as f64);
}

pub fn queue_oldest_age(kind: JobKind, age: Duration) {
    gauge!(QUEUE_OLDEST_AGE, "kind" => kind.as_str()).set(age.as_secs_f64());
}

pub fn tokens(tier: &'static str, status: &'static str, count: u64) {
    gauge!(TOKENS, "tier" => tier, "status" => status).set(count as f64);
}

pub fn token_quota_remaining(tier: &'static str, quota: i64) {
    gauge!(TOKEN_QUOTA_REMAINING, "tier" => tier).set(quota as f64);
}

pub fn tokens_in_flight(tier: &'static str, in_flight: u64) {
    gauge!(TOKENS_IN_FLIGHT, "tier" => tier).set(in_flight as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_carry_their_creation_time() {
        let before = crate::time::now_ms();
        let created = created_ms(Uuid::now_v7()).unwrap();
        assert!((created - before).abs() < 1000, "{created} vs {before}");
        assert_eq!(created_ms(Uuid::new_v4()), None);
    }

    #[test]
    fn recorded_metrics_render_with_their_labels() {
        install("test");
        http_request("/v1/models", "GET", 200, Duration::from_millis(3));
        job_published(JobKind::Chat, "ok");
        let stream = OpenStream::open();
        let text = render();
        assert!(text.contains("grok2api_build_info{version=\""), "{text}");
        assert!(
            text.contains(
                "grok2api_http_requests_total{route=\"/v1/models\",method=\"GET\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("grok2api_http_request_duration_seconds_bucket{route=\"/v1/models\",method=\"GET\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("grok2api_open_streams 1"), "{text}");
        drop(stream);
        assert!(render().contains("grok2api_open_streams 0"));
    }
}
