//! Admin authentication: one Argon2-hashed password in the store, server-side sessions behind
//! an HttpOnly + SameSite=Strict cookie, a CSRF token per session, and a per-IP login limit.

use super::WebState;
use super::error::WebError;
use crate::domain::now_ms;
use crate::store::records::AuditEntry;
use crate::store::{Store, StoreError};
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Session cookie name.
pub const SESSION_COOKIE: &str = "mb_admin";
/// Double-submit cookie guarding the login form (there is no session yet to hold a token).
pub const LOGIN_COOKIE: &str = "mb_login";
/// The single admin account's name (actor `admin:admin` in the ledger and audit log).
pub const ADMIN_NAME: &str = "admin";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Login attempts a client may make without waiting; each attempt counts (as a failure) when
/// it starts, before any hashing, and a good password clears the count.
pub const LOGIN_LIMIT: u32 = 5;
/// The wait after the limit is reached; it doubles with every further attempt.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// A client that made no attempt for this long (and is not waiting) is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Above this many remembered clients each new one first prunes the forgotten; the map never
/// grows past [`MAX_CLIENTS`] (the client whose last attempt is oldest makes room).
const PRUNE_AT: usize = 1024;
const MAX_CLIENTS: usize = 16_384;
/// Argon2 verifies running at once. Each holds ~19 MiB (m_cost 19456 KiB) on the blocking
/// pool, so a flood of logins must queue instead of allocating hundreds of them.
pub const MAX_VERIFIES: usize = 2;

pub use crate::domain::random_token;

pub use crate::admin::verify_password;

/// The stored hash, if a password was ever set.
pub fn password_hash(store: &Store) -> Result<Option<String>, StoreError> {
    store.read_blocking(|rx| rx.get_password_hash())
}

#[derive(Clone)]
struct Session {
    name: String,
    csrf: String,
    expires: Instant,
}

/// A client's login record: attempts since its last good password, and when it may try again.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    count: u32,
    last: Instant,
    next_allowed: Instant,
}

/// In-memory session table and login limiter. Sessions end with the process: admins log in
/// again after a restart, which is the safe direction.
pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
    /// Permits for Argon2 verifies ([`MAX_VERIFIES`]).
    pub verify_slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            sessions: Mutex::default(),
            attempts: Mutex::default(),
            verify_slots: Arc::new(tokio::sync::Semaphore::new(MAX_VERIFIES)),
        }
    }
}

/// The wait after attempt number `count` (1-based): none up to [`LOGIN_LIMIT`], then
/// [`BACKOFF_FIRST`] doubling per attempt, at most [`BACKOFF_MAX`].
fn backoff(count: u32) -> Duration {
    match count.checked_sub(LOGIN_LIMIT) {
        None => Duration::ZERO,
        Some(over) => BACKOFF_FIRST.saturating_mul(1u32 << over.min(20)).min(BACKOFF_MAX),
    }
}

