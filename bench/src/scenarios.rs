//! The measurements of one shape, each against the simulator as the baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::{self, Target};
use crate::procs::{Product, rss_kib};
use crate::run::{self, Batch, Percentiles};

/// Sizes of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub latency_requests: usize,
    pub latency_concurrency: usize,
    pub stream_requests: usize,
    pub concurrency_levels: Vec<usize>,
    pub max_requests_per_level: usize,
    pub max_secs_per_level: u64,
    pub idle_connections: usize,
    pub open_streams: usize,
    /// Words of each long stream (`[[words:N]]`), so streams stay open while RSS is read.
    pub open_stream_words: usize,
    pub intake_jobs: usize,
}

/// Added latency of non-stream chat.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub requests_each: u64,
    pub concurrency: usize,
    pub baseline: Percentiles,
    pub product: Percentiles,
    pub added: Percentiles,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Time to first token and gaps between chunks of streamed chat.
#[derive(Debug, Serialize)]
pub struct Streaming {
    pub requests_each: u64,
    pub baseline_ttft: Percentiles,
    pub product_ttft: Percentiles,
    pub added_ttft: Percentiles,
    pub baseline_gap: Percentiles,
    pub product_gap: Percentiles,
    /// Product gap minus baseline gap, per percentile: the jitter the product adds.
    pub added_jitter: Percentiles,
    pub integrity_failures: u64,
    pub first_error: Option<String>,
}

/// Requests per second at one concurrency.
#[derive(Debug, Serialize)]
pub struct Throughput {
    pub concurrency: usize,
    pub baseline_rps: f64,
    pub product_rps: f64,
    pub baseline_ok: u64,
    pub product_ok: u64,
    pub product_errors: u64,
    pub product_latency: Percentiles,
    pub first_error: Option<String>,
}

/// Memory of idle connections and open streams, from the gateway's RSS.
#[derive(Debug, Serialize)]
pub struct Memory {
    pub idle_connections: usize,
    pub idle_opened: usize,
    pub kib_per_idle_connection: f64,
    pub open_streams: usize,
    pub gateway_rss_before_streams_kib: u64,
    pub gateway_rss_with_streams_kib: u64,
    pub worker_rss_with_streams_kib: Option<u64>,
    pub kib_per_open_stream: f64,
    /// Streams that delivered every chunk in order.
    pub streams_intact: u64,
    pub streams_failed: u64,
    pub first_error: Option<String>,
}

/// Largest RSS seen while the throughput levels ran.
#[derive(Debug, Default, Serialize)]
pub struct RssUnderLoad {
    pub gateway_max_kib: u64,
    pub worker_max_kib: Option<u64>,
}

fn prompt(kind: &str, i: usize) -> String {
    format!("bench {kind} {i}")
}

/// Interleaves baseline and product in slices so both see the same machine load.
#[allow(clippy::too_many_arguments)]
async fn interleaved<F>(
    http: &reqwest::Client,
    gateway: &str,
    sim: &str,
    total: usize,
    concurrency: usize,
    stream: bool,
    accounts: usize,
    mut each: F,
) -> (Batch, Batch)
where
    F: FnMut(&Batch, &Batch),
{
    let slice = (concurrency * 10).clamp(10, 100);
    let mut base = empty();
    let mut prod = empty();
    let mut done = 0;
    while done < total {
        let n = slice.min(total - done);
        for (target, into) in [
            (Target::Sim(sim.to_owned()), &mut base),
            (Target::Gateway(gateway.to_owned()), &mut prod),
        ] {
            let b = run::run(n, concurrency, Duration::from_secs(600), |i| {
                let http = http.clone();
                let target = target.clone();
                let p = prompt(if stream { "stream" } else { "plain" }, done + i);
                let account = (done + i) % accounts;
                async move {
                    if stream {
                        load::stream(&http, &target, &p, account).await
                    } else {
                        load::non_stream(&http, &target, &p, account).await
                    }
                }
            })
            .await;
            absorb(into, b);
        }
        each(&base, &prod);
        done += n;
    }
    (base, prod)
}

fn empty() -> Batch {
    Batch {
        total: run::histogram(),
        ttft: run::histogram(),
        gaps: run::histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    }
}

fn absorb(into: &mut Batch, b: Batch) {
    run::merge(&mut into.total, &b.total);
    run::merge(&mut into.ttft, &b.ttft);
    run::merge(&mut into.gaps, &b.gaps);
    into.ok += b.ok;
    into.errors += b.errors;
    into.elapsed += b.elapsed;
    if into.first_error.is_none() {
        into.first_error = b.first_error;
    }
}

pub async fn latency(
    http: &reqwest::Client,
    p: &Product,
    sim: &str,
    plan: &Plan,
    accounts: usize,
) -> Latency {
    let (base, prod) = interleaved(
        http,
        &p.gateway,
        sim,
        plan.latency_requests,
        plan.latency_concurrency,
        false,
        accounts,
        |_, _| {},
    )
    .await;
    let (b, q) = (Percentiles::of(&base.total), Percentiles::of(&prod.total));
    Latency {
        requests_each: prod.ok,
        concurrency: plan.latency_concurrency,
        baseline: b,
        product: q,
        added: q.minus(b),
        errors: base.errors + prod.errors,
        first_error: prod.first_error.or(base.first_error),
    }
}

