//! The attendant's checks against inputs taken from the field (issue 11): plugins as they
//! really print and exit, a process name past the kernel's 15 characters, a Postfix
//! behind postscreen, an HTTPS site with a private CA. Each test writes an attendant.toml,
//! loads it as `rollcall attendant` does, and asserts the compilation a poller would get.
//!
//! Rules: every test owns its temp dir, ports and daemons; the real servers are Debian's
//! (rollcall_testkit::mailstack); every wait is bounded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rollcall_attendant::AttendantConfig;
use rollcall_protocol::{CheckResult, Compilation, Status};
use rollcall_testkit::mailstack::{self, Postfix};
use rollcall_testkit::{free_port, wait_for_within};
use tokio_util::sync::CancellationToken;

/// `body` as an attendant.toml beside `dir`'s other files, validated.
fn config(dir: &Path, body: &str) -> Result<AttendantConfig, Vec<String>> {
    let path = dir.join("attendant.toml");
    // The machine's own disks must not add a deficiency to what a test expects.
    let text = format!(
        "name = \"field-test\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\nclock = \"virtual\"\n{body}\n\
         [host]\ndisk_warning_percent = 100.0\ndisk_critical_percent = 100.0\n"
    );
    std::fs::write(&path, text).expect("write config");
    // Problems start with the file's path; the tests compare what follows its name.
    let prefix = format!("{}/", dir.display());
    AttendantConfig::load(&path).map_err(|e| e.problems().iter().map(|p| p.replace(&prefix, "")).collect())
}

/// One compilation of an attendant running `body`.
async fn compile(dir: &Path, body: &str) -> Compilation {
    let config = config(dir, body).unwrap_or_else(|p| panic!("config refused:\n{}", p.join("\n")));
    let stop = CancellationToken::new();
    let attendant = rollcall_attendant::start(config, stop.clone());
    let c = attendant.compile(chrono::Utc::now()).await;
    stop.cancel();
    c
}

fn service<'a>(c: &'a Compilation, name: &str) -> &'a CheckResult {
    c.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no service {name} in {c:#?}"))
}

/// A `command` service running `script` with /bin/sh.
fn plugin(name: &str, script: &str) -> String {
    let script = script.replace('\\', "\\\\").replace('"', "\\\"");
    format!("[[service]]\nname = \"{name}\"\ncheck = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"{script}\"]\ntimeout = \"10s\"\n")
}

