//! `/admin/login` and `/admin/logout`.

use super::{CsrfForm, Layout};
use crate::web::WebState;
use crate::web::auth::{self, ADMIN_NAME, AdminSession, LOGIN_COOKIE, SESSION_COOKIE};
use crate::web::error::WebError;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};

#[derive(Template, WebTemplate)]
#[template(path = "admin/login.html")]
pub struct LoginPage {
    layout: Layout,
    form_token: String,
    message: String,
}

fn page(headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
    let token = auth::random_token();
    let cookie = auth::set_cookie(LOGIN_COOKIE, &token, "/admin/login", 3600, auth::is_https(headers));
    let page = LoginPage { layout: Layout::new("Sign in", None), form_token: token, message: message.into() };
    (status, [(header::SET_COOKIE, cookie)], page).into_response()
}

/// `GET /admin/login`: the form, with a fresh double-submit token.
pub async fn get(headers: HeaderMap) -> Response {
    page(&headers, StatusCode::OK, "")
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

/// Client address for the limiter (see [`WebState::client_ip`]), as an extractor so the
/// handler stays a plain fn.
pub struct ClientIp(std::net::IpAddr);
impl FromRequestParts<WebState> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(st.client_ip(parts)))
    }
}

/// `POST /admin/login`: the limiter counts the attempt first (before any hashing work), then
/// the form token, then the password (Argon2 on the blocking pool, at most
/// [`auth::MAX_VERIFIES`] at once).
pub async fn post(
    State(st): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    if st.auth.begin_login(ip).is_err() {
        return Err(WebError::TooManyRequests);
    }
    let cookie_token = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if cookie_token.is_empty() || !auth::constant_eq(cookie_token.as_bytes(), f.csrf.as_bytes()) {
        return Err(WebError::Forbidden("invalid form token; reload the login page"));
    }
    // The permit moves into the blocking task: a client that hangs up does not free it while
    // its hash is still being computed.
    let slot = st.auth.verify_slots.clone().acquire_owned().await.map_err(|e| WebError::Internal(e.to_string()))?;
    let store = st.store.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        auth::password_hash(&store).map(|h| h.is_some_and(|h| auth::verify_password(&h, &f.password)))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    if !ok {
        tracing::warn!(%ip, "admin login failed");
        return Ok(page(&headers, StatusCode::UNAUTHORIZED, "Wrong password."));
    }
    st.auth.login_succeeded(ip);
    let (token, csrf) = st.auth.create_session(ADMIN_NAME);
    let session = AdminSession { name: ADMIN_NAME.into(), csrf, token: token.clone() };
    let entry = session.audit("login", String::new(), String::new(), ip.to_string());
    st.store.write(move |tx| tx.insert_audit(&entry)).await?;
    let https = auth::is_https(&headers);
    let mut res = Redirect::to("/admin").into_response();
    let h = res.headers_mut();
    for c in [
        auth::set_cookie(SESSION_COOKIE, &token, "/", auth::session_max_age(), https),
        auth::set_cookie(LOGIN_COOKIE, "", "/admin/login", 0, https),
    ] {
        h.append(header::SET_COOKIE, c.parse().map_err(|_| WebError::Internal("cookie".into()))?);
    }
    Ok(res)
}

/// `POST /admin/logout`.
pub async fn logout(
    State(st): State<WebState>,
    session: AdminSession,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    session.check_csrf(&f.csrf)?;
    st.auth.end_session(&session.token);
    let entry = session.audit("logout", String::new(), String::new(), String::new());
    st.store.write(move |tx| tx.insert_audit(&entry)).await?;
    let cookie = auth::set_cookie(SESSION_COOKIE, "", "/", 0, auth::is_https(&headers));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/admin/login")).into_response())
}
