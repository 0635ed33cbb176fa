//! The shared reqwest client builder, a guarded downloader for result URLs, and helpers that
//! turn HTTP failures into [`ProviderError`]s.
//!
//! Name resolution goes through hickory (never glibc NSS: a static binary crashes in NSS
//! modules, see build-notes.md). Result URLs come from a third party, so the [`Downloader`]
//! refuses to connect to loopback/private/link-local addresses unless the provider itself lives
//! on such an address (a LAN ComfyUI, a test fake on 127.0.0.1); see [`AddressPolicy`].

use super::ProviderError;
use base64::Engine as _;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// `User-Agent` sent on every provider request.
pub const USER_AGENT: &str = concat!("mediabot/", env!("CARGO_PKG_VERSION"));
/// TCP + TLS connect timeout for every provider request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest result file a provider may hand us (bytes).
pub const MAX_DOWNLOAD_BYTES: u64 = 50 * 1024 * 1024;
/// Overall time for one result download (headers + body).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest video or animation a provider may hand us (bytes): 200 MiB, above what a 15 s
/// 1080p clip weighs (a few tens of MB) with room for high bitrates. Pictures keep
/// [`MAX_DOWNLOAD_BYTES`]. What can be sent to Telegram is decided later, by the job.
pub const MAX_VIDEO_BYTES: u64 = 200 * 1024 * 1024;
/// Overall time for one video download: 200 MiB at ~3 MB/s.
pub const VIDEO_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// A client builder with the settings every provider shares: rustls, hickory DNS, connect
/// timeout 10 s, `read_timeout` between body reads, `User-Agent: mediabot/<version>`.
/// Callers add per-request `.timeout(..)` where a whole exchange must be bounded.
pub fn builder(read_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .hickory_dns(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(read_timeout)
        .user_agent(USER_AGENT)
}

/// A client for one provider: [`builder`] plus the provider's own proxy, if configured.
pub fn client_for(
    cfg: &crate::config::ProviderConfig,
    read_timeout: Duration,
) -> Result<reqwest::Client, ProviderError> {
    let mut b = builder(read_timeout);
    if let Some(p) = &cfg.proxy {
        b = b.proxy(proxy(p)?);
    }
    b.build().map_err(|e| ProviderError::Failed(format!("cannot build HTTP client: {e}")))
}

/// A provider's configured proxy. The URL may carry credentials, so errors never quote it.
fn proxy(url: &str) -> Result<reqwest::Proxy, ProviderError> {
    reqwest::Proxy::all(url).map_err(|_| ProviderError::Failed("the provider's proxy is not a proxy URL".into()))
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these providers), capped at
/// 10 minutes.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(600)))
}

/// Maps a transport error (no HTTP status) to a [`ProviderError`]: a refused address is final
/// (`Failed`), a body that is not the expected JSON is `Failed("malformed response …")`, and
/// everything else (connect, timeout, reset) is `Transient`.
pub fn classify(err: &reqwest::Error) -> ProviderError {
    if let Some(blocked) = find_blocked(err) {
        return ProviderError::Failed(blocked.to_string());
    }
    if err.is_decode() {
        return ProviderError::Failed(format!("malformed response: {err}"));
    }
    if let Some(status) = err.status() {
        return ProviderError::from_status(status.as_u16(), &err.to_string());
    }
    ProviderError::Transient(describe(err))
}

/// reqwest's `Display` omits the cause ("error sending request"); keep the chain for logs.
pub fn describe(err: &reqwest::Error) -> String {
    let mut out = err.to_string();
    let mut src = std::error::Error::source(err);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    let url = err.url().map(|u| redact_url(u.as_str())).unwrap_or_default();
    if url.is_empty() { out } else { format!("{out} ({url})") }
}

fn find_blocked<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BlockedAddress> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<BlockedAddress>() {
            return Some(b);
        }
        cur = e.source();
    }
    None
}

/// Result URLs may carry signed query strings; logs get scheme, host and path only.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => url.chars().take(80).collect(),
    }
}

/// Classifies an HTTP error answer: the human part of the body (FastAPI `detail`, `message`,
/// ComfyUI `error.message`) goes into [`ProviderError::from_status`].
pub fn status_error(status: u16, body: &str) -> ProviderError {
    ProviderError::from_status(status, &error_detail(body))
}