#[tokio::test]
async fn plugins_as_they_behave_in_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = [
        // 140 KB of long output and exit 0 (a check_logfiles-style dump).
        plugin(
            "chatty",
            "echo 'LOGS OK - 2000 lines'; i=0; while [ $i -lt 2000 ]; do echo \"line $i: \
             ......................................................................\"; i=$((i+1)); done",
        ),
        // A plugin that leaves a helper behind, holding its stdout.
        plugin("forks", "echo 'OK - helper started'; sleep 30 & exit 0"),
        // Only stderr, as a plugin that failed to parse its arguments.
        plugin("stderr-only", "echo 'check_x: option requires an argument -- H' >&2; exit 3"),
        // A plugin missing on this server, run through a shell.
        plugin("missing", "check_not_installed_here -H 127.0.0.1"),
        // A plugin under a German locale: decimal commas in its perfdata.
        plugin("german", "echo 'HTTP OK: 200 | time=0,012947s;;;0,000000;10,000000 size=10975B;;;0'"),
        // A dead ping target: value unknown, thresholds still there.
        plugin("ping", "echo 'PING CRITICAL - Host unreachable | rta=U;3000;5000;; pl=100%;80;100;0'; exit 2"),
        // Exit status 255 (a crashed Perl plugin).
        plugin("perl-died", "echo 'Can not locate Nagios/Plugin.pm in @INC'; exit 255"),
    ]
    .concat();
    let started = std::time::Instant::now();
    let c = compile(dir.path(), &body).await;
    assert!(started.elapsed() < Duration::from_secs(5), "a plugin held the compilation: {:?}", started.elapsed());

    let chatty = service(&c, "chatty");
    assert_eq!((chatty.status, chatty.message.as_str()), (Status::Ok, "LOGS OK - 2000 lines"));
    assert_eq!(chatty.details["output_truncated"], true);
    assert!(chatty.details["long_output"].as_str().unwrap_or("").starts_with("line 0: ..."));

    let forks = service(&c, "forks");
    assert_eq!((forks.status, forks.message.as_str()), (Status::Ok, "OK - helper started"));

    let stderr = service(&c, "stderr-only");
    assert_eq!(
        (stderr.status, stderr.message.as_str()),
        (Status::Unknown, "check_x: option requires an argument -- H")
    );

    let missing = service(&c, "missing");
    assert_eq!(missing.status, Status::Unknown);
    assert!(missing.message.starts_with("not found (exit 127; PATH="), "{}", missing.message);
    assert!(missing.message.contains("check_not_installed_here: not found"), "{}", missing.message);

    let german = &service(&c, "german").details["perfdata"];
    assert_eq!(german[0]["value"], 0.012947);
    assert_eq!(german[0]["uom"], "s");
    assert_eq!(german[0]["max"], 10.0);
    assert_eq!(german[1]["value"], 10975.0);

    let ping = &service(&c, "ping");
    assert_eq!(ping.status, Status::Critical);
    let rta = &ping.details["perfdata"][0];
    assert_eq!((rta["label"].as_str(), rta["unknown"].as_bool()), (Some("rta"), Some(true)));
    assert_eq!((rta["warn"].as_f64(), rta["crit"].as_f64()), (Some(3000.0), Some(5000.0)));

    let perl = service(&c, "perl-died");
    assert_eq!(perl.status, Status::Unknown);
    assert_eq!(perl.message, "Can not locate Nagios/Plugin.pm in @INC (exit code 255: plugins exit 0 to 3)");
}

/// Kills the spawned process when the test ends, however it ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_process_name_past_fifteen_characters_is_found_by_its_full_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A real program named like the attendant's package binary: the kernel keeps
    // "rollcall-attend" in /proc/PID/comm.
    let exe = dir.path().join("rollcall-attendant");
    std::fs::copy("/bin/sleep", &exe).expect("copy /bin/sleep");
    let child = Reaped(std::process::Command::new(&exe).arg("31").spawn().expect("spawn"));
    let pid = child.0.id();
    // Until the child has exec'd, /proc shows the test thread's name.
    let comm = wait_for_within("the child to exec", Duration::from_secs(10), || async {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "rollcall-attend").then_some(comm)
    })
    .await;
    assert_eq!(comm.trim(), "rollcall-attend", "the kernel's cut is what this test is about");

    let body = "[[service]]\nname = \"by-name\"\ncheck = \"process\"\nprocess = \"rollcall-attendant\"\n\
                [[service]]\nname = \"by-path\"\ncheck = \"process\"\nprocess = \"EXE\"\n\
                [[service]]\nname = \"by-pattern\"\ncheck = \"process\"\ncommand_pattern = \"rollcall-attendant 3[1]$\"\n\
                [[service]]\nname = \"both\"\ncheck = \"process\"\nprocess = \"rollcall-attendant\"\ncommand_pattern = \" 31$\"\n\
                [[service]]\nname = \"longer\"\ncheck = \"process\"\nprocess = \"rollcall-attendant-x\"\n"
        .replace("EXE", &exe.display().to_string());
    let c = compile(dir.path(), &body).await;
    for name in ["by-name", "by-path", "by-pattern", "both"] {
        let s = service(&c, name);
        assert_eq!(s.status, Status::Ok, "{name}: {}", s.message);
        let pids: Vec<u64> = s.details["pids"].as_array().expect("pids").iter().filter_map(|p| p.as_u64()).collect();
        assert_eq!(pids, [u64::from(pid)], "{name}");
    }
    let longer = service(&c, "longer");
    assert_eq!(
        (longer.status, longer.message.as_str()),
        (Status::Critical, "no process named \"rollcall-attendant-x\"")
    );
}

