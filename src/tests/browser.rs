//! The admin panel in a real headless Chromium, driven over WebDriver (chromedriver): log in,
//! find a user, top up 50 credits, see the balance and the ledger row, download the CSV,
//! refund a Telegram Stars charge on the payments page (against the Bot API emulator), open
//! the dashboard and keep a screenshot of it as a test artifact.
//!
//! The server is the real router on a real TCP listener over a real redb file. Chromium and
//! chromedriver come from Debian (`chromium`, `chromium-driver`; `.ci/test` installs them); a
//! missing chromedriver fails the test with a message saying so instead of skipping it.

use crate::billing;
use crate::config::Config;
use crate::domain::{Credits, UserId, now_ms};
use crate::store::Store;
use crate::store::records::UserRecord;
use crate::web::{WebState, router};
use fantoccini::{ClientBuilder, Locator};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &str = "browser test password";

/// Kills chromedriver (and with it the browser it started) however the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in candidates {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")]) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Where test artifacts go: `$MEDIABOT_TEST_ARTIFACTS`, else `target/test-artifacts` in the crate.
fn artifacts_dir() -> PathBuf {
    std::env::var_os("MEDIABOT_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts"))
}

async fn start_chromedriver() -> (Driver, String) {
    let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]).unwrap_or_else(|| {
        panic!(
            "chromedriver not found: the browser test needs Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; .ci/test installs them) or CHROMEDRIVER=/path"
        )
    });
    let port = free_port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let driver = Driver(child);
    // chromedriver binds its port a moment after it starts.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (driver, format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver ({}) did not open port {port}", chromedriver.display());
}

async fn start_panel(dir: &std::path::Path) -> (Store, SocketAddr, crate::admin::Admin) {
    let store = Store::open(dir).expect("open store");
    let s = store.clone();
    tokio::task::spawn_blocking(move || crate::admin::set_password_blocking(&s, &crate::admin::Actor::Cli, PASSWORD))
        .await
        .expect("join")
        .expect("password");
    store
        .write(|tx| {
            for (id, name, username) in [(501, "Vera", "vera_k"), (502, "Oleg", "oleg")] {
                tx.put_user(&UserRecord {
                    id: UserId(id),
                    first_name: name.into(),
                    username: Some(username.into()),
                    language_code: Some("en".into()),
                    balance: Credits(0),
                    held: Credits(0),
                    created_at: now_ms(),
                    updated_at: now_ms(),
                    blocked: false,
                    banned: false,
                    level: String::new(),
                    level_until: None,
                    language: None,
                    referral: Default::default(),
                })?;
                billing::adjust(tx, UserId(id), Credits(20), "system", "signup")?;
            }
            Ok::<_, crate::billing::BillingError>(())
        })
        .await
        .expect("seed");
    let config = Arc::new(Config::default().with_demo());
    let catalog = crate::catalog::Catalog::open(store.clone(), &config).expect("catalog");
    let health = Arc::new(crate::health::Health::new(crate::health::BotState::NoToken));
    let state = WebState::new(store.clone(), config, catalog, health);
    let admin = state.admin.clone();
    let app = router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    (store, addr, admin)
}

