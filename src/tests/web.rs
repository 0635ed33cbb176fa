//! Admin panel through its real router (tower `oneshot`) over a real redb store in a tempdir:
//! every page and action, the auth crawl, CSRF, the login limiter and escaping.

use crate::billing;
use crate::config::Config;
use crate::domain::{Credits, Format, ImageId, JobId, JobStatus, UserId, now_ms};
use crate::store::Store;
use crate::store::records::{JobPayload, JobRecord, LibraryItem, OpKind, Settlement, UserRecord};
use crate::web::{WebState, auth, router};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use std::sync::Arc;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";
const XSS: &str = "<script>alert(1)</script>";

struct Env {
    app: Router,
    store: Store,
    _dir: tempfile::TempDir,
    job: JobId,
    image: ImageId,
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
    tokio::task::spawn_blocking(move || auth::set_password(&s, PASSWORD)).await.expect("join").expect("set pw");
    let job = JobId::new();
    let image = ImageId::new();
    let bytes = png();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    store.put_media_file(&sha, "png", &bytes).expect("media");
    store
        .write(move |tx| {
            tx.put_user(&user(1, "Anna", Some("anna")))?;
            tx.put_user(&user(2, XSS, Some("evil")))?;
            tx.put_user(&user(3, "Boris", None))?;
            for id in 1..=3 {
                billing::adjust(tx, UserId(id), Credits(100), "system", "seed")
                    .map_err(|e| crate::store::StoreError::Refused(e.to_string()))?;
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
            };
            billing::hold(tx, &mut j).map_err(|e| crate::store::StoreError::Refused(e.to_string()))?;
            billing::capture(tx, &mut j).map_err(|e| crate::store::StoreError::Refused(e.to_string()))?;
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
            })
        })
        .await
        .expect("seed");
    let app = router(WebState::new(store.clone(), Arc::new(Config::default().with_demo())));
    Env { app, store, _dir: dir, job, image }
}

async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.expect("infallible")
}

async fn text(r: Response<Body>) -> String {
    let b = axum::body::to_bytes(r.into_body(), 64 << 20).await.expect("body");
    String::from_utf8_lossy(&b).into_owned()
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
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
async fn login(app: &Router) -> (String, String) {
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

fn routes(e: &Env) -> Vec<String> {
    vec![
        "/admin".into(),
        "/admin/users".into(),
        "/admin/users?q=anna&sort=balance&page=0".into(),
        "/admin/users/1".into(),
        "/admin/ledger".into(),
        "/admin/ledger?user=1&kind=adjust".into(),
        "/admin/ledger.csv".into(),
        "/admin/jobs".into(),
        "/admin/jobs/rows".into(),
        format!("/admin/jobs/{}", e.job),
        "/admin/library".into(),
        format!("/admin/library/{}/thumb", e.image),
        "/admin/audit".into(),
        "/admin/models".into(),
    ]
}

const POSTS: &[(&str, &str)] = &[
    ("/admin/users/1/balance", "direction=add&amount=5&reason=x"),
    ("/admin/users/1/ban", ""),
    ("/admin/users/1/unban", ""),
    ("/admin/logout", ""),
];

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
    for (uri, form) in POSTS {
        let r = send(&e.app, post(uri, None, form)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{uri}");
    }
    // /metrics from a non-loopback peer needs a session.
    assert_eq!(send(&e.app, get("/metrics", None)).await.status(), StatusCode::UNAUTHORIZED);
    // Open: login, health, assets.
    assert_eq!(send(&e.app, get("/admin/login", None)).await.status(), StatusCode::OK);
    let r = send(&e.app, get("/healthz", None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(text(r).await, "ok");
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
    let (cookie, _) = login(&e.app).await;
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

    let thumb = send(&e.app, get(&format!("/admin/library/{}/thumb", e.image), Some(&cookie))).await;
    assert_eq!(thumb.headers()[header::CONTENT_TYPE], "image/jpeg");
    let jpeg = axum::body::to_bytes(thumb.into_body(), 1 << 20).await.expect("jpeg");
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");

    let m = send(&e.app, get("/metrics", Some(&cookie))).await;
    assert_eq!(m.status(), StatusCode::OK);
    let m = text(m).await;
    assert!(m.contains("mediabot_users 3") && m.contains("mediabot_jobs_today{status=\"succeeded\"} 1"), "{m}");
    let models = text(send(&e.app, get("/admin/models", Some(&cookie))).await).await;
    assert!(models.contains("demo") && !models.contains("api_key"));
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
    for (uri, form) in POSTS {
        for bad in ["", "csrf=", "csrf=deadbeef", &format!("csrf={other_csrf}")] {
            let body = if form.is_empty() { bad.to_string() } else { format!("{bad}&{form}") };
            let r = send(&e.app, post(uri, Some(&cookie), &body)).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{uri} with {bad:?}");
        }
    }
    assert_eq!(balance(&e.store, 1).await, 90);
    let u = e.store.read(|rx| rx.get_user(UserId(1))).await.expect("r").expect("u");
    assert!(!u.banned);
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