pub async fn streaming(
    http: &reqwest::Client,
    p: &Product,
    sim: &str,
    plan: &Plan,
    accounts: usize,
) -> Streaming {
    let (base, prod) = interleaved(
        http,
        &p.gateway,
        sim,
        plan.stream_requests,
        plan.latency_concurrency,
        true,
        accounts,
        |_, _| {},
    )
    .await;
    let (bt, pt) = (Percentiles::of(&base.ttft), Percentiles::of(&prod.ttft));
    let (bg, pg) = (Percentiles::of(&base.gaps), Percentiles::of(&prod.gaps));
    Streaming {
        requests_each: prod.ok,
        baseline_ttft: bt,
        product_ttft: pt,
        added_ttft: pt.minus(bt),
        baseline_gap: bg,
        product_gap: pg,
        added_jitter: pg.minus(bg),
        integrity_failures: prod.errors,
        first_error: prod.first_error.or(base.first_error),
    }
}

/// Samples the RSS of the gateway and worker every 100 ms until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    gateway: Arc<AtomicU64>,
    worker: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(p: &Product) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let gateway = Arc::new(AtomicU64::new(0));
        let worker = Arc::new(AtomicU64::new(0));
        let (gw_pid, wk_pid) = (p.gateway_pid, p.worker_pid);
        let task = tokio::spawn({
            let (stop, gateway, worker) = (stop.clone(), gateway.clone(), worker.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    gateway.fetch_max(rss_kib(gw_pid), Ordering::Relaxed);
                    if let Some(pid) = wk_pid {
                        worker.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        RssSampler {
            stop,
            gateway,
            worker,
            task,
        }
    }

    async fn finish(self, p: &Product) -> RssUnderLoad {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        RssUnderLoad {
            gateway_max_kib: self.gateway.load(Ordering::Relaxed),
            worker_max_kib: p.worker_pid.map(|_| self.worker.load(Ordering::Relaxed)),
        }
    }
}

pub async fn throughput(
    http: &reqwest::Client,
    p: &Product,
    sim: &str,
    plan: &Plan,
    accounts: usize,
) -> (Vec<Throughput>, RssUnderLoad) {
    let sampler = RssSampler::start(p);
    let mut levels = Vec::new();
    for &c in &plan.concurrency_levels {
        let count = (c * 8).clamp(50, plan.max_requests_per_level);
        let max_time = Duration::from_secs(plan.max_secs_per_level);
        let mut results = Vec::new();
        for target in [
            Target::Sim(sim.to_owned()),
            Target::Gateway(p.gateway.clone()),
        ] {
            let b = run::run(count, c, max_time, |i| {
                let http = http.clone();
                let target = target.clone();
                let p = prompt("tput", c * 100_000 + i);
                async move { load::non_stream(&http, &target, &p, i % accounts).await }
            })
            .await;
            results.push(b);
        }
        let (base, prod) = (&results[0], &results[1]);
        eprintln!(
            "  c={c}: baseline {:.0} req/s, product {:.0} req/s ({} errors)",
            base.rps(),
            prod.rps(),
            prod.errors
        );
        levels.push(Throughput {
            concurrency: c,
            baseline_rps: base.rps(),
            product_rps: prod.rps(),
            baseline_ok: base.ok,
            product_ok: prod.ok,
            product_errors: prod.errors,
            product_latency: Percentiles::of(&prod.total),
            first_error: prod.first_error.clone().or(base.first_error.clone()),
        });
    }
    (levels, sampler.finish(p).await)
}

/// Opens `n` keep-alive connections that each made one request and then sit idle.
async fn open_idle(gateway: &str, n: usize) -> Vec<TcpStream> {
    let addr = gateway.trim_start_matches("http://").to_owned();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            break;
        };
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        if s.write_all(request.as_bytes()).await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => conns.push(s),
            _ => break,
        }
    }
    conns
}

pub async fn memory(http: &reqwest::Client, p: &Product, plan: &Plan) -> Memory {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(p.gateway_pid);
    let idle = open_idle(&p.gateway, plan.idle_connections).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(p.gateway_pid);
    let idle_opened = idle.len();
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before_streams = rss_kib(p.gateway_pid);
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..plan.open_streams {
        let http = http.clone();
        let target = Target::Gateway(p.gateway.clone());
        let opened = opened.clone();
        let prompt = format!("bench open {i} [[words:{}]]", plan.open_stream_words);
        tasks.push(tokio::spawn(async move {
            opened.fetch_add(1, Ordering::Relaxed);
            load::stream(&http, &target, &prompt, 0).await
        }));
    }
    // Waits until every stream has started, then a little for their first chunks.
    while (opened.load(Ordering::Relaxed) as usize) < plan.open_streams {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let with_streams = rss_kib(p.gateway_pid);
    let worker_with_streams = p.worker_pid.map(rss_kib);
    let (mut intact, mut failed, mut first_error) = (0, 0, None);
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => intact += 1,
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let per = |delta: u64, n: usize| if n == 0 { 0.0 } else { delta as f64 / n as f64 };
    Memory {
        idle_connections: plan.idle_connections,
        idle_opened,
        kib_per_idle_connection: per(after.saturating_sub(before), idle_opened),
        open_streams: plan.open_streams,
        gateway_rss_before_streams_kib: before_streams,
        gateway_rss_with_streams_kib: with_streams,
        worker_rss_with_streams_kib: worker_with_streams,
        kib_per_open_stream: per(
            with_streams.saturating_sub(before_streams),
            plan.open_streams,
        ),
        streams_intact: intact,
        streams_failed: failed,
        first_error,
    }
}
