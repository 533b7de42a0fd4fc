//! Where the test services are, and names that keep parallel tests apart.
//!
//! Each URL can be overridden by environment, so the suite runs against any server.

#![allow(dead_code)]

pub fn amqp_url() -> String {
    std::env::var("GROK2API_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn redis_url() -> String {
    std::env::var("GROK2API_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A PostgreSQL URL for a server where the test user may create databases.
pub fn postgres_admin_url() -> String {
    std::env::var("GROK2API_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A prefix unique to one test, for queue names and Redis keys.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{}-{}", test, uuid::Uuid::new_v4().simple())
}

/// A TCP forwarder on a random loopback port in front of a test server. Cutting it breaks
/// every connection made through it, as a network fault would, while the server keeps
/// running and the forwarder keeps accepting new connections.
pub struct TcpProxy {
    /// The server URL with its host and port replaced by the forwarder's.
    pub url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to the host and port of `server_url`.
    pub async fn start(server_url: &str) -> TcpProxy {
        use std::net::ToSocketAddrs;
        use std::sync::atomic::Ordering;

        let mut url = url::Url::parse(server_url).expect("server URL");
        let upstream = (
            url.host_str().expect("host"),
            url.port().expect("explicit port"),
        )
            .to_socket_addrs()
            .expect("resolvable server address")
            .next()
            .expect("one server address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        url.set_host(Some("127.0.0.1")).expect("set host");
        url.set_port(Some(port)).expect("set port");

        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let acceptor = tokio::spawn({
            let accepted = accepted.clone();
            let links = links.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link.abort_handle());
                }
            }
        });
        TcpProxy {
            url: url.to_string(),
            accepted,
            links,
            acceptor,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Breaks every connection open through the forwarder.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// Waits for the next item of a stream, failing the test if none comes within a bound
/// generous enough for a loaded machine.
pub async fn next_within<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("stream produced nothing within 10 s")
}

/// True if the stream yields nothing (neither an item nor its end) for `ms` milliseconds.
pub async fn stays_quiet<S: futures::Stream + Unpin>(stream: &mut S, ms: u64) -> bool {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_millis(ms), stream.next())
        .await
        .is_err()
}

/// Deletes every Redis key under `prefix` (the keys one test created).
pub async fn purge_redis(prefix: &str) {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

/// Creates an empty PostgreSQL database for one test; returns its name and URL.
pub async fn create_postgres_db() -> (String, String) {
    use sqlx::Executor;
    let name = format!("g2a_{}", uuid::Uuid::new_v4().simple());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url())
        .await
        .expect("connect to the PostgreSQL admin database");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("CREATE DATABASE");
    let mut url = url::Url::parse(&postgres_admin_url()).expect("admin url");
    url.set_path(&format!("/{name}"));
    (name, url.to_string())
}

/// Drops a database made by [`create_postgres_db`], closing any connection still open.
pub async fn drop_postgres_db(name: &str) {
    use sqlx::Executor;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url())
        .await
        .expect("connect to the PostgreSQL admin database");
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .expect("DROP DATABASE");
}

/// Runs `case` on its own task, then `cleanup` whether or not the case panicked, then
/// re-raises the case's panic: resources are released even when an assertion fails.
pub async fn run_then_cleanup<C, D>(case: C, cleanup: D)
where
    C: std::future::Future<Output = ()> + Send + 'static,
    D: std::future::Future<Output = ()>,
{
    let outcome = tokio::spawn(case).await;
    cleanup.await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
