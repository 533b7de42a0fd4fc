//! Safe fetching of URLs that users give us (`image_url` blocks, edit inputs,
//! image-to-video sources).
//!
//! A user URL must never become a way into our own network (SSRF). So:
//! - only `http` and `https`, no user info (`user:pass@`), ports 80 and 443 only;
//! - every address a host resolves to is checked (no loopback, private, link-local and
//!   metadata `169.254.169.254`, CGNAT, `0.0.0.0/8`, multicast, reserved, documentation,
//!   unique-local IPv6, and no IPv4-mapped, IPv4-compatible, NAT64, 6to4 or Teredo forms),
//!   and the connection is pinned to exactly the checked addresses (no second lookup a
//!   rebinding DNS server could answer differently);
//! - redirects are followed by hand, at most [`MAX_REDIRECTS`], each hop checked again;
//! - the body is capped while it streams, the whole fetch has a deadline, and fetches have a
//!   concurrency limit of their own, apart from upstream calls;
//! - the request carries no cookie, no `Authorization`, no proxy: a client of its own that
//!   has never seen an account token.
//!
//! Tests cannot reach a public address from here, so [`FetchPolicy::for_tests`] takes a
//! resolver that maps made-up names to loopback test servers and a list of exact socket
//! addresses the policy treats as public. Everything else is checked as in production; no
//! setting turns the checks off. End-to-end tests of the real binary name such servers in
//! [`TEST_HOSTS_ENV`], which only debug builds read: a release binary ignores it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::Semaphore;
use url::{Host, Url};

use crate::config::FetchConfig;

/// `name=ip:port,...`: made-up host names of loopback test servers that a debug build's
/// [`FetchPolicy::from_config`] and [`precheck_url`] treat as public (exactly that address
/// and port). Release builds never read it.
pub const TEST_HOSTS_ENV: &str = "GROK2API_TEST_FETCH_HOSTS";

/// The test hosts of [`TEST_HOSTS_ENV`] (debug builds only; always empty in release).
fn test_hosts() -> Vec<(String, SocketAddr)> {
    if !cfg!(debug_assertions) {
        return Vec::new();
    }
    let Ok(spec) = std::env::var(TEST_HOSTS_ENV) else {
        return Vec::new();
    };
    spec.split(',')
        .filter_map(|entry| {
            let (name, addr) = entry.trim().split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), addr.trim().parse().ok()?))
        })
        .collect()
}

/// The system resolver, except for the test hosts.
struct TestHostsResolver(HashMap<String, Vec<IpAddr>>);

#[async_trait::async_trait]
impl HostResolver for TestHostsResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        match self.0.get(host) {
            Some(ips) => Ok(ips.clone()),
            None => SystemResolver.resolve(host).await,
        }
    }
}

/// Hops followed after the first request.
pub const MAX_REDIRECTS: usize = 5;
/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 8192;
const USER_AGENT: &str = concat!("grok2api-fetch/", env!("CARGO_PKG_VERSION"));

/// Why a URL was not fetched. `code` and `status` are what the API caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Unparseable, too long, wrong scheme or carrying credentials.
    #[error("{0}")]
    InvalidUrl(String),
    /// The port or an address the host resolves to is not public.
    #[error("{0}")]
    Forbidden(String),
    #[error("the host {0} could not be resolved")]
    Unresolvable(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the media is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the media could not be fetched within {0} seconds")]
    Timeout(u64),
    #[error("the media URL answered HTTP {0}")]
    Status(u16),
    #[error("the media could not be fetched: {0}")]
    Network(String),
    #[error("too many media downloads at once; try again shortly")]
    Busy,
}

impl FetchError {
    /// A stable code for the API error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::InvalidUrl(_) => "invalid_media_url",
            FetchError::Forbidden(_) => "forbidden_media_url",
            FetchError::Unresolvable(_) => "unresolvable_media_url",
            FetchError::TooLarge(_) => "media_too_large",
            FetchError::Timeout(_) => "media_fetch_timeout",
            FetchError::TooManyRedirects | FetchError::Status(_) | FetchError::Network(_) => {
                "media_fetch_failed"
            }
            FetchError::Busy => "service_unavailable",
        }
    }

    /// The HTTP status for the caller: the URL is the caller's problem (400), except when
    /// this server is busy (503).
    pub fn status(&self) -> u16 {
        match self {
            FetchError::Busy => 503,
            _ => 400,
        }
    }
}

/// Turns a host name into addresses. The production one asks the system resolver.
#[async_trait::async_trait]
pub trait HostResolver: Send + Sync + 'static {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The system resolver.
#[derive(Debug, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl HostResolver for SystemResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// Fixed answers for made-up names (tests); unknown names do not resolve.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver(pub HashMap<String, Vec<IpAddr>>);

#[async_trait::async_trait]
impl HostResolver for StaticResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0
            .get(host)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown test host"))
    }
}

