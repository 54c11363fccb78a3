//! Usage reports (`[[usage]]`, SPEC section 14) as a compilation shows them: a plugin
//! script's perfdata with thresholds, utmp logins as `who` counts them, the IMAP sessions
//! of a real Dovecot (the probe's own among them), and a real Postfix queue holding a
//! message.
//!
//! Rules: every test owns its daemons and temp dir; every wait is bounded and shows what
//! it saw last.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rollcall_protocol::{Compilation, Severity, UsageReport};
use rollcall_testkit::mailstack::{self, Dovecot, Postfix};

/// Compiles until `pred` holds for the compilation; fails showing the last usage[] seen.
async fn wait_usage(run: &Running, what: &str, pred: impl Fn(&Compilation) -> bool) -> Compilation {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let c = run.attendant.compile(chrono::Utc::now()).await;
        if pred(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}; usage {:#?}\n{:#?}",
            c.usage,
            c.deficiencies
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn figure<'a>(c: &'a Compilation, name: &str) -> Option<&'a UsageReport> {
    c.usage.iter().find(|u| u.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_perfdata_becomes_figures_and_thresholds_make_deficiencies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("check_licenses");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"LICENSES OK - 9 of 10 seats in use | used=9;;;0;10 'free seats'=1\"\nexit 0\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = start_with(
        dir.path(),
        &format!(
            "[[usage]]\nname = \"licenses\"\nkind = \"command\"\ncommand = [\"{}\"]\ninterval = \"200ms\"\nwarning = \"~:5\"\ncritical = \"~:8\"\n\
             [[usage]]\nname = \"gone\"\nkind = \"command\"\ncommand = [\"/nonexistent/check_gone\"]\ninterval = \"200ms\"\n\
             [[usage]]\nname = \"slow\"\nkind = \"command\"\ncommand = [\"/bin/sleep\", \"30\"]\ninterval = \"200ms\"\ntimeout = \"300ms\"\n\
             [[usage]]\nname = \"broken\"\nkind = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"echo 'licence server unreachable' >&2; exit 5\"]\ninterval = \"200ms\"\n\
             [[usage]]\nname = \"silent\"\nkind = \"command\"\ncommand = [\"/bin/echo\", \"OK - all fine\"]\ninterval = \"200ms\"\n",
            script.display()
        ),
    );
    let c = wait_usage(&run, "all three measured", |c| {
        ["licenses.used", "gone", "slow", "broken", "silent"].iter().all(|n| figure(c, n).is_some())
    })
    .await;
    let used = figure(&c, "licenses.used").expect("used");
    assert_eq!((used.value, used.unit.as_str()), (Some(9.0), ""), "{used:?}");
    assert_eq!(used.message, "LICENSES OK - 9 of 10 seats in use (9 breaks the critical range \"~:8\")");
    let free = figure(&c, "licenses.free seats").expect("free seats");
    assert_eq!(free.value, Some(1.0), "{free:?}");
    let gone = figure(&c, "gone").expect("gone");
    assert_eq!(gone.value, None);
    assert_eq!(gone.message, "cannot measure: /nonexistent/check_gone: not found");
    let slow = figure(&c, "slow").expect("slow");
    assert_eq!(slow.message, "cannot measure: no answer within 300ms");
    let broken = figure(&c, "broken").expect("broken");
    assert_eq!(broken.message, "cannot measure: /bin/sh exited with 5: licence server unreachable");
    let silent = figure(&c, "silent").expect("silent");
    assert_eq!(
        silent.message,
        "cannot measure: /bin/echo printed no performance data (LABEL=VALUE after '|'): \"OK - all fine\""
    );
    let got: Vec<(&str, Severity)> = c.deficiencies.iter().map(|d| (d.source.as_str(), d.severity)).collect();
    assert_eq!(
        got,
        [
            ("usage:licenses.used", Severity::Critical),
            ("usage:gone", Severity::Warning),
            ("usage:slow", Severity::Warning),
            ("usage:broken", Severity::Warning),
            ("usage:silent", Severity::Warning)
        ]
    );
    // A query never waits for a measurement, not even for the one that hangs.
    let t = Instant::now();
    run.attendant.compile(chrono::Utc::now()).await;
    assert!(t.elapsed() < Duration::from_millis(200), "compilation took {:?}", t.elapsed());
    // In the JSON a poller receives, as SPEC section 14 names the fields.
    let v = serde_json::to_value(&c).expect("json");
    let first = &v["usage"][0];
    for key in ["name", "value", "unit", "observed_at", "message"] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_users_are_counted_from_utmp_as_who_counts_them() {
    rollcall_testkit::require("/usr/bin/utmpdump", "util-linux", "USAGE");
    let dir = tempfile::tempdir().expect("tempdir");
    // A real utmp file, written by util-linux's utmpdump from its text form.
    let text = "[2] [00000] [~~  ] [reboot  ] [~           ] [6.1.0               ] [0.0.0.0        ] [2026-11-30T08:00:00,000000+00:00]\n\
[7] [01234] [ts/0] [alice   ] [pts/0       ] [10.0.0.1            ] [10.0.0.1       ] [2026-11-30T10:00:00,000000+00:00]\n\
[7] [01235] [ts/1] [bob     ] [pts/1       ] [10.0.0.2            ] [10.0.0.2       ] [2026-11-30T10:05:00,000000+00:00]\n\
[7] [01236] [ts/2] [alice   ] [pts/2       ] [10.0.0.1            ] [10.0.0.1       ] [2026-11-30T10:06:00,000000+00:00]\n\
[8] [01237] [ts/3] [carol   ] [pts/3       ] [10.0.0.3            ] [10.0.0.3       ] [2026-11-30T10:07:00,000000+00:00]\n";
    let utmp = dir.path().join("utmp");
    let mut dump = Command::new("utmpdump")
        .arg("-r")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&utmp).expect("utmp"))
        .stderr(Stdio::null())
        .spawn()
        .expect("utmpdump");
    std::io::Write::write_all(&mut dump.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    assert!(dump.wait().expect("wait").success());
    let who = Command::new("who").arg("-q").arg(&utmp).output().expect("who -q");
    let who = String::from_utf8_lossy(&who.stdout);
    assert!(who.contains("# users=3"), "{who}");
    let run = start_with(
        dir.path(),
        &format!(
            "[[usage]]\nname = \"logins\"\nkind = \"logged_in_users\"\nutmp = \"{}\"\ninterval = \"200ms\"\nwarning = \"2\"\n\
             [[usage]]\nname = \"nofile\"\nkind = \"logged_in_users\"\nutmp = \"{}\"\ninterval = \"200ms\"\n",
            utmp.display(),
            dir.path().join("missing").display()
        ),
    );
    let c =
        wait_usage(&run, "logins measured", |c| figure(c, "logins").is_some() && figure(c, "nofile").is_some()).await;
    let logins = figure(&c, "logins").expect("logins");
    assert_eq!((logins.value, logins.unit.as_str()), (Some(3.0), "users"), "{logins:?}");
    assert!(logins.message.starts_with("3 login session(s) of 2 user(s): alice, bob"), "{}", logins.message);
    assert!(
        c.deficiencies.iter().any(|d| d.source == "usage:logins" && d.severity == Severity::Warning),
        "{:?}",
        c.deficiencies
    );
    // No utmp file (a container, nobody logged in since boot): 0, as `who` says.
    let nofile = figure(&c, "nofile").expect("nofile");
    assert_eq!(nofile.value, Some(0.0), "{nofile:?}");
    assert!(nofile.message.starts_with("nobody logged in (no utmp file at "), "{}", nofile.message);
    assert!(!c.deficiencies.iter().any(|d| d.source == "usage:nofile"), "{:?}", c.deficiencies);
    // A utmp that cannot be read is a failed measurement, named.
    let torn = dir.path().join("torn");
    std::fs::write(&torn, vec![0u8; 100]).expect("torn");
    std::fs::create_dir(dir.path().join("second")).expect("mkdir");
    let run2 = start_with(
        &dir.path().join("second"),
        &format!("[[usage]]\nname = \"torn\"\nkind = \"logged_in_users\"\nutmp = \"{}\"\n", torn.display()),
    );
    let c = wait_usage(&run2, "torn measured", |c| figure(c, "torn").is_some()).await;
    let t = figure(&c, "torn").expect("torn");
    assert_eq!(t.value, None);
    assert!(t.message.contains("100 bytes is not a whole number of 384-byte utmp records"), "{}", t.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_sessions_of_a_real_dovecot_include_the_probe_s_own() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dovecot = Dovecot::start(dir.path(), false);
    std::fs::write(dir.path().join("probe-password"), mailstack::PASSWORD).expect("pw");
    let run = start_with(
        dir.path(),
        &format!(
            "[probe.mailbox]\nserver = \"127.0.0.1:{port}\"\nuser = \"{user}\"\npassword_file = \"probe-password\"\ninterval_a = \"300ms\"\n\
             [[usage]]\nname = \"imap\"\nkind = \"imap_sessions\"\ncommand = [\"doveadm\", \"-c\", \"{conf}\", \"who\", \"-1\"]\ninterval = \"200ms\"\ncritical = \"1\"\n",
            port = dovecot.imap_port,
            user = mailstack::USER,
            conf = dovecot.dir.join("dovecot.conf").display()
        ),
    );
    let c =
        wait_usage(&run, "the probe's session counted", |c| figure(c, "imap").is_some_and(|u| u.value == Some(1.0)))
            .await;
    let imap = figure(&c, "imap").expect("imap");
    assert_eq!(imap.unit, "sessions");
    assert_eq!(imap.message, "1 IMAP session(s) of 1 user(s)");
    assert!(!c.deficiencies.iter().any(|d| d.source.starts_with("usage:")), "{:?}", c.deficiencies);
    // A second client of the same user: two sessions, over the critical range "1".
    let other = imap_session(&dovecot).await;
    let c = wait_usage(&run, "two sessions", |c| figure(c, "imap").is_some_and(|u| u.value == Some(2.0))).await;
    assert!(
        c.deficiencies.iter().any(|d| d.source == "usage:imap" && d.severity == Severity::Critical),
        "{:?}\n{}",
        c.deficiencies,
        dovecot.log()
    );
    let _ = other.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queue_of_a_real_postfix_counts_a_held_message() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens where Postfix delivers: a message stays queued.
    let postfix = Postfix::start(dir.path(), rollcall_testkit::free_port());
    let conf = postfix.dir.join("conf");
    let run = start_with(
        dir.path(),
        &format!(
            "[[usage]]\nname = \"queue\"\nkind = \"mail_queue\"\nmta = \"postfix\"\ncommand = [\"postqueue\", \"-c\", \"{}\", \"-j\"]\ninterval = \"200ms\"\nwarning = \"0\"\n",
            conf.display()
        ),
    );
    let c =
        wait_usage(&run, "an empty queue measured", |c| figure(c, "queue").is_some_and(|u| u.value.is_some())).await;
    let q = figure(&c, "queue").expect("queue");
    assert_eq!((q.value, q.message.as_str()), (Some(0.0), "the Postfix queue is empty"), "{q:?}\n{}", postfix.log());
    let mut send = Command::new("/usr/sbin/sendmail")
        .arg("-C")
        .arg(&conf)
        .args(["-f", "rollcall@example.test", mailstack::USER])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sendmail");
    std::io::Write::write_all(&mut send.stdin.take().expect("stdin"), b"Subject: queued\n\nwaits\n").expect("write");
    assert!(send.wait().expect("wait").success());
    let c = wait_usage(&run, "one message queued", |c| figure(c, "queue").is_some_and(|u| u.value == Some(1.0))).await;
    assert!(
        c.deficiencies.iter().any(|d| d.source == "usage:queue" && d.severity == Severity::Warning),
        "{:?}",
        c.deficiencies
    );
    // Held by the administrator (postsuper -h): still waiting, now in the hold queue.
    let status =
        Command::new("/usr/sbin/postsuper").arg("-c").arg(&conf).args(["-h", "ALL"]).status().expect("postsuper");
    assert!(status.success());
    let c = wait_usage(&run, "the message held", |c| {
        figure(c, "queue").is_some_and(|u| u.message.starts_with("1 message(s): 1 hold"))
    })
    .await;
    assert_eq!(figure(&c, "queue").and_then(|u| u.value), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_measures_the_new_entries_and_forgets_removed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = |name: &str, n: u32| {
        format!("[[usage]]\nname = \"{name}\"\nkind = \"command\"\ncommand = [\"/bin/echo\", \"OK | n={n}\"]\ninterval = \"200ms\"\n")
    };
    let run = start_with(dir.path(), &format!("{}{}", entry("a", 1), entry("b", 2)));
    wait_usage(&run, "a and b", |c| figure(c, "a.n").is_some() && figure(c, "b.n").is_some()).await;
    // What SIGHUP does: the file is read again and the running config replaced.
    let file = dir.path().join("attendant.toml");
    let text = std::fs::read_to_string(&file).expect("read");
    let head = &text[..text.find("[[usage]]").expect("usage")];
    std::fs::write(&file, format!("{head}{}{}", entry("b", 20), entry("c", 3))).expect("write");
    let config = rollcall_attendant::AttendantConfig::load(&file).expect("config");
    run.attendant.replace_config(config);
    let c = wait_usage(&run, "b changed, c new, a gone", |c| {
        figure(c, "b.n").is_some_and(|u| u.value == Some(20.0))
            && figure(c, "c.n").is_some()
            && figure(c, "a.n").is_none()
    })
    .await;
    let names: Vec<&str> = c.usage.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["b.n", "c.n"], "in config order");
}
