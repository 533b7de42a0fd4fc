//! `grok2api`: one binary for every role. `serve` runs them all in one process on embedded
//! backends; `gateway`, `worker` and `scheduler` run one role each on shared backends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use shared::backends::Backends;
use shared::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "grok2api",
    version,
    about = "A pool of Grok web accounts served as an OpenAI-compatible API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Config file (default: $DATA_DIR/config.toml when it exists).
    #[arg(long, short, global = true, env = "GROK2API_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SchedulerAction {
    /// Run one task now (pool_sync, quota_refresh, invalid_recheck, lease_reaper,
    /// blob_cleanup, job_retention) and print what it did.
    RunOnce { task: String },
}

#[derive(Subcommand)]
enum Command {
    /// Run gateway, worker and scheduler in one process. With no backend URLs configured it
    /// needs no server at all: in-process queue, bus and pool, SQLite under ./data.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Listen port (overrides server.port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run the HTTP gateway only (needs backend.queue_url, backend.redis_url and a shared
    /// database).
    Gateway {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run a job worker only: consumes jobs, leases accounts, calls Grok.
    Worker {
        #[command(flatten)]
        common: Common,
    },
    /// Run the periodic upkeep only.
    Scheduler {
        #[command(flatten)]
        common: Common,
        /// Run one task now and exit, instead of running the schedule.
        #[command(subcommand)]
        action: Option<SchedulerAction>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Run the Grok upstream simulator (for tests, benchmarks and trying things out).
    Sim {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8300)]
        port: u16,
        /// Delay before the first answer frame, in milliseconds.
        #[arg(long, default_value_t = 0)]
        ttft_ms: u64,
        /// Delay between answer frames, in milliseconds.
        #[arg(long, default_value_t = 0)]
        frame_delay_ms: u64,
        /// Retry-After of the simulated 429s, in seconds.
        #[arg(long, default_value_t = 60)]
        rate_limit_window_secs: u64,
    },
    /// Print a fresh key for security.token_key.
    Keygen,
    /// Re-seal every stored account token under security.token_key (the last step of a key
    /// rotation), then refresh the live token pool. Safe to run beside live processes.
    Reseal {
        #[command(flatten)]
        common: Common,
    },
    /// Print the effective configuration (secrets redacted), or the commented defaults.
    Config {
        #[command(flatten)]
        common: Common,
        /// Print the commented defaults instead.
        #[arg(long)]
        defaults: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::set_role(role_of(&cli.command));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(cli.command));
    // Export the last spans while the runtime that drives the exporter is still alive.
    shared::telemetry::shutdown();
    result
}

/// The role a command runs, as `service.name` and the `role` metric label see it.
fn role_of(command: &Command) -> &'static str {
    match command {
        Command::Serve { .. } => "serve",
        Command::Gateway { .. } => "gateway",
        Command::Worker { .. } => "worker",
        Command::Scheduler { .. } => "scheduler",
        Command::Migrate { .. } => "migrate",
        Command::Sim { .. } => "sim",
        _ => "cli",
    }
}

