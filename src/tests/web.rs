//! Admin panel through its real router (tower `oneshot`) over a real redb store in a tempdir:
//! every page and action, the auth crawl, CSRF, the login limiter and escaping.

use crate::billing;
use crate::config::Config;
use crate::domain::{Credits, Format, ImageId, JobId, JobStatus, UserId, now_ms};
use crate::store::Store;
use crate::store::records::{
    Broadcast, BroadcastState, BroadcastTarget, JobPayload, JobRecord, LibraryItem, OpKind, Settlement, UserRecord,
    UserSummary,
};
use crate::web::{WebState, auth, router};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use std::sync::Arc;
use tower::ServiceExt;

pub(super) const PASSWORD: &str = "correct horse battery";
const XSS: &str = "<script>alert(1)</script>";

struct Env {
    app: Router,
    store: Store,
    state: WebState,
    _dir: tempfile::TempDir,
    job: JobId,
    image: ImageId,
    /// A draft broadcast to all users.
    broadcast: String,
}

fn user(id: i64, name: &str, username: Option<&str>) -> UserRecord {
    UserRecord {
        id: UserId(id),
        first_name: name.into(),
        username: username.map(Into::into),
        language_code: Some("en".into()),
        balance: Credits(0),
        held: Credits(0),
        created_at: now_ms(),
        updated_at: 0,
        blocked: false,
        banned: false,
        level: String::new(),
        level_until: None,
        language: None,
        referral: Default::default(),
    }
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 32, |x, y| image::Rgb([x as u8 * 4, y as u8 * 8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let s = store.clone();
    tokio::task::spawn_blocking(move || crate::admin::set_password_blocking(&s, &crate::admin::Actor::Cli, PASSWORD))
        .await
        .expect("join")
        .expect("set pw");
    let job = JobId::new();
    let image = ImageId::new();
    let bytes = png();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let sha_for_draft = sha.clone();
    store.put_media_file(&sha, "png", &bytes).expect("media");
    store
        .write(move |tx| {
            tx.put_user(&user(1, "Anna", Some("anna")))?;
            tx.put_user(&user(2, XSS, Some("evil")))?;
            tx.put_user(&user(3, "Boris", None))?;
            for id in 1..=3 {
                billing::adjust(tx, UserId(id), Credits(100), "system", "seed")?;
            }
            let now = now_ms();
            let mut j = JobRecord {
                id: job,
                user_id: UserId(1),
                chat_id: 1,
                lang: "en".into(),
                model_id: "demo-model".into(),
                provider_id: "demo".into(),
                price: Credits(10),
                payload: JobPayload::Generate {
                    prompt: "a red fox".into(),
                    negative: None,
                    format: Format::Square,
                    width: 64,
                    height: 64,
                    aspect_ratio: None,
                    seed: 1,
                    inputs: vec![],
                    options: Default::default(),
                },
                status: JobStatus::Succeeded,
                hold_id: None,
                settlement: None,
                preassigned_id: None,
                submission: Some(crate::providers::Submission {
                    request_id: "req-123".into(),
                    data: serde_json::Value::Null,
                }),
                progress_message_id: None,
                attempts: 1,
                error: None,
                created_at: now,
                started_at: Some(now),
                submitted_at: Some(now),
                finished_at: Some(now + 1500),
                result: Some(image),
                delivery: crate::store::records::Delivery::Delivered,
                draft_id: None,
                claimed_by: None,
                heartbeat_at: None,
                priority: false,
                translation: None,
                quota_day: None,
                failover: None,
            };
            billing::hold(tx, &mut j)?;
            billing::capture(tx, &mut j)?;
            tx.put_job(&j)?;
            tx.insert_library_item(&LibraryItem {
                id: image,
                owner: UserId(1),
                job_id: Some(job),
                kind: "create".into(),
                prompt: "a red fox".into(),
                negative: None,
                model_id: "demo-model".into(),
                format: Format::Square,
                seed: 1,
                width: 64,
                height: 32,
                bytes: 10,
                sha256: sha,
                ext: "png".into(),
                mime: "image/png".into(),
                created_at: now,
                favourite: false,
                categories: vec![],
                photo_file_id: None,
                document_file_id: None,
                is_demo: false,
                source: None,
                media: crate::domain::MediaKind::Image,
            })?;
            Ok::<_, crate::billing::BillingError>(())
        })
        .await
        .expect("seed");
    let mut draft = Broadcast::draft(
        "admin:admin".into(),
        "Hello <b>everyone</b>".into(),
        Some((sha_for_draft, "png".into())),
        BroadcastTarget::All,
        now_ms(),
    );
    draft.total = 3;
    let broadcast = uuid::Uuid::from_u128(draft.id).to_string();
    store.write(move |tx| tx.put_broadcast(&draft)).await.expect("broadcast");
    let config = Arc::new(demo_config());
    let catalog = crate::catalog::Catalog::open(store.clone(), &config).expect("catalog");
    let health = Arc::new(crate::health::Health::new(crate::health::BotState::NoToken));
    let state = WebState::new(store.clone(), config, catalog, health);
    let app = router(state.clone());
    Env { app, store, state, _dir: dir, job, image, broadcast }
}

pub(super) async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.expect("infallible")
}

pub(super) async fn text(r: Response<Body>) -> String {
    let b = axum::body::to_bytes(r.into_body(), 64 << 20).await.expect("body");
    String::from_utf8_lossy(&b).into_owned()
}

pub(super) fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).expect("req")
}

fn post(uri: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(form.to_string())).expect("req")
}

fn set_cookies(r: &Response<Body>) -> Vec<String> {
    r.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap_or("").to_string()).collect()
}

fn cookie_value(set: &[String], name: &str) -> Option<String> {
    set.iter().find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap_or("").to_string()))
}

/// Value of the first `name="csrf" value="…"` in a page.
fn csrf_in(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").expect("csrf field");
    let rest = &html[i + 19..];
    rest[..rest.find('"').expect("end")].to_string()
}