#[test]
fn check_config_refuses_process_checks_that_can_never_match() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = config(
        dir.path(),
        "[[service]]\nname = \"a\"\ncheck = \"process\"\ncommand_pattern = \"jenkins(\"\n\
         [[service]]\nname = \"b\"\ncheck = \"process\"\nprocess = \" master\"\n\
         [[service]]\nname = \"c\"\ncheck = \"process\"\nprocess = \"/usr/sbin/\"\n\
         [[service]]\nname = \"d\"\ncheck = \"process\"\n",
    )
    .expect_err("refused");
    assert_eq!(p.len(), 4, "{p:#?}");
    assert_eq!(
        p[0],
        "attendant.toml:8: service[0].command_pattern: \"jenkins(\" is not a regular expression: unclosed group"
    );
    assert_eq!(
        p[1],
        "attendant.toml:12: service[1].process: \" master\" can never match: process names hold no NUL, newline or edge spaces"
    );
    assert_eq!(
        p[2],
        "attendant.toml:16: service[2].process: \"/usr/sbin/\" can never match: a program path does not end in /"
    );
    assert!(p[3].starts_with("attendant.toml:17: service[3].process: missing: "), "{p:#?}");
}

/// The maillog's lines of the test's own smtpd services (not the port the testkit probed
/// for readiness) that contain `what`.
fn ours(log: &str, what: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(mailstack::POSTSCREEN_LOG_NAME) || l.contains(mailstack::SECOND_SMTPD_LOG_NAME))
        .filter(|l| l.contains(what))
        .count()
}

#[tokio::test]
async fn smtp_check_waits_out_postscreen_and_every_check_says_goodbye() {
    if mailstack::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mta = Postfix::start_with_postscreen(dir.path(), free_port(), 6);
    let postfix = &mta.postfix;
    let (ps, plain) = (mta.postscreen_port, mta.second_smtpd_port);
    let body = format!(
        "[[service]]\nname = \"mta\"\ncheck = \"smtp\"\naddress = \"127.0.0.1:{ps}\"\n\
         [[service]]\nname = \"mta-impatient\"\ncheck = \"smtp\"\naddress = \"127.0.0.1:{ps}\"\ntimeout = \"5s\"\n\
         [[service]]\nname = \"smtp-port\"\ncheck = \"tcp\"\naddress = \"127.0.0.1:{plain}\"\nexpect = \"220\"\nquit = \"QUIT\"\n\
         [[service]]\nname = \"smtp-esmtp\"\ncheck = \"smtp\"\naddress = \"127.0.0.1:{plain}\"\n\
         [[service]]\nname = \"smtp-no-tls\"\ncheck = \"smtp\"\naddress = \"127.0.0.1:{plain}\"\nsecurity = \"starttls\"\n"
    );
    let c = compile(dir.path(), &body).await;

    let mta_check = service(&c, "mta");
    assert_eq!(mta_check.status, Status::Ok, "{mta_check:?}\n{}", postfix.log());
    assert!(mta_check.message.starts_with("220 "), "{}", mta_check.message);
    // The greeting really was held back (else this test proves nothing).
    assert!(mta_check.duration_ms > 5_500.0, "postscreen did not delay: {} ms", mta_check.duration_ms);
    // The old default (5 s) cannot wait out postscreen's 6 s.
    assert_eq!(service(&c, "mta-impatient").status, Status::Critical);
    let tcp = service(&c, "smtp-port");
    assert_eq!(tcp.status, Status::Ok, "{tcp:?}");
    assert!(tcp.message.starts_with("220 mta.example.test ESMTP"), "{}", tcp.message);
    assert_eq!(service(&c, "smtp-esmtp").status, Status::Ok);
    // This Postfix has no certificate: refused, and still a goodbye.
    let no_tls = service(&c, "smtp-no-tls");
    assert_eq!(no_tls.status, Status::Critical);
    assert!(no_tls.message.contains("does not offer STARTTLS"), "{}", no_tls.message);

    // Postfix saw four sessions end with QUIT (three smtp checks, the tcp check) ...
    wait_for_within("Postfix to log four clean disconnects", Duration::from_secs(20), || async {
        (ours(&postfix.log(), "quit=1") >= 4).then_some(())
    })
    .await;
    // ... and no hang-up without one.
    assert_eq!(ours(&postfix.log(), "lost connection"), 0, "{}", postfix.log());
}

