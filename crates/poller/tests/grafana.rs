//! Keeps the Grafana dashboard shipped in `packaging/grafana/rollcall.json` (and in the
//! `rollcall` package) true to `/metrics`: every metric a panel queries is one the poller
//! serves, and every panel's query is PromQL a real Prometheus, scraping a real poller,
//! answers without error.

mod support;

use rollcall_testkit::{skip, wait_for};
use serde_json::Value;
use support::{Attendants, Poller};

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/grafana/rollcall.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Every panel's PromQL, with Grafana's variables as a query for all servers would have them.
fn queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            let expr = expr.replace("$__rate_interval", "1m").replace("$server", ".*");
            out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr));
        }
    }
    out
}

/// The `rollcall_*` metric names in `expr` (histogram series named by their family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("rollcall_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        names.push(name.strip_suffix("_bucket").unwrap_or(name).to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_served() {
    let dash = dashboard();
    let source = include_str!("../src/web/metrics.rs");
    let mut ids = std::collections::BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "panel id {} twice", panel["id"]);
    }
    let qs = queries(&dash);
    assert!(qs.len() >= 10, "the dashboard has {} queries", qs.len());
    for (title, expr) in &qs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "panel {title:?} queries no rollcall metric: {expr}");
        for name in names {
            assert!(
                source.contains(&format!("\"{name}\"")),
                "panel {title:?} queries {name}, which /metrics never serves"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_every_dashboard_query() {
    if skip("PROMETHEUS", "Prometheus (Debian prometheus)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let att = Attendants::start(dir.path(), &["mail-01"]).await;
    let mut poller = Poller::start(dir.path(), &att, "", "").await;
    poller.api.wait_server("mail-01", "polled", |s| s["state"] == "ok" || s["state"] == "deficient").await;
    let target = poller.base.trim_start_matches("http://").to_string();
    let (prom, base) = support::prometheus(dir.path(), &target).await;
    let c = reqwest::Client::new();
    let url = format!("{base}/api/v1/query");
    wait_for("Prometheus to scrape the poller", || async {
        let r: Value = c.get(&url).query(&[("query", "rollcall_servers")]).send().await.ok()?.json().await.ok()?;
        r["data"]["result"][0]["value"][1].as_str().map(str::to_string)
    })
    .await;
    for (title, expr) in queries(&dashboard()) {
        let r: Value = c.get(&url).query(&[("query", expr.as_str())]).send().await.unwrap().json().await.unwrap();
        assert_eq!(r["status"], "success", "panel {title:?}: {expr}\n{r:#}\n{}", prom.log_text());
    }
    poller.stop().await;
}
