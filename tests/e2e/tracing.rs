//! One trace across processes: a streamed chat in the distributed shape, with gateways and
//! workers exporting spans over OTLP to two receivers started here (one per role, so each
//! span's process is known), must form one trace: the gateway's request span, the worker's
//! job span as its child across the queue, the upstream call under the job, and the
//! gateway's event-received spans under the worker span that published the events.

use std::time::{Duration, Instant};

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use serde_json::json;

use crate::harness::{Cluster, Options, Shape, sse_data};

const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Drains a receiver until `done` holds for everything received so far.
async fn collect(
    collector: &mut FakeCollectorServer,
    spans: &mut Vec<ExportedSpan>,
    done: impl Fn(&[ExportedSpan]) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if done(spans) {
            return true;
        }
        spans.extend(
            collector
                .exported_spans(1, Duration::from_millis(500))
                .await,
        );
    }
    done(spans)
}

/// Whether attribute `key` of `span` holds the string `value` (the receiver keeps the OTLP
/// value's debug form).
fn has_attr(span: &ExportedSpan, key: &str, value: &str) -> bool {
    span.attributes
        .get(key)
        .is_some_and(|v| v.contains(&format!("{value:?}")))
}

fn describe(spans: &[ExportedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} trace={} span={} parent={}",
                s.name, s.trace_id, s.span_id, s.parent_span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_chat_is_one_trace_across_gateway_queue_worker_and_bus() {
    let mut gateway_otlp = FakeCollectorServer::start().await.unwrap();
    let mut worker_otlp = FakeCollectorServer::start().await.unwrap();
    let options = Options {
        // Export quickly instead of every 5 s.
        extra_env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())],
        role_env: vec![
            ("gateway", OTLP_ENDPOINT.into(), gateway_otlp.endpoint()),
            ("worker", OTLP_ENDPOINT.into(), worker_otlp.endpoint()),
        ],
        ..Options::default()
    };
    let c = Cluster::start_with(Shape::Distributed, "tracing", options).await;
    c.set_tokens(&["trace-token"], &[]).await;

    let body = json!({"model": "grok-4.1-fast", "stream": true,
        "messages": [{"role": "user", "content": "follow me"}]});
    let r = c.chat(0, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sse_data(r).await.last().map(String::as_str), Some("[DONE]"));

    let mut gateway_spans = Vec::new();
    let found = collect(&mut gateway_otlp, &mut gateway_spans, |spans| {
        let request = spans.iter().find(|s| s.name == "POST /v1/chat/completions");
        request.is_some_and(|r| {
            spans
                .iter()
                .filter(|s| s.trace_id == r.trace_id && s.name == "event received")
                .count()
                >= 2
        })
    })
    .await;
    assert!(
        found,
        "gateway spans incomplete:\n{}",
        describe(&gateway_spans)
    );
    let request = gateway_spans
        .iter()
        .find(|s| s.name == "POST /v1/chat/completions")
        .unwrap()
        .clone();
    let trace = request.trace_id.clone();
    assert_eq!(request.kind, "SPAN_KIND_SERVER");
    assert!(
        has_attr(&request, "route", "/v1/chat/completions"),
        "{:?}",
        request.attributes
    );

    let mut worker_spans = Vec::new();
    let found = collect(&mut worker_otlp, &mut worker_spans, |spans| {
        spans
            .iter()
            .any(|s| s.trace_id == trace && s.name == "upstream chat")
    })
    .await;
    assert!(
        found,
        "no upstream span in trace {trace}:\n{}",
        describe(&worker_spans)
    );
    let job = worker_spans
        .iter()
        .find(|s| s.trace_id == trace && s.name == "job chat")
        .unwrap_or_else(|| panic!("no job span:\n{}", describe(&worker_spans)));
    // Across the queue: the worker's job span is a child of the gateway's request span.
    assert_eq!(job.parent_span_id, request.span_id);
    assert_eq!(job.kind, "SPAN_KIND_CONSUMER");
    let upstream = worker_spans
        .iter()
        .find(|s| s.trace_id == trace && s.name == "upstream chat")
        .unwrap();
    assert_eq!(upstream.parent_span_id, job.span_id);
    assert_eq!(upstream.kind, "SPAN_KIND_CLIENT");
    assert!(
        has_attr(upstream, "outcome", "ok"),
        "{:?}",
        upstream.attributes
    );
    // And back over the bus: the gateway saw the events published in the job span.
    let received: Vec<&ExportedSpan> = gateway_spans
        .iter()
        .filter(|s| s.trace_id == trace && s.name == "event received")
        .collect();
    assert!(
        received.iter().all(|s| s.parent_span_id == job.span_id),
        "{}",
        describe(&gateway_spans)
    );
    assert!(received.iter().any(|s| has_attr(s, "event", "done")));
    // No worker span of this trace came through the gateway's receiver, and vice versa.
    assert!(!gateway_spans.iter().any(|s| s.name == "job chat"));
    assert!(
        !worker_spans
            .iter()
            .any(|s| s.name == "POST /v1/chat/completions")
    );
}
