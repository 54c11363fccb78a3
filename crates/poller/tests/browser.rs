//! The dashboard in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven
//! by fantoccini over WebDriver): the fleet view lists the servers; a stopped service turns
//! its row critical without a reload; the server page shows the compilation; "Poll now"
//! polls. Screenshots of both pages (and the fleet on a phone-sized window) are saved to
//! `target/screenshots/` on every run, and to `docs/screenshots/` (the README's) only with
//! ROLLCALL_UPDATE_SCREENSHOTS=1, so a test run leaves the work tree clean.
//!
//! Set ROLLCALL_SKIP_BROWSER_TESTS=1 to skip where Chromium cannot run.

mod support;

use std::path::PathBuf;

use fantoccini::{Client, Locator};
use rollcall_testkit::{skip, wait_for};
use support::{Attendants, Poller};

fn screenshots() -> PathBuf {
    let folder = if std::env::var("ROLLCALL_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        "../../docs/screenshots"
    } else {
        "../../target/screenshots"
    };
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(folder);
    std::fs::create_dir_all(&d).expect("create the screenshots folder");
    d
}

async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.attr(name).await.ok().flatten()
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(name), png).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_the_fleet_updates_live_shows_a_server_and_polls_now() {
    if skip("BROWSER", "Chromium and chromedriver") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_driver, driver_url) = support::chromedriver(dir.path()).await;
    let mut att = Attendants::start(dir.path(), &["mail-01", "web-01", "db-01"]).await;
    let mut poller = Poller::start(dir.path(), &att, "", "").await;
    for n in ["mail-01", "web-01", "db-01"] {
        poller.api.wait_server(n, "first poll", |s| s["state"] == "ok").await;
    }

    let c = support::browser(&driver_url, &dir.path().join("chromium-profile"), 1280, 760).await;
    c.goto(&format!("{}/", poller.base)).await.expect("open the fleet view");
    let rows = c.find_all(Locator::Css("#fleet tbody tr.server")).await.expect("rows");
    let mut names = Vec::new();
    for r in &rows {
        names.push(r.attr("data-server").await.unwrap().unwrap_or_default());
    }
    names.sort();
    assert_eq!(names, ["db-01", "mail-01", "web-01"]);
    wait_for("the live indicator", || async { text(&c, "#live").await.filter(|t| t == "live") }).await;
    assert_eq!(text(&c, "#level-counts .count[data-level=\"normal\"] b").await.as_deref(), Some("3"));

    // Stop mail-01's service: its row turns critical through the event stream, no reload.
    c.execute("window.__rollcallNoReload = 42;", vec![]).await.unwrap();
    att.service("mail-01").stop().await;
    wait_for("mail-01's row to turn critical", || async {
        attr(&c, "#server-mail-01", "data-level").await.filter(|l| l == "critical")
    })
    .await;
    assert_eq!(attr(&c, "#server-mail-01", "data-state").await.as_deref(), Some("deficient"));
    assert_eq!(text(&c, "#server-mail-01 td.level").await.as_deref(), Some("critical"));
    assert_eq!(text(&c, "#server-mail-01 td.deficiencies").await.as_deref(), Some("service:smtp"));
    assert_eq!(text(&c, "#level-counts .count[data-level=\"critical\"] b").await.as_deref(), Some("1"));
    let marker = c.execute("return window.__rollcallNoReload;", vec![]).await.unwrap();
    assert_eq!(marker, serde_json::json!(42), "the page was reloaded");

    // The state filter hides the other rows.
    c.find(Locator::Css(".filter[data-state=\"deficient\"]")).await.unwrap().click().await.unwrap();
    let hidden = c
        .execute("return [...document.querySelectorAll('tr.server')].filter(r => r.hidden).length;", vec![])
        .await
        .unwrap();
    assert_eq!(hidden, serde_json::json!(2));
    c.find(Locator::Css(".filter[data-state=\"all\"]")).await.unwrap().click().await.unwrap();

    // "Poll now" on web-01 (normal: next scheduled poll is seconds away) polls at once.
    let before = poller.api.server("web-01").await["last_poll_at"].clone();
    c.find(Locator::Css("#server-web-01 button.poll-now")).await.unwrap().click().await.unwrap();
    poller.api.wait_server("web-01", "a poll on request", |s| s["last_poll_at"] != before).await;
    shot(&c, "fleet.png").await;

    // The phone-sized fleet view: rows become cards.
    c.set_window_size(412, 860).await.unwrap();
    shot(&c, "fleet-phone.png").await;
    c.set_window_size(1280, 1500).await.unwrap();

    // The server page shows the latest compilation and the history.
    c.goto(&format!("{}/servers/mail-01", poller.base)).await.unwrap();
    let services = text(&c, "#compilation + section.card table.checks").await.unwrap_or_default();
    assert!(services.contains("smtp") && services.contains("critical"), "services table: {services}");
    let transitions = text(&c, "#transitions").await.unwrap_or_default();
    assert!(transitions.contains("normal → critical"), "transitions: {transitions}");
    assert!(c.find(Locator::Css("#chart-rtt polyline")).await.is_ok(), "the RTT chart is drawn");
    assert!(text(&c, ".host").await.unwrap_or_default().to_lowercase().contains("load"), "host usage shown");
    // The service comes back: the page follows without a reload.
    att.service("mail-01").restart().await;
    c.find(Locator::Css("#live-parts button.poll-now")).await.unwrap().click().await.unwrap();
    wait_for("mail-01's page to show it ok again", || async {
        attr(&c, "section.head", "data-state").await.filter(|s| s == "ok")
    })
    .await;
    shot(&c, "server.png").await;
    c.close().await.ok();
    poller.stop().await;
}
