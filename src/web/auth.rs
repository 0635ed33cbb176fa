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

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Session cookie name.
pub const SESSION_COOKIE: &str = "mb_admin";
/// Double-submit cookie guarding the login form (there is no session yet to hold a token).
pub const LOGIN_COOKIE: &str = "mb_login";
/// The single admin account's name (actor `admin:admin` in the ledger and audit log).
pub const ADMIN_NAME: &str = "admin";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per IP per window before answering 429.
pub const LOGIN_LIMIT: u32 = 5;
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

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

/// In-memory session table and login limiter. Sessions end with the process: admins log in
/// again after a restart, which is the safe direction.
#[derive(Default)]
pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
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

    /// Whether `ip` still may try a password.
    pub fn login_allowed(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip).is_none_or(|(n, since)| *n < LOGIN_LIMIT || since.elapsed() > LOGIN_WINDOW)
    }

    /// Counts a failed login from `ip`.
    pub fn login_failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() > LOGIN_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    /// Forgets failures after a good login.
    pub fn login_succeeded(&self, ip: IpAddr) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
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

/// Peer IP from the listener (`into_make_service_with_connect_info`); unspecified when absent
/// (router tests). Forwarded-for headers are not trusted: anyone could send one.
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
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
    fn limiter_trips_after_the_limit() {
        let a = Auth::default();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..LOGIN_LIMIT {
            assert!(a.login_allowed(ip));
            a.login_failed(ip);
        }
        assert!(!a.login_allowed(ip));
        assert!(a.login_allowed(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), "per IP");
    }
}