/// User 501 pays a 50-Star invoice in the emulator (the bot's side over the Bot API), and the
/// charge is credited as the bot would; refunds go to that emulator. Returns the charge id.
async fn stars_charge(
    store: &Store,
    admin: &crate::admin::Admin,
    emu: &crate::emulator::Emulator,
    emu_url: &str,
) -> String {
    use serde_json::json;
    let hello = json!({"user": {"id": 501, "first_name": "Vera", "language_code": "en"}, "text": "hi"});
    emu.push_update(serde_json::from_value(hello).expect("update")).expect("known chat");
    let api = format!("{emu_url}/bot{}", crate::app::SANDBOX_TOKEN);
    let http = reqwest::Client::new();
    let call = |method: &str, body: serde_json::Value| {
        let req = http.post(format!("{api}/{method}")).json(&body);
        async move { req.send().await.expect("call").json::<serde_json::Value>().await.expect("json") }
    };
    let payload = billing::invoice_payload("small", UserId(501));
    let invoice = json!({"chat_id": 501, "title": "110 credits", "description": "110 credits", "payload": payload,
        "currency": "XTR", "prices": [{"label": "110 credits", "amount": 50}]});
    let sent = call("sendInvoice", invoice).await;
    let mid = sent["result"]["message_id"].as_i64().expect("invoice message");
    let payer = serde_json::from_value(json!({"id": 501, "first_name": "Vera"})).expect("user");
    let e = emu.clone();
    let pay = tokio::spawn(async move {
        e.pay(payer, crate::emulator::PayInvoice { message_id: Some(mid), invoice_link: None }).await.expect("pay")
    });
    let mut query = None;
    while query.is_none() {
        let updates = call("getUpdates", json!({"timeout": 5})).await;
        query = updates["result"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|u| u["pre_checkout_query"]["id"].as_str().map(str::to_string));
    }
    call("answerPreCheckoutQuery", json!({"pre_checkout_query_id": query, "ok": true})).await;
    let charge = pay.await.expect("join").telegram_payment_charge_id.expect("paid");
    let package = crate::config::Package {
        id: "small".into(),
        credits: Credits(100),
        stars: 50,
        crypto: None,
        bonus_percent: 10,
    };
    let b = billing::Billing::new(
        store.clone(),
        crate::config::BillingConfig { packages: vec![package], ..Default::default() },
    );
    let paid = billing::StarPayment {
        payer: UserId(501),
        currency: billing::STARS_CURRENCY.into(),
        total_amount: 50,
        invoice_payload: payload,
        telegram_payment_charge_id: charge.clone(),
        provider_payment_charge_id: String::new(),
    };
    b.credit_purchase(paid).await.expect("credited");
    let bot = teloxide::Bot::new(crate::app::SANDBOX_TOKEN).set_api_url(emu_url.parse().expect("url"));
    let tg = teloxide::adaptors::Throttle::new_spawn(bot, teloxide::adaptors::throttle::Limits::default());
    admin.set_stars(Arc::new(crate::bot::stars::BotStars::new(tg, &Config::default())));
    charge
}

