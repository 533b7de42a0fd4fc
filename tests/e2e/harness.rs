//! Starting clusters of real processes and talking to them.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const API_KEY: &str = "sk-test-e2e-key";
pub const ADMIN_KEY: &str = "admin-test-e2e-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `grok2api serve` on embedded backends.
    Embedded,
    /// Two gateways and two workers on RabbitMQ, Redis and PostgreSQL.
    Distributed,
}

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct Options {
    pub transport: &'static str,
    pub extra_env: Vec<(String, String)>,
    pub sim: sim::SimConfig,
    /// Environment for one role only: `(role, name, value)`, role as in `grok2api <role>`.
    pub role_env: Vec<(&'static str, String, String)>,
    /// Distributed shape: also run a `grok2api scheduler` process.
    pub scheduler: bool,
    /// Distributed shape: `(from, to)` rewrites of `host:port` in the backend URLs the
    /// processes get (the fault suite routes them through its proxies).
    pub backend_rewrites: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            transport: "ws",
            extra_env: vec![],
            sim: sim::SimConfig::default(),
            role_env: vec![],
            scheduler: false,
            backend_rewrites: vec![],
        }
    }
}

pub struct Cluster {
    pub shape: Shape,
    pub sim: sim::SimHandle,
    pub gateways: Vec<String>,
    processes: Vec<Child>,
    /// `(process name, base URL)` of every process's `/metrics` (gateways: their API port;
    /// workers and the scheduler: their own `metrics.listen` port).
    pub metrics: Vec<(String, String)>,
    role_env: Vec<(&'static str, String, String)>,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    database: Option<String>,
    prefix: String,
    /// Names of `processes`, in the same order.
    process_names: Vec<String>,
    /// The environment every process started with (for restarts).
    env: Vec<(String, String)>,
    /// The S3 bucket of a distributed cluster's media (removed on drop).
    pub blob_bucket: Option<String>,
    pub http: reqwest::Client,
}

/// The S3-compatible test server (`scripts/s3`) and its credentials.
pub fn s3_endpoint() -> String {
    std::env::var("GROK2API_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8333".into())
}

fn s3_access_key() -> String {
    std::env::var("GROK2API_TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "AKIATEST".into())
}

fn s3_secret_key() -> String {
    std::env::var("GROK2API_TEST_S3_SECRET_KEY").unwrap_or_else(|_| "testsecret".into())
}

/// `[blob]` settings for a bucket on the test server.
pub fn s3_blob_config(bucket: &str) -> shared::config::BlobConfig {
    let mut c = shared::config::Config::defaults().blob;
    c.url = format!("s3://{bucket}");
    c.endpoint = s3_endpoint();
    c.access_key = shared::Secret::new(s3_access_key());
    c.secret_key = shared::Secret::new(s3_secret_key());
    c
}

fn amqp_url() -> String {
    std::env::var("GROK2API_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn redis_url() -> String {
    std::env::var("GROK2API_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn postgres_admin_url() -> String {
    std::env::var("GROK2API_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(admin_url: &str, db: &str) -> String {
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{db}")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const TOKEN_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

impl Cluster {
    pub async fn start(shape: Shape, name: &str) -> Cluster {
        Self::start_with(shape, name, Options::default()).await
    }

    pub async fn start_with(shape: Shape, name: &str, options: Options) -> Cluster {
        let sim = sim::spawn(options.sim.clone())
            .await
            .expect("simulator starts");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("e2e-{}", &id[..12]);
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(format!("{name}-{}", &id[..8]));
        let data_dir = root.join("data");
        let log_dir = root.join("logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut env: Vec<(String, String)> = vec![
            (
                "GROK2API_BACKEND__DATA_DIR".into(),
                data_dir.display().to_string(),
            ),
            ("GROK2API_BACKEND__PREFIX".into(), prefix.clone()),
            ("GROK2API_SERVER__HOST".into(), "127.0.0.1".into()),
            ("GROK2API_APP__API_KEY".into(), API_KEY.into()),
            ("GROK2API_APP__APP_KEY".into(), ADMIN_KEY.into()),
            ("GROK2API_UPSTREAM__BASE_URL".into(), sim.base_url()),
            ("GROK2API_UPSTREAM__WS_URL".into(), sim.ws_url()),
            ("GROK2API_UPSTREAM__ASSETS_URL".into(), sim.base_url()),
            ("GROK2API_UPSTREAM__ACCOUNTS_URL".into(), sim.base_url()),
            (
                "GROK2API_UPSTREAM__CHAT_TRANSPORT".into(),
                options.transport.into(),
            ),
            ("GROK2API_UPSTREAM__CONNECT_TIMEOUT_SECS".into(), "5".into()),
            (
                "GROK2API_UPSTREAM__STREAM_IDLE_TIMEOUT_SECS".into(),
                "5".into(),
            ),
            ("GROK2API_CHAT__TIMEOUT_SECS".into(), "30".into()),
            ("GROK2API_SECURITY__TOKEN_KEY".into(), TOKEN_KEY.into()),
            (
                "GROK2API_LOG__LEVEL".into(),
                "info,grok2api=debug,gateway=debug,worker=debug,shared=debug".into(),
            ),
        ];
        let mut database = None;
        let mut blob_bucket = None;
        if shape == Shape::Distributed {
            let db = format!("g2a_e2e_{}", &id[..16]);
            create_database(&db).await;
            env.push(("GROK2API_BACKEND__QUEUE_URL".into(), amqp_url()));
            env.push(("GROK2API_BACKEND__REDIS_URL".into(), redis_url()));
            env.push((
                "GROK2API_BACKEND__DATABASE_URL".into(),
                with_database(&postgres_admin_url(), &db),
            ));
            database = Some(db);
            // Media in a bucket of its own, which every process shares.
            let bucket = format!("e2e-{}", &id[..16]);
            env.push(("GROK2API_BLOB__URL".into(), format!("s3://{bucket}")));
            env.push(("GROK2API_BLOB__ENDPOINT".into(), s3_endpoint()));
            env.push(("GROK2API_BLOB__ACCESS_KEY".into(), s3_access_key()));
            env.push(("GROK2API_BLOB__SECRET_KEY".into(), s3_secret_key()));
            blob_bucket = Some(bucket);
            for (key, value) in env.iter_mut() {
                if key.starts_with("GROK2API_BACKEND__") || key == "GROK2API_BLOB__ENDPOINT" {
                    for (from, to) in &options.backend_rewrites {
                        *value = value.replace(from.as_str(), to.as_str());
                    }
                }
            }
        }
        env.extend(options.extra_env.iter().cloned());
        let mut cluster = Cluster {
            shape,
            sim,
            gateways: vec![],
            processes: vec![],
            metrics: vec![],
            role_env: options.role_env.clone(),
            process_names: vec![],
            env: env.clone(),
            data_dir,
            log_dir,
            database,
            prefix,
            blob_bucket,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        match shape {
            Shape::Embedded => {
                let port = free_port();
                cluster.spawn("serve", &["serve"], &env, Some(port));
            }
            Shape::Distributed => {
                let status = Command::new(env!("CARGO_BIN_EXE_grok2api"))
                    .arg("migrate")
                    .envs(env.iter().cloned())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(cluster.log_dir.join("migrate.log")).unwrap())
                    .status()
                    .expect("migrate runs");
                assert!(
                    status.success(),
                    "migrate failed; see {}",
                    cluster.log_dir.display()
                );
                for i in 0..2 {
                    cluster.spawn(&format!("worker-{i}"), &["worker"], &env, None);
                }
                for i in 0..2 {
                    let port = free_port();
                    cluster.spawn(&format!("gateway-{i}"), &["gateway"], &env, Some(port));
                }
                if options.scheduler {
                    cluster.spawn("scheduler", &["scheduler"], &env, None);
                }
            }
        }
        for gw in cluster.gateways.clone() {
            cluster.wait_ready(&gw).await;
        }
        for (_, base) in cluster.metrics.clone() {
            cluster.wait_ready(&base).await;
        }
        cluster
    }

    fn spawn(&mut self, name: &str, args: &[&str], env: &[(String, String)], port: Option<u16>) {
        let log = std::fs::File::create(self.log_dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grok2api"));
        cmd.args(args)
            .envs(env.iter().cloned())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        if let Some(p) = port {
            cmd.env("GROK2API_SERVER__PORT", p.to_string());
            self.gateways.push(format!("http://127.0.0.1:{p}"));
        }
        let role = args.first().copied().unwrap_or_default();
        if matches!(role, "worker" | "scheduler") {
            let p = free_port();
            cmd.env("GROK2API_METRICS__LISTEN", format!("127.0.0.1:{p}"));
            self.metrics
                .push((name.to_owned(), format!("http://127.0.0.1:{p}")));
        }
        for (r, key, value) in &self.role_env {
            if *r == role {
                cmd.env(key, value);
            }
        }
        self.process_names.push(name.to_owned());
        self.processes.push(cmd.spawn().expect("grok2api starts"));
    }

    /// Starts one more process of the cluster (`args` as on the command line).
    pub fn spawn_process(&mut self, name: &str, args: &[&str]) {
        let env = self.env.clone();
        self.spawn(name, args, &env, None);
    }

    /// SIGKILLs the named process: no shutdown, nothing handed back.
    pub fn kill(&mut self, name: &str) {
        let i = self
            .process_names
            .iter()
            .position(|n| n == name)
            .expect("a process of that name");
        let _ = self.processes[i].kill();
        let _ = self.processes[i].wait();
    }

    /// The OS process id of the named process (the latest of that name).
    pub fn pid(&self, name: &str) -> u32 {
        let i = self
            .process_names
            .iter()
            .rposition(|n| n == name)
            .expect("a process of that name");
        self.processes[i].id()
    }

    /// The exit status of the named process, once it has exited.
    pub fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let i = self
            .process_names
            .iter()
            .rposition(|n| n == name)
            .expect("a process of that name");
        self.processes[i].try_wait().ok().flatten()
    }

    /// The unique prefix of the cluster's queues and Redis keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The log output of one named process so far.
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Kills gateway `i` (distributed shape) and starts it again on the same port, then
    /// waits until it is ready.
    pub async fn restart_gateway(&mut self, i: usize) {
        let name = format!("gateway-{i}");
        let at = self
            .process_names
            .iter()
            .rposition(|n| *n == name || n.starts_with(&format!("{name}-restart")))
            .expect("the gateway exists");
        let mut old = self.processes.remove(at);
        self.process_names.remove(at);
        let _ = old.kill();
        let _ = old.wait();
        let base = self.gateways[i].clone();
        let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
        let env = self.env.clone();
        let restarts = self
            .process_names
            .iter()
            .filter(|n| n.starts_with(&name))
            .count();
        self.spawn(
            &format!("{name}-restart{restarts}"),
            &["gateway"],
            &env,
            Some(port),
        );
        // spawn() lists the gateway again; it keeps its place.
        self.gateways.pop();
        self.wait_ready(&base).await;
    }

    async fn wait_ready(&mut self, base: &str) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self.http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            for p in &mut self.processes {
                if let Ok(Some(status)) = p.try_wait() {
                    panic!(
                        "a process exited early ({status}); logs in {}",
                        self.log_dir.display()
                    );
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{base} not ready; logs in {}",
                self.log_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Base URLs of every process's `/metrics`: gateways first, then workers and the
    /// scheduler (distributed shape) in start order.
    pub fn metrics_urls(&self) -> Vec<(String, String)> {
        let gateways = self
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("gateway-{i}"), g.clone()));
        gateways.chain(self.metrics.iter().cloned()).collect()
    }

    /// The text of one process's `/metrics`.
    pub async fn scrape(&self, base: &str) -> String {
        let r = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// The first gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateways[0])
    }

    /// Gateway `i` (modulo the number of gateways).
    pub fn url_at(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.gateways[i % self.gateways.len()])
    }

    /// Replaces the token set through the admin API.
    pub async fn set_tokens(&self, basic: &[&str], super_: &[&str]) {
        self.post_tokens(json!({"ssoBasic": basic, "ssoSuper": super_}))
            .await;
    }

    /// Posts a full token-set body (pool name to entries) and expects it accepted.
    pub async fn post_tokens(&self, body: Value) {
        let r = self
            .http
            .post(self.url("/v1/admin/tokens"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Tokens as the admin API lists them, flattened, keyed by the original token's id.
    pub async fn tokens(&self) -> Vec<Value> {
        let r = self
            .http
            .get(self.url("/v1/admin/tokens"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body.as_object()
            .unwrap()
            .values()
            .flat_map(|v| v.as_array().unwrap().clone())
            .collect()
    }

    pub async fn chat(&self, gateway: usize, body: Value) -> reqwest::Response {
        self.http
            .post(self.url_at(gateway, "/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The cluster's media store, as its processes see it: `data/media` when embedded, its
    /// bucket when distributed.
    pub async fn blob_store(&self) -> std::sync::Arc<dyn shared::blob::BlobStore> {
        match &self.blob_bucket {
            None => std::sync::Arc::new(
                shared::blob::local::LocalBlobStore::open(&self.data_dir.join("media"))
                    .await
                    .unwrap(),
            ),
            Some(bucket) => std::sync::Arc::new(
                shared::blob::s3::S3BlobStore::connect(&s3_blob_config(bucket))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Kills `grok2api serve` (embedded shape) without any shutdown and starts it again on
    /// the same port and data directory, then waits until it is ready.
    pub async fn restart_serve(&mut self) {
        let at = self
            .process_names
            .iter()
            .rposition(|n| n.starts_with("serve"))
            .expect("an embedded cluster");
        let mut old = self.processes.remove(at);
        self.process_names.remove(at);
        let _ = old.kill();
        let _ = old.wait();
        let base = self.gateways[0].clone();
        let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
        let env = self.env.clone();
        let restarts = self
            .process_names
            .iter()
            .filter(|n| n.starts_with("serve"))
            .count();
        self.spawn(
            &format!("serve-restart{restarts}"),
            &["serve"],
            &env,
            Some(port),
        );
        self.gateways.pop();
        self.wait_ready(&base).await;
    }

    /// Runs `grok2api <args>` to its end with the cluster's environment plus `extra_env`.
    pub fn run_command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_grok2api"))
            .args(args)
            .envs(self.env.iter().cloned())
            .envs(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .stdin(Stdio::null())
            .output()
            .expect("grok2api runs")
    }

    /// The URL of the cluster's store: its SQLite file, or its PostgreSQL database.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(db) => with_database(&postgres_admin_url(), db),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("grok2api.db").display()
            ),
        }
    }

    /// The cluster's store, opened as its processes open it.
    pub async fn store(&self) -> std::sync::Arc<dyn shared::store::Store> {
        let cipher =
            shared::crypto::TokenCipher::new(&shared::Secret::new(TOKEN_KEY), &[]).unwrap();
        shared::store::connect(&self.database_url(), cipher)
            .await
            .unwrap()
    }

    /// Stops the named process gracefully (SIGTERM, then waits for it to exit) and starts
    /// it again in the same role, on the same ports, with `changes` applied to the cluster's
    /// environment (kept for later starts too); waits until it is ready. One process at a
    /// time, this is a rolling restart.
    pub async fn respawn_with(&mut self, name: &str, changes: &[(&str, &str)]) {
        for (key, value) in changes {
            self.env.retain(|(k, _)| k != key);
            self.env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let at = self
            .process_names
            .iter()
            .rposition(|n| n == name || n.starts_with(&format!("{name}-respawn")))
            .expect("a process of that name");
        let _ = Command::new("kill")
            .args(["-TERM", &self.processes[at].id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while matches!(self.processes[at].try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.processes[at].kill();
        let _ = self.processes[at].wait();
        let role = name.split('-').next().unwrap_or(name).to_owned();
        let respawns = std::fs::read_dir(&self.log_dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                file.starts_with(&format!("{name}-respawn"))
            })
            .count();
        let log_name = format!("{name}-respawn{respawns}");
        let log = std::fs::File::create(self.log_dir.join(format!("{log_name}.log"))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grok2api"));
        cmd.arg(&role)
            .envs(self.env.iter().cloned())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        let mut ready_at = None;
        if matches!(role.as_str(), "serve" | "gateway") {
            let i: usize = name
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let base = self.gateways[i].clone();
            cmd.env("GROK2API_SERVER__PORT", base.rsplit(':').next().unwrap());
            ready_at = Some(base);
        } else if let Some((_, base)) = self.metrics.iter().find(|(n, _)| n == name) {
            cmd.env(
                "GROK2API_METRICS__LISTEN",
                base.trim_start_matches("http://"),
            );
            ready_at = Some(base.clone());
        }
        for (r, key, value) in &self.role_env {
            if *r == role {
                cmd.env(key, value);
            }
        }
        self.processes[at] = cmd.spawn().expect("grok2api starts");
        self.process_names[at] = log_name;
        if let Some(base) = ready_at {
            self.wait_ready(&base).await;
        }
    }

    /// All log output of the cluster's processes.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.log_dir).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(db) = self.database.take() {
            let prefix = self.prefix.clone();
            let bucket = self.blob_bucket.clone();
            // Drop runs inside a test's runtime; clean up on a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(cleanup(db, prefix));
                if let Some(bucket) = bucket {
                    rt.block_on(remove_bucket(&bucket));
                }
            })
            .join();
        }
    }
}

/// Empties and removes an S3 test bucket.
pub async fn remove_bucket(bucket: &str) {
    let creds =
        aws_sdk_s3::config::Credentials::new(s3_access_key(), s3_secret_key(), None, None, "e2e");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(s3_endpoint())
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    while let Ok(page) = client.list_objects_v2().bucket(bucket).send().await {
        if page.contents().is_empty() {
            break;
        }
        for object in page.contents() {
            if let Some(key) = object.key() {
                let _ = client.delete_object().bucket(bucket).key(key).send().await;
            }
        }
    }
    let _ = client.delete_bucket().bucket(bucket).send().await;
}

async fn create_database(db: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("postgres reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Removes what a distributed cluster left behind: its database, queues and Redis keys.
async fn cleanup(db: String, prefix: String) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
    if let Ok(q) = shared::queue::rabbitmq::RabbitQueue::connect(
        &amqp_url(),
        &prefix,
        3,
        Duration::from_secs(5),
    )
    .await
    {
        q.delete_all().await;
    }
    if let Ok(client) = redis::Client::open(redis_url())
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

/// Reads an SSE body into its `data:` payloads.
pub async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|frame| {
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// Concatenates the `delta.content` of chat chunks.
pub fn stream_content(data: &[String]) -> String {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Runs a scenario against both shapes.
#[macro_export]
macro_rules! both_shapes {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::harness::Shape::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn distributed() {
                super::$name($crate::harness::Shape::Distributed).await
            }
        }
    };
}
