//! Alert hygiene end to end (SPEC 13), with real attendants and a real webhook receiver:
//! a segment outage behind a router is one notice; a downtime over a deficient server
//! sends nothing during it and one notice after; an acknowledgement silences the current
//! problem and a new deficiency source is told again. The operator actions show in the
//! servers' history. Bad API input gets a 4xx JSON error naming what is wrong.

mod support;

use std::time::Duration;

use reqwest::Method;
use rollcall_testkit::wait_for;
use serde_json::{json, Value};
use support::{hook, Attendants, Poller};

fn webhook(url: &str) -> String {
    format!("[[notify]]\nkind = \"webhook\"\nurl = \"{url}\"\nbackoff = \"100ms\"\ntimeout = \"2s\"\n")
}

/// What the webhook got: `(kind, server)` of each notice.
fn told(hook: &support::Hook) -> Vec<(String, String)> {
    hook.got
        .lock()
        .unwrap()
        .iter()
        .map(|n| (n["kind"].as_str().unwrap_or("?").to_string(), n["server"].as_str().unwrap_or("?").to_string()))
        .collect()
}

/// Lets queued notices reach the receiver (the notifier hands them on asynchronously).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

fn actions(history: &Value) -> Vec<(String, String)> {
    history["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions in {history:#}"))
        .iter()
        .map(|a| (a["by"].as_str().unwrap().to_string(), a["action"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_outage_behind_a_router_is_one_notice_counting_the_servers_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let hook = hook(0).await;
    let names = ["router-01", "web-1", "web-2", "web-3"];
    let att = Attendants::start(dir.path(), &names).await;
    let servers: String = att
        .addresses
        .iter()
        .map(|(n, a)| {
            let parents = if n.starts_with("web") { "parents = [\"router-01\"]\n" } else { "" };
            format!("\n[[server]]\nname = \"{n}\"\naddress = \"{a}\"\n{parents}")
        })
        .collect();
    let poller = Poller::start_servers(dir.path(), &servers, "", &webhook(&hook.url)).await;
    for n in names {
        assert_eq!(poller.api.poll_now(n).await["state"], "ok");
    }

    // The segment goes away: the router and the three servers behind it.
    for n in names {
        att.stop_attendant(n).await;
    }
    for n in ["web-1", "web-2", "web-3"] {
        let s = poller.api.poll_now(n).await;
        assert_eq!((s["state"].as_str(), s["behind"].as_str()), (Some("unreachable"), Some("router-01")), "{s:#}");
        assert_eq!(s["level"], "normal", "no level moves for being behind: {s:#}");
    }
    let router = poller.api.server("router-01").await;
    assert_eq!((router["state"].as_str(), router["servers_behind"].as_u64()), (Some("unreachable"), Some(3)));
    settle().await;
    assert_eq!(told(&hook), [("problem".to_string(), "router-01".to_string())]);
    let notice = hook.got.lock().unwrap()[0].clone();
    assert_eq!(notice["servers_behind"], 3, "{notice:#}");
    assert!(notice["summary"].as_str().unwrap().ends_with("(3 servers behind it)"), "{notice:#}");
    // More polls of the children (their own loops too) still tell nothing.
    for n in ["web-1", "web-2"] {
        poller.api.poll_now(n).await;
    }
    settle().await;
    assert_eq!(told(&hook).len(), 1, "{:?}", told(&hook));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downtime_over_a_deficient_server_sends_nothing_during_it_and_one_notice_after() {
    let dir = tempfile::tempdir().unwrap();
    let hook = hook(0).await;
    let mut att = Attendants::start(dir.path(), &["mail-01", "web-01"]).await;
    let poller =
        Poller::start(dir.path(), &att, "public_url = \"https://rollcall.example.org/\"\n", &webhook(&hook.url)).await;
    assert_eq!(poller.api.poll_now("mail-01").await["state"], "ok");

    let ends_at = chrono::Utc::now() + chrono::Duration::seconds(4);
    let body = json!({ "server": "mail-*", "ends_at": ends_at, "comment": "kernel upgrade" });
    let (status, d) = poller.api.send(Method::POST, "/api/v1/downtimes", Some(body)).await;
    assert_eq!(status, 201, "{d:#}");
    assert_eq!((d["active"].as_bool(), d["servers"].clone()), (Some(true), json!(["mail-01"])), "{d:#}");
    let listed = poller.api.get("/api/v1/downtimes").await;
    assert_eq!(listed[0]["id"], d["id"], "{listed:#}");

    // During it: polled, levels move, nothing told.
    att.service("mail-01").stop().await;
    let s = poller.api.poll_now("mail-01").await;
    assert_eq!((s["state"].as_str(), s["level"].as_str()), (Some("deficient"), Some("critical")), "{s:#}");
    settle().await;
    assert!(told(&hook).is_empty(), "told during a downtime: {:?}", told(&hook));

    // Its end: one notice, saying so, with the dashboard link.
    wait_for("the notice at the downtime's end", || async { (!told(&hook).is_empty()).then_some(()) }).await;
    settle().await;
    assert_eq!(told(&hook), [("problem".to_string(), "mail-01".to_string())]);
    let n = hook.got.lock().unwrap()[0].clone();
    assert_eq!(n["downtime"]["comment"], "kernel upgrade", "{n:#}");
    assert_eq!(n["key"], format!("downtime:{}:mail-01", d["id"]), "one notice per downtime and server: {n:#}");
    assert_eq!(n["deficiencies"][0]["source"], "service:smtp", "{n:#}");
    assert_eq!(n["url"], "https://rollcall.example.org/servers/mail-01", "{n:#}");
    assert!(n["summary"].as_str().unwrap().contains("downtime"), "{n:#}");
    assert_eq!(poller.api.get("/api/v1/downtimes").await, json!([]), "an ended downtime is no longer listed");
    // Later polls of the unchanged server tell nothing more.
    poller.api.poll_now("mail-01").await;
    settle().await;
    assert_eq!(told(&hook).len(), 1);
    assert_eq!(
        actions(&poller.api.history("mail-01").await),
        [
            ("anonymous".into(), "poll".into()),
            ("anonymous".into(), "downtime-add".into()),
            ("anonymous".into(), "poll".into()),
            ("anonymous".into(), "poll".into())
        ]
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
    );
    assert!(actions(&poller.api.history("web-01").await).is_empty(), "web-01 did not match mail-*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_silences_the_current_problem_and_a_new_deficiency_source_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let hook = hook(0).await;
    let mut att = Attendants::start(dir.path(), &["mail-01"]).await;
    let poller = Poller::start(dir.path(), &att, "", &webhook(&hook.url)).await;
    poller.api.poll_now("mail-01").await;
    let (status, e) = poller.api.send(Method::POST, "/api/v1/servers/mail-01/ack", Some(json!({"comment": "x"}))).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("mail-01 has no problem to acknowledge (state ok, no deficiencies)"))
    );

    att.service("mail-01").stop().await;
    poller.api.poll_now("mail-01").await;
    hook.wait_kinds(&["problem"]).await;
    let (status, s) = poller
        .api
        .send(Method::POST, "/api/v1/servers/mail-01/ack", Some(json!({"comment": "restarting postfix"})))
        .await;
    assert_eq!(status, 200, "{s:#}");
    let listed = poller.api.servers().await;
    let ack = &listed[0]["ack"];
    assert_eq!(
        (ack["by"].as_str(), ack["comment"].as_str()),
        (Some("anonymous"), Some("restarting postfix")),
        "{ack:#}"
    );
    assert!(ack["at"].is_string(), "{ack:#}");

    // The same problem: silent, and the ack stays.
    poller.api.poll_now("mail-01").await;
    settle().await;
    assert_eq!(hook.kinds(), ["problem"]);
    assert_eq!(poller.api.server("mail-01").await["ack"]["comment"], "restarting postfix");

    // Worse: the attendant stops answering (poll:refused, a new source). Told, ack gone.
    att.stop_attendant("mail-01").await;
    let s = poller.api.poll_now("mail-01").await;
    assert_eq!((s["state"].as_str(), s["ack"].clone()), (Some("unreachable"), Value::Null), "{s:#}");
    hook.wait_kinds(&["problem", "change"]).await;
    let h = poller.api.history("mail-01").await;
    assert!(actions(&h).contains(&("anonymous".to_string(), "ack".to_string())), "{h:#}");
    let acked = h["actions"].as_array().unwrap().iter().find(|a| a["action"] == "ack").unwrap();
    assert_eq!(acked["detail"], "restarting postfix", "{h:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_downtime_and_ack_requests_get_a_clear_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let att = Attendants::start(dir.path(), &["mail-01"]).await;
    let poller = Poller::start(dir.path(), &att, "", "").await;
    let soon = chrono::Utc::now() + chrono::Duration::hours(1);
    let cases = [
        (json!({"server": "web 01", "ends_at": soon, "comment": "x"}), 400, "not a glob of server names"),
        (json!({"server": "", "ends_at": soon, "comment": "x"}), 400, "must not be empty"),
        (
            json!({"server": "web-*", "starts_at": soon, "ends_at": soon - chrono::Duration::minutes(5), "comment": "x"}),
            400,
            "is not after starts_at",
        ),
        (json!({"server": "web-*", "ends_at": "tomorrow", "comment": "x"}), 422, "ends_at"),
        (json!({"server": "web-*", "ends_at": soon}), 422, "comment"),
        (json!({"server": "web-*", "ends_at": soon, "comment": " "}), 400, "comment: say why"),
    ];
    for (body, want, says) in cases {
        let (status, e) = poller.api.send(Method::POST, "/api/v1/downtimes", Some(body.clone())).await;
        let msg = e["error"].as_str().unwrap_or_else(|| panic!("no error for {body}: {e:#}"));
        assert!(status == want && msg.contains(says), "{body} -> {status} {msg:?}, want {want} and {says:?}");
    }
    let (status, e) = poller.api.send(Method::DELETE, "/api/v1/downtimes/999", None).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (404, Some("no downtime 999 in force or to come (GET /api/v1/downtimes)"))
    );
    let (status, e) = poller.api.send(Method::DELETE, "/api/v1/downtimes/abc", None).await;
    assert_eq!(status, 400, "{e:#}");
    let (status, e) = poller.api.send(Method::POST, "/api/v1/servers/nobody/ack", Some(json!({"comment": "x"}))).await;
    assert_eq!((status, e["error"].as_str()), (404, Some("no server named \"nobody\"")));
    let (status, e) = poller.api.send(Method::POST, "/api/v1/servers/mail-01/ack", Some(json!({"comment": ""}))).await;
    assert_eq!(status, 400, "{e:#}");
    let (status, e) = poller.api.send(Method::GET, "/api/v1/servers/mail-01/ack", None).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (405, Some("GET is not allowed on /api/v1/servers/mail-01/ack: use POST"))
    );
    assert_eq!(poller.api.get("/api/v1/downtimes").await, json!([]), "nothing was added");
}

/// The notifier alone, fed poll events by hand: a problem that changes within what was
/// acknowledged (a lower level, fewer sources) tells nothing; its recovery is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_problem_that_changes_within_itself_tells_nothing_until_it_recovers() {
    use rollcall_poller::fleet::FleetEvent;
    use rollcall_poller::model::{Ack, ServerFacts, ServerState, ServerSummary};
    use rollcall_protocol::{Deficiency, Severity};

    let dir = tempfile::tempdir().unwrap();
    let hook = hook(0).await;
    let text = format!(
        "[[level]]\nname = \"normal\"\ninterval = \"1m\"\n[[level]]\nname = \"warning\"\ninterval = \"30s\"\n\
         [[level]]\nname = \"critical\"\ninterval = \"20s\"\n{}",
        webhook(&hook.url)
    );
    let config = rollcall_poller::PollerConfig::parse("poller.toml", &text).unwrap();
    let store =
        rollcall_poller::store::open(&format!("sqlite://{}", dir.path().join("n.db").display()), None).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (events, notifier) = support::notifier(&config, store.clone(), &stop).await;

    let smtp = Deficiency { source: "service:smtp".into(), severity: Severity::Critical, summary: "down".into() };
    let ack = Ack {
        by: "ops".into(),
        at: chrono::Utc::now(),
        comment: "on it".into(),
        level: "critical".into(),
        sources: vec!["service:smtp".into()],
    };
    let poll = |level: &str, state: ServerState, ack: Option<Ack>, secs: i64| {
        let mut facts = ServerFacts::new("mail-01", "http://mail-01:7460", level);
        facts.state = state;
        if state != ServerState::Ok {
            facts.deficiencies = vec![smtp.clone()];
        }
        facts.ack = ack.map(Box::new);
        facts.last_poll_at = Some(chrono::Utc::now() + chrono::Duration::seconds(secs));
        FleetEvent::Polled(ServerSummary { facts, next_poll_at: None, servers_behind: 0, node: None })
    };
    events.send(poll("critical", ServerState::Deficient, None, 0)).unwrap();
    hook.wait_kinds(&["problem"]).await;
    events.send(poll("warning", ServerState::Deficient, Some(ack.clone()), 100)).unwrap();
    events.send(poll("normal", ServerState::Ok, None, 200)).unwrap();
    hook.wait_kinds(&["problem", "recovery"]).await;

    // A downtime ends over the same problem, acknowledged: no end notice for it.
    let now = chrono::Utc::now();
    let downtime = rollcall_poller::model::Downtime {
        id: 0,
        server: "mail-*".into(),
        starts_at: now - chrono::Duration::seconds(10),
        ends_at: now + chrono::Duration::milliseconds(800),
        comment: "kernel upgrade".into(),
        by: "ops".into(),
        created_at: now,
    };
    notifier.downtimes().add(store.add_downtime(&downtime).await.unwrap());
    let during = |state, ack| {
        let mut e = poll("critical", state, ack, 0);
        if let FleetEvent::Polled(s) = &mut e {
            s.facts.last_poll_at = Some(chrono::Utc::now());
        }
        e
    };
    events.send(during(ServerState::Deficient, Some(ack))).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(hook.kinds(), ["problem", "recovery"], "an acknowledged problem gets no end notice");
    stop.cancel();
}