async fn try_login(app: &Router, password: &str, extra: Option<(&'static str, &str)>) -> Response<Body> {
    let r = send(app, get("/admin/login", None)).await;
    let token = cookie_value(&set_cookies(&r), auth::LOGIN_COOKIE).expect("login cookie");
    assert_eq!(csrf_in(&text(r).await), token, "double-submit token in the form");
    let mut req = post(
        "/admin/login",
        Some(&format!("{}={token}", auth::LOGIN_COOKIE)),
        &format!(
            "csrf={token}&password={}",
            url::form_urlencoded::byte_serialize(password.as_bytes()).collect::<String>()
        ),
    );
    if let Some((k, v)) = extra {
        req.headers_mut().insert(k, v.parse().expect("hv"));
    }
    send(app, req).await
}

/// Logs in; returns (Cookie header, CSRF token).
pub(super) async fn login(app: &Router) -> (String, String) {
    let r = try_login(app, PASSWORD, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/admin");
    let cookie =
        format!("{}={}", auth::SESSION_COOKIE, cookie_value(&set_cookies(&r), auth::SESSION_COOKIE).expect("session"));
    let page = send(app, get("/admin", Some(&cookie))).await;
    assert_eq!(page.status(), StatusCode::OK);
    (cookie.clone(), csrf_in(&text(page).await))
}

async fn balance(store: &Store, id: i64) -> i64 {
    store.read(move |rx| rx.get_user(UserId(id))).await.expect("read").expect("user").balance.0
}

#[tokio::test]
async fn login_sets_a_strict_httponly_cookie_and_rejects_bad_input() {
    let e = env().await;
    let r = try_login(&e.app, "wrong password", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(text(r).await.contains("Wrong password"));

    let r = try_login(&e.app, PASSWORD, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let c = set_cookies(&r).into_iter().find(|c| c.starts_with("mb_admin=")).expect("cookie");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age="), "{c}");
    assert!(!c.contains("Secure"), "plain HTTP: no Secure flag");

    let r = try_login(&e.app, PASSWORD, Some(("x-forwarded-proto", "https"))).await;
    let c = set_cookies(&r).into_iter().find(|c| c.starts_with("mb_admin=")).expect("cookie");
    assert!(c.contains("; Secure"), "{c}");

    // No double-submit token: refused before the password is even checked.
    let r = send(&e.app, post("/admin/login", None, &format!("csrf=&password={PASSWORD}"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(&e.app, post("/admin/login", Some("mb_login=abc"), "csrf=abd&password=x")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn login_rate_limit_trips_per_ip() {
    let e = env().await;
    for _ in 0..auth::LOGIN_LIMIT {
        assert_eq!(try_login(&e.app, "nope nope", None).await.status(), StatusCode::UNAUTHORIZED);
    }
    let r = try_login(&e.app, PASSWORD, None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password waits out the window");
}

/// `try_login` as if from `peer`, with an optional `X-Forwarded-For`.
async fn login_from(app: &Router, peer: &str, forwarded_for: Option<&str>, password: &str) -> StatusCode {
    let r = send(app, get("/admin/login", None)).await;
    let token = cookie_value(&set_cookies(&r), auth::LOGIN_COOKIE).expect("login cookie");
    let form = format!(
        "csrf={token}&password={}",
        url::form_urlencoded::byte_serialize(password.as_bytes()).collect::<String>()
    );
    let mut req = post("/admin/login", Some(&format!("{}={token}", auth::LOGIN_COOKIE)), &form);
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(peer.parse().expect("ip"), 50000)));
    if let Some(xff) = forwarded_for {
        req.headers_mut().insert("x-forwarded-for", xff.parse().expect("hv"));
    }
    send(app, req).await.status()
}

/// The panel's state over `store` with `config`, as `app` builds it.
fn web_state(store: &crate::store::Store, config: Config) -> WebState {
    let catalog = crate::catalog::Catalog::open(store.clone(), &config).expect("catalog");
    let health = Arc::new(crate::health::Health::new(crate::health::BotState::NoToken));
    WebState::new(store.clone(), Arc::new(config), catalog, health)
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit() {
    let e = env().await;
    let mut config = demo_config();
    config.web.trusted_proxies = vec!["127.0.0.1".into()];
    let app = router(web_state(&e.store, config));
    for _ in 0..auth::LOGIN_LIMIT {
        assert_eq!(login_from(&app, "127.0.0.1", Some("198.51.100.1"), "guess").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login_from(&app, "127.0.0.1", Some("198.51.100.1"), "guess").await, StatusCode::TOO_MANY_REQUESTS);
    // The guesser is held back; the real admin behind the same proxy is not.
    assert_eq!(login_from(&app, "127.0.0.1", Some("198.51.100.2"), PASSWORD).await, StatusCode::SEE_OTHER);
    // A direct peer cannot pick its address with the header: all its guesses count as one client.
    for i in 0..auth::LOGIN_LIMIT {
        let xff = format!("203.0.113.{i}");
        assert_eq!(login_from(&app, "192.0.2.9", Some(&xff), "guess").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login_from(&app, "192.0.2.9", Some("203.0.113.99"), "guess").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn proxied_metrics_need_a_session() {
    let e = env().await;
    let metrics = |forwarded: Option<&str>| {
        let mut req = get("/metrics", None);
        req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 50000))));
        if let Some(f) = forwarded {
            req.headers_mut().insert("x-forwarded-for", f.parse().expect("hv"));
        }
        send(&e.app, req)
    };
    assert_eq!(metrics(None).await.status(), StatusCode::OK, "a scraper on this host");
    assert_eq!(metrics(Some("198.51.100.7")).await.status(), StatusCode::UNAUTHORIZED, "through a proxy on this host");
}

#[tokio::test]
async fn page_numbers_never_wrap() {
    let e = env().await;
    let (cookie, _) = login(&e.app).await;
    for page in [usize::MAX.to_string(), (usize::MAX / 50).to_string(), "1000001".into()] {
        let r = send(&e.app, get(&format!("/admin/users?page={page}"), Some(&cookie))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "page={page}");
    }
    for q in ["", "&sort=balance", "&q=anna"] {
        let r = send(&e.app, get(&format!("/admin/users?page=1000000{q}"), Some(&cookie))).await;
        assert_eq!(r.status(), StatusCode::OK, "the last page allowed{q}");
    }
}

fn routes(e: &Env) -> Vec<String> {
    vec![
        "/admin".into(),
        "/admin/users".into(),
        "/admin/users?q=anna&sort=balance&page=0".into(),
        "/admin/users/1".into(),
        "/admin/ledger".into(),
        "/admin/ledger?user=1&kind=adjust".into(),
        "/admin/ledger.csv".into(),
        "/admin/payments".into(),
        "/admin/payments?page=0&done=refunded&charge=stx1".into(),
        "/admin/jobs".into(),
        "/admin/jobs/rows".into(),
        format!("/admin/jobs/{}", e.job),
        "/admin/library".into(),
        "/admin/library?user=1&kind=create".into(),
        format!("/admin/library/{}/thumb", e.image),
        format!("/admin/library/{}/file", e.image),
        "/admin/audit".into(),
        "/admin/models".into(),
        "/admin/broadcasts".into(),
        format!("/admin/broadcasts/{}", e.broadcast),
        format!("/admin/broadcasts/{}/progress", e.broadcast),
        format!("/admin/broadcasts/{}/image", e.broadcast),
    ]
}

/// Form POSTs (the broadcast compose form is multipart and is sent by [`compose`]).
fn posts(e: &Env) -> Vec<(String, &'static str)> {
    vec![
        ("/admin/users/1/balance".into(), "direction=add&amount=5&reason=x"),
        ("/admin/users/1/ban".into(), ""),
        ("/admin/users/1/unban".into(), ""),
        ("/admin/users/1/level".into(), "level=vip"),
        (format!("/admin/jobs/{}/cancel", e.job), ""),
        (format!("/admin/jobs/{}/retry", e.job), ""),
        ("/admin/models/demo/toggle".into(), "action=disable"),
        ("/admin/providers/demo/toggle".into(), "action=disable"),
        ("/admin/models/demo/price".into(), "value=25"),
        ("/admin/providers/demo/concurrency".into(), "value=3"),
        (format!("/admin/broadcasts/{}/start", e.broadcast), ""),
        (format!("/admin/broadcasts/{}/cancel", e.broadcast), ""),
        (format!("/admin/library/{}/delete", e.image), ""),
        ("/admin/payments/refund".into(), "charge=stx-none&page=0"),
        ("/admin/logout".into(), ""),
    ]
}

/// Routes open without a session (checked in the crawl) and the multipart POST. The download
/// route's permission is its link's signature (tests/video.rs checks it).
const OPEN: &[&str] = &["/admin/login", "/healthz", "/metrics", "/admin/static/{hash}/{*path}", "/download/{id}"];
const MULTIPART_POSTS: &[&str] = &["/admin/broadcasts"];

/// A multipart body for the broadcast compose form: (content type, body).
fn compose(fields: &[(&str, &str)], image: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "XmediabotBoundary7d1";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    if let Some(bytes) = image {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post_multipart(uri: &str, cookie: Option<&str>, (ctype, body): (String, Vec<u8>)) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, ctype);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(body)).expect("req")
}

/// Whether a concrete URI matches a route pattern (`{x}` one segment, `{*x}` the rest).
fn route_matches(pattern: &str, uri: &str) -> bool {
    let path = uri.split('?').next().unwrap_or("");
    let (p, u): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    for (i, seg) in p.iter().enumerate() {
        if seg.starts_with("{*") {
            return u.len() > i;
        }
        match u.get(i) {
            Some(s) if seg.starts_with('{') => {
                if s.is_empty() {
                    return false;
                }
            }
            Some(s) if s == seg => {}
            _ => return false,
        }
    }
    p.len() == u.len()
}

#[tokio::test]
async fn the_crawl_lists_cover_every_route_of_the_router() {
    // Read the routes from the router's source, so a new route cannot be left out of the
    // crawl, the page test and the CSRF test below.
    let e = env().await;
    let src = include_str!("../web/mod.rs");
    let body = &src[src.find("pub fn router").expect("router fn")..];
    let body = &body[..body.find("\n}\n").expect("end of router")];
    let chunks: Vec<&str> = body.split(".route(").skip(1).collect();
    assert!(chunks.len() >= 25, "found {} routes", chunks.len());
    let gets = routes(&e);
    let posts = posts(&e);
    for chunk in chunks {
        let pattern = chunk.split('"').nth(1).expect("route literal");
        if OPEN.contains(&pattern) {
            continue;
        }
        if chunk.contains("get(") {
            assert!(gets.iter().any(|u| route_matches(pattern, u)), "GET {pattern} is missing from routes()");
        }
        if chunk.contains("post(") {
            let covered = posts.iter().any(|(u, _)| route_matches(pattern, u)) || MULTIPART_POSTS.contains(&pattern);
            assert!(covered, "POST {pattern} is missing from posts()");
        }
    }
}

#[tokio::test]
async fn crawl_without_a_session_redirects_or_401s() {
    let e = env().await;
    for uri in routes(&e) {
        let r = send(&e.app, get(&uri, None)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(r.headers()[header::LOCATION], "/admin/login", "{uri}");
        // A forged or expired cookie is no better.
        let r = send(&e.app, get(&uri, Some("mb_admin=00ff"))).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{uri} with a bad cookie");
    }
    for (uri, form) in posts(&e) {
        let r = send(&e.app, post(&uri, None, form)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{uri}");
    }
    for uri in MULTIPART_POSTS {
        let r = send(&e.app, post_multipart(uri, None, compose(&[("text", "hi"), ("target", "all")], None))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{uri}");
    }
    assert_eq!(
        send(&e.app, get(&format!("/admin/broadcasts/{}/image", e.broadcast), None)).await.status(),
        StatusCode::SEE_OTHER
    );
    // /metrics from a non-loopback peer needs a session.
    assert_eq!(send(&e.app, get("/metrics", None)).await.status(), StatusCode::UNAUTHORIZED);
    // Open: login, health, assets.
    assert_eq!(send(&e.app, get("/admin/login", None)).await.status(), StatusCode::OK);
    let r = send(&e.app, get("/healthz", None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(text(r).await, r#"{"bot":"no_token","db":"ok"}"#);
    e.state.health.set_db(crate::health::DbState::ReadOnly);
    let r = send(&e.app, get("/healthz", None)).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "a database refusing writes is unhealthy");
    e.state.health.set_db(crate::health::DbState::Ok);
    let css = crate::web::assets::url("admin.css");
    let r = send(&e.app, get(&css, None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[header::CACHE_CONTROL].to_str().unwrap_or("").contains("immutable"));
    assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap_or("").starts_with("text/css"));
    let stale = css.replace("/admin/static/", "/admin/static/0").replacen("/0", "/", 1);
    let wrong_hash = format!("/admin/static/0000000000000000/admin.css");
    assert_eq!(send(&e.app, get(&wrong_hash, None)).await.status(), StatusCode::NOT_FOUND, "{stale}");
    assert_eq!(send(&e.app, get(&crate::web::assets::url("admin.js"), None)).await.status(), StatusCode::OK);
    // Nothing above changed any state.
    assert_eq!(balance(&e.store, 1).await, 90);
}

#[tokio::test]
async fn every_page_renders_for_a_signed_in_admin_with_security_headers() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    for uri in routes(&e) {
        let r = send(&e.app, get(&uri, Some(&cookie))).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap_or("");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{uri}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        if h[header::CONTENT_TYPE].to_str().unwrap_or("").starts_with("text/html") {
            let html = text(r).await;
            // No inline script anywhere: every <script> has a src.
            assert_eq!(html.matches("<script").count(), html.matches("<script src=").count(), "{uri}");
            assert!(!html.contains(" style=\""), "{uri}: inline style");
        }
    }
    let dash = text(send(&e.app, get("/admin", Some(&cookie))).await).await;
    assert!(dash.contains("<b>3</b> users"), "{dash}");
    assert!(dash.contains("id=\"jobs-succeeded\">1<"), "one job succeeded today");
    assert!(dash.contains("<b>100 %</b>"));
    assert!(dash.contains("<b>10</b> captured today"));
    assert!(dash.contains("<svg class=\"chart\""));
    assert!(dash.contains("demo-model"));

    let job = text(send(&e.app, get(&format!("/admin/jobs/{}", e.job), Some(&cookie))).await).await;
    assert!(job.contains("req-123") && job.contains("a red fox") && job.contains("1.5 s"), "{job}");
    let rows = text(send(&e.app, get("/admin/jobs/rows", Some(&cookie))).await).await;
    assert!(rows.contains(&e.job.to_string()) && !rows.contains("<html"));
    assert_eq!(send(&e.app, get("/admin/jobs/not-a-uuid", Some(&cookie))).await.status(), StatusCode::NOT_FOUND);
    let missing = format!("/admin/jobs/{}", JobId::new());
    assert_eq!(send(&e.app, get(&missing, Some(&cookie))).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(send(&e.app, get("/admin/users/999", Some(&cookie))).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        send(&e.app, get("/admin/ledger?from=yesterday", Some(&cookie))).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(send(&e.app, get("/admin/ledger?kind=steal", Some(&cookie))).await.status(), StatusCode::BAD_REQUEST);

    let tiles = |uri: &'static str| {
        let (app, cookie) = (e.app.clone(), cookie.clone());
        async move { text(send(&app, get(uri, Some(&cookie))).await).await.matches("<figure>").count() }
    };
    assert_eq!(tiles("/admin/library?user=1").await, 1);
    assert_eq!(tiles("/admin/library?user=2").await, 0);
    assert_eq!(tiles("/admin/library?kind=create").await, 1);
    assert_eq!(tiles("/admin/library?kind=edit").await, 0);
    assert_eq!(send(&e.app, get("/admin/library?user=abc", Some(&cookie))).await.status(), StatusCode::BAD_REQUEST);
    let thumb = send(&e.app, get(&format!("/admin/library/{}/thumb", e.image), Some(&cookie))).await;
    assert_eq!(thumb.headers()[header::CONTENT_TYPE], "image/jpeg");
    let jpeg = axum::body::to_bytes(thumb.into_body(), 1 << 20).await.expect("jpeg");
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");

    let m = send(&e.app, get("/metrics", Some(&cookie))).await;
    assert_eq!(m.status(), StatusCode::OK);
    let m = text(m).await;
    assert!(m.contains("mediabot_users 3") && m.contains("mediabot_jobs_today{status=\"succeeded\"} 1"), "{m}");
    let item_bytes = e.store.read(|rx| rx.find_library_recent(1)).await.expect("items")[0].bytes;
    assert!(m.contains(&format!("mediabot_library_bytes {item_bytes}\n")), "{m}");
    assert!(m.contains("mediabot_inline_chosen_total 0\n"), "{m}");

    // Open the original, then delete it: row, file and bytes counter go, the audit says who.
    let original = send(&e.app, get(&format!("/admin/library/{}/file", e.image), Some(&cookie))).await;
    assert_eq!(original.headers()[header::CONTENT_TYPE], "image/png");
    let item = e.store.read(|rx| rx.find_library_recent(1)).await.expect("items").remove(0);
    let path = e.store.media_path(&item.sha256, &item.ext);
    assert!(path.exists());
    let delete = format!("/admin/library/{}/delete", e.image);
    let r = send(&e.app, post(&delete, Some(&cookie), &format!("csrf={csrf}"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "redirected to the owner's gallery");
    let image = e.image;
    assert!(e.store.read(move |rx| rx.get_library_item(image)).await.expect("r").is_none());
    assert!(!path.exists(), "the only reference went, so the file did");
    let m = text(send(&e.app, get("/metrics", Some(&cookie))).await).await;
    assert!(m.contains("mediabot_library_bytes 0\n"), "{m}");
    let audit = e.store.read(|rx| rx.find_audit(1)).await.expect("audit").remove(0);
    assert_eq!((audit.action.as_str(), audit.after.as_str()), ("delete_image", "deleted"));
    assert!(audit.before.contains("a red fox"), "{}", audit.before);
    assert_eq!(
        send(&e.app, post(&delete, Some(&cookie), &format!("csrf={csrf}"))).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&e.app, get(&format!("/admin/library/{}/file", e.image), Some(&cookie))).await.status(),
        StatusCode::NOT_FOUND
    );
    let models = text(send(&e.app, get("/admin/models", Some(&cookie))).await).await;
    assert!(models.contains("demo") && !models.contains("api_key"));
}

#[tokio::test]
async fn a_broad_name_search_pages_through_every_match_once() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    // 120 users match "ver": 100 named "Vera N", 20 "Veronika N" with username "vera_N" (two
    // index words for one user, listed once).
    e.store
        .write(|tx| {
            for i in 0..120i64 {
                let (name, username) = if i < 100 { ("Vera", None) } else { ("Veronika", Some(format!("vera_{i}"))) };
                tx.put_user(&user(1000 + i, &format!("{name} {i}"), username.as_deref()))?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .expect("users");
    let ids_on = |html: &str| -> Vec<i64> {
        html.match_indices("<tr><td><a href=\"/admin/users/")
            .filter_map(|(at, m)| html[at + m.len()..].split('"').next()?.parse().ok())
            .collect()
    };
    let mut all = Vec::new();
    for (page, shown, rows) in [(0, "50+ match(es)", 50), (1, "100+ match(es)", 50), (2, "120 match(es)", 20)] {
        let html = text(send(&e.app, get(&format!("/admin/users?q=ver&page={page}"), Some(&cookie))).await).await;
        assert!(
            html.contains(shown),
            "page {page}: {shown}: {}",
            &html[html.find("match").unwrap_or(0).saturating_sub(40)..][..80]
        );
        let ids = ids_on(&html);
        assert_eq!(ids.len(), rows, "page {page}");
        assert_eq!(html.contains("next →"), page < 2, "page {page}: a next link while more follow");
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (1000..1120).collect::<Vec<_>>(), "every match once across the pages");
    // The rows come from the name index: a balance change and a ban show there at once.
    let form = format!("csrf={csrf}&direction=add&amount=37&reason=test");
    assert_eq!(
        send(&e.app, post("/admin/users/1000/balance", Some(&cookie), &form)).await.status(),
        StatusCode::SEE_OTHER
    );
    let form = format!("csrf={csrf}");
    assert_eq!(send(&e.app, post("/admin/users/1000/ban", Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    let html = text(send(&e.app, get("/admin/users?q=vera", Some(&cookie))).await).await;
    let row = "<tr><td><a href=\"/admin/users/1000\">1000</a></td><td>Vera 0</td><td></td>\n<td>37</td><td>0</td><td>";
    let at = html.find(row).unwrap_or_else(|| panic!("{html}"));
    let rest = html[at + row.len()..].split("</tr>").next().unwrap_or_default();
    assert!(rest.ends_with("</td><td>banned</td>"), "{rest}");
}

#[tokio::test]
async fn user_search_sorts_and_escapes_names() {
    let e = env().await;
    let (cookie, _) = login(&e.app).await;
    let by = |q: &str| format!("/admin/users?q={q}");
    let html = text(send(&e.app, get(&by("2"), Some(&cookie))).await).await;
    assert!(html.contains("1 match(es)"), "id search");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || html.contains("&#60;script&#62;"), "{html}");
    assert!(!html.contains(XSS), "the name must be escaped");
    let html = text(send(&e.app, get(&by("%40ann"), Some(&cookie))).await).await;
    assert!(html.contains("1 match(es)") && html.contains("Anna"));
    let html = text(send(&e.app, get(&by("bor"), Some(&cookie))).await).await;
    assert!(html.contains("1 match(es)") && html.contains("Boris"));
    let html = text(send(&e.app, get("/admin/users?sort=name", Some(&cookie))).await).await;
    let (a, b) = (html.find("Anna").expect("a"), html.find("Boris").expect("b"));
    assert!(a < b, "sorted by name");
    let detail = text(send(&e.app, get("/admin/users/2", Some(&cookie))).await).await;
    assert!(!detail.contains(XSS), "detail escapes too");
    // The audit log and ledger show an attacker-chosen reason escaped as well.
    let (cookie, csrf) = login(&e.app).await;
    let form = format!("csrf={csrf}&direction=add&amount=1&reason=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(
        send(&e.app, post("/admin/users/2/balance", Some(&cookie), &form)).await.status(),
        StatusCode::SEE_OTHER
    );
    for uri in ["/admin/audit", "/admin/ledger?user=2", "/admin/users/2"] {
        assert!(!text(send(&e.app, get(uri, Some(&cookie))).await).await.contains(XSS), "{uri}");
    }
}

#[tokio::test]
async fn posts_without_a_valid_csrf_token_are_refused() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let (other_cookie, other_csrf) = login(&e.app).await;
    assert_ne!(csrf, other_csrf, "one token per session");
    for (uri, form) in posts(&e) {
        for bad in ["", "csrf=", "csrf=deadbeef", &format!("csrf={other_csrf}")] {
            let body = if form.is_empty() { bad.to_string() } else { format!("{bad}&{form}") };
            let r = send(&e.app, post(&uri, Some(&cookie), &body)).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{uri} with {bad:?}");
        }
    }
    for uri in MULTIPART_POSTS {
        for bad in ["", "deadbeef", other_csrf.as_str()] {
            let form = compose(&[("csrf", bad), ("text", "hi"), ("target", "all")], None);
            let r = send(&e.app, post_multipart(uri, Some(&cookie), form)).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{uri} with {bad:?}");
        }
    }
    assert_eq!(e.store.read(|rx| rx.find_broadcasts(10)).await.expect("b").len(), 1, "no broadcast was created");
    assert!(e.store.read(|rx| rx.find_disabled()).await.expect("d").is_empty(), "nothing was disabled");
    assert!(e.store.read(|rx| rx.find_settings()).await.expect("s").is_empty(), "no setting changed");
    assert_eq!(balance(&e.store, 1).await, 90);
    let u = e.store.read(|rx| rx.get_user(UserId(1))).await.expect("r").expect("u");
    assert!(!u.banned);
    let image = e.image;
    assert!(e.store.read(move |rx| rx.get_library_item(image)).await.expect("r").is_some(), "the picture is kept");
    // Both sessions still work (logout was refused).
    assert_eq!(send(&e.app, get("/admin", Some(&cookie))).await.status(), StatusCode::OK);
    assert_eq!(send(&e.app, get("/admin", Some(&other_cookie))).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn top_up_and_deduct_write_ledger_and_audit() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let f =
        |dir: &str, amount: &str, reason: &str| format!("csrf={csrf}&direction={dir}&amount={amount}&reason={reason}");
    let r = send(&e.app, post("/admin/users/1/balance", Some(&cookie), &f("add", "50", "support+ticket+7"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/admin/users/1");
    assert_eq!(balance(&e.store, 1).await, 140);
    let ops = e.store.read(|rx| rx.find_operations(UserId(1))).await.expect("ops");
    let last = ops.last().expect("row");
    assert_eq!((last.kind, last.delta, last.actor.as_str()), (OpKind::Adjust, Credits(50), "admin:admin"));
    assert_eq!(last.reason.as_deref(), Some("support ticket 7"));
    let page = text(send(&e.app, get("/admin/users/1", Some(&cookie))).await).await;
    assert!(page.contains("<b id=\"balance\">140</b>") && page.contains("support ticket 7"));

    let r = send(&e.app, post("/admin/users/1/balance", Some(&cookie), &f("deduct", "40", "refund"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(balance(&e.store, 1).await, 100);

    // Failure paths leave everything as it was.
    for (form, status) in [
        (f("deduct", "101", "too+much"), StatusCode::BAD_REQUEST),
        (f("add", "0", "zero"), StatusCode::BAD_REQUEST),
        (f("add", "-5", "neg"), StatusCode::BAD_REQUEST),
        (f("add", "5", ""), StatusCode::BAD_REQUEST),
        (f("steal", "5", "x"), StatusCode::BAD_REQUEST),
        (f("add", "five", "x"), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = send(&e.app, post("/admin/users/1/balance", Some(&cookie), &form)).await;
        assert_eq!(r.status(), status, "{form}");
    }
    assert_eq!(balance(&e.store, 1).await, 100);
    let r = send(&e.app, post("/admin/users/999/balance", Some(&cookie), &f("add", "5", "x"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let audit = e.store.read(|rx| rx.find_audit(10)).await.expect("audit");
    let adj: Vec<_> = audit.iter().filter(|a| a.action == "adjust_balance").collect();
    assert_eq!(adj.len(), 2, "one entry per successful change");
    assert_eq!(adj[0].before, "balance 140");
    assert!(adj[0].after.starts_with("balance 100 (-40"), "{}", adj[0].after);
    assert!(audit.iter().any(|a| a.action == "login"));
    let problems = e.store.read(crate::billing::verify).await.expect("verify");
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn ban_unban_and_logout() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let form = format!("csrf={csrf}");
    assert_eq!(send(&e.app, post("/admin/users/3/ban", Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    let banned = |s: Store| async move { s.read(|rx| rx.get_user(UserId(3))).await.expect("r").expect("u").banned };
    assert!(banned(e.store.clone()).await);
    assert!(text(send(&e.app, get("/admin/users/3", Some(&cookie))).await).await.contains("/admin/users/3/unban"));
    assert_eq!(send(&e.app, post("/admin/users/3/unban", Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    assert!(!banned(e.store.clone()).await);
    assert_eq!(send(&e.app, post("/admin/users/999/ban", Some(&cookie), &form)).await.status(), StatusCode::NOT_FOUND);
    let audit = text(send(&e.app, get("/admin/audit", Some(&cookie))).await).await;
    assert!(audit.contains("banned=false") && audit.contains("banned=true") && audit.contains("user:3"));

    let r = send(&e.app, post("/admin/logout", Some(&cookie), &form)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookies(&r).iter().any(|c| c.starts_with("mb_admin=;") && c.contains("Max-Age=0")));
    let r = send(&e.app, get("/admin", Some(&cookie))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the session is gone server-side");
}

#[tokio::test]
async fn ledger_filters_and_csv_streams() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let form = format!("csrf={csrf}&direction=add&amount=7&reason=%3D1%2B2%2C%22quoted%22");
    assert_eq!(
        send(&e.app, post("/admin/users/3/balance", Some(&cookie), &form)).await.status(),
        StatusCode::SEE_OTHER
    );
    let html = text(send(&e.app, get("/admin/ledger?user=1&kind=capture", Some(&cookie))).await).await;
    assert_eq!(html.matches("<td>capture</td>").count(), 1);
    assert!(!html.contains("<td>adjust</td>"));

    let r = send(&e.app, get("/admin/ledger.csv", Some(&cookie))).await;
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(r.headers()[header::CONTENT_DISPOSITION].to_str().unwrap_or("").contains("ledger.csv"));
    let csv = text(r).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,time,user,kind,amount,delta,balance_after,job,actor,reason");
    assert_eq!(lines.len(), 1 + 3 + 2 + 1, "3 seed rows, hold + capture, one top-up");
    // A formula-looking reason is defused and quoted.
    assert!(csv.contains(",admin:admin,\"'=1+2,\"\"quoted\"\"\""), "{csv}");
    let csv =
        text(send(&e.app, get("/admin/ledger.csv?user=3&kind=adjust&from=2000-01-01", Some(&cookie))).await).await;
    assert_eq!(csv.lines().count(), 1 + 2);
    let csv = text(send(&e.app, get("/admin/ledger.csv?to=2000-01-01", Some(&cookie))).await).await;
    assert_eq!(csv.lines().count(), 1, "nothing before 2000");
}

#[test]
fn dashboard_summary_counts_settlements_and_percentiles() {
    use crate::web::pages::dashboard::{bar_chart, summarize};
    let now = now_ms();
    let mk = |status, ms: i64, settle: Option<Settlement>| JobRecord {
        id: JobId::new(),
        user_id: UserId(1),
        chat_id: 1,
        lang: "en".into(),
        model_id: "m".into(),
        provider_id: "p".into(),
        price: Credits(5),
        payload: JobPayload::Generate {
            prompt: String::new(),
            negative: None,
            format: Format::Square,
            width: 1,
            height: 1,
            aspect_ratio: None,
            seed: 0,
            inputs: vec![],
            options: Default::default(),
        },
        status,
        hold_id: Some(crate::domain::OperationId::new()),
        settlement: settle,
        preassigned_id: None,
        submission: None,
        progress_message_id: None,
        attempts: 1,
        error: None,
        created_at: now - ms,
        started_at: None,
        submitted_at: None,
        finished_at: Some(now),
        result: None,
        delivery: Default::default(),
        draft_id: None,
        claimed_by: None,
        heartbeat_at: None,
        priority: false,
        translation: None,
        quota_day: None,
        failover: None,
    };
    let op = crate::domain::OperationId::new();
    let jobs: Vec<JobRecord> = (1..=10)
        .map(|i| mk(JobStatus::Succeeded, i * 100, Some(Settlement::Captured(op))))
        .chain([mk(JobStatus::Failed, 10, Some(Settlement::Released(op)))])
        .collect();
    let s = summarize(&[user(1, "a", None)], &jobs, 2, now);
    assert_eq!((s.users_total, s.users_new_today, s.users_active_7d, s.queue_depth), (1, 1, 1, 2));
    assert_eq!(s.success_rate, Some(90));
    assert_eq!((s.held_today, s.captured_today, s.released_today), (55, 50, 5));
    assert_eq!(s.models.len(), 1);
    assert_eq!((s.models[0].succeeded, s.models[0].failed, s.models[0].p50_ms, s.models[0].p95_ms), (10, 1, 500, 900));
    assert_eq!(s.jobs_per_day.len(), 30);
    assert_eq!(*s.jobs_per_day.last().expect("today"), 11);
    let svg = bar_chart(&s.jobs_per_day, "jobs");
    assert_eq!(svg.matches("<rect").count(), 30);
}

/// A notifier that records failure notices and broadcasts; chats in `blocked` answer 403.
#[derive(Default)]
struct Recorder {
    failed: std::sync::Mutex<Vec<JobId>>,
    broadcasts: std::sync::Mutex<Vec<(i64, String, bool)>>,
    blocked: Vec<i64>,
}

#[async_trait::async_trait]
impl crate::jobs::Notifier for Recorder {
    async fn progress(&self, _job: &JobRecord, _p: crate::jobs::JobProgress) {}
    async fn before_delivery(&self, _job: &JobRecord) {}
    async fn deliver(
        &self,
        _job: &JobRecord,
        _item: &LibraryItem,
        _files: crate::jobs::ResultFiles,
        _photo_sent: tokio::sync::oneshot::Sender<String>,
    ) -> Result<crate::jobs::DeliveredFiles, crate::jobs::NotifyError> {
        Ok(Default::default())
    }
    async fn failed(
        &self,
        job: &JobRecord,
        _alt: &[crate::config::ModelConfig],
    ) -> Result<(), crate::jobs::NotifyError> {
        self.failed.lock().expect("lock").push(job.id);
        Ok(())
    }
    async fn delivery_interrupted(
        &self,
        _job: &JobRecord,
        _item: &LibraryItem,
    ) -> Result<(), crate::jobs::NotifyError> {
        Ok(())
    }
    async fn admin_alert(&self, _text: &str) {}
    async fn broadcast(
        &self,
        chat_id: i64,
        text: &str,
        photo: Option<Vec<u8>>,
    ) -> Result<(), crate::jobs::NotifyError> {
        if self.blocked.contains(&chat_id) {
            return Err(crate::jobs::NotifyError::Blocked);
        }
        self.broadcasts.lock().expect("lock").push((chat_id, text.to_string(), photo.is_some()));
        Ok(())
    }
}

/// A job engine over the env's store and the panel's catalog, as the running app wires them
/// (its scheduler is not started: queued jobs stay queued).
fn engine(e: &Env, notifier: Arc<Recorder>) -> crate::jobs::JobEngine {
    engine_with(e, notifier, e.state.catalog.clone())
}

/// What a restart builds: a new catalog read from the store.
fn restarted(e: &Env) -> (crate::jobs::JobEngine, crate::catalog::Catalog) {
    let catalog = crate::catalog::Catalog::open(e.store.clone(), &demo_config()).expect("catalog");
    (engine_with(e, Arc::new(Recorder::default()), catalog.clone()), catalog)
}

fn engine_with(e: &Env, notifier: Arc<Recorder>, catalog: crate::catalog::Catalog) -> crate::jobs::JobEngine {
    let config = demo_config();
    let mut providers: std::collections::HashMap<String, crate::providers::DynProvider> = Default::default();
    providers.insert(
        "demo".into(),
        Arc::new(crate::providers::demo::DemoProvider::new("demo", std::time::Duration::from_millis(1))),
    );
    crate::jobs::JobEngine::new(e.store.clone(), &config, catalog, providers, notifier).expect("engine")
}

#[tokio::test]
async fn set_level_validates_stores_and_audits() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let set = |level: &str| format!("csrf={csrf}&level={level}");
    let level = |s: Store| async move { s.read(|rx| rx.get_user(UserId(1))).await.expect("r").expect("u").level };
    let page = text(send(&e.app, get("/admin/users/1", Some(&cookie))).await).await;
    assert!(page.contains("<b id=\"level\">standard</b>"), "the default level is shown by name");
    assert_eq!(
        send(&e.app, post("/admin/users/1/level", Some(&cookie), &set("vip"))).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(level(e.store.clone()).await, "vip");
    assert!(text(send(&e.app, get("/admin/users/1", Some(&cookie))).await).await.contains("<b id=\"level\">vip</b>"));
    assert_eq!(
        send(&e.app, post("/admin/users/1/level", Some(&cookie), &set("standard"))).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(level(e.store.clone()).await, "", "the default level is stored as empty");
    for (uri, form, status) in [
        ("/admin/users/1/level", set("boss"), StatusCode::BAD_REQUEST),
        ("/admin/users/1/level", set(""), StatusCode::BAD_REQUEST),
        ("/admin/users/999/level", set("vip"), StatusCode::NOT_FOUND),
        ("/admin/users/x/level", set("vip"), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(send(&e.app, post(uri, Some(&cookie), &form)).await.status(), status, "{uri} {form}");
    }
    let audit = e.store.read(|rx| rx.find_audit(10)).await.expect("audit");
    let changes: Vec<(&str, &str)> =
        audit.iter().filter(|a| a.action == "set_level").map(|a| (a.before.as_str(), a.after.as_str())).collect();
    assert_eq!(changes, vec![("level=vip", "level=standard"), ("level=standard", "level=vip")]);
}

#[tokio::test]
async fn job_cancel_and_retry_go_through_the_engine_and_the_hold() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let form = format!("csrf={csrf}");
    // A queued job of user 3 with its price held.
    let queued = e
        .store
        .write(|tx| {
            let mut j = crate::store::records::test_job(UserId(3), 10);
            j.model_id = "demo".into();
            j.provider_id = "demo".into();
            billing::hold(tx, &mut j)?;
            tx.put_job(&j)?;
            Ok::<_, crate::billing::BillingError>(j.id)
        })
        .await
        .expect("queued job");
    assert_eq!(balance(&e.store, 3).await, 90);
    let cancel = format!("/admin/jobs/{queued}/cancel");
    let r = send(&e.app, post(&cancel, Some(&cookie), &form)).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "no engine yet (panel without a bot)");

    let notifier = Arc::new(Recorder::default());
    assert!(e.state.jobs.set(engine(&e, notifier.clone())).is_ok());
    let page = text(send(&e.app, get(&format!("/admin/jobs/{queued}"), Some(&cookie))).await).await;
    assert!(page.contains(&cancel) && !page.contains("/retry\""), "a running job offers cancel only");
    let r = send(&e.app, post(&cancel, Some(&cookie), &form)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let job = e.store.read(move |rx| rx.get_job(queued)).await.expect("r").expect("job");
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(balance(&e.store, 3).await, 100, "the hold was released");
    assert_eq!(notifier.failed.lock().expect("lock").as_slice(), &[queued], "the user was told");
    assert_eq!(send(&e.app, post(&cancel, Some(&cookie), &form)).await.status(), StatusCode::CONFLICT);

    // Retry: a new job with the same payload, held like any other.
    let r = send(&e.app, post(&format!("/admin/jobs/{queued}/retry"), Some(&cookie), &form)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()[header::LOCATION].to_str().expect("loc").to_string();
    let new_id = uuid::Uuid::parse_str(location.trim_start_matches("/admin/jobs/")).expect("uuid").as_u128();
    assert_ne!(new_id, queued.0);
    let new = e.store.read(move |rx| rx.get_job(JobId(new_id))).await.expect("r").expect("new job");
    assert_eq!((new.status, new.user_id, new.payload.clone()), (JobStatus::Queued, UserId(3), job.payload.clone()));
    assert!(new.hold_id.is_some());
    assert_eq!(balance(&e.store, 3).await, 90);

    // Failure paths: a succeeded job, a running one, bad and unknown ids, a balance too low.
    let retry = |id: String| format!("/admin/jobs/{id}/retry");
    assert_eq!(
        send(&e.app, post(&retry(e.job.to_string()), Some(&cookie), &form)).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        send(&e.app, post(&retry(new.id.to_string()), Some(&cookie), &form)).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        send(&e.app, post(&retry("not-a-uuid".into()), Some(&cookie), &form)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&e.app, post(&retry(JobId::new().to_string()), Some(&cookie), &form)).await.status(),
        StatusCode::NOT_FOUND
    );
    let pricey = e
        .store
        .write(|tx| {
            let mut j = crate::store::records::test_job(UserId(2), 10);
            j.model_id = "demo".into();
            j.status = JobStatus::Failed;
            tx.put_job(&j)?;
            billing::adjust(tx, UserId(2), Credits(-100), "system", "drained")?;
            Ok::<_, crate::billing::BillingError>(j.id)
        })
        .await
        .expect("failed job");
    let r = send(&e.app, post(&retry(pricey.to_string()), Some(&cookie), &form)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "a balance of 0 cannot hold the price");
    assert_eq!(balance(&e.store, 2).await, 0);
    let audit = e.store.read(|rx| rx.find_audit(20)).await.expect("audit");
    assert!(audit.iter().any(|a| a.action == "cancel_job" && a.before == "status=queued"));
    assert!(audit.iter().any(|a| a.action == "retry_job" && a.after == format!("new job {}", new.id)));
}

#[tokio::test]
async fn model_and_provider_switches_apply_at_once_and_survive_a_restart() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let running = engine(&e, Arc::new(Recorder::default()));
    assert!(e.state.jobs.set(running.clone()).is_ok());
    let live = e.state.catalog.clone();
    let usable = |c: &crate::catalog::Catalog| c.usable().iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(usable(&live), vec!["demo".to_string()]);
    let toggle =
        |what: &str, action: &str| (format!("/admin/{what}/demo/toggle"), format!("csrf={csrf}&action={action}"));

    let (uri, form) = toggle("models", "disable");
    assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    assert!(usable(&live).is_empty(), "the running bot stops offering it at once");
    let page = text(send(&e.app, get("/admin/models", Some(&cookie))).await).await;
    assert!(page.contains("disabled: disabled by admin:admin"), "{page}");
    // A restart builds the engine from the store: still disabled.
    assert!(usable(&restarted(&e).1).is_empty(), "survives a restart");
    let (uri, form) = toggle("models", "enable");
    assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(usable(&live), vec!["demo".to_string()]);

    // A provider switch takes its models with it.
    let (uri, form) = toggle("providers", "disable");
    assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    assert!(usable(&live).is_empty());
    assert!(usable(&restarted(&e).1).is_empty());
    let (uri, form) = toggle("providers", "enable");
    assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(usable(&live), vec!["demo".to_string()]);

    for (uri, form, status) in [
        ("/admin/models/nope/toggle".to_string(), format!("csrf={csrf}&action=disable"), StatusCode::NOT_FOUND),
        ("/admin/providers/nope/toggle".to_string(), format!("csrf={csrf}&action=disable"), StatusCode::NOT_FOUND),
        ("/admin/models/demo/toggle".to_string(), format!("csrf={csrf}&action=explode"), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), status, "{uri} {form}");
    }
    // Price and concurrency: at once, in the next hold, and after a restart; empty = config.
    let set = |what: &str, value: &str| {
        (
            format!("/admin/{what}/demo/{}", if what == "models" { "price" } else { "concurrency" }),
            format!("csrf={csrf}&value={value}"),
        )
    };
    let (uri, form) = set("models", "25");
    assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(live.usable()[0].price, Credits(25));
    let submitted = running
        .submit(crate::jobs::NewJob {
            user_id: UserId(1),
            chat_id: 1,
            lang: "en".into(),
            model_id: "demo".into(),
            payload: crate::store::records::test_job(UserId(1), 0).payload,
            progress_message_id: None,
            draft_id: None,
            priority: false,
        })
        .await
        .expect("submit");
    assert!(
        matches!(submitted, crate::jobs::Submitted::Queued { ref job, .. } if job.price == Credits(25)),
        "{submitted:?}"
    );
    assert_eq!(balance(&e.store, 1).await, 65, "90 − the new price");
    let (uri, form) = set("providers", "5");
    assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(running.concurrency("demo"), Some(5));
    let (again, again_catalog) = restarted(&e);
    assert_eq!((again_catalog.usable()[0].price, again.concurrency("demo")), (Credits(25), Some(5)));
    let page = text(send(&e.app, get("/admin/models", Some(&cookie))).await).await;
    assert!(page.contains("value=\"25\"") && page.contains("value=\"5\""), "{page}");
    for (what, value) in [("models", ""), ("providers", "")] {
        let (uri, form) = set(what, value);
        assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    }
    assert_eq!((live.usable()[0].price, running.concurrency("demo")), (Credits(10), Some(4)));
    for (what, value, status) in
        [("models", "-1", 400), ("models", "lots", 400), ("providers", "0", 400), ("providers", "65", 400)]
    {
        let (uri, form) = set(what, value);
        assert_eq!(send(&e.app, post(&uri, Some(&cookie), &form)).await.status().as_u16(), status, "{uri} {form}");
    }
    let form = format!("csrf={csrf}&value=3");
    assert_eq!(
        send(&e.app, post("/admin/models/nope/price", Some(&cookie), &form)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&e.app, post("/admin/providers/nope/concurrency", Some(&cookie), &form)).await.status(),
        StatusCode::NOT_FOUND
    );

    let audit = e.store.read(|rx| rx.find_audit(20)).await.expect("audit");
    assert!(
        audit.iter().any(|a| a.action == "setting" && a.target == "price:demo" && a.before == "10" && a.after == "25")
    );
    let toggles: Vec<String> = audit
        .iter()
        .filter(|a| a.action == "toggle")
        .map(|a| format!("{} {}→{}", a.target, a.before, a.after))
        .collect();
    assert_eq!(toggles.len(), 4, "{toggles:?}");
    assert!(toggles.contains(&"model:demo enabled→disabled".to_string()), "{toggles:?}");
}

/// Runs the broadcast sender until broadcast `id` is no longer sending; returns it.
async fn send_broadcast(en: &crate::jobs::JobEngine, store: &Store, id: u128) -> Broadcast {
    let token = tokio_util::sync::CancellationToken::new();
    let task = {
        let (en, token) = (en.clone(), token.clone());
        tokio::spawn(async move { en.run_broadcasts(token).await })
    };
    en.wake_broadcasts();
    let b = loop {
        let b = store.read(move |rx| rx.get_broadcast(id)).await.expect("read").expect("broadcast");
        if b.state != BroadcastState::Sending {
            break b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    token.cancel();
    task.await.expect("sender task");
    b
}

#[tokio::test]
async fn broadcast_compose_preview_send_count_blocked_and_resume() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let notifier = Arc::new(Recorder { blocked: vec![2], ..Default::default() });
    let en = engine(&e, notifier.clone());
    assert!(e.state.jobs.set(en.clone()).is_ok());

    // Compose: failure paths first; nothing is stored by them.
    let bad: Vec<(Vec<(&str, &str)>, Option<Vec<u8>>)> = vec![
        (vec![("text", "  "), ("target", "all")], None),
        (vec![("text", "hi"), ("target", "everyone")], None),
        (vec![("text", "hi"), ("target", "level"), ("level", "boss")], None),
        (vec![("text", "hi"), ("target", "active"), ("since", "last week")], None),
        (vec![("text", "hi"), ("target", "all")], Some(b"not an image".to_vec())),
    ];
    for (fields, image) in bad {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields.iter().copied());
        let r = send(&e.app, post_multipart("/admin/broadcasts", Some(&cookie), compose(&all, image.as_deref()))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{fields:?}");
    }
    assert_eq!(e.store.read(|rx| rx.find_broadcasts(10)).await.expect("b").len(), 1, "only the env's draft");

    let text_in = "Новости: <b>v2</b> is out & free";
    let form = compose(&[("csrf", &csrf), ("text", text_in), ("target", "all")], Some(&png()));
    let r = send(&e.app, post_multipart("/admin/broadcasts", Some(&cookie), form)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page_uri = r.headers()[header::LOCATION].to_str().expect("loc").to_string();
    let id = uuid::Uuid::parse_str(page_uri.trim_start_matches("/admin/broadcasts/")).expect("uuid").as_u128();
    let preview = text(send(&e.app, get(&page_uri, Some(&cookie))).await).await;
    assert!(preview.contains("<b id=\"bc-total\">3</b>"), "three recipients: {preview}");
    assert!(preview.contains("&lt;b&gt;v2&lt;/b&gt;") || preview.contains("&#60;b&#62;v2"), "escaped preview");
    assert!(preview.contains("/start") && preview.contains("<progress"));
    let img = send(&e.app, get(&format!("{page_uri}/image"), Some(&cookie))).await;
    assert_eq!(img.headers()[header::CONTENT_TYPE], "image/jpeg", "stored as a Telegram photo");
    assert_eq!(send(&e.app, get("/admin/broadcasts/not-a-uuid", Some(&cookie))).await.status(), StatusCode::NOT_FOUND);

    // Send: user 2 blocked the bot; counted and marked.
    let form = format!("csrf={csrf}");
    assert_eq!(
        send(&e.app, post(&format!("{page_uri}/start"), Some(&cookie), &form)).await.status(),
        StatusCode::SEE_OTHER
    );
    let done = send_broadcast(&en, &e.store, id).await;
    assert_eq!(done.state, BroadcastState::Done);
    assert_eq!((done.total, done.sent, done.blocked, done.failed, done.cursor), (3, 2, 1, 0, Some(3)));
    let got = notifier.broadcasts.lock().expect("lock").clone();
    assert_eq!(got, vec![(1, text_in.to_string(), true), (3, text_in.to_string(), true)]);
    let u2 = e.store.read(|rx| rx.get_user(UserId(2))).await.expect("r").expect("u");
    assert!(u2.blocked, "a 403 marks the user blocked");
    let p: serde_json::Value =
        serde_json::from_str(&text(send(&e.app, get(&format!("{page_uri}/progress"), Some(&cookie))).await).await)
            .expect("json");
    assert_eq!((p["state"].as_str(), p["handled"].as_u64(), p["blocked"].as_u64()), (Some("done"), Some(3), Some(1)));
    for action in ["start", "cancel"] {
        let r = send(&e.app, post(&format!("{page_uri}/{action}"), Some(&cookie), &form)).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "{action} after done");
    }

    // Resume after a restart: a broadcast stored mid-way continues after its cursor. User 2
    // is now known to have blocked the bot and is skipped without a send.
    let resumed = Broadcast {
        id: uuid::Uuid::now_v7().as_u128(),
        state: BroadcastState::Sending,
        image: None,
        text: "second".into(),
        cursor: Some(1),
        sent: 1,
        ..done.clone()
    };
    let rid = resumed.id;
    e.store.write(move |tx| tx.put_broadcast(&resumed)).await.expect("put");
    notifier.broadcasts.lock().expect("lock").clear();
    let b = send_broadcast(&en, &e.store, rid).await;
    assert_eq!((b.state, b.sent), (BroadcastState::Done, 2));
    assert_eq!(notifier.broadcasts.lock().expect("lock").clone(), vec![(3, "second".to_string(), false)]);

    // Targets: a level, and activity (only user 1 created a job).
    e.store
        .write(|tx| {
            let mut u = tx.get_user(UserId(3))?.expect("u3");
            u.level = "vip".into();
            tx.put_user(&u)
        })
        .await
        .expect("level");
    for (fields, total) in [
        (vec![("target", "level"), ("level", "vip")], 1),
        (vec![("target", "level"), ("level", "standard")], 1),
        (vec![("target", "active"), ("since", "2000-01-01")], 1),
    ] {
        let mut all = vec![("csrf", csrf.as_str()), ("text", "t")];
        all.extend(fields.iter().copied());
        let r = send(&e.app, post_multipart("/admin/broadcasts", Some(&cookie), compose(&all, None))).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{fields:?}");
        let page =
            text(send(&e.app, get(r.headers()[header::LOCATION].to_str().expect("l"), Some(&cookie))).await).await;
        assert!(page.contains(&format!("<b id=\"bc-total\">{total}</b>")), "{fields:?}: {page}");
    }
    // Cancel a draft.
    let draft = format!("/admin/broadcasts/{}/cancel", e.broadcast);
    assert_eq!(send(&e.app, post(&draft, Some(&cookie), &form)).await.status(), StatusCode::SEE_OTHER);
    let list = text(send(&e.app, get("/admin/broadcasts", Some(&cookie))).await).await;
    assert!(list.contains("cancelled") && list.contains("done"), "{list}");
    let audit = e.store.read(|rx| rx.find_audit(50)).await.expect("audit");
    assert!(audit.iter().any(|a| a.action == "broadcast" && a.before == "draft" && a.after.starts_with("sending")));
    assert!(audit.iter().any(|a| a.action == "broadcast_draft"));
}

#[tokio::test]
async fn aggregates_follow_the_write_paths_and_match_a_rebuild() {
    use crate::web::pages::dashboard::{from_aggregates, summarize};
    let e = env().await;
    // More activity through the real paths: a job that fails and releases, a rename.
    e.store
        .write(|tx| {
            let mut j = crate::store::records::test_job(UserId(2), 7);
            billing::hold(tx, &mut j)?;
            tx.put_job(&j)?;
            j.status = JobStatus::Failed;
            j.finished_at = Some(now_ms());
            billing::release(tx, &mut j)?;
            tx.put_job(&j)?;
            let mut u = tx.get_user(UserId(3))?.expect("u3");
            u.first_name = "Zinaida".into();
            tx.put_user(&u)?;
            let mut u = tx.get_user(UserId(1))?.expect("u1");
            u.banned = true;
            u.username = Some("anna_b".into());
            tx.put_user(&u)?;
            Ok::<_, crate::billing::BillingError>(())
        })
        .await
        .expect("activity");
    // The search index carries each user's list row in every entry: after holds, releases,
    // a rename, a ban and a new username, each entry shows what the record says now.
    let index_as_records_say = |rx: &crate::store::Rx| -> Result<_, crate::store::StoreError> {
        let mut want = Vec::new();
        for u in rx.find_users()? {
            for w in crate::store::stats::search_words(&u) {
                want.push((w, u.id.0, UserSummary::of(&u)));
            }
        }
        want.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
        Ok((rx.find_name_entries()?, want))
    };
    let (index, want) = e.store.read(index_as_records_say).await.expect("index");
    assert_eq!(index, want);
    assert!(index.iter().any(|(w, id, row)| w == "anna_b" && *id == 1 && row.banned), "{index:?}");
    assert!(index.iter().any(|(_, id, row)| *id == 2 && row.held.0 == 0 && row.balance.0 == 100), "{index:?}");
    let now = now_ms();
    let (fast, slow, daily) = e
        .store
        .read(move |rx| {
            let slow = summarize(&rx.find_users()?, &rx.find_jobs()?, rx.find_active_jobs()?.len(), now);
            Ok::<_, crate::store::StoreError>((from_aggregates(rx, now)?, slow, rx.find_daily(0, i64::MAX - 1)?))
        })
        .await
        .expect("read");
    assert_eq!(
        (fast.users_total, fast.users_new_today, fast.users_active_7d, fast.queue_depth),
        (slow.users_total, slow.users_new_today, slow.users_active_7d, slow.queue_depth)
    );
    assert_eq!((fast.jobs_today.clone(), fast.success_rate), (slow.jobs_today.clone(), slow.success_rate));
    assert_eq!((fast.held_today, fast.captured_today, fast.released_today), (17, 10, 7));
    assert_eq!((slow.held_today, slow.captured_today, slow.released_today), (17, 10, 7));
    assert_eq!(fast.jobs_per_day, slow.jobs_per_day);
    assert_eq!(fast.credits_per_day, slow.credits_per_day);
    let fm: Vec<(String, u64, u64)> = fast.models.iter().map(|m| (m.model.clone(), m.succeeded, m.failed)).collect();
    let sm: Vec<(String, u64, u64)> = slow.models.iter().map(|m| (m.model.clone(), m.succeeded, m.failed)).collect();
    assert_eq!(fm, sm);
    // Rebuilding from the rows (migration 005) gives exactly what the write paths kept.
    let rebuilt = e
        .store
        .write(|tx| {
            tx.rebuild_aggregates()?;
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .map(|_| ());
    rebuilt.expect("rebuild");
    let again = e.store.read(|rx| rx.find_daily(0, i64::MAX - 1)).await.expect("read");
    assert_eq!(daily, again);
    let (rebuilt, _) = e.store.read(index_as_records_say).await.expect("index");
    assert_eq!(rebuilt, index, "the rebuilt search index equals the one the write paths kept");
    // The search index followed the rename.
    let (old, new) = e
        .store
        .read(|rx| {
            Ok::<_, crate::store::StoreError>((
                rx.find_user_ids_by_word("boris", 10)?,
                rx.find_user_ids_by_word("zin", 10)?,
            ))
        })
        .await
        .expect("index");
    assert_eq!((old, new), ((vec![], false), (vec![3], false)));
    // A prefix with more index entries than the limit says so.
    let (ids, cut) = e.store.read(|rx| rx.find_user_ids_by_word("", 2)).await.expect("index");
    assert!(cut && ids.len() <= 2, "{ids:?}");
}

/// The sandbox's demo provider with only its create model (not one per photo mode): what the
/// panel tests count and switch.
fn demo_config() -> Config {
    let mut c = Config::default().with_demo();
    c.models.truncate(1);
    c
}

#[tokio::test]
async fn payments_page_lists_charges_and_a_refund_without_a_bot_changes_nothing() {
    let e = env().await;
    let (cookie, csrf) = login(&e.app).await;
    let package =
        crate::config::Package { id: "small".into(), credits: Credits(100), stars: 50, crypto: None, bonus_percent: 0 };
    let b = billing::Billing::new(
        e.store.clone(),
        crate::config::BillingConfig { packages: vec![package], ..Default::default() },
    );
    let paid = billing::StarPayment {
        payer: UserId(1),
        currency: billing::STARS_CURRENCY.into(),
        total_amount: 50,
        invoice_payload: billing::invoice_payload("small", UserId(1)),
        telegram_payment_charge_id: "stx-web-1".into(),
        provider_payment_charge_id: String::new(),
    };
    b.credit_purchase(paid).await.expect("credited");
    let before = balance(&e.store, 1).await;
    let page = text(send(&e.app, get("/admin/payments", Some(&cookie))).await).await;
    assert!(
        page.contains("stx-web-1") && page.contains("href=\"/admin/users/1\"") && page.contains(">paid<"),
        "{page}"
    );
    // The flash names the charge from the query, escaped.
    let r = send(&e.app, get("/admin/payments?done=refunded&charge=%3Cscript%3Ex", Some(&cookie))).await;
    let flash = text(r).await;
    assert!(flash.contains("&#60;script&#62;x refunded") && !flash.contains("<script>x"), "{flash}");
    // No bot token: Telegram cannot be asked, so nothing is debited or marked.
    let r = send(&e.app, post("/admin/payments/refund", Some(&cookie), &format!("csrf={csrf}&charge=stx-web-1"))).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let p = e.store.read(|rx| rx.get_payment("stx-web-1")).await.expect("read").expect("charge");
    assert_eq!(p.state, crate::store::records::PaymentState::Paid);
    assert_eq!(balance(&e.store, 1).await, before);
    assert!(e.store.read(billing::verify).await.expect("verify").is_empty());
}

#[tokio::test]
async fn the_models_page_lists_a_comfyui_pool_without_credentials() {
    let e = env().await;
    let mut config = demo_config();
    let mut p = super::harness::provider("gpus", crate::config::ProviderKind::Comfyui, "");
    p.base_urls = vec!["http://admin:s3cret@gpu1:8188/?token=abc".into(), "http://gpu2:8188".into()];
    config.providers.push(p);
    config.validate().expect("valid");
    let app = router(web_state(&e.store, config));
    let (cookie, _) = login(&app).await;
    let page = text(send(&app, get("/admin/models", Some(&cookie))).await).await;
    assert!(page.contains("http://gpu1:8188, http://gpu2:8188"), "{page}");
    assert!(!page.contains("s3cret") && !page.contains("token=abc") && !page.contains("admin:"), "{page}");
}