/// Extracts a readable message from an error body. Handles FastAPI `{"detail": "msg"}` and
/// 422 `{"detail": [{"loc": [..], "msg": ".."}]}` (protocols.md §2.5), `{"message"}`,
/// `{"error": "msg"}` and `{"error": {"message"}}`; anything else is returned as is (trimmed).
pub fn error_detail(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.trim().to_string();
    };
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    if let Some(d) = v.get("detail") {
        if let Some(s) = text(d) {
            return s;
        }
        if let Some(items) = d.as_array() {
            let parts: Vec<String> = items
                .iter()
                .map(|i| {
                    let msg = i.get("msg").and_then(|m| m.as_str()).unwrap_or("invalid");
                    let loc: Vec<String> = i
                        .get("loc")
                        .and_then(|l| l.as_array())
                        .map(|l| {
                            l.iter()
                                .filter(|p| p.as_str() != Some("body"))
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    if loc.is_empty() { msg.to_string() } else { format!("{}: {msg}", loc.join(".")) }
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
    }
    if let Some(s) = v.get("message").and_then(text) {
        return s;
    }
    if let Some(e) = v.get("error") {
        if let Some(s) = text(e).or_else(|| e.get("message").and_then(text)) {
            return s;
        }
    }
    body.trim().to_string()
}

/// Which peer addresses a download may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Only globally routable addresses (the provider is on the internet).
    GlobalOnly,
    /// Anything, including loopback and private ranges (the provider itself is on one).
    AllowPrivate,
}

impl AddressPolicy {
    /// The rule, kept simple on purpose: if the provider's own `base_url` host is an IP literal
    /// that is not global, or `localhost`, its result URLs may be private too; otherwise (a
    /// public IP or any host name) only global addresses are allowed. A LAN provider addressed
    /// by name therefore needs its IP in `base_url`.
    pub fn for_base_url(base_url: &str) -> AddressPolicy {
        let Ok(u) = url::Url::parse(base_url) else {
            return AddressPolicy::GlobalOnly;
        };
        let private = match u.host() {
            Some(url::Host::Ipv4(ip)) => !is_global(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => !is_global(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        if private { AddressPolicy::AllowPrivate } else { AddressPolicy::GlobalOnly }
    }

    pub fn permits(self, ip: IpAddr) -> bool {
        self == AddressPolicy::AllowPrivate || is_global(ip)
    }
}

/// True for addresses routable on the public internet. Refuses loopback, unspecified, private
/// (RFC 1918, ULA), link-local, CGNAT, documentation, benchmarking, multicast, broadcast and
/// reserved ranges, and IPv4 embedded in IPv6 (mapped, NAT64) by the same rules.
/// (`std`'s `is_global` is unstable; this is the subset that matters for SSRF.)
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                    // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && (c == 0 || c == 2)) // IETF protocol assignments, TEST-NET-1
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))    // benchmarking
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224) // multicast, reserved, broadcast
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    let s = ip.segments();
    // NAT64 64:ff9b::/96 carries an IPv4 address in the low 32 bits.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let o = ip.octets();
        return is_global_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated) and friends
}

/// The error raised when a download would reach a refused address.
#[derive(Debug, thiserror::Error)]
#[error("refusing to download from non-global address {0}")]
pub struct BlockedAddress(pub IpAddr);

/// Resolves host names with hickory (reading /etc/hosts and /etc/resolv.conf itself). Built on
/// first use because hickory needs a running tokio runtime.
#[derive(Clone, Default)]
pub struct HostResolver {
    inner: Arc<OnceLock<TokioResolver>>,
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostResolver")
    }
}

impl HostResolver {
    fn resolver(&self) -> Result<&TokioResolver, std::io::Error> {
        if let Some(r) = self.inner.get() {
            return Ok(r);
        }
        let mut b = TokioResolver::builder_tokio().map_err(std::io::Error::other)?;
        b.options_mut().ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        // A concurrent first call may have won the race; either resolver is fine.
        Ok(self.inner.get_or_init(|| b.build()))
    }

