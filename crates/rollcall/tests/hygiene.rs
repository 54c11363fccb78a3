//! The operator's commands against a real poller process (SPEC 13): `rollcall downtime
//! add|list|remove` and `rollcall ack`, what they refuse and how they say it, a restart
//! that keeps downtimes and acknowledgements, and the audit trail in the server's history.

mod common;

use common::*;
use rollcall_testkit::TcpService;
use serde_json::Value;

/// `rollcall ARGS --poller URL`: (exit code, stdout, stderr).
async fn cli(poller: &Poller, args: &[&str]) -> (Option<i32>, String, String) {
    let base = poller.api.base.clone();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--poller", &base]);
    run_cli(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtimes_and_acks_from_the_command_line_survive_a_restart_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut smtp = TcpService::start().await;
    let addr = smtp.addr();
    let att = start_attendant(dir.path(), "mail-01", |port| {
        attendant_toml("mail-01", port, &AttAuth::Insecure, &[TcpCheck { name: "smtp", address: addr.clone() }])
    })
    .await;
    let mut poller = start_poller(dir.path(), &PollerToml::fast(vec![ServerEntry::new("mail-01", att.url())])).await;
    poller.api.wait_server("mail-01", "a first clean poll", |s| s["state"] == "ok").await;

    let (code, out, err) = cli(&poller, &["downtime", "add", "mail-*", "--for", "2h", "-m", "kernel upgrade"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("downtime 1: mail-* from ") && out.trim_end().ends_with("(mail-01)"), "{out}");

    // What the poller refuses is said as it said it; nothing is added.
    for (args, says) in [
        (vec!["downtime", "add", "web 01", "--for", "1h", "-m", "x"], "is not a glob of server names"),
        (
            vec!["downtime", "add", "web-*", "--for", "1h", "--start", "tomorrow", "-m", "x"],
            "--start \"tomorrow\" is not an RFC 3339 time",
        ),
        (vec!["downtime", "add", "web-*", "--for", "1h", "-m", " "], "comment: say why"),
        (vec!["downtime", "remove", "7"], "no downtime 7 in force or to come"),
        (vec!["ack", "nobody", "-m", "x"], "no server named \"nobody\""),
        (vec!["ack", "mail-01", "-m", "x"], "mail-01 has no problem to acknowledge"),
    ] {
        let (code, out, err) = cli(&poller, &args).await;
        assert_eq!(code, Some(1), "rollcall {args:?} must fail; stdout: {out}");
        assert!(err.contains(says) && !err.contains("panicked"), "rollcall {args:?}: {err}");
    }

    smtp.stop().await;
    poller.api.wait_server("mail-01", "critical", |s| s["level"] == "critical").await;
    let (code, out, err) = cli(&poller, &["ack", "mail-01", "-m", "restarting postfix"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "mail-01 acknowledged by anonymous (deficient at level critical): restarting postfix");
    let (_, table, _) = cli(&poller, &["status"]).await;
    assert!(table.lines().any(|l| l.contains("mail-01") && l.contains("deficient (acked by anonymous)")), "{table}");

    // A restart keeps both.
    poller.proc.signal("TERM");
    let st = poller.proc.wait_exit(std::time::Duration::from_secs(10)).await;
    assert!(st.success(), "{}", poller.proc.log_text());
    let (port, config) = (poller.port, poller.config.clone());
    drop(poller);
    let poller = spawn_poller(dir.path(), &config, port).await.unwrap_or_else(|p| panic!("{}", p.log_text()));
    let (code, out, err) = cli(&poller, &["downtime", "list", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((list[0]["id"].as_i64(), list[0]["server"].as_str()), (Some(1), Some("mail-*")), "{list:#}");
    assert_eq!(list[0]["active"], true);
    let (_, table, _) = cli(&poller, &["downtime", "list"]).await;
    assert!(table.contains("kernel upgrade") && table.contains("mail-01"), "{table}");
    let s = poller.api.server("mail-01").await;
    assert_eq!(s["ack"]["comment"], "restarting postfix", "{s:#}");

    let (code, out, err) = cli(&poller, &["downtime", "remove", "1"]).await;
    assert_eq!((code, out.trim()), (Some(0), "downtime 1 for mail-* removed"), "{err}");
    let (code, _, err) = cli(&poller, &["downtime", "remove", "1"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("no downtime 1"), "{err}");

    let h = poller.api.history("mail-01").await;
    let done: Vec<(&str, &str)> = h["actions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| (a["by"].as_str().unwrap(), a["action"].as_str().unwrap()))
        .collect();
    assert_eq!(done, [("anonymous", "downtime-add"), ("anonymous", "ack"), ("anonymous", "downtime-remove")], "{h:#}");
}

/// The names `GET /api/v1/servers` lists, in order.
async fn names(poller: &Poller) -> Vec<String> {
    poller.api.servers().await.iter().map(|s| text(s, "name").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_server_files_and_an_invalid_reload_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut atts = Vec::new();
    for name in ["alive-1", "alive-2", "alive-3"] {
        atts.push(start_attendant(dir.path(), name, |port| attendant_toml(name, port, &AttAuth::Insecure, &[])).await);
    }
    let server = |name: &str, url: &str| format!("[[server]]\nname = \"{name}\"\naddress = \"{url}\"\n");
    let d = dir.path().join("servers.d");
    std::fs::create_dir(&d).unwrap();
    write(&d, "one.toml", &server("alive-1", &atts[0].url()));
    write(&d, "two.toml", &server("alive-2", &atts[1].url()));
    let mut cfg = PollerToml::fast(vec![ServerEntry::new("down", format!("http://127.0.0.1:{}", free_port()))]);
    cfg.extra = "server_files = [\"servers.d/*.toml\"]\nfirst_poll_within = \"2s\"\n".into();
    let poller = start_poller(dir.path(), &cfg).await;
    assert_eq!(names(&poller).await, ["down", "alive-1", "alive-2"]);
    let (code, out, err) = run_cli(&["check-config", poller.config.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "check-config reads server_files too: {out}{err}");
    poller.api.wait_server("down", "critical", |s| s["level"] == "critical").await;
    for n in ["alive-1", "alive-2"] {
        poller.api.wait_server(n, "ok", |s| s["state"] == "ok").await;
    }
    let down_before = poller.api.history("down").await["transitions"].clone();

    // alive-2 goes, alive-3 comes, alive-1 moves to another address; "down" is untouched.
    std::fs::remove_file(d.join("two.toml")).unwrap();
    write(&d, "three.toml", &server("alive-3", &atts[2].url()));
    write(&d, "one.toml", &server("alive-1", &format!("{}/", atts[1].url())));
    poller.proc.signal("HUP");
    poller.proc.wait_log("configuration reloaded").await;
    assert_eq!(names(&poller).await, ["down", "alive-1", "alive-3"]);
    let s = poller.api.wait_server("alive-3", "a first poll within first_poll_within", |s| s["state"] == "ok").await;
    assert_eq!(s["level"], "normal");
    assert_eq!(poller.api.server("alive-1").await["address"], atts[1].url());
    let down = poller.api.server("down").await;
    assert_eq!((down["level"].as_str(), down["state"].as_str()), (Some("critical"), Some("unreachable")), "{down:#}");
    assert_eq!(poller.api.history("down").await["transitions"], down_before, "the untouched server kept its level");
    let h = poller.api.history("alive-3").await;
    assert_eq!((h["actions"][0]["by"].as_str(), h["actions"][0]["action"].as_str()), (Some("SIGHUP"), Some("reload")));

    // An invalid file: SIGHUP logs it and keeps the running config; the API says why.
    write(&d, "four.toml", "[[server]]\nname = \"broken\"\naddres = \"http://x:1\"\n");
    poller.proc.signal("HUP");
    poller.proc.wait_log("SIGHUP: reload refused").await;
    assert_eq!(names(&poller).await, ["down", "alive-1", "alive-3"]);
    let (status, e) = poller.api.send(reqwest::Method::POST, "/api/v1/reload", None).await;
    let msg = e["error"].as_str().unwrap_or_default();
    assert_eq!(status, 400, "{e:#}");
    assert!(
        msg.contains("the running one is kept") && msg.contains("four.toml:3: server[0].addres: unknown key"),
        "{msg}"
    );
    let (code, out, _) = run_cli(&["check-config", poller.config.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{out}");

    // Mended: the API reloads it, as the operator who asked.
    write(&d, "four.toml", &server("alive-4", &atts[0].url()));
    let (status, report) = poller.api.send(reqwest::Method::POST, "/api/v1/reload", None).await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!((report["added"].clone(), report["unchanged"].as_u64()), (serde_json::json!(["alive-4"]), Some(3)));
    assert_eq!(
        names(&poller).await,
        ["down", "alive-4", "alive-1", "alive-3"],
        "files in name order: four, one, three"
    );
    let h = poller.api.history("alive-4").await;
    assert_eq!(
        (h["actions"][0]["by"].as_str(), h["actions"][0]["action"].as_str()),
        (Some("anonymous"), Some("reload"))
    );
}
