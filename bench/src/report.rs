//! The report: every measurement, the machine, and which targets were met.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::intake::Intake;
use crate::procs::Shape;
use crate::scenarios::{Latency, Memory, Plan, RssUnderLoad, Streaming, Throughput};

/// Everything one shape gave.
#[derive(Debug, Serialize)]
pub struct ShapeReport {
    pub shape: Shape,
    pub logs: String,
    /// 1-minute load average at the start, after the paced scenarios, and at the end.
    pub load_averages: Vec<f64>,
    pub latency: Latency,
    pub streaming: Streaming,
    pub throughput: Vec<Throughput>,
    pub memory: Memory,
    pub rss_under_load: RssUnderLoad,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub mem_total_kib: u64,
    pub load_average_at_start: f64,
}

/// One target of the quality bar and whether it was met.
#[derive(Debug, Serialize)]
pub struct Target {
    pub shape: String,
    pub name: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub binary: String,
    pub machine: Machine,
    pub plan: Plan,
    pub sim_pids: Vec<u32>,
    pub shapes: Vec<ShapeReport>,
    pub intake: Vec<Intake>,
    pub intake_load_average: f64,
    /// Every gateway stream of the run delivered every chunk, in order.
    pub stream_integrity_ok: bool,
    pub targets: Vec<Target>,
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Report {
    pub fn new(binary: &Path, plan: &Plan) -> Report {
        Report {
            binary: binary.display().to_string(),
            machine: Machine {
                nproc: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                mem_total_kib: mem_total_kib(),
                load_average_at_start: load_average(),
            },
            plan: plan.clone(),
            sim_pids: vec![],
            shapes: vec![],
            intake: vec![],
            intake_load_average: 0.0,
            stream_integrity_ok: false,
            targets: vec![],
        }
    }

    /// Decides stream integrity and the targets from the measurements.
    pub fn finish(&mut self) {
        self.stream_integrity_ok = !self.shapes.is_empty()
            && self.shapes.iter().all(|s| {
                s.streaming.integrity_failures == 0
                    && s.streaming.requests_each > 0
                    && s.memory.streams_failed == 0
                    && s.memory.streams_intact as usize == s.memory.open_streams
            });
        let mut targets = Vec::new();
        let mut add = |shape: &str, name: &str, goal: &str, measured: String, met: bool| {
            targets.push(Target {
                shape: shape.into(),
                name: name.into(),
                goal: goal.into(),
                measured,
                met,
            })
        };
        for s in &self.shapes {
            let n = s.shape.name();
            let l = &s.latency.added;
            add(
                n,
                "added latency p50",
                "≤ 3 ms",
                format!("{:.2} ms", l.p50_ms),
                l.p50_ms <= 3.0,
            );
            add(
                n,
                "added latency p99",
                "≤ 15 ms",
                format!("{:.2} ms", l.p99_ms),
                l.p99_ms <= 15.0,
            );
            let t = &s.streaming.added_ttft;
            add(
                n,
                "TTFT overhead p50",
                "≤ 3 ms",
                format!("{:.2} ms", t.p50_ms),
                t.p50_ms <= 3.0,
            );
            add(
                n,
                "TTFT overhead p99",
                "≤ 15 ms",
                format!("{:.2} ms", t.p99_ms),
                t.p99_ms <= 15.0,
            );
            let m = &s.memory;
            let streams_ok = m.open_streams >= 1000 && m.streams_failed == 0;
            add(
                n,
                "1,000 concurrent streams intact",
                "no lost or reordered chunk",
                format!("{}/{} intact", m.streams_intact, m.open_streams),
                streams_ok && m.streams_intact as usize == m.open_streams,
            );
            let rss_mb = m.gateway_rss_with_streams_kib as f64 / 1024.0;
            add(
                n,
                "gateway RSS with the open streams",
                "≤ 150 MB",
                format!("{rss_mb:.1} MB ({} streams)", m.open_streams),
                m.open_streams >= 1000 && rss_mb <= 150.0,
            );
            add(
                n,
                "memory per open stream",
                "≤ 24 KB",
                format!("{:.1} KiB", m.kib_per_open_stream),
                m.kib_per_open_stream <= 24.0,
            );
            let best = s
                .throughput
                .iter()
                .map(|t| t.product_rps)
                .fold(0.0, f64::max);
            add(
                n,
                "end-to-end non-stream throughput",
                "≥ 1,500 req/s",
                format!("{best:.0} req/s (best level)"),
                best >= 1500.0,
            );
        }
        for i in &self.intake {
            add(
                i.queue,
                "job intake",
                "≥ 1,500 jobs/s",
                format!("{:.0} jobs/s", i.jobs_per_sec),
                i.jobs_per_sec >= 1500.0,
            );
        }
        self.targets = targets;
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# grok2api benchmark\n\nmachine: {} CPUs, {:.1} GiB; load average at start {:.2}; binary {}\n",
            self.machine.nproc,
            self.machine.mem_total_kib as f64 / 1048576.0,
            self.machine.load_average_at_start,
            self.binary
        );
        for s in &self.shapes {
            let _ = writeln!(
                o,
                "## {} (load averages {:?})\n",
                s.shape.name(),
                s.load_averages
            );
            let l = &s.latency;
            let _ = writeln!(
                o,
                "### Non-stream latency ({} requests each, concurrency {}, errors {})\n\n| | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|",
                l.requests_each, l.concurrency, l.errors
            );
            for (name, p) in [
                ("baseline (sim)", l.baseline),
                ("gateway", l.product),
                ("added", l.added),
            ] {
                let _ = writeln!(
                    o,
                    "| {name} | {:.2} | {:.2} | {:.2} |",
                    p.p50_ms, p.p99_ms, p.p999_ms
                );
            }
            let st = &s.streaming;
            let _ = writeln!(
                o,
                "\n### Streaming ({} streams each, integrity failures {})\n\n| | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|",
                st.requests_each, st.integrity_failures
            );
            for (name, p) in [
                ("TTFT baseline", st.baseline_ttft),
                ("TTFT gateway", st.product_ttft),
                ("TTFT added", st.added_ttft),
                ("chunk gap baseline", st.baseline_gap),
                ("chunk gap gateway", st.product_gap),
                ("added jitter", st.added_jitter),
            ] {
                let _ = writeln!(
                    o,
                    "| {name} | {:.2} | {:.2} | {:.2} |",
                    p.p50_ms, p.p99_ms, p.p999_ms
                );
            }
            let _ = writeln!(
                o,
                "\n### Throughput, non-stream\n\n| concurrency | baseline req/s | gateway req/s | gateway ok | errors | gateway p50 ms | gateway p99 ms |\n|---|---|---|---|---|---|---|"
            );
            for t in &s.throughput {
                let _ = writeln!(
                    o,
                    "| {} | {:.0} | {:.0} | {} | {} | {:.1} | {:.1} |",
                    t.concurrency,
                    t.baseline_rps,
                    t.product_rps,
                    t.product_ok,
                    t.product_errors,
                    t.product_latency.p50_ms,
                    t.product_latency.p99_ms
                );
            }
            let m = &s.memory;
            let _ = writeln!(
                o,
                "\n### Memory\n\n- idle connections: {} opened, {:.1} KiB each\n- open streams: {} ({} intact, {} failed), gateway RSS {:.1} → {:.1} MiB, {:.1} KiB per stream; worker RSS {}\n- RSS under throughput load: gateway max {:.1} MiB, worker max {}\n",
                m.idle_opened,
                m.kib_per_idle_connection,
                m.open_streams,
                m.streams_intact,
                m.streams_failed,
                m.gateway_rss_before_streams_kib as f64 / 1024.0,
                m.gateway_rss_with_streams_kib as f64 / 1024.0,
                m.kib_per_open_stream,
                m.worker_rss_with_streams_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "n/a (serve)".into()),
                s.rss_under_load.gateway_max_kib as f64 / 1024.0,
                s.rss_under_load
                    .worker_max_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "n/a (serve)".into()),
            );
            for e in [&l.first_error, &st.first_error, &m.first_error]
                .into_iter()
                .flatten()
            {
                let _ = writeln!(o, "first error: {e}");
            }
        }
        let _ = writeln!(
            o,
            "## Job intake (load average {:.2})\n\n| queue | jobs | publishers | accepted | jobs/s |\n|---|---|---|---|---|",
            self.intake_load_average
        );
        for i in &self.intake {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.0} |",
                i.queue, i.jobs, i.publishers, i.accepted, i.jobs_per_sec
            );
        }
        let _ = writeln!(
            o,
            "\n## Targets (stream integrity {})\n\n| shape | target | goal | measured | met |\n|---|---|---|---|---|",
            if self.stream_integrity_ok {
                "passed"
            } else {
                "FAILED"
            }
        );
        for t in &self.targets {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                t.shape,
                t.name,
                t.goal,
                t.measured,
                if t.met { "yes" } else { "no" }
            );
        }
        o
    }
}
