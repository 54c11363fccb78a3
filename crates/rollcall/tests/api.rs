//! The poller's JSON API answers what it just did: a read right after a poll shows that
//! poll, and unknown servers are a clear 404.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_detail_right_after_a_poll_shows_that_polls_compilation() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeAttendant::start(Fake::Healthy).await;
    // Long intervals: only the polls on request below happen during the test.
    let mut cfg = PollerToml::fast(vec![ServerEntry::new("mail-01", fake.url())]);
    cfg.levels = vec![("normal", "10m"), ("critical", "5m")];
    let poller = start_poller(dir.path(), &cfg).await;
    let api = &poller.api;

    let mut stale = Vec::new();
    for _ in 0..20 {
        let polled = api.poll_now("mail-01").await;
        let asked = fake.queries();
        let d = api.server("mail-01").await;
        assert_eq!(d["last_poll_at"], polled["last_poll_at"], "{d:#}");
        let shown = d["compilation"]["query_number"].as_u64();
        if shown != Some(asked as u64) {
            stale.push(format!("after query {asked} the detail showed the compilation of query {shown:?}"));
        }
    }
    assert!(
        stale.is_empty(),
        "GET /api/v1/servers/{{name}} right after POST .../poll must show that poll's compilation \
         (its summary already does): {stale:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_server_names_get_a_404_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeAttendant::start(Fake::Healthy).await;
    // Long intervals: mail-01's scheduled polls (its own, by name) stay out of the count
    // below, which only the unknown names' requests may change.
    let mut cfg = PollerToml::fast(vec![ServerEntry::new("mail-01", fake.url())]);
    cfg.levels = vec![("normal", "10m"), ("critical", "5m")];
    let poller = start_poller(dir.path(), &cfg).await;
    let http = &poller.api.http;
    let base = &poller.api.base;
    let before = fake.queries();
    for (method, path) in [
        ("GET", "/api/v1/servers/nope"),
        ("GET", "/api/v1/servers/nope/history"),
        ("POST", "/api/v1/servers/nope/poll"),
    ] {
        let url = format!("{base}{path}");
        let r = if method == "GET" { http.get(&url) } else { http.post(&url) }.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(text(&body, "error").contains("nope"), "{method} {path}: {body}");
    }
    assert_eq!(fake.queries(), before, "no poll may reach an attendant for an unknown name");
    // Every error under /api/v1 is JSON naming what was wrong: a bad query, a wrong
    // method, an unknown route.
    for (method, path, status, says) in [
        ("GET", "/api/v1/servers/mail-01/history?limit=abc", 400, "limit"),
        ("GET", "/api/v1/servers/mail-01/poll", 405, "POST"),
        ("GET", "/api/v1/bogus", 404, "/api/v1/bogus"),
    ] {
        let url = format!("{base}{path}");
        let r = if method == "GET" { http.get(&url) } else { http.post(&url) }.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(text(&body, "error").contains(says), "{method} {path}: {body}");
    }
    // limit=0 means none of each kind.
    poller.api.poll_now("mail-01").await;
    let h: serde_json::Value =
        http.get(format!("{base}/api/v1/servers/mail-01/history?limit=0")).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["polls"].as_array().map(Vec::len), Some(0), "{h}");
}