fn load(common: &Common, port: Option<u16>) -> anyhow::Result<Arc<Config>> {
    let mut config = Config::load(common.config.as_deref())?;
    if let Some(p) = port {
        config.server.port = p;
    }
    shared::telemetry::init(&config.log);
    shared::metrics::install(shared::telemetry::role());
    Ok(Arc::new(config))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { common, port } => serve(load(&common, port)?).await,
        Command::Gateway { common, port } => {
            let config = distributed(load(&common, port)?, "gateway")?;
            let backends = Backends::connect(&config).await?;
            let shutdown = shutdown_signal();
            run_gateway(config, backends, shutdown).await
        }
        Command::Worker { common } => {
            let config = distributed(load(&common, None)?, "worker")?;
            let backends = Backends::connect(&config).await?;
            let shutdown = shutdown_signal();
            shared::ops::spawn(&config.metrics.listen, &backends, &shutdown).await?;
            let worker = worker::Worker::new(config, backends)?;
            worker.run(shutdown).await;
            Ok(())
        }
        Command::Scheduler {
            common,
            action: Some(SchedulerAction::RunOnce { task }),
        } => {
            let config = load(&common, None)?;
            let task = scheduler::tasks::Task::parse(&task).with_context(|| {
                let names: Vec<&str> = scheduler::tasks::Task::ALL
                    .iter()
                    .map(|t| t.name())
                    .collect();
                format!("unknown task {task:?}; tasks: {}", names.join(", "))
            })?;
            let backends = Backends::connect(&config).await?;
            let summary = scheduler::tasks::run_once(task, &config, &backends).await?;
            println!("{}: {summary}", task.name());
            Ok(())
        }
        Command::Scheduler { common, .. } => {
            let config = distributed(load(&common, None)?, "scheduler")?;
            let backends = Backends::connect(&config).await?;
            let shutdown = shutdown_signal();
            shared::ops::spawn(&config.metrics.listen, &backends, &shutdown).await?;
            scheduler::run(config, backends, shutdown).await;
            Ok(())
        }
        Command::Migrate { common } => {
            let config = load(&common, None)?;
            let cipher = shared::backends::token_cipher(&config)?;
            let store = shared::store::connect(&config.database_url(), cipher).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Sim {
            host,
            port,
            ttft_ms,
            frame_delay_ms,
            rate_limit_window_secs,
        } => {
            shared::telemetry::init(&Config::defaults().log);
            let listener = tokio::net::TcpListener::bind((host.as_str(), port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            let config = sim::SimConfig {
                ttft_ms,
                frame_delay_ms,
                rate_limit_window_secs,
                ..Default::default()
            };
            tracing::info!(addr = %listener.local_addr()?, "simulator listening");
            let shutdown = shutdown_signal();
            tokio::select! {
                r = sim::serve(config, listener) => r.context("simulator"),
                _ = shutdown.cancelled() => Ok(()),
            }
        }
        Command::Keygen => {
            println!("{}", shared::crypto::generate_key());
            Ok(())
        }
        Command::Reseal { common } => reseal(load(&common, None)?).await,
        Command::Config { common, defaults } => {
            if defaults {
                print!("{}", shared::config::DEFAULTS_TOML);
            } else {
                let config = Config::load(common.config.as_deref())?;
                print!("{}", toml::to_string_pretty(&config)?);
            }
            Ok(())
        }
    }
}

/// `grok2api reseal`: rewrites tokens sealed with a previous key, then re-syncs the live
/// pool (whose entries carry sealed tokens too) so no process needs the old key afterwards.
async fn reseal(config: Arc<Config>) -> anyhow::Result<()> {
    let cipher = shared::backends::token_cipher(&config)?;
    let report = shared::store::reseal::reseal_tokens(&config.database_url(), &cipher)
        .await
        .context("re-sealing tokens")?;
    if Backends::is_distributed(&config) {
        let backends = Backends::connect(&config).await?;
        scheduler::sync_pool_from_store(&backends)
            .await
            .context("refreshing the token pool")?;
    }
    println!(
        "resealed {} tokens under key {} ({} already current, {} changed meanwhile)",
        report.resealed,
        cipher.key_id(),
        report.current,
        report.raced
    );
    if !report.unreadable.is_empty() {
        bail!(
            "{} tokens are sealed with a key that is not configured (ids: {}); add that key to security.previous_token_keys and run again",
            report.unreadable.len(),
            report.unreadable.join(", ")
        );
    }
    Ok(())
}

/// Single-role commands share state through the distributed backends only.
fn distributed(config: Arc<Config>, role: &str) -> anyhow::Result<Arc<Config>> {
    if !Backends::is_distributed(&config) {
        bail!(
            "`grok2api {role}` needs backend.queue_url and backend.redis_url (use `grok2api serve` to run everything in one process)"
        );
    }
    Ok(config)
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let backends = Backends::connect(&config).await?;
    backends
        .store
        .migrate()
        .await
        .context("applying migrations")?;
    if config.backend.queue_url.is_empty() {
        // The in-process queue lost whatever it held when the last run stopped. The jobs
        // queued again need accounts, so the in-process pool is filled first.
        if let Err(e) = scheduler::sync_pool_from_store(&backends).await {
            tracing::warn!(error = %e, "pool sync before settling video jobs failed");
        }
        gateway::videos::recover::requeue_unfinished(&backends)
            .await
            .context("settling unfinished video jobs")?;
    }
    let shutdown = shutdown_signal();
    let worker = worker::Worker::new(config.clone(), backends.clone())?;
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let scheduler_task = tokio::spawn(scheduler::run(
        config.clone(),
        backends.clone(),
        shutdown.clone(),
    ));
    let served = run_gateway(config, backends, shutdown).await;
    let _ = worker_task.await;
    let _ = scheduler_task.await;
    served
}

async fn run_gateway(
    config: Arc<Config>,
    backends: Backends,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let admin_key =
        gateway::auth::resolve_admin_key(&config.app.app_key, backends.store.as_ref()).await?;
    if let Err(e) = scheduler::sync_pool_from_store(&backends).await {
        tracing::warn!(error = %e, "initial pool sync failed; the scheduler retries");
    }
    if config.app.api_keys().is_empty() && !config.app.open_api {
        tracing::warn!(
            "no app.api_key is set and app.open_api is false: the client API accepts only named client keys (POST /v1/admin/keys)"
        );
    }
    let addr: SocketAddr = format!("{}:{}", config.server.host, config.server.port)
        .parse()
        .context("server.host/server.port")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let state = gateway::AppState::new(config, backends, admin_key, shutdown);
    gateway::serve(state, listener).await.context("gateway")
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}
