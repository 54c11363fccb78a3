//! The poller's web face end to end, against real attendants in this process: the OpenAPI
//! document describes every route and every real answer validates against it; the event
//! stream carries polls and transitions; a real Prometheus scrapes `/metrics` and answers a
//! query on a per-server series.

mod support;

use std::time::Duration;

use rollcall_testkit::{skip, wait_for};
use serde_json::{json, Value};
use support::{Attendants, Poller};

/// Validates `value` against the document's schema `schema` (a `$ref` into components).
fn validate(doc: &Value, schema: Value, value: &Value, what: &str) {
    let mut root = schema;
    root["components"] = doc["components"].clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let v =
        jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{what}: the document's schema is invalid: {e}"));
    let errors: Vec<String> = v.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} does not match the OpenAPI document:\n{}\n{value:#}", errors.join("\n"));
}

/// The 200 response schema of `method path`.
fn ok_schema(doc: &Value, method: &str, path: &str) -> Value {
    let s = &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(!s.is_null(), "{method} {path}: no 200 JSON schema in the document");
    s.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_covers_every_route_and_real_answers_validate() {
    let dir = tempfile::tempdir().unwrap();
    let mut att = Attendants::start(dir.path(), &["mail-01", "web-01"]).await;
    att.service("mail-01").stop().await;
    let mut poller = Poller::start(dir.path(), &att, "", "").await;
    let doc = poller.api.get("/api/v1/openapi.json").await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{doc:#}");

    // Every route the API serves is in the document (SPEC section 5 plus notifications).
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in [
        "/api/v1/servers",
        "/api/v1/servers/{name}",
        "/api/v1/servers/{name}/history",
        "/api/v1/servers/{name}/poll",
        "/api/v1/events",
        "/api/v1/notifications",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.contains(&p), "{p} missing from the document: {paths:?}");
    }

    // Real answers, after real polls: one deficient, one ok.
    let c = reqwest::Client::new();
    for name in ["mail-01", "web-01"] {
        let r = c.post(format!("{}/api/v1/servers/{name}/poll", poller.base)).send().await.unwrap();
        assert!(r.status().is_success());
        let body: Value = r.json().await.unwrap();
        validate(&doc, ok_schema(&doc, "post", "/api/v1/servers/{name}/poll"), &body, "POST poll");
    }
    let list = poller.api.get("/api/v1/servers").await;
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    validate(&doc, ok_schema(&doc, "get", "/api/v1/servers"), &list, "GET servers");
    let mail = poller.api.server("mail-01").await;
    assert_eq!(mail["state"], "deficient", "{mail:#}");
    assert!(mail["compilation"]["services"].is_array(), "{mail:#}");
    validate(&doc, ok_schema(&doc, "get", "/api/v1/servers/{name}"), &mail, "GET server");
    let hist = poller.api.get("/api/v1/servers/mail-01/history").await;
    assert_eq!(hist["transitions"][0]["to"], "critical", "{hist:#}");
    validate(&doc, ok_schema(&doc, "get", "/api/v1/servers/{name}/history"), &hist, "GET history");
    let n = poller.api.get("/api/v1/notifications").await;
    validate(&doc, ok_schema(&doc, "get", "/api/v1/notifications"), &n, "GET notifications");

    // Errors have their documented shape too.
    let r = reqwest::get(format!("{}/api/v1/servers/nope", poller.base)).await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    let s = doc["paths"]["/api/v1/servers/{name}"]["get"]["responses"]["404"]["content"]["application/json"]["schema"]
        .clone();
    validate(&doc, s, &body, "404");

    // A schema check that cannot fail proves nothing: a wrong state must be refused.
    let mut bad = list.clone();
    bad[0]["state"] = json!("sleepy");
    let mut root = ok_schema(&doc, "get", "/api/v1/servers");
    root["components"] = doc["components"].clone();
    assert!(!jsonschema::validator_for(&root).unwrap().is_valid(&bad), "the schema accepts any state");
    poller.stop().await;
}

/// Reads server-sent events until `pick` returns Some for one, within 20 s.
async fn next_event(
    stream: &mut reqwest::Response,
    buf: &mut String,
    pick: impl Fn(&str, &Value) -> bool,
) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = "message".to_string();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data += v.trim_start();
                }
            }
            if data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event {name}: bad JSON {data}: {e}"));
            if pick(&name, &v) {
                return (name, v);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.chunk()).await.expect("no matching event within 20 s");
        let chunk = chunk.expect("event stream failed").expect("event stream ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_polls_and_transitions_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut att = Attendants::start(dir.path(), &["mail-01"]).await;
    let mut poller = Poller::start(dir.path(), &att, "", "").await;
    let r = reqwest::get(format!("{}/api/v1/events", poller.base)).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r;
    let mut buf = String::new();
    let (_, ok) = next_event(&mut stream, &mut buf, |n, v| n == "poll" && v["state"] == "ok").await;
    assert_eq!(ok["name"], "mail-01");
    att.service("mail-01").stop().await;
    let (_, t) = next_event(&mut stream, &mut buf, |n, _| n == "transition").await;
    assert_eq!(
        (t["server"].as_str(), t["from"].as_str(), t["to"].as_str()),
        (Some("mail-01"), Some("normal"), Some("critical"))
    );
    assert!(t["reason"].as_str().unwrap_or("").contains("service:smtp"), "{t:#}");
    let (_, p) = next_event(&mut stream, &mut buf, |n, _| n == "poll").await;
    assert_eq!((p["level"].as_str(), p["state"].as_str()), (Some("critical"), Some("deficient")), "{p:#}");
    // Stopping the poller ends the stream (shutdown never waits on a client).
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_metrics_and_a_per_server_query_answers() {
    if skip("PROMETHEUS", "Prometheus (Debian prometheus)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut att = Attendants::start(dir.path(), &["mail-01", "web-01"]).await;
    att.service("mail-01").stop().await;
    let mut poller = Poller::start(dir.path(), &att, "", "").await;
    poller.api.wait_server("mail-01", "critical", |s| s["level"] == "critical").await;
    poller.api.wait_server("web-01", "polled", |s| s["state"] == "ok").await;

    let text = reqwest::get(format!("{}/metrics", poller.base)).await.unwrap().text().await.unwrap();
    for needle in [
        "rollcall_server_up{server=\"web-01\"} 1",
        "rollcall_server_up{server=\"mail-01\"} 1",
        "rollcall_server_level{server=\"mail-01\",level=\"critical\"} 1",
        "rollcall_server_state{server=\"mail-01\",state=\"deficient\"} 1",
        "rollcall_server_deficiencies{server=\"mail-01\"} 1",
        "rollcall_server_rtt_seconds{server=\"web-01\"}",
        "rollcall_server_clock_offset_seconds{server=\"web-01\"}",
        "rollcall_server_last_poll_age_seconds{server=\"web-01\"}",
        "rollcall_polls_in_flight",
        "rollcall_poll_duration_seconds_bucket{le=\"+Inf\"}",
        "rollcall_poll_lateness_seconds_count",
        "rollcall_polls_total{outcome=\"deficient\"}",
        "rollcall_store_errors_total 0",
        "rollcall_store_pending_rows",
        "rollcall_store_dropped_rows_total{what=\"polls\"} 0",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }
    // The poll's own work by phase: every phase of an answered poll took some time.
    for phase in ["fetch", "parse", "judge", "store"] {
        let line = format!("rollcall_poll_phase_seconds_total{{phase=\"{phase}\"}} ");
        let v: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("/metrics lacks {line:?}:\n{text}"))
            .parse()
            .unwrap();
        assert!(phase == "store" || v > 0.0, "{phase} took no time: {v}");
    }

    let target = poller.base.trim_start_matches("http://").to_string();
    let (prom, base) = support::prometheus(dir.path(), &target).await;
    let c = reqwest::Client::new();
    let query = |q: &'static str| {
        let c = c.clone();
        let url = format!("{base}/api/v1/query");
        async move {
            let r: Value = c.get(&url).query(&[("query", q)]).send().await.ok()?.json().await.ok()?;
            let v = r["data"]["result"][0]["value"][1].as_str()?.to_string();
            Some(v)
        }
    };
    let level = wait_for("Prometheus to scrape mail-01's level", || async {
        query("rollcall_server_level{server=\"mail-01\"}").await
    })
    .await;
    assert_eq!(level, "1", "mail-01 is at level 1 (critical)");
    let deficient = query("rollcall_server_state{server=\"mail-01\",state=\"deficient\"}").await;
    assert_eq!(deficient.as_deref(), Some("1"), "{}", prom.log_text());
    let up = query("up{job=\"rollcall\"}").await;
    assert_eq!(up.as_deref(), Some("1"), "Prometheus could scrape /metrics");
    poller.stop().await;
}