impl Auth {
    /// Starts a session; returns (cookie token, csrf token).
    pub fn create_session(&self, name: &str) -> (String, String) {
        let (token, csrf) = (random_token(), random_token());
        let s = Session { name: name.into(), csrf: csrf.clone(), expires: Instant::now() + SESSION_TTL };
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > Instant::now());
        map.insert(token.clone(), s);
        (token, csrf)
    }

    fn session(&self, token: &str) -> Option<Session> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends a session (logout).
    pub fn end_session(&self, token: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// Starts a login attempt from `ip`: counted at once (a good password clears it in
    /// [`Auth::login_succeeded`]), so concurrent attempts cannot all pass the check before any
    /// is counted. Errors: the client must wait this long first.
    pub fn begin_login(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&ip) && map.len() >= PRUNE_AT {
            prune(&mut map, now);
        }
        let a = map.entry(ip).or_insert(Attempts { count: 0, last: now, next_allowed: now });
        if now < a.next_allowed {
            return Err(a.next_allowed - now);
        }
        a.count = a.count.saturating_add(1);
        a.last = now;
        a.next_allowed = now + backoff(a.count);
        Ok(())
    }

    /// Forgets the attempts of `ip` after a good password.
    pub fn login_succeeded(&self, ip: IpAddr) {
        self.attempts.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
    }

    /// Clients the limiter remembers.
    #[cfg(test)]
    pub fn remembered_clients(&self) -> usize {
        self.attempts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Drops clients idle for [`FORGET_AFTER`] and not waiting; then, if still at
/// [`MAX_CLIENTS`], the one whose last attempt is oldest.
fn prune(map: &mut HashMap<IpAddr, Attempts>, now: Instant) {
    map.retain(|_, a| now < a.next_allowed || now.duration_since(a.last) < FORGET_AFTER);
    while map.len() >= MAX_CLIENTS {
        let Some(oldest) = map.iter().min_by_key(|(_, a)| a.last).map(|(ip, _)| *ip) else { break };
        map.remove(&oldest);
    }
}

/// Value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// True when the browser reached us over HTTPS (directly or through a proxy that says so);
/// the cookie then gets `Secure`.
pub fn is_https(parts_headers: &HeaderMap) -> bool {
    parts_headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// Session lifetime for the cookie's Max-Age.
pub fn session_max_age() -> u64 {
    SESSION_TTL.as_secs()
}

/// Peer IP from the listener (the `ConnectInfo` the listener inserts); unspecified when absent
/// (router tests).
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The client's address: the TCP peer, or, when the peer is one of `trusted` proxies, the
/// address those proxies recorded. `X-Forwarded-For` is read right to left (each proxy
/// appends the address it saw, so entries left of the first untrusted one may be forged) and
/// wins over `X-Real-IP`. An unreadable entry ends the walk at the hop that added it.
pub fn client_ip(parts: &Parts, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = peer_ip(parts);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if hops.is_empty() {
        return parts.headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(parse_hop).unwrap_or(peer);
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// True when a request names an original client in any forwarding header: it came through a
/// proxy, even if the TCP peer is loopback.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    ["x-forwarded-for", "x-real-ip", "forwarded"].iter().any(|h| headers.contains_key(*h))
}

/// Proof of a signed-in admin. Every admin handler takes one; without it the request never
/// reaches the handler.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub name: String,
    pub csrf: String,
    pub token: String,
}

impl AdminSession {
    /// Ledger / audit actor: `admin:<name>`.
    pub fn actor(&self) -> crate::admin::Actor {
        crate::admin::Actor::Panel(self.name.clone())
    }

    /// Refuses a POST whose form token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), WebError> {
        if constant_eq(token.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(WebError::Forbidden("invalid CSRF token; reload the page"))
        }
    }

    /// An audit entry for an action by this admin.
    pub fn audit(&self, action: &str, target: String, before: String, after: String) -> AuditEntry {
        AuditEntry {
            id: uuid::Uuid::now_v7().as_u128(),
            actor: self.actor().to_string(),
            action: action.into(),
            target,
            before,
            after,
            created_at: now_ms(),
        }
    }
}

/// Byte comparison whose time does not depend on where the inputs differ.
pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Why a request has no session: pages redirect to the login form, everything else gets 401.
pub struct AuthRejection(Method);

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        if self.0 == Method::GET {
            Redirect::to("/admin/login").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "not signed in").into_response()
        }
    }
}

