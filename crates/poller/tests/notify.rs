//! Notifications end to end against real receivers: a webhook test server (the damped
//! sequence of a flapping attendant, retries after failures, and no repeat after a poller
//! restart), a real Prometheus Alertmanager (the alert shows with labels server, level and
//! state, then resolves), and a real mailbox (Postfix delivering to Dovecot).

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use rollcall_testkit::{free_port, mailstack, skip, wait_for, wait_for_within};
use serde_json::Value;
use support::{hook, Attendants, Poller};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_a_damped_sequence_with_retries_and_no_repeat_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hook = hook(2).await;
    let mut att = Attendants::start(dir.path(), &["mail-01"]).await;
    let top = "flap_threshold = 3\nflap_window = \"6s\"\n";
    let tables =
        format!("[[notify]]\nkind = \"webhook\"\nurl = \"{}\"\nbackoff = \"100ms\"\ntimeout = \"2s\"\n", hook.url);
    let mut poller = Poller::start(dir.path(), &att, top, &tables).await;
    assert_eq!(poller.api.poll_now("mail-01").await["state"], "ok");

    // A real problem: the first two attempts fail (HTTP 500), the third delivers.
    att.service("mail-01").stop().await;
    assert_eq!(poller.api.poll_now("mail-01").await["state"], "deficient");
    hook.wait_kinds(&["problem"]).await;
    let first = hook.got.lock().unwrap()[0].clone();
    assert_eq!(
        (first["server"].as_str(), first["level"].as_str(), first["state"].as_str()),
        (Some("mail-01"), Some("critical"), Some("deficient")),
        "{first:#}"
    );
    assert_eq!(first["previous"]["level"], "normal");
    assert_eq!(first["deficiencies"][0]["source"], "service:smtp");
    assert!(first["reason"].as_str().unwrap_or("").contains("service:smtp"), "{first:#}");
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 3, "two failures, then delivered");
    // Every attempt names the notice alike, so a receiver can drop a repeat.
    assert_eq!(first["key"], "told:1:mail-01");
    assert_eq!(*hook.keys.lock().unwrap(), ["told:1:mail-01"; 3]);
    let ch = poller.api.get("/api/v1/notifications").await;
    assert_eq!((ch[0]["sent"].as_u64(), ch[0]["attempt_failures"].as_u64()), (Some(1), Some(2)), "{ch:#}");

    // Flapping: the fourth state change within the window sends one "flapping" notice.
    att.service("mail-01").restart().await;
    poller.api.poll_now("mail-01").await; // 2: recovery
    att.service("mail-01").stop().await;
    poller.api.poll_now("mail-01").await; // 3: problem
    att.service("mail-01").restart().await;
    poller.api.poll_now("mail-01").await; // 4: flapping
    att.service("mail-01").stop().await;
    poller.api.poll_now("mail-01").await; // damped
    att.service("mail-01").restart().await;
    poller.api.poll_now("mail-01").await; // damped
    hook.wait_kinds(&["problem", "recovery", "problem", "flapping"]).await;
    // A whole window without a state change: one "settled" notice, in the state it settled.
    wait_for_within("settled", Duration::from_secs(20), || async { (hook.kinds().len() == 5).then_some(()) }).await;
    assert_eq!(hook.kinds(), ["problem", "recovery", "problem", "flapping", "settled"]);
    let settled = hook.got.lock().unwrap()[4].clone();
    assert_eq!(
        (settled["state"].as_str(), settled["previous"]["flapping"].as_bool()),
        (Some("ok"), Some(true)),
        "{settled:#}"
    );

    // A restart tells nothing again: polls of an unchanged server are silent.
    poller.stop().await;
    let poller = Poller::start(dir.path(), &att, top, &tables).await;
    poller.api.poll_now("mail-01").await;
    poller.api.poll_now("mail-01").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.kinds().len(), 5, "a restart repeated a notice: {:?}", hook.kinds());
    // ... while a real change after the restart is still told.
    att.service("mail-01").stop().await;
    poller.api.poll_now("mail-01").await;
    hook.wait_kinds(&["problem", "recovery", "problem", "flapping", "settled", "problem"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_channel_is_shown_and_never_blocks_polling() {
    let dir = tempfile::tempdir().unwrap();
    let mut att = Attendants::start(dir.path(), &["mail-01"]).await;
    // Nothing listens there: every attempt is refused.
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let tables =
        format!("[[notify]]\nkind = \"webhook\"\nname = \"chat\"\nurl = \"{dead}\"\nretries = 1\nbackoff = \"50ms\"\n");
    let poller = Poller::start(dir.path(), &att, "", &tables).await;
    att.service("mail-01").stop().await;
    let started = std::time::Instant::now();
    assert_eq!(poller.api.poll_now("mail-01").await["state"], "deficient");
    assert!(started.elapsed() < Duration::from_secs(2), "a poll waited on notifications");
    let ch = wait_for("the channel to show its failure", || async {
        let ch = poller.api.get("/api/v1/notifications").await;
        (ch[0]["failed"] == 1).then_some(ch)
    })
    .await;
    assert_eq!(ch[0]["name"], "chat");
    assert_eq!(ch[0]["failing"], true);
    assert!(ch[0]["last_error"].as_str().unwrap_or("").contains("127.0.0.1"), "{ch:#}");
    let metrics = reqwest::get(format!("{}/metrics", poller.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rollcall_notifications_total{channel=\"chat\",result=\"failed\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_the_alert_and_resolves_it_on_recovery() {
    if skip("ALERTMANAGER", "Prometheus Alertmanager (Debian prometheus-alertmanager)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (am, am_url) = support::alertmanager(dir.path()).await;
    let mut att = Attendants::start(dir.path(), &["mail-01"]).await;
    let tables = format!("[[notify]]\nkind = \"alertmanager\"\nurl = \"{am_url}\"\nresend = \"2s\"\n");
    let poller = Poller::start(dir.path(), &att, "", &tables).await;
    poller.api.poll_now("mail-01").await;
    let active = |am_url: String| async move {
        let r: Value = reqwest::Client::new()
            .get(format!("{am_url}/api/v2/alerts"))
            .query(&[("filter", "server=\"mail-01\"")])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(r.as_array()?.iter().filter(|a| a["status"]["state"] == "active").cloned().collect::<Vec<_>>())
    };
    att.service("mail-01").stop().await;
    poller.api.poll_now("mail-01").await;
    let alerts =
        wait_for("the alert in Alertmanager", || async { active(am_url.clone()).await.filter(|a| !a.is_empty()) })
            .await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}\n{}", am.log_text());
    let l = &alerts[0]["labels"];
    assert_eq!(
        (l["alertname"].as_str(), l["server"].as_str(), l["level"].as_str(), l["state"].as_str()),
        (Some("RollcallServer"), Some("mail-01"), Some("critical"), Some("deficient")),
        "{alerts:#?}"
    );
    assert!(alerts[0]["annotations"]["summary"].as_str().unwrap_or("").contains("mail-01"));
    // Recovery resolves it.
    att.service("mail-01").restart().await;
    poller.api.poll_now("mail-01").await;
    wait_for("the alert to resolve", || async { active(am_url.clone()).await.filter(|a| a.is_empty()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_arrives_in_a_real_mailbox() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dovecot = mailstack::Dovecot::start(dir.path(), false);
    let postfix = mailstack::Postfix::start(dir.path(), dovecot.lmtp_port);
    let mut att = Attendants::start(dir.path(), &["mail-01"]).await;
    let tables = format!(
        "[[notify]]\nkind = \"email\"\nsmtp = \"127.0.0.1:{}\"\nsecurity = \"none\"\nfrom = \"rollcall@example.test\"\nto = [\"{}\"]\n",
        postfix.smtp_port,
        mailstack::USER
    );
    let poller = Poller::start(dir.path(), &att, "", &tables).await;
    poller.api.poll_now("mail-01").await;
    att.service("mail-01").stop().await;
    poller.api.poll_now("mail-01").await;
    let new = dovecot.maildir().join("new");
    let text = wait_for("the notice in the probe mailbox", || async {
        let entries = std::fs::read_dir(&new).ok()?;
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).find(|t| t.contains("[rollcall]"))
    })
    .await;
    assert!(text.contains("Subject: [rollcall] mail-01 is deficient at level critical"), "{text}\n{}", postfix.log());
    assert!(text.contains("service:smtp"), "{text}");
    assert!(text.contains("From: rollcall@example.test"), "{text}");
    assert!(text.contains("X-Rollcall-Notice: told:1:mail-01"), "{text}");
    assert!(text.contains("Message-ID: <rollcall.told=3A1=3Amail-01@rollcall.invalid>"), "{text}");
    let ch = poller.api.get("/api/v1/notifications").await;
    assert_eq!(ch[0]["sent"], 1, "{ch:#}");
}

/// The notifier alone, fed poll events by hand, as two nodes of a cluster on one database:
/// a notice whose claim the store refuses (a trigger failing every insert into `notices`,
/// as an unreachable database would) is not sent, and the next poll decides it again; it
/// is sent once the store answers, under the key any node computes alike, and the other
/// node deciding the same notice from the memory it read before is refused: nothing sent
/// twice. Its next notice counts on from the stored memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_is_sent_only_when_its_claim_succeeds_and_only_once_across_nodes() {
    use rollcall_poller::fleet::FleetEvent;
    use rollcall_poller::model::{ServerFacts, ServerState, ServerSummary};

    let dir = tempfile::tempdir().unwrap();
    let hook = hook(0).await;
    let text =
        format!("[[notify]]\nkind = \"webhook\"\nurl = \"{}\"\nbackoff = \"100ms\"\ntimeout = \"2s\"\n", hook.url);
    let config = rollcall_poller::PollerConfig::parse("poller.toml", &text).unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.db").display());
    let store = rollcall_poller::store::open(&url, None).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(support::notifier(&config, store.clone(), &stop).await.0);
    }
    let poll = |level: &str, state: ServerState, secs: i64| {
        let mut facts = ServerFacts::new("mail-01", "http://mail-01:7460", level);
        facts.state = state;
        facts.last_poll_at = Some(chrono::Utc::now() + chrono::Duration::seconds(secs));
        FleetEvent::Polled(ServerSummary { facts, next_poll_at: None, servers_behind: 0, node: None })
    };

    sqlx::query("CREATE TRIGGER unreachable BEFORE INSERT ON notices BEGIN SELECT RAISE(ABORT, 'injected fault: database unreachable'); END")
        .execute(&raw)
        .await
        .unwrap();
    nodes[0].send(poll("critical", ServerState::Unreachable, 0)).unwrap();
    // A notice not sent leaves nothing to wait for: give the notifier time to (not) send it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 0, "a notice was sent without its claim: {:?}", hook.kinds());

    sqlx::query("DROP TRIGGER unreachable").execute(&raw).await.unwrap();
    nodes[0].send(poll("critical", ServerState::Unreachable, 10)).unwrap();
    hook.wait_kinds(&["problem"]).await;
    // The other node read the memory before that claim: it decides the same notice, and
    // the store refuses it.
    nodes[1].send(poll("critical", ServerState::Unreachable, 20)).unwrap();
    nodes[1].send(poll("normal", ServerState::Ok, 30)).unwrap();
    hook.wait_kinds(&["problem", "recovery"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.kinds(), ["problem", "recovery"]);
    assert_eq!(*hook.keys.lock().unwrap(), ["told:1:mail-01", "told:2:mail-01"]);
    stop.cancel();
}