/// A webhook with `template_file` posts what the template renders (a chat service's own
/// JSON), with the dashboard link and how long the server has been deficient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_template_shapes_the_body_the_receiver_gets() {
    let dir = tempfile::tempdir().unwrap();
    let hook = hook(0).await;
    std::fs::write(
        dir.path().join("chat.json.j2"),
        "{\"text\": {{ summary | tojson }}, \"link\": {{ url | tojson }}, \"kind\": {{ kind | tojson }}, \"for\": {{ deficient_for | tojson }}}\n",
    )
    .unwrap();
    let mut att = Attendants::start(dir.path(), &["mail-01"]).await;
    let tables = format!("{}template_file = \"chat.json.j2\"\n", webhook(&hook.url));
    let poller = Poller::start(dir.path(), &att, "public_url = \"https://rollcall.example.org\"\n", &tables).await;
    poller.api.poll_now("mail-01").await;
    att.service("mail-01").stop().await;
    poller.api.poll_now("mail-01").await;
    hook.wait_kinds(&["problem"]).await;
    let got = hook.got.lock().unwrap()[0].clone();
    assert_eq!(
        got,
        json!({
            "text": "mail-01 is deficient at level critical: service:smtp",
            "link": "https://rollcall.example.org/servers/mail-01",
            "kind": "problem",
            "for": "0s",
        })
    );
}