    /// All addresses of `host` (an IP literal is returned as is), with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, std::io::Error> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = self.resolver()?.lookup_ip(host).await.map_err(std::io::Error::other)?;
        Ok(lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }
}

/// A reqwest resolver that drops refused addresses, so a name that points inside the network
/// fails before any connection is made (redirect targets included).
#[derive(Debug, Clone)]
struct GuardedResolver {
    resolver: HostResolver,
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.resolver.lookup(name.as_str(), 0).await?;
            let first = addrs.first().map(|a| a.ip());
            let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| this.policy.permits(a.ip())).collect();
            match (allowed.is_empty(), first) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                (true, Some(ip)) => Err(Box::new(BlockedAddress(ip)) as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err("no addresses".into()),
            }
        })
    }
}

/// A downloaded file.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub bytes: Vec<u8>,
    /// `Content-Type` as sent (or the MIME of a data URI), if any.
    pub content_type: Option<String>,
}

/// Fetches result URLs safely: `http(s)` or `data:` only, refused addresses per
/// [`AddressPolicy`] (checked at resolution and for IP-literal hosts, redirects included),
/// [`DOWNLOAD_TIMEOUT`] per file and a size cap ([`MAX_DOWNLOAD_BYTES`] by default).
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    policy: AddressPolicy,
    max_bytes: u64,
    timeout: Duration,
}

impl Downloader {
    /// A downloader that connects directly, or through `proxy` (the provider's own `proxy`
    /// setting) when given. The system proxy (`HTTP_PROXY` and friends) is never used: a
    /// proxy resolves and connects for us, past the address filter.
    ///
    /// Errors: `Failed` if the proxy URL or the HTTP client is unusable.
    pub fn new(policy: AddressPolicy, proxy: Option<&str>) -> Result<Downloader, ProviderError> {
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("too many redirects");
            }
            match literal_ip(attempt.url()) {
                Some(ip) if !policy.permits(ip) => attempt.error(BlockedAddress(ip)),
                _ => attempt.follow(),
            }
        });
        let mut b = builder(Duration::from_secs(30))
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { resolver: HostResolver::default(), policy }))
            .redirect(redirect);
        if let Some(p) = proxy {
            b = b.proxy(self::proxy(p)?);
        }
        let client = b.build().map_err(|e| ProviderError::Failed(format!("cannot build HTTP client: {e}")))?;
        Ok(Downloader { client, policy, max_bytes: MAX_DOWNLOAD_BYTES, timeout: DOWNLOAD_TIMEOUT })
    }

    /// The same downloader for video files: cap [`MAX_VIDEO_BYTES`], timeout
    /// [`VIDEO_DOWNLOAD_TIMEOUT`] (same client, same address policy).
    pub fn for_video(&self) -> Downloader {
        Downloader { max_bytes: MAX_VIDEO_BYTES, timeout: VIDEO_DOWNLOAD_TIMEOUT, ..self.clone() }
    }

    /// Changes the size cap (bytes).
    #[cfg(test)]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Downloader {
        self.max_bytes = max_bytes;
        self
    }

    /// Downloads `url` (or decodes it, for a `data:` URI).
    ///
    /// Errors: `Failed` for a refused scheme/address, a file over the cap, a bad data URI or an
    /// HTTP error status; `Transient` for 408/429/5xx, network failures and timeouts.
    pub async fn fetch(&self, url: &str) -> Result<Downloaded, ProviderError> {
        if url.starts_with("data:") {
            let (mime, bytes) = decode_data_uri(url)?;
            if bytes.len() as u64 > self.max_bytes {
                return Err(too_big(self.max_bytes));
            }
            return Ok(Downloaded { bytes, content_type: Some(mime) });
        }
        let parsed =
            url::Url::parse(url).map_err(|_| ProviderError::Failed(format!("bad result URL {}", redact_url(url))))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProviderError::Failed(format!("refusing {} URL", parsed.scheme())));
        }
        // hyper connects to IP-literal hosts without asking the resolver.
        if let Some(ip) = literal_ip(&parsed) {
            if !self.policy.permits(ip) {
                return Err(ProviderError::Failed(BlockedAddress(ip).to_string()));
            }
        }
        let resp = self.client.get(parsed).timeout(self.timeout).send().await.map_err(|e| classify(&e))?;
        let status = resp.status();
        if !status.is_success() {
            // A result file is not a model: 404 means "gone", not "retired"; 401/403 from a
            // CDN means an expired link, not a bad key. Only overload is worth a retry.
            let s = status.as_u16();
            return Err(match s {
                408 | 429 | 500..=599 => ProviderError::Transient(format!("result download: HTTP {s}")),
                _ => ProviderError::Failed(format!("result download: HTTP {s}")),
            });
        }
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = read_limited(resp, self.max_bytes).await?;
        Ok(Downloaded { bytes, content_type })
    }
}

