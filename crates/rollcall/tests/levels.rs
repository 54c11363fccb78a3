//! Levels end to end: real attendant and poller processes, a tcp service the test stops and
//! starts, escalation to `critical`, polling at the critical interval, recovery (with and
//! without hysteresis), an attendant that dies, and a poller restart that loses nothing.

mod common;

use std::time::Duration;

use common::*;
use rollcall_testkit::TcpService;
use serde_json::Value;

/// normal 4s, critical 1s, timeout 500ms.
fn levels_toml(server: ServerEntry, recover_after: u32) -> PollerToml {
    PollerToml {
        timeout: "500ms",
        levels: vec![("normal", "4s"), ("critical", "1s")],
        recover_after,
        max_reply_bytes: None,
        extra: String::new(),
        servers: vec![server],
    }
}

/// Starts the tcp service, an attendant watching it as `smtp`, and a poller of that
/// attendant; waits for the first clean poll.
async fn mail_server(dir: &std::path::Path, recover_after: u32) -> (TcpService, Attendant, Poller) {
    let svc = TcpService::start().await;
    let addr = svc.addr();
    let att = start_attendant(dir, "mail-01", |port| {
        attendant_toml("mail-01", port, &AttAuth::Insecure, &[TcpCheck { name: "smtp", address: addr.clone() }])
    })
    .await;
    let poller = start_poller(dir, &levels_toml(ServerEntry::new("mail-01", att.url()), recover_after)).await;
    let first = poller
        .api
        .wait_server("mail-01", "a first clean poll", |s| s["state"] == "ok" && !s["last_poll_at"].is_null())
        .await;
    assert_eq!(first["level"], "normal", "{first:#}");
    assert_eq!(sources(&first), Vec::<String>::new(), "{first:#}");
    (svc, att, poller)
}

fn is_critical_for_smtp(s: &Value) -> bool {
    s["level"] == "critical" && s["state"] == "deficient" && sources(s).contains(&"service:smtp".to_string())
}

