//! Admin commands in the bot and `/status` (issue 21), in Russian through the emulator: each
//! admin command's happy path, bad arguments (the usage line), the refusal for a non-admin,
//! the audit row with actor `tg:<id>`, and `/status` for one's own jobs and not for others'.

use super::harness::*;
use crate::config::ProviderKind;
use crate::domain::{Credits, UserId};
use crate::store::records::OpKind;

const ADMIN: i64 = 3001;

fn config(dir: &std::path::Path) -> crate::config::Config {
    let mut c = test_config(dir);
    c.billing.currency = crate::config::BillingConfig::default().currency;
    c.telegram.admins = vec![ADMIN];
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    let mut m = model("demo", "demo", 10);
    m.formats = vec![crate::domain::Format::Square];
    m.display_name = "Демо".into();
    c.models.push(m);
    c
}

/// Sends `text` as `user` and returns the bot's next answer containing `needle`.
async fn ask(h: &Harness, user: i64, text: &str, needle: &str) -> String {
    let n = h.messages(user).len();
    h.text(user, "ru", text);
    let found = |m: &[serde_json::Value]| {
        m.iter().skip(n).find(|x| x["from_bot"] == true && text_of(x).contains(needle)).map(text_of)
    };
    found(&h.wait_for(user, 20, needle, |m| found(m).is_some()).await).expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_commands_work_for_admins_refuse_others_and_leave_audit_rows() {
    let h = Harness::start(config).await;
    let (anna, other) = (3002, 3003);
    for u in [ADMIN, anna, other] {
        ask(&h, u, "/start", "бонус").await;
    }
    // /add_balance by @username, with a reason; then by id, negative; the alias too.
    let done = ask(&h, ADMIN, "/add_balance @USER3002 50 подарок за отзыв", "✅").await;
    assert!(done.contains("User3002 @user3002 (3002): +50") && done.contains("150 кредитов"), "{done}");
    let done = ask(&h, ADMIN, "/addtokens 3002 -20", "✅").await;
    assert!(done.contains("-20") && done.contains("130 кредитов"), "{done}");
    let ops = h.ledger(anna).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Adjust, OpKind::Adjust]);
    assert_eq!((ops[1].actor.as_str(), ops[1].reason.as_deref()), ("tg:3001", Some("подарок за отзыв")));
    assert_eq!(h.balance(anna).await, Credits(130));
    // Bad arguments: the usage line; an unknown user; more than the balance.
    for bad in ["/add_balance", "/add_balance 3002", "/add_balance 3002 много", "/add_balance 3002 0"] {
        let usage = ask(&h, ADMIN, bad, "Использование: /add_balance").await;
        assert!(usage.contains("ПОЛЬЗОВАТЕЛЬ СУММА"), "{bad}: {usage}");
    }
    assert!(ask(&h, ADMIN, "/add_balance @nobody 5", "не найден").await.contains("@nobody"));
    assert!(ask(&h, ADMIN, "/add_balance 3002 -1000", "Нельзя списать").await.contains("130 кредитов"));
    assert_eq!(h.balance(anna).await, Credits(130), "nothing changed by the refusals");

    // /users: the list, a page beyond it, a query.
    let list = ask(&h, ADMIN, "/users", "Пользователи, страница 1").await;
    for u in ["@user3001", "@user3002", "@user3003"] {
        assert!(list.contains(u), "{list}");
    }
    assert!(list.contains("User3002 @user3002 (3002) · 130 кредитов · заданий: 0 · с 20"), "{list}");
    assert!(ask(&h, ADMIN, "/users 2", "Никого").await.contains("Никого"));
    let found = ask(&h, ADMIN, "/users user3003", "Пользователи").await;
    assert!(found.contains("@user3003") && !found.contains("@user3002"), "{found}");
    assert!(ask(&h, ADMIN, "/users a b", "Использование: /users").await.contains("страница"));

    // /ban and /unban: the banned user gets the one "suspended" answer.
    assert!(ask(&h, ADMIN, "/ban @user3003", "заблокирован").await.contains("🚫"));
    assert!(ask(&h, ADMIN, "/ban 3003", "уже заблокирован").await.contains("User3003"));
    ask(&h, other, "котик в шляпе", "Доступ приостановлен").await;
    assert!(ask(&h, ADMIN, "/unban @user3003", "разблокирован").await.contains("✅"));
    assert!(ask(&h, ADMIN, "/ban", "Использование: /ban").await.contains("ПОЛЬЗОВАТЕЛЬ"));

    // A non-admin: refused, nothing happens.
    for cmd in ["/add_balance 3002 1000", "/users", "/ban 3001", "/unban 3003"] {
        ask(&h, anna, cmd, "только для администраторов").await;
    }
    assert_eq!(h.balance(anna).await, Credits(130));
    let banned = h.store().read(|rx| rx.get_user(UserId(ADMIN))).await.expect("read").expect("user").banned;
    assert!(!banned);

    // Every change has its audit row with the Telegram actor.
    let audit = h.store().read(|rx| rx.find_audit(50)).await.expect("audit");
    let actions: Vec<(&str, &str)> =
        audit.iter().filter(|a| a.actor == "tg:3001").map(|a| (a.action.as_str(), a.target.as_str())).collect();
    for action in ["adjust_balance", "ban", "unban"] {
        assert!(actions.iter().any(|(a, _)| *a == action), "{action} in {actions:?}");
    }
    assert!(!audit.iter().any(|a| a.actor == "tg:3002"), "the non-admin changed nothing");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_lists_ones_own_jobs_and_admins_see_any() {
    let h = Harness::start(config).await;
    let (anna, other) = (3004, 3005);
    ask(&h, anna, "/status", "нет заданий").await;
    // A job with the demo model (one model, one format: it starts at once).
    h.text(anna, "ru", "закат над морем");
    h.wait_for(anna, 30, "the picture", |_| h.photos(anna).len() == 1).await;
    let jobs = h.store().read(move |rx| rx.find_user_jobs(UserId(anna), 5)).await.expect("jobs");
    let short = jobs[0].id.short();
    let list = ask(&h, anna, "/status", "Ваши задания").await;
    assert!(list.contains(&format!("• {short} · Демо — ✅ готово")), "{list}");
    let one = ask(&h, anna, &format!("/status {short}"), &short).await;
    assert!(one.contains("готово") && !one.contains("пользователь"), "{one}");
    // Someone else's job is "not found" for a user, and shown to an admin with its owner.
    ask(&h, other, &format!("/status {short}"), "не найдено").await;
    ask(&h, other, "/status абв", "не найдено").await;
    let seen = ask(&h, ADMIN, &format!("/status {short}"), &short).await;
    assert!(seen.contains("пользователь 3004"), "{seen}");
    assert_eq!(kinds(&h.ledger(anna).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);

    // 📊 История операций under the balance: the hold and its capture are one "списание".
    ask(&h, ADMIN, "/add_balance 3004 5 компенсация", "✅").await;
    let n = h.messages(anna).len();
    h.text(anna, "ru", "/balance");
    let balance = super::tools::new_buttons(&h, anna, n, "История операций").await;
    let n = h.messages(anna).len();
    h.press(anna, "ru", balance["message_id"].as_i64().expect("id"), &Harness::button(&balance, "История"));
    let page = text_of(&super::tools::new_text(&h, anna, n, "История операций, страница 1").await);
    let lines: Vec<&str> = page.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "bonus, charge (hold + capture), adjustment: {page}");
    assert!(lines[0].ends_with("· +5 кредитов · от администратора · компенсация"), "{page}");
    assert!(lines[1].ends_with("· −10 кредитов · списание · Демо"), "{page}");
    assert!(lines[2].ends_with("· +100 кредитов · бонус"), "{page}");
    // Dates in Moscow time: dd.mm.yyyy hh:mm.
    assert!(lines[2].as_bytes()[2] == b'.' && lines[2].as_bytes()[13] == b':', "{page}");
}
