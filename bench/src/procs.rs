//! The processes under test: the simulator and the product in either shape, started from the
//! built binary, plus the per-run backend state of the distributed shape.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

/// Key of the benchmark's API clients.
pub const API_KEY: &str = "sk-bench-key";
const ADMIN_KEY: &str = "admin-bench-key";
const TOKEN_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

/// Which deployment is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// `grok2api serve` on embedded backends.
    Embedded,
    /// A gateway and a worker process on RabbitMQ, Redis and PostgreSQL.
    Distributed,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Embedded => "embedded",
            Shape::Distributed => "distributed",
        }
    }
}

/// Server URLs of the distributed backends.
#[derive(Debug, Clone)]
pub struct Backends {
    pub amqp_url: String,
    pub redis_url: String,
    pub postgres_admin_url: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    binary: &Path,
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    log_dir: &Path,
) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
    let child = Command::new(binary)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Proc {
        name: name.to_owned(),
        child,
    })
}

/// Polls `url` until it answers 2xx, failing early when the process exits.
async fn wait_until_up(
    http: &reqwest::Client,
    url: &str,
    procs: &mut [Proc],
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("{} exited early ({status})", p.name);
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{url} not up after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The simulator as a process of its own.
pub struct SimProcess {
    proc: Vec<Proc>,
    pub base_url: String,
}

impl SimProcess {
    pub async fn start(
        binary: &Path,
        ttft_ms: u64,
        frame_delay_ms: u64,
        log_dir: &Path,
        http: &reqwest::Client,
    ) -> anyhow::Result<SimProcess> {
        let port = free_port()?.to_string();
        let ttft = ttft_ms.to_string();
        let frame = frame_delay_ms.to_string();
        let name = format!("sim-{ttft_ms}-{frame_delay_ms}");
        let args = [
            "sim",
            "--port",
            &port,
            "--ttft-ms",
            &ttft,
            "--frame-delay-ms",
            &frame,
        ];
        let env = [("GROK2API_LOG__LEVEL".to_owned(), "warn".to_owned())];
        let mut proc = vec![spawn(binary, &name, &args, &env, log_dir)?];
        let base_url = format!("http://127.0.0.1:{port}");
        wait_until_up(http, &format!("{base_url}/sim/stats"), &mut proc).await?;
        Ok(SimProcess { proc, base_url })
    }

    pub fn pid(&self) -> u32 {
        self.proc[0].child.id()
    }
}

/// The product, running in one shape against one simulator.
pub struct Product {
    procs: Vec<Proc>,
    pub gateway: String,
    pub gateway_pid: u32,
    /// The worker process (distributed shape); in `serve` the gateway is the worker too.
    pub worker_pid: Option<u32>,
}

/// Per-run state of a shape: the prefix, data directory and (distributed) database.
pub struct Deployment {
    pub shape: Shape,
    binary: PathBuf,
    pub log_dir: PathBuf,
    env: Vec<(String, String)>,
    database: Option<String>,
    prefix: String,
    backends: Backends,
    /// Accounts loaded into the pool at each start.
    pub tokens: usize,
}

impl Deployment {
    pub async fn create(
        shape: Shape,
        binary: &Path,
        work_dir: &Path,
        backends: &Backends,
        tokens: usize,
    ) -> anyhow::Result<Deployment> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("bench-{}", &id[..12]);
        let root = work_dir.join(format!("{}-{}", shape.name(), &id[..8]));
        let log_dir = root.join("logs");
        std::fs::create_dir_all(&log_dir)?;
        let mut env: Vec<(String, String)> = vec![
            kv("GROK2API_BACKEND__DATA_DIR", root.join("data").display()),
            kv("GROK2API_BACKEND__PREFIX", &prefix),
            kv("GROK2API_SERVER__HOST", "127.0.0.1"),
            kv("GROK2API_APP__API_KEY", API_KEY),
            kv("GROK2API_APP__APP_KEY", ADMIN_KEY),
            kv("GROK2API_SECURITY__TOKEN_KEY", TOKEN_KEY),
            kv("GROK2API_LOG__LEVEL", "warn"),
            // The baseline speaks REST to the simulator, so the product does too.
            kv("GROK2API_UPSTREAM__CHAT_TRANSPORT", "rest"),
            // Room for 1,024 concurrent jobs: workers, queue and accounts.
            kv("GROK2API_WORKER__CHAT_CONCURRENCY", "1100"),
            kv("GROK2API_QUEUE__CAPACITY", "8192"),
            kv("GROK2API_TOKEN__PER_TOKEN_CONCURRENCY", "4"),
            kv("GROK2API_TOKEN__BASIC_QUOTA", "100000000"),
        ];
        let mut database = None;
        if shape == Shape::Distributed {
            let db = format!("g2a_bench_{}", &id[..16]);
            admin_sql(
                &backends.postgres_admin_url,
                &format!("CREATE DATABASE {db}"),
            )
            .await?;
            env.push(kv("GROK2API_BACKEND__QUEUE_URL", &backends.amqp_url));
            env.push(kv("GROK2API_BACKEND__REDIS_URL", &backends.redis_url));
            env.push(kv(
                "GROK2API_BACKEND__DATABASE_URL",
                with_database(&backends.postgres_admin_url, &db),
            ));
            database = Some(db);
        }
        let deployment = Deployment {
            shape,
            binary: binary.to_owned(),
            log_dir,
            env,
            database,
            prefix,
            backends: backends.clone(),
            tokens,
        };
        if shape == Shape::Distributed {
            let status = Command::new(binary)
                .arg("migrate")
                .envs(deployment.env.iter().cloned())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(
                    deployment.log_dir.join("migrate.log"),
                )?)
                .status()?;
            if !status.success() {
                bail!("migrate failed; see {}", deployment.log_dir.display());
            }
        }
        Ok(deployment)
    }

    /// Starts the product against `sim`, waits until it is ready and loads the accounts.
    pub async fn start(&self, sim: &SimProcess, http: &reqwest::Client) -> anyhow::Result<Product> {
        let mut env = self.env.clone();
        for key in ["BASE_URL", "ASSETS_URL", "ACCOUNTS_URL"] {
            env.push(kv(&format!("GROK2API_UPSTREAM__{key}"), &sim.base_url));
        }
        env.push(kv(
            "GROK2API_UPSTREAM__WS_URL",
            sim.base_url.replacen("http://", "ws://", 1),
        ));
        let port = free_port()?;
        env.push(kv("GROK2API_SERVER__PORT", port));
        let gateway = format!("http://127.0.0.1:{port}");
        let mut procs = Vec::new();
        let mut worker_pid = None;
        match self.shape {
            Shape::Embedded => {
                procs.push(spawn(
                    &self.binary,
                    "serve",
                    &["serve"],
                    &env,
                    &self.log_dir,
                )?);
            }
            Shape::Distributed => {
                let mut worker_env = env.clone();
                worker_env.push(kv(
                    "GROK2API_METRICS__LISTEN",
                    format!("127.0.0.1:{}", free_port()?),
                ));
                let worker = spawn(
                    &self.binary,
                    "worker",
                    &["worker"],
                    &worker_env,
                    &self.log_dir,
                )?;
                worker_pid = Some(worker.child.id());
                procs.push(worker);
                procs.push(spawn(
                    &self.binary,
                    "gateway",
                    &["gateway"],
                    &env,
                    &self.log_dir,
                )?);
            }
        }
        wait_until_up(http, &format!("{gateway}/readyz"), &mut procs).await?;
        let gateway_pid = procs.last().map(|p| p.child.id()).unwrap_or_default();
        let tokens: Vec<String> = (0..self.tokens)
            .map(|i| format!("bench-token-{i}"))
            .collect();
        let r = http
            .post(format!("{gateway}/v1/admin/tokens"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"ssoBasic": tokens, "ssoSuper": []}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("loading accounts: {} {}", r.status(), r.text().await?);
        }
        Ok(Product {
            procs,
            gateway,
            gateway_pid,
            worker_pid,
        })
    }

    /// Removes the database, queues and Redis keys of a distributed run.
    pub async fn cleanup(&self) {
        let Some(db) = &self.database else { return };
        let _ = admin_sql(
            &self.backends.postgres_admin_url,
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        )
        .await;
        if let Ok(q) = shared::queue::rabbitmq::RabbitQueue::connect(
            &self.backends.amqp_url,
            &self.prefix,
            3,
            Duration::from_secs(5),
        )
        .await
        {
            q.delete_all().await;
        }
        delete_redis_keys(&self.backends.redis_url, &self.prefix).await;
    }
}

impl Product {
    /// Stops every process of the product.
    pub fn stop(self) {
        drop(self.procs);
    }
}

fn kv(key: &str, value: impl std::fmt::Display) -> (String, String) {
    (key.to_owned(), value.to_string())
}

fn with_database(admin_url: &str, db: &str) -> String {
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{db}")
}

async fn admin_sql(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn delete_redis_keys(redis_url: &str, prefix: &str) {
    if let Ok(client) = redis::Client::open(redis_url)
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    }
}

/// Resident set size of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
