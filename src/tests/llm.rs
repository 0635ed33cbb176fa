//! The `[llm]` client against HTTP fakes: an OpenAI-compatible server ([`FakeChat`]) and fal's
//! queue running `fal-ai/any-llm` ([`FakeFal`]); and the `[llm]` section's validation.

use super::fakes::{ChatScenario, FakeChat, FakeFal, FalScenario};
use crate::config::{Config, LlmConfig, default_translate_prompt, default_writer_prompt, is_secret_key};
use crate::llm::{FAL_ANY_LLM, Llm, LlmError};
use serde_json::json;
use std::time::{Duration, Instant};

fn llm_config(toml_text: &str) -> LlmConfig {
    toml::from_str(toml_text).expect("llm section")
}

fn openai(base_url: &str, extra: &str) -> Llm {
    let cfg = llm_config(&format!("kind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"gpt-test\"\n{extra}"));
    Llm::new(&cfg).expect("client")
}

fn fal(base_url: &str) -> Llm {
    let cfg = llm_config(&format!(
        "kind = \"fal\"\nbase_url = \"{base_url}\"\nmodel = \"google/gemini-flash-1.5\"\napi_key = \"fal-secret\"\ntimeout_secs = 20\n"
    ));
    Llm::new(&cfg).expect("client").with_poll(Duration::from_millis(20))
}

#[tokio::test]
async fn openai_request_has_the_model_both_messages_and_a_bearer_only_with_a_key() {
    let server = FakeChat::start().await;
    let llm = openai(&server.base_url(), "api_key = \"sk-test\"");
    assert_eq!(llm.write_prompt("лиса зимой").await.expect("answer"), "a red fox in the snow");
    let req = server.requests().pop().expect("one request");
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(req.body["model"], "gpt-test");
    assert_eq!(req.body["temperature"], 0.7);
    assert_eq!(
        req.body["messages"],
        json!([{"role": "system", "content": default_writer_prompt()}, {"role": "user", "content": "лиса зимой"}])
    );
    assert!(!format!("{llm:?}").contains("sk-test"), "Debug hides the key");

    // A local server without a key: no Authorization header at all.
    let local = openai(&format!("{}/", server.base_url()), "");
    server.set_scenario(ChatScenario::Answer { content: "  A fox in winter.\n".into(), finish_reason: "stop".into() });
    assert_eq!(local.translate("лиса зимой").await.expect("answer"), "A fox in winter.");
    let req = server.requests().pop().expect("second request");
    assert_eq!(req.path, "/v1/chat/completions", "a trailing slash in base_url is fine");
    assert_eq!(req.authorization, None);
    assert_eq!(req.body["messages"][0]["content"], default_translate_prompt());
}