/// A headless Chromium session: (chromedriver, WebDriver client, profile dir). Keep all three
/// alive for the test's length.
async fn headless_chromium() -> (Driver, fantoccini::Client, tempfile::TempDir) {
    let (driver, driver_url) = start_chromedriver().await;
    let chromium = find_program("CHROMIUM", &["chromium", "chromium-browser"])
        .unwrap_or_else(|| panic!("chromium not found: apt-get install chromium chromium-driver"));
    let profile = tempfile::tempdir().expect("profile dir");
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    });
    let caps = caps.as_object().cloned().expect("object");
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .expect("WebDriver session");
    (driver, c, profile)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tops_up_a_user_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, addr, admin) = start_panel(dir.path()).await;
    let (emu, emu_url, _emu_task) = crate::tests::harness::serve_emulator().await;
    let (_driver, c, _profile) = headless_chromium().await;
    let base = format!("http://{addr}");

    // Log in: /admin without a session lands on the login form.
    c.goto(&format!("{base}/admin")).await.expect("open");
    assert!(c.current_url().await.expect("url").path().ends_with("/admin/login"));
    c.find(Locator::Css("input[name=password]"))
        .await
        .expect("password field")
        .send_keys(PASSWORD)
        .await
        .expect("type");
    c.find(Locator::Css("form button[type=submit]")).await.expect("sign in").click().await.expect("click");
    c.wait().for_element(Locator::Css("svg.chart")).await.expect("dashboard after login");

    // Find the user by @username from the search form.
    c.goto(&format!("{base}/admin/users")).await.expect("users");
    c.find(Locator::Css("input[name=q]")).await.expect("search").send_keys("@vera").await.expect("type");
    c.find(Locator::Css("form.filters button")).await.expect("search button").click().await.expect("click");
    // The unfiltered list already shows user 501: wait for the results page itself, or the row
    // found below belongs to the page being left.
    for _ in 0..100 {
        if c.current_url().await.expect("url").query().is_some_and(|q| q.contains("q=")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(c.current_url().await.expect("url").query().is_some_and(|q| q.contains("q=")), "the search was submitted");
    let link = c.wait().for_element(Locator::Css("a[href='/admin/users/501']")).await.expect("result row");
    let listed = c.source().await.expect("html");
    assert!(listed.contains("1 match(es)") && !listed.contains("oleg"), "only Vera matches @vera");
    link.click().await.expect("open user");
    c.wait().for_element(Locator::Id("balance")).await.expect("user page");
    assert_eq!(c.find(Locator::Id("balance")).await.expect("b").text().await.expect("t"), "20");

    // Top up 50 credits with a reason.
    let form = c.form(Locator::Css("form[action='/admin/users/501/balance']")).await.expect("form");
    c.find(Locator::Css("select[name=direction]")).await.expect("dir").select_by_value("add").await.expect("add");
    form.set_by_name("amount", "50").await.expect("amount");
    form.set_by_name("reason", "browser top-up").await.expect("reason");
    c.find(Locator::Css("form[action='/admin/users/501/balance'] button"))
        .await
        .expect("apply")
        .click()
        .await
        .expect("apply");
    c.wait()
        .for_element(Locator::XPath("//b[@id='balance' and text()='70']"))
        .await
        .expect("the new balance 70 is shown");
    let ledger = c.find(Locator::Id("ledger")).await.expect("ledger").text().await.expect("text");
    assert!(ledger.contains("browser top-up") && ledger.contains("admin:admin") && ledger.contains("50"), "{ledger}");

    // Download the user's CSV with the browser's own session (the link on the page).
    let href = c
        .find(Locator::Css("a[href^='/admin/ledger.csv']"))
        .await
        .expect("csv link")
        .attr("href")
        .await
        .expect("attr")
        .expect("href");
    let csv = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {credentials: 'same-origin'})
               .then(r => r.text().then(t => done([r.status, r.headers.get('content-type'), t])))
               .catch(e => done([0, '', String(e)]));",
            vec![serde_json::Value::String(href)],
        )
        .await
        .expect("fetch csv");
    assert_eq!(csv[0], 200, "{csv}");
    assert!(csv[1].as_str().unwrap_or("").starts_with("text/csv"), "{csv}");
    let body = csv[2].as_str().unwrap_or("");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.first().copied(), Some("id,time,user,kind,amount,delta,balance_after,job,actor,reason"), "{body}");
    assert_eq!(lines.len(), 3, "header + signup + top-up: {body}");
    assert!(body.contains("browser top-up") && body.contains(",50,") && body.contains(",70,"), "{body}");
    assert!(!body.contains(",502,"), "only Vera's rows: {body}");

    // Refund Vera's Stars charge on the payments page: Refund, confirm, see the result.
    let charge = stars_charge(&store, &admin, &emu, &emu_url).await;
    c.find(Locator::Css("nav a[href='/admin/payments']")).await.expect("nav link").click().await.expect("open");
    let row = c.wait().for_element(Locator::Id("payments")).await.expect("payments table");
    let listed = row.text().await.expect("text");
    assert!(listed.contains(&charge) && listed.contains("paid") && listed.contains("⭐50"), "{listed}");
    c.find(Locator::Css("form[action='/admin/payments/refund'] button"))
        .await
        .expect("refund")
        .click()
        .await
        .expect("click");
    c.accept_alert().await.expect("the confirm dialog");
    let flash = c.wait().for_element(Locator::Id("flash")).await.expect("the result");
    assert!(flash.text().await.expect("text").contains(&format!("Charge {charge} refunded")));
    let listed = c.find(Locator::Id("payments")).await.expect("table").text().await.expect("text");
    assert!(listed.contains("refunded"), "{listed}");
    let refunded =
        emu.payments().charges.into_iter().find(|ch| ch.telegram_payment_charge_id == charge).expect("charge");
    assert_eq!(refunded.state, "refunded", "Telegram refunded the Stars");
    let ops = store.read(|rx| rx.find_operations(UserId(501))).await.expect("ops");
    let refunds = ops.iter().filter(|o| o.kind == crate::store::records::OpKind::Refund).count();
    assert_eq!(refunds, 1, "one debit");
    assert!(store.read(billing::verify).await.expect("verify").is_empty());

    // The dashboard, with a screenshot kept for people to look at.
    c.goto(&format!("{base}/admin")).await.expect("dashboard");
    c.wait().for_element(Locator::Css("svg.chart")).await.expect("charts");
    let dash = c.source().await.expect("html");
    assert!(dash.contains("<b>2</b> users"), "dashboard counts both users");
    let png = c.screenshot().await.expect("screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let out = artifacts_dir();
    std::fs::create_dir_all(&out).expect("artifact dir");
    std::fs::write(out.join("admin-dashboard.png"), &png).expect("write screenshot");
    c.close().await.expect("close session");

    let u = store.read(|rx| rx.get_user(UserId(501))).await.expect("read").expect("user");
    assert_eq!(u.balance, Credits(70), "20 + 50 top-up + 110 bought − 110 refunded");
}

