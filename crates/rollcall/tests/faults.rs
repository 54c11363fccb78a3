//! Fault injection: small in-process fake attendants answer the real poller process with
//! broken, huge, hung, incompatible or unauthorized replies. Each becomes its `poll:KIND`
//! deficiency; none crashes the poller or delays the healthy servers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Valid JSON, but a body of `n` bytes (padding in an unknown field).
fn big_compilation(n: usize) -> String {
    let mut c = compilation_json(1);
    c["padding"] = Value::String(String::new());
    let base = c.to_string().len();
    c["padding"] = Value::String("x".repeat(n.saturating_sub(base)));
    c.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_reply_becomes_its_poll_deficiency_and_the_poller_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let huge = big_compilation(100_000);
    let cases: Vec<(&str, Fake, &str)> = vec![
        ("not-json", Fake::Raw(http_response("200 OK", "{\"schema_version\": 1, \"attendant\": ").into_bytes()), "poll:malformed"),
        ("missing-fields", Fake::Raw(http_response("200 OK", "{\"schema_version\": 1}").into_bytes()), "poll:malformed"),
        (
            "cut-short",
            Fake::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n{\"schema_version\": 1,".to_vec(),
            ),
            "poll:malformed",
        ),
        ("huge-with-length", Fake::Raw(http_response("200 OK", &huge).into_bytes()), "poll:oversized"),
        (
            "huge-streamed",
            Fake::Raw(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{huge}").into_bytes()),
            "poll:oversized",
        ),
        ("schema-2", Fake::Raw(http_response("200 OK", &compilation_json(2).to_string()).into_bytes()), "poll:incompatible"),
        (
            "unauthorized",
            Fake::Raw(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()),
            "poll:auth",
        ),
        ("healthy", Fake::Healthy, ""),
    ];
    let mut fakes = Vec::new();
    let mut servers = Vec::new();
    for (name, behaviour, _) in &cases {
        let f = FakeAttendant::start(behaviour.clone()).await;
        servers.push(ServerEntry::new(name, f.url()));
        fakes.push(f);
    }
    let mut cfg = PollerToml::fast(servers);
    cfg.max_reply_bytes = Some(4096);
    let mut poller = start_poller(dir.path(), &cfg).await;
    let api = &poller.api;

    // A poll on request answers the server as it now stands.
    let mut requested = Vec::new();
    for (name, _, source) in &cases {
        let s = api.poll_now(name).await;
        requested.push(time(&s, "last_poll_at"));
        if source.is_empty() {
            assert_eq!((s["state"].as_str(), s["level"].as_str()), (Some("ok"), Some("normal")), "{name}: {s:#}");
            assert_eq!(sources(&s), Vec::<String>::new(), "{name}: {s:#}");
            continue;
        }
        assert_eq!(s["state"], "unreachable", "{name}: {s:#}");
        assert_eq!(s["level"], "critical", "{name}: {s:#}");
        assert_eq!(sources(&s), [source.to_string()], "{name}: {s:#}");
        assert_eq!(s["deficiencies"][0]["severity"], "critical", "{name}: {s:#}");
        assert!(s["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: no last_error: {s:#}");
    }
    // The scheduled polls that follow say the same.
    for ((name, _, source), at) in cases.iter().zip(&requested) {
        let s = api
            .wait_server(name, "a scheduled poll after the one on request", |s| {
                s["last_poll_at"].is_string() && time(s, "last_poll_at") > *at
            })
            .await;
        let want: Vec<String> = if source.is_empty() { vec![] } else { vec![source.to_string()] };
        assert_eq!(sources(&s), want, "{name}: {s:#}");
    }
    for ((name, _, _), f) in cases.iter().zip(&fakes) {
        assert!(f.queries() >= 1, "{name} was never queried");
    }
    let s = api.server("huge-with-length").await;
    assert!(s["last_error"].as_str().unwrap().contains("4096"), "the error names the limit: {s:#}");
    let s = api.server("schema-2").await;
    assert!(s["last_error"].as_str().unwrap().contains("schema_version 2"), "the error names the version: {s:#}");
    let s = api.server("healthy").await;
    assert_eq!(s["compilation"]["a_field_from_the_future"]["readers"], "must ignore it", "{s:#}");

    // Still alive and answering, with every server listed.
    assert!(poller.proc.exited().is_none(), "the poller died; log:\n{}", poller.proc.log_text());
    let all = api.servers().await;
    assert_eq!(all.len(), cases.len());
    let log = poller.proc.log_text();
    assert!(!log.contains("panicked"), "the poller panicked:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_attendants_time_out_while_a_healthy_one_keeps_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = FakeAttendant::start(Fake::Healthy).await;
    let mut hung = Vec::new();
    let mut servers = vec![ServerEntry::new("healthy", healthy.url())];
    for i in 0..3 {
        let f = FakeAttendant::start(Fake::Hang).await;
        servers.push(ServerEntry::new(&format!("hung-{i}"), f.url()));
        hung.push(f);
    }
    // Each hung poll holds its slot for 900 ms of every second.
    let cfg = PollerToml {
        timeout: "900ms",
        levels: vec![("normal", "1s"), ("critical", "1s")],
        recover_after: 1,
        max_reply_bytes: None,
        extra: String::new(),
        servers,
    };
    let mut poller = start_poller(dir.path(), &cfg).await;
    let api = &poller.api;

    for i in 0..3 {
        let s = api.wait_server(&format!("hung-{i}"), "poll:timeout", |s| s["state"] == "unreachable").await;
        assert_eq!(sources(&s), ["poll:timeout"], "{s:#}");
        assert_eq!(s["level"], "critical", "{s:#}");
    }

    // While the hung ones keep timing out, the healthy one is polled every second.
    let h0 = api.history("healthy").await["polls"].as_array().unwrap().len();
    let t0 = Instant::now();
    let h = api.wait_history("healthy", "4 more polls", |h| h["polls"].as_array().unwrap().len() >= h0 + 4).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(5_500), "4 polls at 1 s took {took:?}");
    let polls = oldest_first(&h, "polls");
    for w in polls[polls.len() - 5..].windows(2) {
        let gap = (time(&w[1], "at") - time(&w[0], "at")).num_milliseconds();
        assert!((800..=1300).contains(&gap), "healthy polls {gap} ms apart: {} -> {}", w[0]["at"], w[1]["at"]);
        assert_eq!((w[1]["state"].as_str(), w[1]["level"].as_str()), (Some("ok"), Some("normal")), "{:#}", w[1]);
    }
    for i in 0..3 {
        let hh = api.history(&format!("hung-{i}")).await;
        let timeouts = hh["polls"].as_array().unwrap().iter().filter(|p| p["state"] == "unreachable").count();
        assert!(timeouts >= 3, "hung-{i} should have timed out repeatedly meanwhile: {hh:#}");
    }

    // A poll on request of the healthy one does not wait behind the hung ones.
    let t = Instant::now();
    let s = api.poll_now("healthy").await;
    assert!(t.elapsed() < Duration::from_millis(700), "poll on request took {:?}", t.elapsed());
    assert_eq!(s["state"], "ok", "{s:#}");
    // A poll on request of a hung one answers after the timeout, as a timeout.
    let t = Instant::now();
    let s = api.poll_now("hung-0").await;
    assert!(t.elapsed() < Duration::from_secs(3), "poll on request of a hung server took {:?}", t.elapsed());
    assert_eq!(sources(&s), ["poll:timeout"], "{s:#}");
    assert!(s["last_error"].as_str().unwrap().contains("900ms"), "{s:#}");

    assert!(poller.proc.exited().is_none(), "the poller died; log:\n{}", poller.proc.log_text());
    assert!(healthy.queries() >= 5);
}