impl<S> FromRequestParts<S> for AdminSession
where
    WebState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = WebState::from_ref(state);
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(|| AuthRejection(parts.method.clone()))?;
        let s = state.auth.session(token).ok_or_else(|| AuthRejection(parts.method.clone()))?;
        Ok(AdminSession { name: s.name, csrf: s.csrf, token: token.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_verifies_only_the_right_password() {
        let h = crate::admin::hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct hors"));
        assert!(!verify_password("garbage", "correct horse"));
    }

    #[test]
    fn limiter_counts_attempts_when_they_start_and_backs_off() {
        let a = Auth::default();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // No outcome reported in between: concurrent attempts are counted before any hashing.
        for _ in 0..LOGIN_LIMIT {
            assert_eq!(a.begin_login(ip), Ok(()));
        }
        let wait = a.begin_login(ip).expect_err("limit reached");
        assert!(wait > Duration::ZERO && wait <= BACKOFF_FIRST, "{wait:?}");
        assert_eq!(a.begin_login(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), Ok(()), "per client");
        a.login_succeeded(ip);
        assert_eq!(a.begin_login(ip), Ok(()), "a good password clears the count");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_instead_of_a_fixed_lockout() {
        assert_eq!(backoff(LOGIN_LIMIT - 1), Duration::ZERO);
        assert_eq!(backoff(LOGIN_LIMIT), BACKOFF_FIRST);
        assert_eq!(backoff(LOGIN_LIMIT + 1), BACKOFF_FIRST * 2);
        assert_eq!(backoff(LOGIN_LIMIT + 3), BACKOFF_FIRST * 8);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn limiter_map_is_pruned_and_bounded() {
        let a = Auth::default();
        let long_ago = Instant::now().checked_sub(FORGET_AFTER * 2);
        {
            let mut map = a.attempts.lock().expect("lock");
            for i in 0..(PRUNE_AT as u32) {
                let last = long_ago.unwrap_or_else(Instant::now);
                map.insert(IpAddr::V4(Ipv4Addr::from(i)), Attempts { count: 1, last, next_allowed: last });
            }
        }
        assert_eq!(a.begin_login(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))), Ok(()));
        if long_ago.is_some() {
            assert_eq!(a.remembered_clients(), 1, "idle clients forgotten");
        }
        let mut map = HashMap::new();
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            map.insert(
                IpAddr::V4(Ipv4Addr::from(i)),
                Attempts { count: 9, last: now, next_allowed: now + BACKOFF_MAX },
            );
        }
        prune(&mut map, now);
        assert!(map.len() < MAX_CLIENTS, "{}", map.len());
    }

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut p, _) = b.body(()).expect("request").into_parts();
        p.extensions.insert(ConnectInfo(SocketAddr::new(peer.parse().expect("ip"), 40000)));
        p
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().expect("net"), "10.0.0.0/8".parse().expect("net")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // Direct client: its headers are ignored, whatever they say.
        let p = parts("203.0.113.7", &[("x-forwarded-for", "127.0.0.1"), ("x-real-ip", "127.0.0.1")]);
        assert_eq!(client_ip(&p, &trusted), ip("203.0.113.7"));
        // Through nginx on loopback: the address nginx appended.
        let p = parts("127.0.0.1", &[("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(client_ip(&p, &trusted), ip("198.51.100.9"));
        // A forged entry left of the real one is never reached; trusted hops are skipped.
        let p = parts("127.0.0.1", &[("x-forwarded-for", "1.1.1.1, 198.51.100.9, 10.1.2.3")]);
        assert_eq!(client_ip(&p, &trusted), ip("198.51.100.9"));
        let p = parts("127.0.0.1", &[("x-real-ip", "198.51.100.10")]);
        assert_eq!(client_ip(&p, &trusted), ip("198.51.100.10"));
        let p = parts("127.0.0.1", &[("x-forwarded-for", "[2001:db8::5]:443")]);
        assert_eq!(client_ip(&p, &trusted), ip("2001:db8::5"));
        let p = parts("127.0.0.1", &[]);
        assert_eq!(client_ip(&p, &trusted), ip("127.0.0.1"));
        // Nothing trusted (the default): the peer, even from loopback.
        let p = parts("127.0.0.1", &[("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(client_ip(&p, &[]), ip("127.0.0.1"));
        assert!(is_forwarded(&p.headers));
    }
}
