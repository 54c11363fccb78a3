//! The `rollcall` command line as an operator uses it: `query` against an attendant with a
//! token, SIGHUP reloads, `check-config`, `status`, and the refusal of an insecure
//! attendant on a public address.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rollcall_testkit::{wait_until, LogFile, TcpService};
use serde_json::Value;

/// Names of the services in a compilation.
fn service_names(c: &Value) -> Vec<String> {
    texts(c, "services", "name")
}

/// `rollcall query ADDR --json [--token-file F]`, which must succeed: the compilation.
async fn query_json(addr: &str, token: Option<&std::path::Path>) -> Value {
    let mut args = vec!["query", addr, "--json"];
    if let Some(t) = token {
        args.extend(["--token-file", t.to_str().unwrap()]);
    }
    let (code, out, err) = run_cli(&args).await;
    assert_eq!(code, Some(0), "rollcall {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("query --json printed no JSON ({e}):\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_needs_the_token_and_prints_the_compilation_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "s3cret-token-for-tests\n");
    let wrong = write(dir.path(), "wrong-token", "not-the-token\n");
    let smtp = TcpService::start().await;
    let closed = format!("127.0.0.1:{}", free_port());
    let att = start_attendant(dir.path(), "mail-01", |port| {
        attendant_toml(
            "mail-01",
            port,
            &AttAuth::TokenFile(&token),
            &[TcpCheck { name: "smtp", address: smtp.addr() }, TcpCheck { name: "imap", address: closed.clone() }],
        )
    })
    .await;

    // Without a token, or with the wrong one: refused, and the error says why.
    let addr = att.addr();
    for args in [
        vec!["query", addr.as_str(), "--json"],
        vec!["query", addr.as_str()],
        vec!["query", addr.as_str(), "--token-file", wrong.to_str().unwrap()],
    ] {
        let (code, out, err) = run_cli(&args).await;
        assert_ne!(code, Some(0), "rollcall {args:?} must fail without the right token; stdout:\n{out}");
        let e = err.to_lowercase();
        assert!(
            e.contains("401") && e.contains("auth"),
            "rollcall {args:?}: stderr should name the auth failure: {err}"
        );
        assert!(!out.contains("schema_version"), "no compilation without the token: {out}");
    }

    // With it: the compilation, schema 1, with the services the attendant's config lists.
    let c = query_json(&att.url(), Some(&token)).await;
    assert_eq!(c["schema_version"], 1, "{c:#}");
    assert_eq!(c["attendant"]["name"], "mail-01", "{c:#}");
    assert_eq!(service_names(&c), ["smtp", "imap"], "{c:#}");
    assert_eq!(c["services"][0]["status"], "ok", "{c:#}");
    assert_eq!(c["services"][0]["check"], "tcp", "{c:#}");
    assert_eq!(c["services"][1]["status"], "critical", "{c:#}");
    let defs: Vec<&str> = c["deficiencies"].as_array().unwrap().iter().map(|d| text(d, "source")).collect();
    assert_eq!(defs, ["service:imap"], "{c:#}");
    for key in ["utc", "received_at", "replied_at"] {
        assert!(c["time"][key].is_string(), "time.{key} missing: {c:#}");
    }

    // The table form, for a person, names each service and the deficiency.
    let (code, out, err) = run_cli(&["query", &addr, "--token-file", token.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{err}");
    for word in ["mail-01", "smtp", "imap", "service:imap"] {
        assert!(out.contains(word), "query output lacks {word:?}:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_with_a_wrong_token_reports_poll_auth_and_with_the_right_one_ok() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "s3cret-token-for-tests\n");
    let wrong = write(dir.path(), "wrong-token", "not-the-token\n");
    let att = start_attendant(dir.path(), "mail-01", |port| {
        attendant_toml("mail-01", port, &AttAuth::TokenFile(&token), &[])
    })
    .await;
    let mut good = ServerEntry::new("good", att.url());
    good.token_file = Some(token.clone());
    let mut bad = ServerEntry::new("bad", att.url());
    bad.token_file = Some(wrong);
    let none = ServerEntry::new("none", att.url());
    let poller = start_poller(dir.path(), &PollerToml::fast(vec![good, bad, none])).await;
    let api = &poller.api;
    let s = api.poll_now("good").await;
    assert_eq!((s["state"].as_str(), s["level"].as_str()), (Some("ok"), Some("normal")), "{s:#}");
    for name in ["bad", "none"] {
        let s = api.poll_now(name).await;
        assert_eq!(sources(&s), ["poll:auth"], "{name}: {s:#}");
        assert_eq!(s["level"], "critical", "{name}: {s:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_services_list_and_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let a = TcpService::start().await;
    let b = TcpService::start().await;
    let att = start_attendant(dir.path(), "mail-01", |port| {
        attendant_toml("mail-01", port, &AttAuth::Insecure, &[TcpCheck { name: "alpha", address: a.addr() }])
    })
    .await;
    assert_eq!(service_names(&query_json(&att.addr(), None).await), ["alpha"]);

    // Add a service, SIGHUP: the next compilation lists it.
    let two = attendant_toml(
        "mail-01",
        att.port,
        &AttAuth::Insecure,
        &[TcpCheck { name: "alpha", address: a.addr() }, TcpCheck { name: "beta", address: b.addr() }],
    );
    std::fs::write(&att.config, &two).unwrap();
    att.proc.signal("HUP");
    let c = wait_until("SIGHUP to add beta", DEADLINE, || async {
        let c = query_json(&att.addr(), None).await;
        if service_names(&c) == ["alpha", "beta"] {
            Ok(c)
        } else {
            Err(format!("{c:#}\nlog:\n{}", att.proc.log_text()))
        }
    })
    .await;
    assert_eq!(c["services"][1]["status"], "ok", "{c:#}");
    att.proc.wait_log("config reloaded").await;

    // An invalid file (an unknown key) is refused; the running services stay.
    let invalid =
        format!("{two}\n[[service]]\nname = \"gamma\"\ncheck = \"tcp\"\naddress = \"{}\"\nbogus_key = 1\n", a.addr());
    std::fs::write(&att.config, invalid).unwrap();
    att.proc.signal("HUP");
    att.proc.wait_log("config reload refused").await;
    let log = att.proc.log_text();
    assert!(log.contains("bogus_key"), "the refusal names the bad key:\n{log}");
    let c = query_json(&att.addr(), None).await;
    assert_eq!(service_names(&c), ["alpha", "beta"], "the old config must stay after a refused reload: {c:#}");

    // A new, valid file after that is taken again.
    let one = attendant_toml("mail-01", att.port, &AttAuth::Insecure, &[TcpCheck { name: "beta", address: b.addr() }]);
    std::fs::write(&att.config, one).unwrap();
    att.proc.signal("HUP");
    wait_until("SIGHUP to drop alpha", DEADLINE, || async {
        let c = query_json(&att.addr(), None).await;
        if service_names(&c) == ["beta"] {
            Ok(())
        } else {
            Err(format!("{c:#}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_right_after_the_attendant_opens_its_port_does_not_kill_it() {
    // An operator (or a config-management run) may reload an attendant the moment it is
    // up. The race is short, so try it several times: each try is a fresh attendant.
    let dir = tempfile::tempdir().unwrap();
    let mut died = Vec::new();
    let tries = 20;
    for i in 0..tries {
        let port = free_port();
        let cfg = write(dir.path(), &format!("a{i}.toml"), &attendant_toml("mail-01", port, &AttAuth::Insecure, &[]));
        let mut att = Proc::spawn(
            "attendant",
            &["attendant", "--config", cfg.to_str().unwrap()],
            dir.path().join(format!("a{i}.log")),
        );
        let start = Instant::now();
        let up = loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break true;
            }
            if att.exited().is_some() || start.elapsed() > DEADLINE {
                break false; // the port was taken meanwhile: not this test's business
            }
            tokio::task::yield_now().await;
        };
        if !up {
            continue;
        }
        att.signal("HUP");
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Some(st) = att.exited() {
            died.push(format!("try {i}: {st}"));
        }
    }
    assert!(
        died.is_empty(),
        "SIGHUP sent once the attendant's port was open killed it in {} of {tries} tries ({died:?}): \
         the SIGHUP handler must be installed before the listener is bound",
        died.len()
    );
}

const VALID_ATTENDANT: &str = r#"name = "mail-01"
listen = "127.0.0.1:7460"
insecure = true
clock = "virtual"

[[service]]
name = "mta"
check = "tcp"
address = "127.0.0.1:25"
expect = "220"
timeout = "2s"
"#;

const VALID_POLLER: &str = r#"listen = "127.0.0.1:7470"
database = "sqlite://rollcall.db"
timeout = "5s"
recover_after = 2

[[level]]
name = "normal"
interval = "15m"
[[level]]
name = "critical"
interval = "2m"

[[rule]]
source = "service:directory"
level = "critical"

[[server]]
name = "mail-01"
address = "http://10.0.0.5:7460"
"#;

/// Line numbers matter here: the test checks each problem is named at its line.
const BAD_POLLER: &str = r#"listen = "localhost-7470"
timeout = "5s"
recover_after = 0

[[level]]
name = "normal"
interval = "3s"

[[rule]]
source = "poll:*"
level = "panic"

[[server]]
name = "mail-01"
address = "ftp://10.0.0.5"

[[server]]
name = "mail-01"
address = "http://10.0.0.6:7460"
"#;

const BAD_ATTENDANT: &str = r#"name = "mail-01"
listen = "0.0.0.0:7460"
insecure = true

[[service]]
name = "mta"
check = "tcp"

[[service]]
name = "mta"
check = "tcp"
address = "127.0.0.1:25"

[[service]]
name = "fax"
check = "carrier-pigeon"
"#;

#[tokio::test]
async fn check_config_accepts_valid_files_and_names_every_problem_by_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, kind) in
        [("attendant.toml", VALID_ATTENDANT, "attendant"), ("poller.toml", VALID_POLLER, "poller")]
    {
        let f = write(dir.path(), name, text);
        let (code, out, err) = run_cli(&["check-config", f.to_str().unwrap()]).await;
        assert_eq!(code, Some(0), "{name} is valid, yet: {err}");
        assert!(out.contains(&format!("valid {kind} config")), "{name}: {out}");
    }

    let f = write(dir.path(), "bad-poller.toml", BAD_POLLER);
    let file = f.to_str().unwrap();
    let (code, out, err) = run_cli(&["check-config", file]).await;
    assert_eq!(code, Some(1), "an invalid poller config must exit 1; stdout: {out}");
    for want in [
        format!("{file}:1: listen"),
        format!("{file}:3: recover_after"),
        format!("{file}:7: level[0].interval"),
        format!("{file}:11: rule[0].level"),
        format!("{file}:15: server[0].address"),
        format!("{file}:18: server[1].name"),
    ] {
        assert!(err.contains(&want), "check-config must name {want:?}; stderr:\n{err}");
    }
    assert_eq!(err.lines().filter(|l| l.starts_with(file)).count(), 6, "one line per problem:\n{err}");

    let f = write(dir.path(), "bad-attendant.toml", BAD_ATTENDANT);
    let file = f.to_str().unwrap();
    let (code, _, err) = run_cli(&["check-config", file]).await;
    assert_eq!(code, Some(1), "an invalid attendant config must exit 1");
    for want in [
        format!("{file}:3: insecure"),
        format!("{file}:5: service[0].address"), // missing: the table that should hold it
        format!("{file}:10: service[1].name"),
        format!("{file}:16: service[2].check"),
    ] {
        assert!(err.contains(&want), "check-config must name {want:?}; stderr:\n{err}");
    }

    // An unknown key is named with its line.
    let f = write(
        dir.path(),
        "typo.toml",
        "name = \"mail-01\"\ninsecure = true\nlisten = \"127.0.0.1:7460\"\ncolck = \"virtual\"\n",
    );
    let file = f.to_str().unwrap();
    let (code, _, err) = run_cli(&["check-config", file]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("{file}:4")) && err.contains("colck"), "unknown key not named with its line:\n{err}");

    // A missing file is an error too.
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = run_cli(&["check-config", missing.to_str().unwrap()]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("missing.toml"), "{err}");
}

/// Two typos and a bad value: an operator expects all three named in one run, as the
/// CLI promises ("exit 1 naming every problem"), not one per run.
const TYPOS_POLLER: &str = r#"listen = "127.0.0.1:7470"
timout = "5s"
recover_after = 0

[[server]]
name = "mail-01"
adress = "http://10.0.0.5:7460"
"#;

#[tokio::test]
async fn check_config_names_every_unknown_key_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "typos.toml", TYPOS_POLLER);
    let file = f.to_str().unwrap();
    let (code, _, err) = run_cli(&["check-config", file, "--kind", "poller"]).await;
    assert_eq!(code, Some(1));
    let named =
        |line: usize, key: &str| err.lines().any(|l| l.starts_with(&format!("{file}:{line}")) && l.contains(key));
    let missing: Vec<&str> = [(2, "timout"), (3, "recover_after"), (7, "adress")]
        .into_iter()
        .filter(|(line, key)| !named(*line, key))
        .map(|(_, key)| key)
        .collect();
    assert!(missing.is_empty(), "check-config did not name {missing:?} (each with file:line); stderr:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_prints_the_api_server_list_and_the_table_names_each_server() {
    let dir = tempfile::tempdir().unwrap();
    let att =
        start_attendant(dir.path(), "web-01", |port| attendant_toml("web-01", port, &AttAuth::Insecure, &[])).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = PollerToml::fast(vec![ServerEntry::new("web-01", att.url()), ServerEntry::new("mail-02", dead)]);
    let poller = start_poller(dir.path(), &cfg).await;
    let api = &poller.api;
    api.wait_server("web-01", "ok", |s| s["state"] == "ok").await;
    api.wait_server("mail-02", "critical", |s| s["level"] == "critical").await;

    let (code, out, err) = run_cli(&["status", "--poller", &api.base, "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let cli: Vec<Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not a JSON array ({e}):\n{out}"));
    let http = api.servers().await;
    let key = |v: &Vec<Value>| -> Vec<(String, String, String, Vec<String>)> {
        v.iter()
            .map(|s| (text(s, "name").into(), text(s, "level").into(), text(s, "state").into(), sources(s)))
            .collect()
    };
    assert_eq!(key(&cli), key(&http), "status --json must print GET /api/v1/servers");
    assert_eq!(
        key(&cli),
        [
            ("web-01".into(), "normal".into(), "ok".into(), vec![]),
            ("mail-02".into(), "critical".into(), "unreachable".into(), vec!["poll:refused".to_string()]),
        ]
    );
    // Every field of the API is there (same keys).
    for (c, h) in cli.iter().zip(&http) {
        let ck: Vec<_> = c.as_object().unwrap().keys().collect();
        let hk: Vec<_> = h.as_object().unwrap().keys().collect();
        assert_eq!(ck, hk);
    }

    let (code, out, err) = run_cli(&["status", "--poller", &api.base]).await;
    assert_eq!(code, Some(0), "{err}");
    let line =
        |name: &str| out.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
    assert!(line("web-01").contains("normal") && line("web-01").contains("ok"), "{out}");
    assert!(line("mail-02").contains("critical") && line("mail-02").contains("poll:refused"), "{out}");

    // A poller that is not there: an error naming it, not a panic.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = run_cli(&["status", "--poller", &nowhere]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains(&nowhere) && !err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn insecure_attendant_on_a_public_address_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write(
        dir.path(),
        "attendant.toml",
        &format!("name = \"mail-01\"\nlisten = \"0.0.0.0:{port}\"\ninsecure = true\nclock = \"virtual\"\n"),
    );
    let mut att =
        Proc::spawn("attendant", &["attendant", "--config", cfg.to_str().unwrap()], dir.path().join("att.log"));
    let st = att.wait_exit(Duration::from_secs(10)).await;
    assert!(!st.success(), "an insecure attendant on 0.0.0.0 must not run");
    let log = att.log_text();
    assert!(log.contains("insecure"), "the refusal must name `insecure`:\n{log}");
    assert!(log.contains(&format!("{}:3", cfg.display())), "and its line:\n{log}");

    // The same on loopback starts (insecure is allowed there).
    let ok = start_attendant(dir.path(), "loopback", |p| {
        format!("name = \"mail-01\"\nlisten = \"127.0.0.1:{p}\"\ninsecure = true\nclock = \"virtual\"\n")
    })
    .await;
    assert!(query_json(&ok.addr(), None).await["schema_version"] == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attendant_alone_answers_like_rollcall_attendant_and_names_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let slim = env!("CARGO_BIN_EXE_rollcall-attendant");
    let bad = write(dir.path(), "bad.toml", "name = \"m\"\nlisten = \"127.0.0.1:1\"\nclok = \"virtual\"\n");
    let mut p = Proc::spawn_program(
        slim,
        "rollcall-attendant",
        &["--config", bad.to_str().unwrap()],
        dir.path().join("bad.log"),
    );
    assert!(!p.wait_exit(Duration::from_secs(10)).await.success());
    assert!(p.log_text().contains(&format!("{}:3", bad.display())), "names file and line:\n{}", p.log_text());

    let port = free_port();
    let cfg = write(dir.path(), "slim.toml", &attendant_toml("slim-01", port, &AttAuth::Insecure, &[]));
    let mut att = Proc::spawn_program(
        slim,
        "rollcall-attendant",
        &["--config", cfg.to_str().unwrap()],
        dir.path().join("slim.log"),
    );
    let addr = format!("127.0.0.1:{port}");
    let addr = &addr;
    let c = wait_until("rollcall-attendant to answer a query", DEADLINE, || {
        let exited = att.exited().map(|st| format!("rollcall-attendant exited ({st}):\n{}", att.log_text()));
        let log = LogFile(att.log.clone());
        async move {
            let (code, out, _) = run_cli(&["query", "--json", addr]).await;
            if code == Some(0) {
                return Ok(serde_json::from_str::<Value>(&out).unwrap());
            }
            if let Some(exited) = exited {
                panic!("{exited}");
            }
            Err(log)
        }
    })
    .await;
    assert_eq!((c["schema_version"].as_u64(), c["attendant"]["name"].as_str()), (Some(1), Some("slim-01")));
    att.signal("TERM");
    assert!(att.wait_exit(Duration::from_secs(10)).await.success(), "{}", att.log_text());
}