/// The polls from the one that moved the server back to `normal`, walking back: answers
/// how many clean (state ok) replies at `critical` came right before it, and checks the
/// one before those was still deficient.
fn clean_replies_before_recovery(history: &Value) -> usize {
    let polls = oldest_first(history, "polls");
    let recovered = oldest_first(history, "transitions")
        .into_iter()
        .find(|t| t["from"] == "critical" && t["to"] == "normal")
        .unwrap_or_else(|| panic!("no critical -> normal transition: {history:#}"));
    let at = text(&recovered, "at");
    let k = polls
        .iter()
        .position(|p| p["at"] == at && p["level"] == "normal")
        .unwrap_or_else(|| panic!("no poll at the recovery time {at}: {history:#}"));
    assert_eq!(polls[k]["state"], "ok", "the recovering poll must be clean: {:#}", polls[k]);
    let mut clean = 0;
    let mut i = k;
    while i > 0 && polls[i - 1]["state"] == "ok" {
        assert_eq!(polls[i - 1]["level"], "critical", "a clean reply before recovery stays critical: {history:#}");
        clean += 1;
        i -= 1;
    }
    assert!(i > 0, "no deficient poll before the recovery: {history:#}");
    assert_eq!(polls[i - 1]["state"], "deficient", "{history:#}");
    assert_eq!(polls[i - 1]["level"], "critical", "{history:#}");
    clean
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_service_goes_critical_is_polled_every_second_and_recovers_on_first_clean_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (mut svc, _att, poller) = mail_server(dir.path(), 1).await;
    let api = &poller.api;

    // The service stops: the next scheduled poll (normal, within 4 s) escalates.
    svc.stop().await;
    let crit = api.wait_server("mail-01", "critical because of service:smtp", is_critical_for_smtp).await;
    let d = &crit["deficiencies"][0];
    assert_eq!((d["source"].as_str(), d["severity"].as_str()), (Some("service:smtp"), Some("critical")), "{crit:#}");

    // At critical it is polled every second: wait for 4 polls after the escalation.
    let h = api
        .wait_history("mail-01", "4 polls after the escalation", |h| {
            let Some(t) = h["transitions"].as_array().and_then(|t| t.first()) else { return false };
            let escalated = time(t, "at");
            h["polls"].as_array().unwrap().iter().filter(|p| time(p, "at") > escalated).count() >= 4
        })
        .await;
    let escalated = time(&h["transitions"][0], "at");
    let after: Vec<_> = oldest_first(&h, "polls").into_iter().filter(|p| time(p, "at") > escalated).collect();
    for p in &after {
        assert_eq!((p["level"].as_str(), p["state"].as_str()), (Some("critical"), Some("deficient")), "{p:#}");
    }
    for w in after.windows(2) {
        let gap = time(&w[1], "at") - time(&w[0], "at");
        assert!(
            (700..=1500).contains(&gap.num_milliseconds()),
            "polls at the critical level must be ~1 s apart, got {gap} between {} and {}",
            w[0]["at"],
            w[1]["at"]
        );
    }
    let summary = api.server("mail-01").await;
    let next = time(&summary, "next_poll_at") - time(&summary, "last_poll_at");
    assert!(
        next <= chrono::Duration::milliseconds(1100),
        "next poll at critical is {next} after the last: {summary:#}"
    );

    // The service comes back: the first clean reply (recover_after = 1) returns to normal.
    svc.restart().await;
    let ok = api.wait_server("mail-01", "back to normal", |s| s["level"] == "normal" && s["state"] == "ok").await;
    assert_eq!(sources(&ok), Vec::<String>::new());

    let h = api.history("mail-01").await;
    assert_eq!(
        transition_pairs(&h),
        [("normal".into(), "critical".into()), ("critical".into(), "normal".into())],
        "{h:#}"
    );
    let up = &oldest_first(&h, "transitions")[0];
    assert!(text(up, "reason").contains("service:smtp"), "the escalation names its cause: {up:#}");
    let down = &oldest_first(&h, "transitions")[1];
    assert!(text(down, "reason").contains("cleared"), "{down:#}");
    assert_eq!(clean_replies_before_recovery(&h), 0, "recover_after = 1: the first clean reply recovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_recover_after_2_a_server_needs_two_clean_replies_to_return_to_normal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut svc, _att, poller) = mail_server(dir.path(), 2).await;
    let api = &poller.api;

    svc.stop().await;
    api.wait_server("mail-01", "critical because of service:smtp", is_critical_for_smtp).await;
    svc.restart().await;
    let ok = api.wait_server("mail-01", "back to normal", |s| s["level"] == "normal" && s["state"] == "ok").await;
    assert_eq!(sources(&ok), Vec::<String>::new());

    let h = api.history("mail-01").await;
    assert_eq!(
        transition_pairs(&h),
        [("normal".into(), "critical".into()), ("critical".into(), "normal".into())],
        "{h:#}"
    );
    // The history shows it poll by poll: after the service came back, one clean reply
    // left the server at critical (state ok), and only the second moved it to normal.
    assert_eq!(
        clean_replies_before_recovery(&h),
        1,
        "recover_after = 2: one clean reply at critical, the second recovers"
    );
    let down = &h["transitions"][0];
    assert!(text(down, "reason").contains("2 clean replies"), "{down:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_attendant_makes_its_server_unreachable_with_poll_refused_at_critical() {
    let dir = tempfile::tempdir().unwrap();
    let mut att =
        start_attendant(dir.path(), "web-01", |port| attendant_toml("web-01", port, &AttAuth::Insecure, &[])).await;
    let poller = start_poller(dir.path(), &PollerToml::fast(vec![ServerEntry::new("web-01", att.url())])).await;
    let api = &poller.api;
    api.wait_server("web-01", "a first clean poll", |s| s["state"] == "ok").await;

    att.proc.kill();
    let s = api.wait_server("web-01", "unreachable", |s| s["state"] == "unreachable").await;
    assert_eq!(s["level"], "critical", "{s:#}");
    assert_eq!(sources(&s), ["poll:refused"], "{s:#}");
    assert_eq!(s["deficiencies"][0]["severity"], "critical", "{s:#}");
    assert!(s["last_error"].as_str().is_some_and(|e| e.contains("refused")), "{s:#}");

    // A poll on request says the same, and the history names the cause.
    let now = api.poll_now("web-01").await;
    assert_eq!((now["state"].as_str(), now["level"].as_str()), (Some("unreachable"), Some("critical")), "{now:#}");
    assert_eq!(sources(&now), ["poll:refused"], "{now:#}");
    let h = api.history("web-01").await;
    assert_eq!(transition_pairs(&h), [("normal".into(), "critical".into())], "{h:#}");
    assert!(text(&h["transitions"][0], "reason").starts_with("poll:refused"), "{h:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_restart_keeps_levels_and_history_and_adds_no_transition() {
    let dir = tempfile::tempdir().unwrap();
    let att = start_attendant(dir.path(), "alive", |port| attendant_toml("alive", port, &AttAuth::Insecure, &[])).await;
    let gone = format!("http://127.0.0.1:{}", free_port());
    let cfg = PollerToml::fast(vec![ServerEntry::new("alive", att.url()), ServerEntry::new("gone", gone)]);
    let mut poller = start_poller(dir.path(), &cfg).await;

    // "gone" escalates and is polled a few times at critical; "alive" stays normal.
    let before = poller.api.wait_history("gone", "3 polls", |h| h["polls"].as_array().unwrap().len() >= 3).await;
    let gone_before = poller.api.server("gone").await;
    assert_eq!((gone_before["level"].as_str(), gone_before["state"].as_str()), (Some("critical"), Some("unreachable")));
    poller.api.wait_history("alive", "2 polls", |h| h["polls"].as_array().unwrap().len() >= 2).await;
    let alive_before = poller.api.wait_server("alive", "a clean poll", |s| s["state"] == "ok").await;
    assert_eq!(alive_before["level"], "normal");
    assert_eq!(transition_pairs(&before), [("normal".into(), "critical".into())], "{before:#}");

    // SIGTERM: a clean stop.
    poller.proc.signal("TERM");
    let st = poller.proc.wait_exit(Duration::from_secs(10)).await;
    assert!(st.success(), "poller exit on SIGTERM: {st}; log:\n{}", poller.proc.log_text());
    let port = poller.port;
    let config = poller.config.clone();
    drop(poller);

    let poller = spawn_poller(dir.path(), &config, port)
        .await
        .unwrap_or_else(|p| panic!("poller did not start again; log:\n{}", p.log_text()));
    let api = &poller.api;

    // Right after the restart: the stored levels, states and history are there.
    let gone_after = api.server("gone").await;
    assert_eq!(gone_after["level"], "critical", "level lost on restart: {gone_after:#}");
    assert_eq!(gone_after["state"], "unreachable", "{gone_after:#}");
    assert_eq!(sources(&gone_after), ["poll:refused"], "{gone_after:#}");
    assert!(time(&gone_after, "last_poll_at") >= time(&gone_before, "last_poll_at"), "{gone_after:#}");
    let alive_after = api.server("alive").await;
    assert_eq!((alive_after["level"].as_str(), alive_after["state"].as_str()), (Some("normal"), Some("ok")));
    // The latest compilation as received is kept over a clean stop: at least as new as the
    // one shown before it (the history only has the first, which never changed in substance).
    let replied = |s: &serde_json::Value| time(&s["compilation"]["time"], "replied_at");
    assert!(replied(&alive_after) >= replied(&alive_before), "{alive_after:#}\nbefore: {alive_before:#}");
    let h = api.history("gone").await;
    let polls_at_restart = h["polls"].as_array().unwrap().len();
    assert!(polls_at_restart >= 3, "poll history lost on restart: {h:#}");
    assert_eq!(h["transitions"], before["transitions"], "transitions changed by the restart");

    // Polling resumes at critical, without a new transition (nothing is re-alerted).
    let h = api
        .wait_history("gone", "2 polls after the restart", |h| {
            h["polls"].as_array().unwrap().len() >= polls_at_restart + 2
        })
        .await;
    for p in &h["polls"].as_array().unwrap()[..2] {
        assert_eq!((p["level"].as_str(), p["state"].as_str()), (Some("critical"), Some("unreachable")), "{p:#}");
    }
    assert_eq!(h["transitions"], before["transitions"], "a restart must not add a transition: {h:#}");
    let ha = api.history("alive").await;
    assert_eq!(transition_pairs(&ha), Vec::<(String, String)>::new(), "{ha:#}");
}
