//! A TCP fault proxy: listens on a random loopback port and forwards every connection to a
//! target, until told to misbehave. The shared RabbitMQ, Redis, PostgreSQL and S3 servers
//! must never be restarted or paused by a test, so a cluster reaches them through one of
//! these and the test breaks the proxy instead.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 16 * 1024;

/// How the proxy treats traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward everything.
    Pass,
    /// Close every new connection at once, as a server that is down would.
    Refuse,
    /// Hold every byte in both directions, as a paused (SIGSTOPped) server would.
    Stall,
}

struct Shared {
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    latency_ms: watch::Sender<u64>,
    /// Cancelled to cut every open connection; replaced by a fresh token afterwards.
    cut: Mutex<CancellationToken>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts forwarding `127.0.0.1:<random>` to `target` (`host:port`).
    pub async fn start(target: &str) -> FaultProxy {
        let target = tokio::net::lookup_host(target)
            .await
            .expect("proxy target resolves")
            .next()
            .expect("proxy target has an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            mode: watch::channel(Mode::Pass).0,
            latency_ms: watch::channel(0).0,
            cut: Mutex::new(CancellationToken::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        FaultProxy { addr, shared, stop }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Like a server going down: every open connection is cut and new ones are refused
    /// until [`FaultProxy::heal`].
    pub fn go_down(&self) {
        self.shared.mode.send_replace(Mode::Refuse);
        self.cut_all();
    }

    /// Like a paused server: connections stay open, but no byte moves either way until
    /// [`FaultProxy::heal`].
    pub fn pause(&self) {
        self.shared.mode.send_replace(Mode::Stall);
    }

    /// Back to forwarding everything (held bytes flow again).
    pub fn heal(&self) {
        self.shared.mode.send_replace(Mode::Pass);
    }

    /// Adds `latency` before every forwarded chunk.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .send_replace(latency.as_millis() as u64);
    }

    /// Cuts every open connection (new ones are still accepted unless refused).
    pub fn cut_all(&self) {
        let mut cut = self.shared.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let Ok((client, _)) = accepted else { continue };
        if *shared.mode.borrow() == Mode::Refuse {
            drop(client);
            continue;
        }
        let cut = shared.cut.lock().unwrap().clone();
        tokio::spawn(connection(client, shared.clone(), cut));
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>, cut: CancellationToken) {
    // A paused server does not even complete the handshake of its protocol; hold the
    // client here until the pause ends.
    if !wait_passing(&shared, &cut).await {
        return;
    }
    let server = tokio::select! {
        s = TcpStream::connect(shared.target) => s,
        _ = cut.cancelled() => return,
    };
    let Ok(server) = server else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pipe(client_read, server_write, &shared, &cut) => {}
        _ = pipe(server_read, client_write, &shared, &cut) => {}
        _ = cut.cancelled() => {}
    }
}

/// Waits while the proxy is stalled; false when the connection is cut or refused meanwhile.
async fn wait_passing(shared: &Shared, cut: &CancellationToken) -> bool {
    let mut mode = shared.mode.subscribe();
    loop {
        match *mode.borrow_and_update() {
            Mode::Pass => return true,
            Mode::Refuse => return false,
            Mode::Stall => {}
        }
        tokio::select! {
            changed = mode.changed() => if changed.is_err() { return false },
            _ = cut.cancelled() => return false,
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    cut: &CancellationToken,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !wait_passing(shared, cut).await {
            return;
        }
        let latency = *shared.latency_ms.borrow();
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