/// Limits and the resolver of a [`SafeFetcher`].
#[derive(Clone)]
pub struct FetchPolicy {
    pub max_bytes: u64,
    pub timeout: Duration,
    pub concurrency: usize,
    resolver: Arc<dyn HostResolver>,
    /// Exact socket addresses treated as public (tests only; empty in production).
    test_public: Vec<SocketAddr>,
}

impl std::fmt::Debug for FetchPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchPolicy")
            .field("max_bytes", &self.max_bytes)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("test_public", &self.test_public)
            .finish_non_exhaustive()
    }
}

impl FetchPolicy {
    /// The production policy from `[fetch]`.
    pub fn from_config(config: &FetchConfig) -> Self {
        let policy = Self {
            max_bytes: config.max_bytes,
            timeout: Duration::from_secs(config.timeout_secs),
            concurrency: config.concurrency,
            resolver: Arc::new(SystemResolver),
            test_public: Vec::new(),
        };
        let hosts = test_hosts();
        if hosts.is_empty() {
            return policy;
        }
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, addr) in &hosts {
            names.entry(name.clone()).or_default().push(addr.ip());
        }
        Self {
            resolver: Arc::new(TestHostsResolver(names)),
            test_public: hosts.into_iter().map(|(_, addr)| addr).collect(),
            ..policy
        }
    }

    /// For tests that run their servers on loopback: `resolver` maps made-up public names,
    /// and exactly the socket addresses in `public` (IP and port) pass the address and port
    /// rules. Any other address, including other ports on the same IP, is checked as usual.
    pub fn for_tests(
        config: &FetchConfig,
        resolver: Arc<dyn HostResolver>,
        public: Vec<SocketAddr>,
    ) -> Self {
        Self {
            resolver,
            test_public: public,
            ..Self::from_config(config)
        }
    }
}

/// A fetched body with what the server said about it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    /// The `Content-Type` without parameters, lower case, when the server sent one.
    pub content_type: Option<String>,
    /// The URL the body came from, after redirects.
    pub url: Url,
}

/// Fetches user URLs under a [`FetchPolicy`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SafeFetcher {
    policy: FetchPolicy,
    permits: Arc<Semaphore>,
}

/// The checks that need no network: parse, scheme, credentials, port, and literal IPs. The
/// gateway runs them to refuse bad URLs at once; [`SafeFetcher::fetch`] runs them again
/// on every hop together with the address checks.
pub fn precheck_url(raw: &str) -> Result<Url, FetchError> {
    let test_public: Vec<SocketAddr> = test_hosts().into_iter().map(|(_, addr)| addr).collect();
    precheck(raw, &test_public)
}

fn precheck(raw: &str, test_public: &[SocketAddr]) -> Result<Url, FetchError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(FetchError::InvalidUrl(format!(
            "media URLs are limited to {MAX_URL_BYTES} bytes"
        )));
    }
    let url = Url::parse(raw.trim())
        .map_err(|_| FetchError::InvalidUrl("the media URL is not a valid URL".into()))?;
    check_url(&url, test_public)?;
    Ok(url)
}

fn check_url(url: &Url, test_public: &[SocketAddr]) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::InvalidUrl(
            "media URLs must use http or https".into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::InvalidUrl(
            "media URLs must not carry credentials".into(),
        ));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| FetchError::InvalidUrl("the media URL has no port".into()))?;
    let test_port = test_public.iter().any(|a| a.port() == port);
    if !matches!(port, 80 | 443) && !test_port {
        return Err(FetchError::Forbidden(format!(
            "media URLs may only use ports 80 and 443, not {port}"
        )));
    }
    let literal = match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(Host::Domain("")) | None => {
            return Err(FetchError::InvalidUrl("the media URL has no host".into()));
        }
        Some(Host::Domain(_)) => None,
    };
    if let Some(ip) = literal {
        check_addr(SocketAddr::new(ip, port), test_public)?;
    }
    Ok(())
}

fn check_addr(addr: SocketAddr, test_public: &[SocketAddr]) -> Result<(), FetchError> {
    if test_public.contains(&addr) {
        return Ok(());
    }
    if !matches!(addr.port(), 80 | 443) || !is_public(addr.ip()) {
        return Err(FetchError::Forbidden(
            "the media URL points to an address that is not public".into(),
        ));
    }
    Ok(())
}

/// True for addresses on the public internet; false for anything that could reach this
/// machine, its network or a cloud metadata service.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network"
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, cloud metadata
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved and broadcast
    ];
    !BLOCKED.iter().any(|(net, bits)| in_v4(ip, *net, *bits))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Only global unicast (2000::/3) is public at all; that already excludes ::, ::1,
    // IPv4-mapped (::ffff:0:0/96) and -compatible forms, NAT64 (64:ff9b::/96,
    // 64:ff9b:1::/48), unique-local (fc00::/7), link-local (fe80::/10) and multicast.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    let blocked = [
        s[0] == 0x2001 && s[1] == 0x0db8, // documentation
        s[0] == 0x2001 && s[1] == 0x0000, // Teredo (embeds an IPv4 address)
        s[0] == 0x2001 && s[1] < 0x0200,  // other IETF special-purpose blocks
        s[0] == 0x2002,                   // 6to4 (embeds an IPv4 address)
        s[0] == 0x3fff && s[1] < 0x1000,  // documentation (3fff::/20)
    ];
    !blocked.iter().any(|b| *b)
}

