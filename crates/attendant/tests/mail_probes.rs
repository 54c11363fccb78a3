//! Scenario tests of the synthetic user against a real Dovecot, Postfix and slapd
//! (rollcall_testkit::mailstack): each asserts the compilation a poller would receive from
//! `GET /v1/compilation`.
//!
//! Rules: every test owns its daemons, ports and temp dir, so tests run in parallel;
//! intervals are short ("300ms"); every wait is bounded and a failure prints the last
//! compilation and the daemons' logs.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use rollcall_attendant::AttendantConfig;
use rollcall_protocol::{Compilation, ProbeResult, Status};
use rollcall_testkit::mailstack::{self, Dovecot, Postfix, Slapd};
use rollcall_testkit::{free_port, wait_for_within, wait_until};
use tokio_util::sync::CancellationToken;

mod common;
use common::imap_session;

/// Longest any wait-until loop waits.
const DEADLINE: Duration = Duration::from_secs(40);

/// An attendant serving on a loopback port, stopped on drop.
struct Running {
    url: String,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn attendant(dir: &Path, body: &str) -> Running {
    let path = dir.join("attendant.toml");
    // The machine's own disk must not add a deficiency to what a test expects.
    let text = format!(
        "name = \"mail-test\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\nclock = \"virtual\"\n{body}\n\
         [host]\ndisk_warning_percent = 100.0\ndisk_critical_percent = 100.0\n"
    );
    std::fs::write(&path, text).expect("write config");
    let config = match AttendantConfig::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("config refused:\n{}", e.problems().join("\n")),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}{}", listener.local_addr().expect("addr"), rollcall_protocol::COMPILATION_PATH);
    let stop = CancellationToken::new();
    tokio::spawn(rollcall_attendant::run_on(path, config, listener, stop.clone()));
    Running { url, stop }
}

async fn compilation(url: &str) -> Compilation {
    let r = reqwest::get(url).await.expect("GET compilation");
    assert!(r.status().is_success(), "status {}", r.status());
    r.json().await.expect("compilation JSON")
}

fn probe<'a>(c: &'a Compilation, name: &str) -> Option<&'a ProbeResult> {
    c.probes.iter().find(|p| p.name == name)
}

fn status_of(c: &Compilation, name: &str) -> Option<Status> {
    probe(c, name).map(|p| p.status)
}

fn detail_u64(p: &ProbeResult, key: &str) -> Option<u64> {
    p.details.get(key).and_then(|v| v.as_u64())
}

/// Polls the attendant until `pred` holds; fails with `what`, the last compilation and `logs`.
async fn wait_for(
    run: &Running,
    what: &str,
    logs: &dyn Fn() -> String,
    pred: impl Fn(&Compilation) -> bool,
) -> Compilation {
    wait_until(what, DEADLINE, || async {
        let c = compilation(&run.url).await;
        if pred(&c) {
            Ok(c)
        } else {
            Err(Seen { c, logs })
        }
    })
    .await
}

/// What a wait saw last: the compilation's probes and services, then the daemons' logs
/// (read only when a wait fails).
struct Seen<'a> {
    c: Compilation,
    logs: &'a dyn Fn() -> String,
}

impl fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the compilation's probes and services:\n{}\n{}\nlogs:\n{}",
            serde_json::to_string_pretty(&self.c.probes).unwrap_or_default(),
            serde_json::to_string_pretty(&self.c.services).unwrap_or_default(),
            (self.logs)()
        )
    }
}

fn print_durations(c: &Compilation) {
    for p in &c.probes {
        eprintln!("probe {:<10} {:<8} {:>8.1} ms  {}", p.name, p.status.as_str(), p.duration_ms, p.message);
    }
    for s in &c.services {
        eprintln!("service {:<10} {:<8} {:>8.1} ms  {}", s.name, s.status.as_str(), s.duration_ms, s.message);
    }
}

