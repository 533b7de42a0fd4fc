//! The SSRF guard against real HTTP servers on loopback.
//!
//! A "public" server runs on 127.0.0.1 and is the only address the test policy treats as
//! public; a "target" server, which no request may ever reach, listens on 127.0.0.2 on the
//! very same port. Every refused URL is checked against the target's connection count.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::config::FetchConfig;
use shared::fetch::{FetchError, FetchPolicy, SafeFetcher, StaticResolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n fake image bytes";

/// A minimal HTTP/1.1 server that counts connections and keeps each request's head.
struct TestServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(bind: SocketAddr) -> TestServer {
        let listener = TcpListener::bind(bind).await.expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (connections, requests) = (connections.clone(), requests.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, requests.clone()));
                }
            }
        });
        TestServer {
            addr,
            connections,
            requests,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, requests: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    requests.lock().unwrap().push(head.clone());
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let response: Vec<u8> = if path == "/ok.png" {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: image/png; charset=binary\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            PNG.len()
        )
        .into_bytes();
        r.extend_from_slice(PNG);
        r
    } else if let Some(to) = path.strip_prefix("/redirect/") {
        let location = urlencoding_decode(to);
        format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
    } else if let Some(n) = path.strip_prefix("/hops/") {
        // `/hops/N` takes N+1 redirects to reach the image.
        let location = match n.parse::<u32>().unwrap_or(0) {
            0 => "/ok.png".to_owned(),
            n => format!("/hops/{}", n - 1),
        };
        format!("HTTP/1.1 301 Moved Permanently\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
    } else if path == "/big-declared" {
        b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n".to_vec()
    } else if path == "/big-streamed" {
        // No length announced: the cap must hold while the body streams.
        let mut r =
            b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\nconnection: close\r\n\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'x', 5000));
        r
    } else if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    } else {
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Percent-decoding for the redirect target carried in the path.
fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The public server on 127.0.0.1, the forbidden target on 127.0.0.2 with the same port,
/// and a fetcher whose only "public" address is the public server's.
struct Setup {
    public: TestServer,
    target: TestServer,
    fetcher: SafeFetcher,
}

async fn setup(max_bytes: u64, timeout_secs: u64) -> Setup {
    // Find a port free on both addresses.
    let (public, target) = loop {
        let public = TestServer::start("127.0.0.1:0".parse().unwrap()).await;
        let same_port = SocketAddr::new("127.0.0.2".parse().unwrap(), public.addr.port());
        if let Ok(listener) = std::net::TcpListener::bind(same_port) {
            drop(listener);
            break (public, TestServer::start(same_port).await);
        }
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let resolver = StaticResolver(HashMap::from([
        ("media.example".to_owned(), vec![ip("127.0.0.1")]),
        ("rebind.example".to_owned(), vec![ip("127.0.0.2")]),
        (
            "mixed.example".to_owned(),
            vec![ip("127.0.0.1"), ip("127.0.0.2")],
        ),
        ("metadata.example".to_owned(), vec![ip("169.254.169.254")]),
        ("mapped.example".to_owned(), vec![ip("::ffff:127.0.0.2")]),
    ]));
    let config = FetchConfig {
        max_bytes,
        timeout_secs,
        concurrency: 4,
    };
    let policy = FetchPolicy::for_tests(&config, Arc::new(resolver), vec![public.addr]);
    Setup {
        fetcher: SafeFetcher::new(policy),
        public,
        target,
    }
}

#[tokio::test]
async fn good_fetch_arrives_without_cookie_or_authorization() {
    let s = setup(1024, 10).await;
    let port = s.public.addr.port();
    let fetched = s
        .fetcher
        .fetch(&format!("http://media.example:{port}/ok.png"))
        .await
        .unwrap();
    assert_eq!(&fetched.bytes[..], PNG);
    assert_eq!(fetched.content_type.as_deref(), Some("image/png"));
    let requests = s.public.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let head = requests[0].to_ascii_lowercase();
    assert!(head.starts_with("get /ok.png http/1.1"), "{head}");
    assert!(head.contains("host: media.example:"), "{head}");
    for header in ["cookie", "authorization", "proxy-authorization"] {
        assert!(
            !head.contains(&format!("\n{header}:")),
            "{header} sent: {head}"
        );
    }
    assert_eq!(s.target.connections(), 0);
}

#[tokio::test]
async fn refused_urls_never_reach_their_target() {
    let s = setup(1024, 5).await;
    let port = s.public.addr.port();
    let cases = [
        // The target itself, by literal address in every spelling.
        (
            format!("http://127.0.0.2:{port}/ok.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://0x7f000002:{port}/ok.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://2130706434:{port}/ok.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://0177.0.0.2:{port}/ok.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://[::ffff:127.0.0.2]:{port}/ok.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://[::ffff:7f00:2]:{port}/ok.png"),
            "forbidden_media_url",
        ),
        // Names that resolve to it, alone or mixed with an allowed answer.
        (
            format!("http://rebind.example:{port}/ok.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://mixed.example:{port}/ok.png"),
            "forbidden_media_url",
        ),
        (
            format!("http://mapped.example:{port}/ok.png"),
            "forbidden_media_url",
        ),
        // Loopback and metadata on the standard port.
        ("http://127.0.0.1/".to_owned(), "forbidden_media_url"),
        ("http://localhost/".to_owned(), "unresolvable_media_url"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "forbidden_media_url",
        ),
        (
            "http://metadata.example/latest/".to_owned(),
            "forbidden_media_url",
        ),
        ("http://[::1]/".to_owned(), "forbidden_media_url"),
        // Other schemes, credentials, other ports.
        ("file:///etc/passwd".to_owned(), "invalid_media_url"),
        (format!("gopher://127.0.0.2:{port}/_x"), "invalid_media_url"),
        (
            format!("http://user:pw@media.example:{port}/ok.png"),
            "invalid_media_url",
        ),
        (
            format!("http://user@media.example:{port}/ok.png"),
            "invalid_media_url",
        ),
        ("http://media.example:22/".to_owned(), "forbidden_media_url"),
    ];
    for (url, code) in &cases {
        let err = s.fetcher.fetch(url).await.unwrap_err();
        assert_eq!(err.code(), *code, "{url}: {err}");
        assert_eq!(err.status(), 400, "{url}");
    }
    assert_eq!(
        s.target.connections(),
        0,
        "a refused URL reached the target"
    );
    assert_eq!(
        s.public.connections(),
        0,
        "credentials URL reached the server"
    );
}

#[tokio::test]
async fn redirects_are_checked_again() {
    let s = setup(1024, 5).await;
    let port = s.public.addr.port();
    let base = format!("http://media.example:{port}");
    for to in [
        format!("http://127.0.0.2:{port}/ok.png"),
        format!("http://rebind.example:{port}/ok.png"),
        format!("http://[::ffff:127.0.0.2]:{port}/ok.png"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "file:///etc/passwd".to_owned(),
        format!("http://user:pw@media.example:{port}/ok.png"),
    ] {
        let url = format!("{base}/redirect/{}", encode(&to));
        let err = s.fetcher.fetch(&url).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Forbidden(_) | FetchError::InvalidUrl(_)),
            "{to}: {err:?}"
        );
    }
    assert_eq!(s.target.connections(), 0, "a redirect reached the target");
    assert_eq!(s.public.connections(), 6);
    // A relative redirect to an allowed place is followed.
    let fetched = s
        .fetcher
        .fetch(&format!("{base}/redirect/{}", encode("/ok.png")))
        .await
        .unwrap();
    assert_eq!(&fetched.bytes[..], PNG);
    assert!(fetched.url.path().ends_with("/ok.png"));
}

#[tokio::test]
async fn redirect_chains_are_cut_after_five_hops() {
    let s = setup(1024, 10).await;
    let port = s.public.addr.port();
    let base = format!("http://media.example:{port}");
    // Six redirects before the image: one too many.
    assert_eq!(
        s.fetcher
            .fetch(&format!("{base}/hops/5"))
            .await
            .unwrap_err(),
        FetchError::TooManyRedirects
    );
    assert_eq!(s.public.connections(), 6);
    // Five are fine.
    let fetched = s.fetcher.fetch(&format!("{base}/hops/4")).await.unwrap();
    assert_eq!(&fetched.bytes[..], PNG);
    assert_eq!(s.public.connections(), 12);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let s = setup(1000, 10).await;
    let port = s.public.addr.port();
    for path in ["/big-declared", "/big-streamed"] {
        let err = s
            .fetcher
            .fetch(&format!("http://media.example:{port}{path}"))
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::TooLarge(1000), "{path}");
        assert_eq!(err.code(), "media_too_large");
    }
}

#[tokio::test]
async fn slow_servers_time_out_and_errors_are_reported() {
    let s = setup(1000, 1).await;
    let port = s.public.addr.port();
    let err = s
        .fetcher
        .fetch(&format!("http://media.example:{port}/hang"))
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::Timeout(1));
    let err = s
        .fetcher
        .fetch(&format!("http://media.example:{port}/missing"))
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::Status(404));
    assert_eq!(err.code(), "media_fetch_failed");
}
