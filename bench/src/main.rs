//! `grok2api-bench`: drives the real gateway, started from the built binary in both shapes,
//! with many concurrent clients against the simulator (a process too), and the simulator
//! directly as the baseline, interleaved in the same run. Prints a Markdown report and
//! writes it as JSON.

mod intake;
mod load;
mod procs;
mod report;
mod run;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use procs::{Backends, Deployment, Shape, SimProcess};
use scenarios::Plan;

#[derive(Debug, Parser)]
#[command(
    name = "grok2api-bench",
    about = "Benchmarks grok2api against its simulator"
)]
struct Args {
    /// The grok2api binary to measure.
    #[arg(long, default_value = "target/release/grok2api")]
    binary: PathBuf,
    /// Shapes to measure: embedded, distributed.
    #[arg(long, value_delimiter = ',', default_value = "embedded,distributed")]
    shapes: Vec<String>,
    /// A few-second run with tiny counts (for the smoke test).
    #[arg(long)]
    quick: bool,
    /// Simulator delay before the first frame, for latency, streaming and memory.
    #[arg(long, default_value_t = 50)]
    ttft_ms: u64,
    /// Simulator delay between frames, for latency, streaming and memory.
    #[arg(long, default_value_t = 20)]
    frame_delay_ms: u64,
    /// Concurrency levels of the throughput runs (against a simulator without delays).
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-report.json")]
    json: PathBuf,
    /// Directory for process logs and data.
    #[arg(long, default_value = "target/bench-runs")]
    work_dir: PathBuf,
    #[arg(
        long,
        env = "GROK2API_TEST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    #[arg(
        long,
        env = "GROK2API_TEST_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,
    #[arg(
        long,
        env = "GROK2API_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

fn plan(args: &Args) -> Plan {
    if args.quick {
        Plan {
            latency_requests: 20,
            latency_concurrency: 2,
            stream_requests: 10,
            concurrency_levels: args.concurrency.clone().unwrap_or(vec![1, 4]),
            max_requests_per_level: 50,
            max_secs_per_level: 3,
            idle_connections: 20,
            open_streams: 20,
            open_stream_words: 20,
            intake_jobs: 200,
        }
    } else {
        Plan {
            latency_requests: 1000,
            latency_concurrency: 8,
            stream_requests: 200,
            concurrency_levels: args
                .concurrency
                .clone()
                .unwrap_or(vec![1, 16, 64, 256, 1024]),
            max_requests_per_level: 6000,
            max_secs_per_level: 20,
            idle_connections: 1000,
            open_streams: 1000,
            open_stream_words: 200,
            intake_jobs: 20_000,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.binary.exists(),
        "{} does not exist; build it first (cargo build --release -p grok2api)",
        args.binary.display()
    );
    let plan = plan(&args);
    let backends = Backends {
        amqp_url: args.amqp_url.clone(),
        redis_url: args.redis_url.clone(),
        postgres_admin_url: args.database_url.clone(),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(2048)
        .build()?;
    std::fs::create_dir_all(&args.work_dir)?;
    let work_dir = std::fs::canonicalize(&args.work_dir)?;
    let sim_log = work_dir.join("sims");
    std::fs::create_dir_all(&sim_log)?;

    let mut report = report::Report::new(&args.binary, &plan);
    let paced = SimProcess::start(
        &args.binary,
        args.ttft_ms,
        args.frame_delay_ms,
        &sim_log,
        &http,
    )
    .await?;
    let fast = SimProcess::start(&args.binary, 0, 0, &sim_log, &http).await?;
    report.sim_pids = vec![paced.pid(), fast.pid()];

    for name in &args.shapes {
        let shape = match name.as_str() {
            "embedded" => Shape::Embedded,
            "distributed" => Shape::Distributed,
            other => anyhow::bail!("unknown shape {other}"),
        };
        eprintln!("== {} ==", shape.name());
        let accounts = 300;
        let deployment =
            Deployment::create(shape, &args.binary, &work_dir, &backends, accounts).await?;
        let result = measure_shape(&deployment, &paced, &fast, &plan, &http, accounts).await;
        deployment.cleanup().await;
        report.shapes.push(result?);
    }
    eprintln!("== job intake ==");
    let load = report::load_average();
    report.intake = intake::all(&args.amqp_url, plan.intake_jobs, 64).await;
    report.intake_load_average = load;
    report.finish();
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", report.markdown());
    Ok(())
}

async fn measure_shape(
    deployment: &Deployment,
    paced: &SimProcess,
    fast: &SimProcess,
    plan: &Plan,
    http: &reqwest::Client,
    accounts: usize,
) -> anyhow::Result<report::ShapeReport> {
    let mut loads = vec![report::load_average()];
    let product = deployment.start(paced, http).await?;
    eprintln!("  latency");
    let latency = scenarios::latency(http, &product, &paced.base_url, plan, accounts).await;
    eprintln!("  streaming");
    let streaming = scenarios::streaming(http, &product, &paced.base_url, plan, accounts).await;
    eprintln!("  memory");
    let memory = scenarios::memory(http, &product, plan).await;
    loads.push(report::load_average());
    product.stop();

    let product = deployment.start(fast, http).await?;
    eprintln!("  throughput");
    let (throughput, rss) =
        scenarios::throughput(http, &product, &fast.base_url, plan, accounts).await;
    loads.push(report::load_average());
    product.stop();
    Ok(report::ShapeReport {
        shape: deployment.shape,
        logs: deployment.log_dir.display().to_string(),
        load_averages: loads,
        latency,
        streaming,
        throughput,
        memory,
        rss_under_load: rss,
    })
}