fn mailbox_table(d: &Dovecot, security: &str, secret_line: &str) -> String {
    let ca = match &d.ca_file {
        Some(f) => format!("ca_file = \"{}\"\n", f.display()),
        None => String::new(),
    };
    format!(
        "[probe.mailbox]
server = \"127.0.0.1:{port}\"
security = \"{security}\"
{ca}user = \"{user}\"
{secret_line}
interval_a = \"300ms\"
interval_b = \"700ms\"
timeout = \"5s\"
",
        port = d.imap_port,
        user = mailstack::USER,
    )
}

fn loop_table(p: &Postfix) -> String {
    format!(
        "[probe.mail_loop]
smtp = \"127.0.0.1:{port}\"
from = \"rollcall@example.test\"
to = \"{user}\"
interval = \"3s\"
max_latency = \"3s\"
timeout = \"2s\"
",
        port = p.smtp_port,
        user = mailstack::USER,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_stack_all_probes_and_checks_ok() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(dir.path(), true);
    let postfix = Postfix::start(dir.path(), dovecot.lmtp_port);
    let slapd = Slapd::start(dir.path());
    std::fs::write(dir.path().join("probe-password"), format!("{}\n", mailstack::PASSWORD)).expect("pw");
    std::fs::write(dir.path().join("ldap-password"), mailstack::LDAP_PROBE_PASSWORD).expect("pw");
    let services = format!(
        "[[service]]
name = \"message-store\"
check = \"imap\"
address = \"127.0.0.1:{imap}\"
security = \"starttls\"
ca_file = \"{ca}\"
user = \"{user}\"
password_file = \"probe-password\"

[[service]]
name = \"mta\"
check = \"smtp\"
address = \"127.0.0.1:{smtp}\"

[[service]]
name = \"directory\"
check = \"ldap\"
address = \"127.0.0.1:{ldap}\"
bind_dn = \"{dn}\"
password_file = \"ldap-password\"
base = \"{base}\"
",
        imap = dovecot.imap_port,
        ca = dovecot.ca_file.as_ref().expect("ca").display(),
        user = mailstack::USER,
        smtp = postfix.smtp_port,
        ldap = slapd.port,
        dn = mailstack::LDAP_PROBE_DN,
        base = mailstack::LDAP_BASE,
    );
    let run = attendant(
        dir.path(),
        &format!(
            "{services}\n{}\n{}",
            mailbox_table(&dovecot, "starttls", "password_file = \"probe-password\""),
            loop_table(&postfix)
        ),
    )
    .await;
    let logs = || format!("{}\n{}", dovecot.log(), postfix.log());
    let c = wait_for(&run, "login, mail_read, refresh and mail_loop all ok", &logs, |c| {
        ["login", "mail_read", "refresh", "mail_loop"].iter().all(|n| status_of(c, n) == Some(Status::Ok))
    })
    .await;
    print_durations(&c);
    let login = probe(&c, "login").expect("login");
    assert_eq!(login.details.get("tls").and_then(|v| v.as_bool()), Some(true), "{login:?}");
    assert!(login.details["greeting"].as_str().is_some_and(|g| g.contains("Dovecot")), "{login:?}");
    assert!(login.details["capability"].as_str().is_some_and(|g| g.contains("IMAP4rev1")), "{login:?}");
    let l = probe(&c, "mail_loop").expect("mail_loop");
    let latency = l.details.get("latency_ms").and_then(|v| v.as_f64()).expect("latency_ms");
    assert!(latency > 0.0 && latency < 3000.0, "{l:?}");
    assert!(l.details["queued"].as_str().is_some_and(|q| q.starts_with("250")), "{l:?}");
    // The looped message was read and deleted: it shows as probe mail in some read round.
    let c = wait_for(&run, "the services ok", &logs, |c| c.services.iter().all(|s| s.status == Status::Ok)).await;
    assert!(c.deficiencies.is_empty(), "{:?}", c.deficiencies);
    let store = c.services.iter().find(|s| s.name == "message-store").expect("store");
    assert_eq!(store.details.get("login").and_then(|v| v.as_bool()), Some(true), "{store:?}");
    // A second loop message is recognised again (tags are unique, the mailbox does not grow).
    let first_tag = l.details["tag"].clone();
    wait_for(&run, "a second mail_loop round", &logs, |c| {
        probe(c, "mail_loop").is_some_and(|p| p.details["tag"] != first_tag && p.status == Status::Ok)
    })
    .await;
    let left = std::fs::read_dir(dovecot.maildir().join("cur")).map(|d| d.count()).unwrap_or(0);
    assert!(left <= 1, "probe mail is not deleted: {left} messages in cur/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_login_then_recovers_once_fixed() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(dir.path(), false);
    let pw = dir.path().join("probe-password");
    std::fs::write(&pw, "not-the-password\n").expect("pw");
    let run = attendant(dir.path(), &mailbox_table(&dovecot, "none", "password_file = \"probe-password\"")).await;
    let logs = || dovecot.log();
    let c = wait_for(&run, "login critical and refresh not run", &logs, |c| {
        probe(c, "login").is_some_and(|p| p.status == Status::Critical && p.message.contains(" NO "))
            && status_of(c, "refresh") == Some(Status::Unknown)
    })
    .await;
    let login = probe(&c, "login").expect("login");
    assert!(login.message.contains("AUTHENTICATE PLAIN: NO"), "the server's words: {}", login.message);
    assert!(login.message.contains("Authentication failed"), "{}", login.message);
    assert!(!login.message.contains("not-the-password"), "secret in message");
    assert!(status_of(&c, "mail_read").is_none(), "no read after a failed login");
    let refresh = probe(&c, "refresh").expect("refresh");
    assert!(refresh.message.starts_with("did not run: not logged in (last login failed:"), "{}", refresh.message);
    assert!(c.deficiencies.iter().any(|d| d.source == "probe:login"), "{:?}", c.deficiencies);
    let body = reqwest::get(&run.url).await.expect("get").text().await.expect("text");
    assert!(!body.contains("not-the-password"), "secret in the compilation");

    std::fs::write(&pw, format!("{}\n", mailstack::PASSWORD)).expect("pw");
    let c = wait_for(&run, "login and mail_read ok after the fix", &logs, |c| {
        status_of(c, "login") == Some(Status::Ok)
            && status_of(c, "mail_read") == Some(Status::Ok)
            && status_of(c, "refresh") == Some(Status::Ok)
    })
    .await;
    assert!(c.deficiencies.is_empty(), "{:?}", c.deficiencies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_stopped_fails_login_and_restart_logs_in_again() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dovecot = Dovecot::start(dir.path(), false);
    std::fs::write(dir.path().join("probe-password"), mailstack::PASSWORD).expect("pw");
    let run = attendant(dir.path(), &mailbox_table(&dovecot, "none", "password_file = \"probe-password\"")).await;
    let logs = || String::new();
    let c = wait_for(&run, "logged in", &logs, |c| status_of(c, "mail_read") == Some(Status::Ok)).await;
    let first = detail_u64(probe(&c, "login").expect("login"), "session").expect("session");
    dovecot.stop();
    let c = wait_for(&run, "login critical while Dovecot is down", &logs, |c| {
        status_of(c, "login") == Some(Status::Critical)
    })
    .await;
    let login = probe(&c, "login").expect("login");
    assert!(login.message.contains("cannot connect") || login.message.contains("closed"), "{}", login.message);
    // Stopping Dovecot ends its sessions with "* BYE Server shutting down." while the probe
    // is idle: that is a reconnect (fault 7), whose login fails; no read was attempted, so
    // mail_read keeps its last result, from the session before the stop.
    let ended = login.details.get("previous_session_ended").and_then(|v| v.as_str()).unwrap_or_default();
    assert!(ended.contains("BYE") || ended.contains("closed"), "{login:?}");
    let read = probe(&c, "mail_read").expect("mail_read");
    assert_eq!((read.status, detail_u64(read, "session")), (Status::Ok, Some(first)), "{read:?}");
    assert!(c.deficiencies.iter().any(|d| d.source == "probe:login"), "{:?}", c.deficiencies);
    dovecot.restart();
    let c = wait_for(&run, "logged in again after the restart", &logs, |c| {
        status_of(c, "login") == Some(Status::Ok) && status_of(c, "mail_read") == Some(Status::Ok)
    })
    .await;
    let again = detail_u64(probe(&c, "login").expect("login"), "session").expect("session");
    assert!(again > first, "a fresh session: {again} > {first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_mailbox_fails_the_read_logs_off_and_logs_in_afresh() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(dir.path(), false);
    // XOAUTH2 against the real Dovecot: the token command's output is the bearer token.
    std::fs::write(dir.path().join("token"), mailstack::PASSWORD).expect("token");
    let token_cmd = format!("oauth2_token_command = [\"/bin/cat\", \"{}\"]", dir.path().join("token").display());
    let run = attendant(dir.path(), &mailbox_table(&dovecot, "none", &token_cmd)).await;
    let logs = || dovecot.log();
    let c = wait_for(&run, "logged in", &logs, |c| status_of(c, "mail_read") == Some(Status::Ok)).await;
    let first = detail_u64(probe(&c, "login").expect("login"), "session").expect("session");
    let maildir = dovecot.maildir();
    let mode = |m: u32| {
        use std::os::unix::fs::PermissionsExt;
        for sub in ["new", "cur"] {
            std::fs::set_permissions(maildir.join(sub), std::fs::Permissions::from_mode(m)).expect("chmod");
        }
    };
    mode(0o000);
    dovecot.drop_message("1.rollcall-test", "Subject: hello\r\n\r\nnew mail\r\n");
    let c = wait_for(&run, "mail_read critical and logged off", &logs, |c| {
        probe(c, "mail_read").is_some_and(|p| p.status == Status::Critical)
    })
    .await;
    let read = probe(&c, "mail_read").expect("mail_read");
    assert!(read.message.contains("NO") || read.message.contains("BYE"), "the server's words: {}", read.message);
    assert!(read.message.contains("logged off"), "{}", read.message);
    assert_eq!(read.details.get("logged_off").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(detail_u64(read, "session"), Some(first), "{read:?}");
    mode(0o700);
    let c = wait_for(&run, "a fresh login that reads the message", &logs, |c| {
        probe(c, "mail_read").is_some_and(|p| p.status == Status::Ok && detail_u64(p, "session") > Some(first))
            && status_of(c, "login") == Some(Status::Ok)
    })
    .await;
    let login = probe(&c, "login").expect("login");
    assert!(detail_u64(login, "session") > Some(first), "{login:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_stopped_is_a_mail_loop_deficiency_while_login_stays_ok() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(dir.path(), false);
    let mut postfix = Postfix::start(dir.path(), dovecot.lmtp_port);
    std::fs::write(dir.path().join("probe-password"), mailstack::PASSWORD).expect("pw");
    let mut loop_cfg = loop_table(&postfix);
    loop_cfg = loop_cfg
        .replace("interval = \"3s\"", "interval = \"1s\"")
        .replace("max_latency = \"3s\"", "max_latency = \"1s\"");
    let run = attendant(
        dir.path(),
        &format!("{}\n{loop_cfg}", mailbox_table(&dovecot, "none", "password_file = \"probe-password\"")),
    )
    .await;
    let (dlog, plog) = (dovecot.dir.join("dovecot.log"), postfix.dir.join("maillog"));
    let logs = move || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&dlog).unwrap_or_default(),
            std::fs::read_to_string(&plog).unwrap_or_default()
        )
    };
    wait_for(&run, "mail_loop ok", &logs, |c| status_of(c, "mail_loop") == Some(Status::Ok)).await;
    postfix.stop();
    let c = wait_for(&run, "mail_loop critical", &logs, |c| status_of(c, "mail_loop") == Some(Status::Critical)).await;
    let l = probe(&c, "mail_loop").expect("mail_loop");
    assert!(l.message.contains("cannot submit") && l.message.contains("cannot connect"), "{}", l.message);
    assert_eq!(status_of(&c, "login"), Some(Status::Ok));
    assert!(c.deficiencies.iter().any(|d| d.source == "probe:mail_loop"), "{:?}", c.deficiencies);
    assert!(!c.deficiencies.iter().any(|d| d.source == "probe:login"), "{:?}", c.deficiencies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slapd_stopped_makes_the_directory_service_critical() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut slapd = Slapd::start(dir.path());
    std::fs::write(dir.path().join("ldap-password"), mailstack::LDAP_PROBE_PASSWORD).expect("pw");
    let run = attendant(
        dir.path(),
        &format!(
            "[[service]]\nname = \"directory\"\ncheck = \"ldap\"\naddress = \"127.0.0.1:{}\"\nbind_dn = \"{}\"\npassword_file = \"ldap-password\"\nbase = \"{}\"\ntimeout = \"2s\"\n",
            slapd.port,
            mailstack::LDAP_PROBE_DN,
            mailstack::LDAP_BASE
        ),
    )
    .await;
    let c = compilation(&run.url).await;
    assert_eq!(c.services[0].status, Status::Ok, "{:?}", c.services[0]);
    eprintln!("ldap check: {:.1} ms", c.services[0].duration_ms);
    slapd.stop();
    let c = compilation(&run.url).await;
    let s = &c.services[0];
    assert_eq!(s.status, Status::Critical, "{s:?}");
    assert!(s.message.contains("cannot connect"), "{}", s.message);
    assert!(
        c.deficiencies
            .iter()
            .any(|d| d.source == "service:directory" && d.severity == rollcall_protocol::Severity::Critical),
        "{:?}",
        c.deficiencies
    );
    // A wrong bind password is the server's own refusal (invalidCredentials, rc=49).
    slapd.restart();
    std::fs::write(dir.path().join("ldap-password"), "wrong").expect("pw");
    let c = compilation(&run.url).await;
    assert!(c.services[0].message.contains("rc=49"), "{:?}", c.services[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_imap_server_is_bounded_and_never_delays_the_reply() {
    if mailstack::skip() {
        return;
    }
    // Fault injection: accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("probe-password"), "x").expect("pw");
    let run = attendant(
        dir.path(),
        &format!(
            "[probe.mailbox]\nserver = \"127.0.0.1:{port}\"\nuser = \"u\"\npassword_file = \"probe-password\"\ninterval_a = \"300ms\"\ntimeout = \"1500ms\"\n"
        ),
    )
    .await;
    // While the probe waits for the greeting, the reply comes at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let t = Instant::now();
        compilation(&run.url).await;
        assert!(t.elapsed() < Duration::from_millis(500), "reply took {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = || String::new();
    let c =
        wait_for(&run, "login critical by timeout", &logs, |c| status_of(c, "login") == Some(Status::Critical)).await;
    let login = probe(&c, "login").expect("login");
    assert!(login.message.contains("no answer within 1.5s (greeting)"), "{}", login.message);
    assert!(login.duration_ms >= 1400.0 && login.duration_ms < 3000.0, "{}", login.duration_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restarts_changed_probes_and_forgets_removed_ones() {
    // No daemon needed: a refused connection is enough to see the probe run.
    let closed = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pw"), "x").expect("pw");
    let path = dir.path().join("attendant.toml");
    let text = |port: u16| {
        format!(
            "name = \"r\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\n[probe.mailbox]\nserver = \"127.0.0.1:{port}\"\nuser = \"u\"\npassword_file = \"pw\"\ninterval_a = \"200ms\"\n"
        )
    };
    std::fs::write(&path, text(closed)).expect("write");
    let stop = CancellationToken::new();
    let attendant = rollcall_attendant::start(AttendantConfig::load(&path).expect("config"), stop.clone());
    // The three waits share one deadline.
    let deadline = Instant::now() + DEADLINE;
    let left = || deadline.saturating_duration_since(Instant::now());
    let login = |a: &rollcall_attendant::Attendant| a.probes.get("login").map(|p| p.message);
    let shows = |port: u16| login(&attendant).is_some_and(|m| m.contains(&port.to_string())).then_some(());
    wait_for_within(&format!("a login result for port {closed}"), left(), || async { shows(closed) }).await;
    // A changed [probe] table restarts the probe against the new server.
    let other = free_port();
    std::fs::write(&path, text(other)).expect("write");
    attendant.replace_config(AttendantConfig::load(&path).expect("config"));
    wait_for_within(&format!("the probe restarted for port {other}"), left(), || async { shows(other) }).await;
    // Removing it removes its results from the compilation.
    std::fs::write(&path, "name = \"r\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\n").expect("write");
    attendant.replace_config(AttendantConfig::load(&path).expect("config"));
    wait_for_within("the removed probe to leave the compilation", left(), || async {
        attendant.probes.get("login").is_none().then_some(())
    })
    .await;
    stop.cancel();
}

/// Runs Dovecot's own admin tool against the test's instance; panics with its stderr.
fn doveadm(d: &Dovecot, args: &[&str]) -> String {
    let out = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(d.dir.join("dovecot.conf"))
        .args(args)
        .output()
        .expect("run doveadm");
    assert!(out.status.success(), "doveadm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fault 6: mailbox names go out in IMAP's modified UTF-7, so names with umlauts, `&` and
/// CJK work both ways: those Dovecot's admin tool made are opened, and those the attendant
/// makes are the names Dovecot lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_names_beyond_ascii_and_ampersand_are_opened_as_written() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(dir.path(), false);
    std::fs::write(dir.path().join("probe-password"), mailstack::PASSWORD).expect("pw");
    // Made by Dovecot's own tool from UTF-8, so the test does not lean on our encoder.
    for name in ["Überwachung", "R&D", "日本語"] {
        doveadm(&dovecot, &["mailbox", "create", "-u", mailstack::USER, name]);
    }
    let mut imap = imap_session(&dovecot).await;
    for name in ["R&D", "日本語"] {
        let state = imap.select(name).await.unwrap_or_else(|e| panic!("SELECT {name:?}: {e}"));
        assert_eq!(state.exists, 0, "{name}");
    }
    // The other way: made by the attendant's client, listed by Dovecot in UTF-8.
    imap.create("Entwürfe & Notizen").await.expect("CREATE");
    let _ = imap.logout().await;
    let listed = doveadm(&dovecot, &["mailbox", "list", "-u", mailstack::USER]);
    assert!(listed.lines().any(|l| l == "Entwürfe & Notizen"), "doveadm lists:\n{listed}");
    // And the probe itself, configured with the name as an operator writes it.
    let table = mailbox_table(&dovecot, "none", "password_file = \"probe-password\"")
        .replace("interval_a", "mailbox = \"Überwachung\"\ninterval_a");
    let run = attendant(dir.path(), &table).await;
    let logs = || dovecot.log();
    let c = wait_for(&run, "login and mail_read ok on Überwachung", &logs, |c| {
        status_of(c, "login") == Some(Status::Ok) && status_of(c, "mail_read") == Some(Status::Ok)
    })
    .await;
    let login = probe(&c, "login").expect("login");
    assert!(login.message.ends_with("opened Überwachung"), "{}", login.message);
    assert_eq!(login.details["mailbox"], "Überwachung", "{login:?}");
}

/// Fault 7: a store that ends an idle session (here Dovecot's `doveadm kick`, which sends
/// `* BYE` and closes) is a reconnect in the next round, reported by `login`; mail_read
/// never turns critical for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ended_by_the_store_while_idle_is_a_reconnect_not_a_failure() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(dir.path(), false);
    std::fs::write(dir.path().join("probe-password"), mailstack::PASSWORD).expect("pw");
    // Rounds 2 s apart: the kick lands while the session is idle.
    let table = mailbox_table(&dovecot, "none", "password_file = \"probe-password\"")
        .replace("interval_a = \"300ms\"", "interval_a = \"2s\"")
        .replace("interval_b = \"700ms\"", "interval_b = \"300s\"");
    let run = attendant(dir.path(), &table).await;
    let logs = || dovecot.log();
    let c = wait_for(&run, "logged in and read", &logs, |c| status_of(c, "mail_read") == Some(Status::Ok)).await;
    let first = detail_u64(probe(&c, "login").expect("login"), "session").expect("session");
    // Just after a round: the session is idle for the next ~2 s.
    let read_at = probe(&c, "mail_read").expect("mail_read").observed_at;
    wait_for(&run, "the next round", &logs, |c| probe(c, "mail_read").is_some_and(|p| p.observed_at > read_at)).await;
    let kicked = doveadm(&dovecot, &["kick", mailstack::USER]);
    eprintln!("doveadm kick: {kicked}");
    let deadline = Instant::now() + DEADLINE;
    let again = loop {
        let c = compilation(&run.url).await;
        let read = probe(&c, "mail_read").expect("mail_read");
        assert_eq!(read.status, Status::Ok, "an idle session's end is no read failure: {read:?}\n{}", dovecot.log());
        assert!(c.deficiencies.is_empty(), "{:?}", c.deficiencies);
        let login = probe(&c, "login").expect("login");
        if detail_u64(login, "session") > Some(first) && detail_u64(read, "session") > Some(first) {
            break login.clone();
        }
        assert!(Instant::now() < deadline, "no new login after the kick: {login:?}\n{}", dovecot.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(again.status, Status::Ok, "{again:?}");
    assert!(again.message.contains("the server had ended the idle session"), "{}", again.message);
    let why = again.details["previous_session_ended"].as_str().expect("previous_session_ended");
    assert!(why.contains("BYE") || why.contains("closed"), "{why}");
}

/// Fault 7, the other side: a `BYE` in answer to the probe's own command is a failure of
/// the store, reported by mail_read, and the probe logs off (SPEC section 2). Dovecot does
/// not answer a command with BYE on request, so a small fake does (fault injection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_in_answer_to_the_probe_s_own_command_fails_the_read_and_logs_off() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = fake.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = fake.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"* OK fake IMAP ready\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let (tag, cmd) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    let reply = match cmd.split(' ').next().unwrap_or("") {
                        "CAPABILITY" => format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n{tag} OK done\r\n"),
                        "AUTHENTICATE" => format!("{tag} OK logged in\r\n"),
                        "SELECT" => format!("* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK [READ-WRITE] done\r\n"),
                        "NOOP" => {
                            let _ = w.write_all(b"* BYE internal error, session ends\r\n").await;
                            break;
                        }
                        _ => format!("{tag} OK done\r\n"),
                    };
                    let _ = w.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pw"), "x").expect("pw");
    let run = attendant(
        dir.path(),
        &format!(
            "[probe.mailbox]\nserver = \"127.0.0.1:{port}\"\nuser = \"u\"\npassword_file = \"pw\"\ninterval_a = \"300ms\"\ntimeout = \"2s\"\n"
        ),
    )
    .await;
    let logs = || String::new();
    let c = wait_for(&run, "mail_read critical", &logs, |c| status_of(c, "mail_read") == Some(Status::Critical)).await;
    let read = probe(&c, "mail_read").expect("mail_read");
    assert!(read.message.contains("NOOP: * BYE internal error, session ends"), "{}", read.message);
    assert!(read.message.contains("logged off"), "{}", read.message);
    assert_eq!(read.details.get("logged_off").and_then(|v| v.as_bool()), Some(true));
    assert!(c.deficiencies.iter().any(|d| d.source == "probe:mail_read"), "{:?}", c.deficiencies);
}