impl SafeFetcher {
    pub fn new(policy: FetchPolicy) -> Self {
        let permits = Arc::new(Semaphore::new(policy.concurrency.max(1)));
        Self { policy, permits }
    }

    /// Largest body this fetcher accepts.
    pub fn max_bytes(&self) -> u64 {
        self.policy.max_bytes
    }

    /// Fetches `raw` (GET) under the policy: whole body in memory, at most `max_bytes`.
    pub async fn fetch(&self, raw: &str) -> Result<Fetched, FetchError> {
        let timeout = self.policy.timeout;
        let secs = timeout.as_secs().max(1);
        let deadline = tokio::time::Instant::now() + timeout;
        // Refuse bad URLs before waiting for a slot.
        let url = precheck(raw, &self.policy.test_public)?;
        let _permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| FetchError::Busy)?
            .expect("fetch semaphore is never closed");
        tokio::time::timeout_at(deadline, self.follow(url))
            .await
            .map_err(|_| FetchError::Timeout(secs))?
    }

    async fn follow(&self, mut url: Url) -> Result<Fetched, FetchError> {
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send_pinned(&url).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(FetchError::Status(status.as_u16()))?;
                let next = url.join(location).map_err(|_| {
                    FetchError::InvalidUrl("a redirect pointed to an invalid URL".into())
                })?;
                check_url(&next, &self.policy.test_public)?;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            return self.read_body(response, url).await;
        }
        Err(FetchError::TooManyRedirects)
    }

    /// One request to one URL, connected only to addresses that passed the checks.
    async fn send_pinned(&self, url: &Url) -> Result<reqwest::Response, FetchError> {
        check_url(url, &self.policy.test_public)?;
        let port = url.port_or_known_default().unwrap_or(0);
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(0)
            .connect_timeout(self.policy.timeout)
            .user_agent(USER_AGENT);
        if let Some(Host::Domain(host)) = url.host() {
            let ips = self
                .policy
                .resolver
                .resolve(host)
                .await
                .map_err(|_| FetchError::Unresolvable(host.to_owned()))?;
            if ips.is_empty() {
                return Err(FetchError::Unresolvable(host.to_owned()));
            }
            // Every answer must pass, not just one: a mix of public and private answers is
            // how rebinding attacks start.
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            for addr in &addrs {
                check_addr(*addr, &self.policy.test_public)?;
            }
            builder = builder.resolve_to_addrs(host, &addrs);
        }
        // A client per hop: it has no cookie store, no default headers, and its only DNS
        // answers are the pinned ones above.
        let client = builder
            .build()
            .map_err(|e| FetchError::Network(format!("client: {e}")))?;
        client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "image/*, video/*, */*;q=0.5")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    FetchError::Timeout(self.policy.timeout.as_secs().max(1))
                } else {
                    FetchError::Network("connection failed".into())
                }
            })
    }

    async fn read_body(
        &self,
        response: reqwest::Response,
        url: Url,
    ) -> Result<Fetched, FetchError> {
        let max = self.policy.max_bytes;
        if response.content_length().is_some_and(|n| n > max) {
            return Err(FetchError::TooLarge(max));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty());
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| FetchError::Network("the download broke off".into()))?;
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            bytes: body.freeze(),
            content_type,
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "2002:7f00:1::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn precheck_refuses_what_needs_no_lookup() {
        for (url, code) in [
            ("file:///etc/passwd", "invalid_media_url"),
            ("gopher://example.com/", "invalid_media_url"),
            ("ftp://example.com/x.png", "invalid_media_url"),
            ("http://user:pw@example.com/x.png", "invalid_media_url"),
            ("http://user@example.com/x.png", "invalid_media_url"),
            ("not a url", "invalid_media_url"),
            ("http://example.com:22/", "forbidden_media_url"),
            ("http://example.com:8080/", "forbidden_media_url"),
            ("http://127.0.0.1/", "forbidden_media_url"),
            ("http://0x7f000001/", "forbidden_media_url"),
            ("http://2130706433/", "forbidden_media_url"),
            ("http://017700000001/", "forbidden_media_url"),
            ("http://127.1/", "forbidden_media_url"),
            ("http://[::ffff:127.0.0.1]/", "forbidden_media_url"),
            ("http://[::1]/", "forbidden_media_url"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "forbidden_media_url",
            ),
            ("http://0.0.0.0/", "forbidden_media_url"),
        ] {
            let err = precheck_url(url).unwrap_err();
            assert_eq!(err.code(), code, "{url}: {err}");
            assert_eq!(err.status(), 400);
        }
        assert!(precheck_url("https://example.com/a.png").is_ok());
        assert!(precheck_url("http://8.8.8.8/a.png").is_ok());
    }
}
