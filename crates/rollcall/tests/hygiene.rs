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