/// The sandbox page under the panel's CSP, as `sandbox` serves it: a bot message with
/// `javascript:` and `data:` links shows them as plain text; http(s) and tg: links stay links;
/// two photos chosen at once arrive as one album.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_page_links_only_safe_urls_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = crate::app::start(crate::tests::harness::test_config(dir.path()), crate::app::Mode::Sandbox)
        .await
        .expect("sandbox");
    let base = format!("http://{}", app.addr);
    let user = 10001; // the sandbox page's user (emulator::sandbox::SANDBOX_USER_ID)
    let emu = app.emulator.as_ref().expect("emulator");
    let hello = serde_json::json!({"user": {"id": user, "first_name": "Sandbox"}, "text": "hello"});
    emu.push_update(serde_json::from_value(hello).expect("update")).expect("known chat");
    // As the bot: one message with every kind of link, through the emulator's Bot API.
    let text = "evil data safe tg bare";
    let link = |offset: usize, length: usize, url: &str| serde_json::json!({"type": "text_link", "offset": offset, "length": length, "url": url});
    let sent: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/bot1000000:SANDBOX/sendMessage"))
        .json(&serde_json::json!({
            "chat_id": user,
            "text": text,
            "entities": [
                link(0, 4, "javascript:alert(document.domain)"),
                link(5, 4, "data:text/html,<script>alert(1)</script>"),
                link(10, 4, "https://example.org/safe"),
                link(15, 2, "tg://resolve?domain=mediabot"),
                {"type": "url", "offset": 18, "length": 4},
            ],
        }))
        .send()
        .await
        .expect("sendMessage")
        .json()
        .await
        .expect("json");
    assert_eq!(sent["ok"], true, "{sent}");

    let (_driver, c, _profile) = headless_chromium().await;
    c.goto(&format!("{base}/sandbox")).await.expect("open");
    c.wait().for_element(Locator::Css("a[href='https://example.org/safe']")).await.expect("the https link renders");
    let hrefs = c
        .execute("return [...document.querySelectorAll('#chat a')].map(a => a.getAttribute('href'));", vec![])
        .await
        .expect("links");
    let hrefs: Vec<String> =
        hrefs.as_array().expect("array").iter().filter_map(|h| h.as_str().map(str::to_string)).collect();
    assert!(hrefs.iter().any(|h| h.starts_with("tg://")), "{hrefs:?}");
    assert!(hrefs.iter().any(|h| h == "http://bare/"), "a bare url entity is an http link: {hrefs:?}");
    assert!(
        !hrefs.iter().any(|h| h.to_ascii_lowercase().starts_with("javascript:") || h.starts_with("data:")),
        "{hrefs:?}"
    );
    let shown = c.find(Locator::Css("#chat")).await.expect("chat").text().await.expect("text");
    assert!(shown.contains("evil") && shown.contains("data"), "unsafe links stay as text: {shown}");

    // Several photos chosen at once go as one album, in order, the caption on the first.
    let before = emu.messages(user).len();
    let mut paths = Vec::new();
    for (i, side) in [24u32, 32].into_iter().enumerate() {
        let path = dir.path().join(format!("album-{i}.png"));
        image::RgbImage::new(side, side).save(&path).expect("write png");
        paths.push(path.display().to_string());
    }
    c.find(Locator::Id("input")).await.expect("input").send_keys("two squares").await.expect("caption");
    // chromedriver sets several files on a `multiple` input from newline-separated paths.
    c.find(Locator::Id("photo")).await.expect("photo input").send_keys(&paths.join("\n")).await.expect("choose");
    let mut album = Vec::new();
    for _ in 0..200 {
        album = emu.messages(user).into_iter().skip(before).filter(|m| m.photo.is_some()).collect::<Vec<_>>();
        if album.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(album.len(), 2, "{album:?}");
    let group = album[0].media_group_id.clone();
    assert!(group.is_some() && album[1].media_group_id == group, "{album:?}");
    let widths: Vec<_> = album.iter().filter_map(|m| m.photo.as_ref().map(|p| p.width)).collect();
    assert_eq!(widths, [24, 32]);
    assert_eq!(album[0].caption.as_deref(), Some("two squares"));
    assert_eq!(album[1].caption, None);
    c.close().await.expect("close session");
    app.stop().await;
}