fn literal_ip(u: &url::Url) -> Option<IpAddr> {
    match u.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

fn too_big(max: u64) -> ProviderError {
    ProviderError::Failed(format!("result file larger than {} MB", max / (1024 * 1024)))
}

/// Reads a response body, failing as soon as it exceeds `max` bytes (the declared
/// `Content-Length` is checked first, but a lying or absent header is caught while streaming).
///
/// Errors: `Failed` when too big; `Transient` when the connection breaks or stalls.
pub async fn read_limited(mut resp: reqwest::Response, max: u64) -> Result<Vec<u8>, ProviderError> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_big(max));
    }
    let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0).min(max) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(too_big(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Decodes `data:<mime>[;params];base64,<data>` (and the rare percent-encoded form without
/// `;base64`). Returns the MIME type (default `text/plain`) and the bytes.
///
/// Errors: `Failed("malformed data URI")`.
pub fn decode_data_uri(uri: &str) -> Result<(String, Vec<u8>), ProviderError> {
    let bad = || ProviderError::Failed("malformed data URI".into());
    let rest = uri.strip_prefix("data:").ok_or_else(bad)?;
    let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
    let mut parts = meta.split(';');
    let mime = parts.next().filter(|m| !m.is_empty()).unwrap_or("text/plain").to_string();
    let is_b64 = parts.any(|p| p.eq_ignore_ascii_case("base64"));
    let bytes = if is_b64 {
        let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(clean.as_bytes())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(clean.trim_end_matches('=')))
            .map_err(|_| bad())?
    } else {
        percent_decode(data)
    };
    Ok((mime, bytes))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Encodes bytes as a `data:<mime>;base64,…` URI (fal accepts these for image inputs, §2.4).
pub fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip literal")
    }

    #[test]
    fn global_addresses() {
        for g in ["8.8.8.8", "1.1.1.1", "104.18.0.1", "2606:4700::1111", "2a00:1450:4001::200e"] {
            assert!(is_global(ip(g)), "{g} is global");
        }
        for p in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.10",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::2",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_global(ip(p)), "{p} is not global");
        }
        assert!(is_global(ip("172.32.0.1")));
        assert!(is_global(ip("::ffff:8.8.8.8")));
    }

    #[test]
    fn policy_follows_the_provider_base_url() {
        use AddressPolicy::*;
        assert_eq!(AddressPolicy::for_base_url("https://queue.fal.run"), GlobalOnly);
        assert_eq!(AddressPolicy::for_base_url("http://127.0.0.1:8188"), AllowPrivate);
        assert_eq!(AddressPolicy::for_base_url("http://192.168.1.20:8188/"), AllowPrivate);
        assert_eq!(AddressPolicy::for_base_url("http://[::1]:9000"), AllowPrivate);
        assert_eq!(AddressPolicy::for_base_url("http://localhost:8188"), AllowPrivate);
        assert_eq!(AddressPolicy::for_base_url("http://8.8.8.8"), GlobalOnly);
        assert_eq!(AddressPolicy::for_base_url("not a url"), GlobalOnly);
        assert!(!GlobalOnly.permits(ip("127.0.0.1")));
        assert!(GlobalOnly.permits(ip("8.8.8.8")));
        assert!(AllowPrivate.permits(ip("127.0.0.1")));
    }

    #[tokio::test]
    async fn downloader_refuses_private_literals_and_odd_schemes() {
        let d = Downloader::new(AddressPolicy::GlobalOnly, None).expect("client");
        for url in ["http://127.0.0.1:1/x.png", "http://[::1]/x", "http://169.254.169.254/latest", "http://10.0.0.1/a"]
        {
            let e = d.fetch(url).await.expect_err("must refuse");
            assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("non-global")), "{url}: {e:?}");
        }
        let e = d.fetch("file:///etc/passwd").await.expect_err("must refuse");
        assert!(matches!(e, ProviderError::Failed(_)), "{e:?}");
    }

    #[tokio::test]
    async fn downloader_refuses_names_resolving_to_loopback() {
        // "localhost" resolves through /etc/hosts to 127.0.0.1 / ::1.
        let d = Downloader::new(AddressPolicy::GlobalOnly, None).expect("client");
        let e = d.fetch("http://localhost:9/x.png").await.expect_err("must refuse");
        match e {
            ProviderError::Failed(m) => assert!(m.contains("non-global"), "{m}"),
            // No /etc/hosts entry in some sandboxes: the lookup fails instead, also refused.
            ProviderError::Transient(m) => assert!(!m.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn downloader_fetches_private_when_allowed_and_caps_size() {
        let fal = crate::tests::fakes::FakeFal::start().await;
        let url = format!("{}/files/x.png", fal.base_url());
        assert_eq!(AddressPolicy::for_base_url(&fal.base_url()), AddressPolicy::AllowPrivate);
        let d = Downloader::new(AddressPolicy::AllowPrivate, None).expect("client");
        let got = d.fetch(&url).await.expect("download");
        assert_eq!(got.bytes, fal.result_png());
        assert_eq!(got.content_type.as_deref(), Some("image/png"));
        let small = d.clone().with_max_bytes(1000);
        let e = small.fetch(&url).await.expect_err("too big");
        assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("larger than")), "{e:?}");
        let e =
            Downloader::new(AddressPolicy::GlobalOnly, None).expect("client").fetch(&url).await.expect_err("refused");
        assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("non-global")), "{e:?}");
        let e = d.fetch(&format!("{}/files/", fal.base_url())).await.expect_err("404");
        assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("404")), "{e:?}");
    }

    /// A fake HTTP proxy on loopback: counts connections and answers every request with a
    /// 3-byte body `via`.
    fn fake_proxy() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nvia");
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn downloader_uses_the_providers_own_proxy() {
        let (proxy, seen) = fake_proxy();
        let d = Downloader::new(AddressPolicy::AllowPrivate, Some(&format!("http://{proxy}"))).expect("client");
        let got = d.fetch("http://127.0.0.1:9/x.png").await.expect("through the proxy");
        assert_eq!(got.bytes, b"via");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn downloader_ignores_the_system_proxy() {
        // reqwest reads HTTP_PROXY when a client is built, and this process's environment
        // must not change under other tests: the check runs in a child with the variables set.
        let (proxy, seen) = fake_proxy();
        let exe = std::env::current_exe().expect("test binary");
        let url = format!("http://{proxy}");
        let out = std::process::Command::new(exe)
            .args(["--exact", "providers::http::tests::system_proxy_child", "--ignored", "--test-threads=1"])
            .env("HTTP_PROXY", &url)
            .env("http_proxy", &url)
            .env("ALL_PROXY", &url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .expect("run the child test");
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && log.contains("1 passed"), "{log}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0, "the system proxy was used: {log}");
    }

    /// Run by `downloader_ignores_the_system_proxy` with `HTTP_PROXY` set.
    #[tokio::test]
    #[ignore = "runs in a child process of downloader_ignores_the_system_proxy"]
    async fn system_proxy_child() {
        assert!(std::env::var_os("HTTP_PROXY").is_some(), "started by downloader_ignores_the_system_proxy");
        let fal = crate::tests::fakes::FakeFal::start().await;
        let d = Downloader::new(AddressPolicy::AllowPrivate, None).expect("client");
        let got = d.fetch(&format!("{}/files/x.png", fal.base_url())).await.expect("direct download");
        assert_eq!(got.bytes, fal.result_png());
    }

    #[test]
    fn video_downloads_get_the_video_cap() {
        let d = Downloader::new(AddressPolicy::GlobalOnly, None).expect("client");
        assert_eq!((d.max_bytes, d.timeout), (MAX_DOWNLOAD_BYTES, DOWNLOAD_TIMEOUT));
        let v = d.for_video();
        assert_eq!((v.max_bytes, v.timeout, v.policy), (MAX_VIDEO_BYTES, VIDEO_DOWNLOAD_TIMEOUT, d.policy));
    }

    #[test]
    fn data_uris() {
        let uri = data_uri("image/png", b"\x89PNGabc");
        let (mime, bytes) = decode_data_uri(&uri).expect("decode");
        assert_eq!(mime, "image/png");
        assert_eq!(bytes, b"\x89PNGabc");
        let (mime, bytes) = decode_data_uri("data:,Hello%2C%20World").expect("decode");
        assert_eq!((mime.as_str(), bytes.as_slice()), ("text/plain", b"Hello, World".as_slice()));
        assert!(decode_data_uri("data:image/png;base64,***").is_err());
        assert!(decode_data_uri("data:image/png;base64").is_err());
    }

    #[test]
    fn error_details() {
        assert_eq!(error_detail(r#"{"detail":"Application not found"}"#), "Application not found");
        assert_eq!(
            error_detail(
                r#"{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}"#
            ),
            "prompt: field required"
        );
        assert_eq!(error_detail(r#"{"error":{"message":"bad"}}"#), "bad");
        assert_eq!(error_detail("  plain text "), "plain text");
        assert!(matches!(status_error(422, r#"{"detail":"nsfw"}"#), ProviderError::Rejected(m) if m == "nsfw"));
    }

    #[test]
    fn redacts_query() {
        assert_eq!(redact_url("https://u:p@v3.fal.media/files/a.png?sig=secret"), "https://v3.fal.media/files/a.png");
    }
}

/// Bound on one API exchange of a queue-style provider (submit, status, result JSON);
/// downloads have their own.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Consecutive transient status-poll failures tolerated inside one `wait` (a blip should not
/// cost a job attempt).
pub const MAX_POLL_FAILURES: u32 = 3;
/// Cap on a provider's JSON answer: results may inline their files as data URIs (fal
/// `sync_mode`, WaveSpeed `enable_base64_output`).
pub const MAX_JSON_BYTES: u64 = 2 * MAX_DOWNLOAD_BYTES;

/// What a keyed queue-style provider (fal, WaveSpeed) holds: its id, base URL, key, API client,
/// guarded file downloader and poll interval, built the same way for each from `[[providers]]`.
pub struct Account {
    pub id: String,
    /// `base_url` without a trailing slash.
    pub base_url: String,
    pub key: crate::config::Secret,
    pub http: reqwest::Client,
    pub downloader: Downloader,
    pub poll: Duration,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("key", &self.key) // Secret prints "***"
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Builds it from `[[providers]]` config: `base_url`, the key from `resolved_key()`,
    /// `poll_interval_ms` (at least 10 ms), the provider's `proxy` for API calls; the
    /// downloader never uses a system proxy and refuses private addresses unless `base_url`
    /// is one.
    ///
    /// Errors: `Unauthorized` when no key is configured; `Failed` for a base_url that is not a
    /// URL or an HTTP client that cannot be built.
    pub fn new(cfg: &crate::config::ProviderConfig) -> Result<Account, ProviderError> {
        let key = cfg.resolved_key();
        if key.is_empty() {
            return Err(ProviderError::Unauthorized(format!(
                "provider {}: no API key (set api_key or api_key_env)",
                cfg.id
            )));
        }
        let base_url = cfg.effective_base_url();
        url::Url::parse(&base_url)
            .map_err(|e| ProviderError::Failed(format!("provider {}: bad base_url: {e}", cfg.id)))?;
        Ok(Account {
            id: cfg.id.clone(),
            http: client_for(cfg, Duration::from_secs(60))?,
            downloader: Downloader::new(AddressPolicy::for_base_url(&base_url), cfg.proxy.as_deref())?,
            base_url,
            key,
            poll: Duration::from_millis(cfg.poll_interval_ms.max(10)),
        })
    }
}