/// An HTTPS server on loopback answering `200 ok` to every request; its port.
async fn https_server(issued: &rollcall_testkit::pki::Issued) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_file(&issued.cert_file).expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(&issued.key_file).expect("key PEM");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = [0u8; 2048];
                let _ = tls.read(&mut buf).await;
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn http_and_tcp_checks_trust_a_private_ca_given_as_ca_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A private CA made here (site-ca.pem beside the config) and the server's certificate.
    let ca = rollcall_testkit::pki::Pki::new(dir.path(), "site");
    let port = https_server(&ca.issue("intranet", rollcall_testkit::pki::Validity::Current)).await;
    let body = format!(
        "[[service]]\nname = \"intranet\"\ncheck = \"http\"\nurl = \"https://127.0.0.1:{port}/health\"\n\
         ca_file = \"site-ca.pem\"\nbody = \"ok\"\n\
         [[service]]\nname = \"intranet-system-cas\"\ncheck = \"http\"\nurl = \"https://127.0.0.1:{port}/health\"\n\
         [[service]]\nname = \"tls-port\"\ncheck = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nsecurity = \"tls\"\n\
         ca_file = \"site-ca.pem\"\nsend = \"GET / HTTP/1.0\\r\\n\"\nexpect = \"200 OK\"\n\
         [[service]]\nname = \"tls-port-system-cas\"\ncheck = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nsecurity = \"tls\"\n"
    );
    let c = compile(dir.path(), &body).await;
    let s = service(&c, "intranet");
    assert_eq!(s.status, Status::Ok, "{s:?}");
    assert_eq!(s.details["status_code"], 200);
    // Without it, the system's CAs do not know the site: refused, and the cause named.
    let s = service(&c, "intranet-system-cas");
    assert_eq!(s.status, Status::Critical, "{s:?}");
    assert!(s.message.contains("UnknownIssuer"), "{}", s.message);
    // The same setting for a plain TLS port (check_tcp --ssl).
    let s = service(&c, "tls-port");
    assert_eq!((s.status, s.message.as_str()), (Status::Ok, "HTTP/1.1 200 OK"), "{s:?}");
    assert_eq!(s.details["tls"], true);
    let s = service(&c, "tls-port-system-cas");
    assert_eq!(s.status, Status::Critical, "{s:?}");
    assert!(s.message.contains("UnknownIssuer"), "{}", s.message);

    // check-config names a ca_file that is not there, for http as for the mail checks.
    let p = config(
        dir.path(),
        "[[service]]\nname = \"w\"\ncheck = \"http\"\nurl = \"https://h/\"\nca_file = \"nope.pem\"\n\
         [[service]]\nname = \"m\"\ncheck = \"imap\"\naddress = \"h:993\"\nsecurity = \"tls\"\nca_file = \"nope.pem\"\n",
    )
    .expect_err("refused");
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].starts_with("attendant.toml:9: service[0].ca_file: cannot read "), "{p:#?}");
    assert!(p[1].starts_with("attendant.toml:15: service[1].ca_file: cannot read "), "{p:#?}");
}
