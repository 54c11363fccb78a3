//! Names an operator writes reach every surface whole (issue 11, fault 10): a server and
//! a service named with spaces, `/`, `"`, `<script>`, `ü` and `%`, on a real attendant and
//! a real poller, walked through the API (percent-encoded paths), the dashboard (HTML
//! escaping, its own links), the server-sent events, the Prometheus metrics (label
//! escaping) and the poller's log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SERVER: &str = "mail 01/ü \"<script>alert(1)</script>\" 100%";
const SERVICE: &str = "imap & <b>store</b> \"primary\"/ü 5%";

/// `s` as one URL path segment (what a browser's `encodeURIComponent` makes of it).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'!' | b'*' | b'\'' | b'(' | b')' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `s` as HTML text, the way the dashboard must escape it.
fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The first `data:` of an SSE `event` on `url` whose JSON `server` (or `name`) is `name`.
async fn sse_event_for(url: &str, event: &str, name: &str) -> Value {
    let mut r = reqwest::get(url).await.expect("GET events");
    let mut text = String::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(chunk)) = r.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            for block in text.split("\n\n") {
                if !block.lines().any(|l| l == format!("event: {event}")) {
                    continue;
                }
                let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
                if v.get("server").or(v.get("name")).and_then(Value::as_str) == Some(name) {
                    return Some(v);
                }
            }
        }
        None
    })
    .await;
    found.ok().flatten().unwrap_or_else(|| panic!("no {event} event for {name:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_but_valid_names_survive_every_surface() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    // The service fails (nothing listens), so its name also travels as a deficiency.
    let attendant = start_attendant(dir.path(), "hostile", |port| {
        format!(
            "name = {SERVER:?}\nlisten = \"127.0.0.1:{port}\"\ninsecure = true\nclock = \"virtual\"\n\
             [host]\ndisk_warning_percent = 100.0\ndisk_critical_percent = 100.0\n\
             [[service]]\nname = {SERVICE:?}\ncheck = \"tcp\"\naddress = \"{closed}\"\ntimeout = \"300ms\"\n"
        )
    })
    .await;
    let mut cfg = PollerToml::fast(vec![]);
    cfg.extra = format!("\n[[server]]\nname = {SERVER:?}\naddress = \"{}\"\n", attendant.url());
    let poller = start_poller(dir.path(), &cfg).await;
    let api = &poller.api;
    let base = &api.base;
    let enc = segment(SERVER);
    let source = format!("service:{SERVICE}");

    // API: the name as one percent-encoded segment, in and out.
    let path = format!("/api/v1/servers/{enc}");
    let s = rollcall_testkit::wait_for_within("the service's deficiency in the API", DEADLINE, || async {
        let s = api.get(&path).await;
        let listed = s["deficiencies"].as_array().is_some_and(|d| d.iter().any(|d| d["source"] == source.as_str()));
        listed.then_some(s)
    })
    .await;
    assert_eq!(s["name"], SERVER);
    assert_eq!(s["compilation"]["attendant"]["name"], SERVER);
    assert_eq!(s["compilation"]["services"][0]["name"], SERVICE);
    let listed = api.servers().await;
    assert_eq!(listed.iter().map(|s| s["name"].as_str()).collect::<Vec<_>>(), [Some(SERVER)]);
    let history = api.get(&format!("/api/v1/servers/{enc}/history")).await;
    assert!(history["polls"].as_array().is_some_and(|p| !p.is_empty()), "{history:#}");
    let r = api.http.post(format!("{base}/api/v1/servers/{enc}/poll")).send().await.unwrap();
    assert!(r.status().is_success() || r.status().as_u16() == 429, "POST poll: {}", r.status());

    // Dashboard: escaped text, never markup; its own link reaches the server page.
    let fleet = api.http.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(!fleet.contains("<script>alert(1)"), "the name became markup:\n{fleet}");
    assert!(fleet.contains(&html(SERVER)), "the escaped name is missing:\n{fleet}");
    let href = format!("href=\"/servers/{enc}\"");
    assert!(fleet.contains(&href), "no link {href} in:\n{fleet}");
    for path in [format!("/servers/{enc}"), format!("/servers/{enc}/parts")] {
        let r = api.http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        let page = r.text().await.unwrap();
        assert!(!page.contains("<script>alert(1)") && !page.contains("<b>store</b>"), "markup in {path}:\n{page}");
        assert!(page.contains(&html(SERVICE)), "{path} lacks the service:\n{page}");
    }

    // Server-sent events: the name whole inside the JSON data.
    let events = format!("{base}/api/v1/events");
    let poll_soon = {
        let http = api.http.clone();
        let url = format!("{base}/api/v1/servers/{enc}/poll");
        async move {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let _ = http.post(url).send().await;
        }
    };
    let (event, _) = tokio::join!(sse_event_for(&events, "poll", SERVER), poll_soon);
    assert_eq!(event["name"], SERVER);

    // Prometheus: `"` and `\` escaped in the label, the line still one line.
    let metrics = api.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let label = SERVER.replace('\\', "\\\\").replace('"', "\\\"");
    let up = format!("rollcall_server_up{{server=\"{label}\"}} ");
    assert!(metrics.lines().any(|l| l.starts_with(&up)), "no {up:?} line in:\n{metrics}");

    // The poller's log names the server whole, one line per event.
    let log = poller.proc.log_text();
    assert!(log.lines().any(|l| l.contains(SERVER)), "the log never names {SERVER:?}:\n{log}");
}