#[tokio::test]
async fn openai_failures_map_to_refused_unavailable_and_malformed() {
    let server = FakeChat::start().await;
    let llm = openai(&server.base_url(), "api_key = \"sk-test\"");
    let cases = [
        (ChatScenario::Answer { content: "half of it".into(), finish_reason: "content_filter".into() }, "refused"),
        (ChatScenario::Status { status: 500, body: json!({"error": {"message": "boom"}}) }, "unavailable"),
        (ChatScenario::Status { status: 429, body: json!({"error": {"message": "slow down"}}) }, "unavailable"),
        (ChatScenario::Status { status: 401, body: json!({"error": {"message": "Incorrect API key"}}) }, "refused"),
        (ChatScenario::Answer { content: "   ".into(), finish_reason: "stop".into() }, "malformed"),
    ];
    for (scenario, want) in cases {
        server.set_scenario(scenario.clone());
        let err = llm.complete("system", "user").await.expect_err("must fail");
        let got = match &err {
            LlmError::Refused(_) => "refused",
            LlmError::Unavailable(_) => "unavailable",
            LlmError::Malformed(_) => "malformed",
            _ => "other",
        };
        assert_eq!(got, want, "{scenario:?}: {err}");
        if let ChatScenario::Status { status: 401, .. } = scenario {
            assert!(err.to_string().contains("Incorrect API key"), "the 4xx text is kept: {err}");
        }
        assert!(!err.to_string().contains("sk-test"));
    }
    // Nothing listening: unavailable, not a timeout.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let err = openai(&format!("http://{closed}/v1"), "").complete("s", "u").await.expect_err("refused");
    assert!(matches!(err, LlmError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_configured_time() {
    let server = FakeChat::start().await;
    server.set_scenario(ChatScenario::Hang);
    let llm = openai(&server.base_url(), "timeout_secs = 1");
    let started = Instant::now();
    let err = llm.complete("system", "user").await.expect_err("hangs");
    assert!(matches!(err, LlmError::Timeout), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by timeout_secs: {:?}", started.elapsed());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn fal_any_llm_walks_the_queue_to_the_output() {
    let server = FakeFal::start().await;
    server.set_scenario(FalScenario::ResultJson(json!({"output": " A red fox in deep snow. ", "partial": false})));
    let llm = fal(&server.base_url());
    assert_eq!(llm.complete("be brief", "лиса").await.expect("answer"), "A red fox in deep snow.");
    assert_eq!(server.submits(FAL_ANY_LLM), 1);
    assert_eq!(
        server.last_submit_body(),
        Some(json!({"prompt": "лиса", "system_prompt": "be brief", "model": "google/gemini-flash-1.5"}))
    );
    assert_eq!(server.last_auth().as_deref(), Some("Key fal-secret"));
    assert!(server.status_polls() >= 3, "polled through IN_QUEUE and IN_PROGRESS");
}

#[tokio::test]
async fn fal_any_llm_failures() {
    let server = FakeFal::start().await;
    let llm = fal(&server.base_url());
    server.push_scenario(FalScenario::CompletedWithError { error: "upstream model failed".into(), error_type: None });
    let err = llm.complete("s", "u").await.expect_err("failed run");
    assert!(matches!(&err, LlmError::Unavailable(m) if m.contains("upstream model failed")), "{err}");
    server.push_scenario(FalScenario::CompletedWithError {
        error: "flagged".into(),
        error_type: Some("content_policy_violation".into()),
    });
    assert!(matches!(llm.complete("s", "u").await, Err(LlmError::Refused(_))));
    server.push_scenario(FalScenario::SubmitError { status: 503, body: json!({"detail": "busy"}).to_string() });
    assert!(matches!(llm.complete("s", "u").await, Err(LlmError::Unavailable(_))));
    server.push_scenario(FalScenario::ResultJson(json!({"output": ""})));
    assert!(matches!(llm.complete("s", "u").await, Err(LlmError::Malformed(_))));
    // fal always needs a key.
    let keyless = llm_config("kind = \"fal\"\nmodel = \"m\"\napi_key_env = \"MEDIABOT_TEST_UNSET_FAL_KEY\"\n");
    assert!(matches!(Llm::new(&keyless), Err(LlmError::Config(_))));
    assert_eq!(keyless.effective_base_url(), "https://queue.fal.run");
}

#[test]
fn the_llm_section_is_optional_validated_and_its_key_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "").expect("write");
    assert!(Config::load(Some(&p)).expect("no [llm]").llm.is_none());
    let base = "[llm]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"\nmodel = \"local\"\n";
    std::fs::write(&p, base).expect("write");
    let llm = Config::load(Some(&p)).expect("valid").llm.expect("section");
    assert_eq!((llm.timeout_secs, llm.api_key.is_empty()), (30, true));
    assert_eq!(llm.writer_system_prompt, default_writer_prompt());
    let long = "x".repeat(4001);
    for (extra, key) in [
        ("timeout_secs = 0\n", "llm.timeout_secs"),
        ("timeout_secs = 301\n", "llm.timeout_secs"),
        (&format!("writer_system_prompt = \"{long}\"\n") as &str, "llm.writer_system_prompt"),
        ("translate_system_prompt = \" \"\n", "llm.translate_system_prompt"),
        ("temperature = 1\n", "llm.temperature"),
    ] {
        std::fs::write(&p, format!("{base}{extra}")).expect("write");
        let e = Config::load(Some(&p)).expect_err(extra);
        assert!(e.key == key || e.to_string().contains("temperature"), "{extra}: {e}");
    }
    std::fs::write(&p, "[llm]\nkind = \"openai\"\nbase_url = \"api.openai.com\"\nmodel = \"m\"\n").expect("write");
    assert_eq!(Config::load(Some(&p)).expect_err("no scheme").key, "llm.base_url");
    std::fs::write(&p, "[llm]\nkind = \"openai\"\nmodel = \"m\"\n").expect("write");
    assert_eq!(Config::load(Some(&p)).expect_err("openai needs a base_url").key, "llm.base_url");
    std::fs::write(&p, "[llm]\nkind = \"fal\"\nmodel = \"google/gemini-flash-1.5\"\napi_key_env = \"FAL_KEY\"\n")
        .expect("write");
    assert_eq!(
        Config::load(Some(&p)).expect("fal defaults").llm.expect("llm").effective_base_url(),
        "https://queue.fal.run"
    );
    // The key is a secret: a wrong type is reported without the value, Debug hides it.
    assert!(is_secret_key("llm.api_key"));
    std::fs::write(&p, format!("{base}api_key = 987654321987\n")).expect("write");
    let e = Config::load(Some(&p)).expect_err("wrong type");
    assert!(e.key == "llm.api_key" && !e.to_string().contains("987654321987"), "{e}");
    std::fs::write(&p, format!("{base}api_key = \"sk-hidden-123\"\n")).expect("write");
    let c = Config::load(Some(&p)).expect("valid");
    assert!(!format!("{c:?}").contains("sk-hidden-123"));
}

/// Each commented `[llm]` example in the shipped config validates once uncommented. The catalog
/// block, which another test uncomments as a whole (and so validates), carries exactly one of
/// its own for its `translate = true` models; none sits after it.
#[test]
fn the_shipped_llm_examples_validate_once_uncommented() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml")).expect("config");
    let (before_catalog, rest) = text.split_once("# catalog:begin").expect("catalog start");
    let (catalog, after_catalog) = rest.split_once("# catalog:end").expect("catalog end");
    let sections = |t: &str| t.lines().filter(|l| l.trim_start_matches("# ").starts_with("[llm]")).count();
    assert_eq!((sections(catalog), sections(after_catalog)), (1, 0), "one [llm] in the catalog, none after");
    let lines: Vec<&str> = before_catalog.lines().collect();
    let starts: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| **l == "# [llm]").map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 3, "openai, llama.cpp and fal examples");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.toml");
    let mut kinds = Vec::new();
    for start in starts {
        let block: Vec<&str> = lines[start..]
            .iter()
            .take_while(|l| l.starts_with("# "))
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect();
        std::fs::write(&path, block.join("\n")).expect("write");
        let llm = Config::load(Some(&path)).expect("the example validates").llm.expect("[llm]");
        kinds.push((llm.kind, llm.effective_base_url()));
    }
    use crate::config::LlmKind;
    assert_eq!(
        kinds,
        [
            (LlmKind::Openai, "https://api.openai.com/v1".to_string()),
            (LlmKind::Openai, "http://127.0.0.1:8081/v1".to_string()),
            (LlmKind::Fal, "https://queue.fal.run".to_string()),
        ]
    );
}
