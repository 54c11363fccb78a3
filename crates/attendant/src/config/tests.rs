use super::*;
use crate::checks::kinds::imap::ImapCheck;

fn parse(text: &str) -> Result<AttendantConfig, ConfigError> {
    AttendantConfig::parse("attendant.toml", text)
}

fn problems(text: &str) -> Vec<String> {
    parse(text).unwrap_err().problems()
}

const MINIMAL: &str = "name = \"mail-01\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\n";

#[test]
fn minimal_insecure_loopback_config() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.name, "mail-01");
    assert!(matches!(c.auth, Auth::Insecure));
    assert_eq!(c.clock, ClockMode::System);
    assert_eq!(c.max_clock_step, Duration::from_secs(1000));
}

#[test]
fn insecure_is_refused_off_loopback() {
    let p = problems("listen = \"0.0.0.0:7460\"\ninsecure = true\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("attendant.toml:2: insecure: refused"), "{p:?}");
}

#[test]
fn a_token_file_is_required_and_read() {
    let p = problems("listen = \"0.0.0.0:7460\"\n");
    assert!(p[0].contains("token_file: missing"), "{p:?}");
    let p = problems("token_file = \"/nonexistent/token\"\n");
    assert!(p[0].starts_with("attendant.toml:1: token_file: cannot read secret file /nonexistent/token"), "{p:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let file = dir.path().join("attendant.toml");
    let c = AttendantConfig::parse(file.to_str().unwrap(), "token_file = \"token\"\n").unwrap();
    match &c.auth {
        Auth::Token(t) => assert_eq!(t.expose(), "s3cret"),
        Auth::Insecure => panic!("token not read"),
    }
    assert!(!format!("{c:?}").contains("s3cret"), "secret printed by Debug");
}

#[test]
fn services_of_every_kind_parse() {
    let c = parse(&format!(
        "{MINIMAL}
[[service]]
name = \"mta\"
check = \"tcp\"
address = \"127.0.0.1:25\"
expect = \"220\"
timeout = \"2s\"

[[service]]
name = \"postfix\"
check = \"process\"
process = \"master\"

[[service]]
name = \"disk\"
check = \"command\"
command = [\"/usr/lib/nagios/plugins/check_disk\", \"-w\", \"10%\"]

[[service]]
name = \"imapd\"
check = \"systemd\"
unit = \"dovecot.service\"
"
    ))
    .unwrap();
    let kinds: Vec<&str> = c.services.iter().map(|s| s.check.kind()).collect();
    assert_eq!(kinds, ["tcp", "process", "command", "systemd"]);
    assert_eq!(c.services[0].timeout, Duration::from_secs(2));
    assert_eq!(c.services[1].timeout, DEFAULT_CHECK_TIMEOUT);
}

#[test]
fn every_service_problem_is_named_with_key_and_line() {
    let p = problems(&format!(
        "{MINIMAL}
[[service]]
name = \"a\"
check = \"tcp\"
address = \"nohost\"

[[service]]
name = \"a\"
check = \"tcp\"
unit = \"x.service\"

[[service]]
name = \"b\"
check = \"carrier-pigeon\"

[[service]]
name = \"c\"
check = \"command\"
command = []
timeout = \"0s\"
"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:8: service[0].address: \"nohost\" is not HOST:PORT",
            "attendant.toml:10: service[1].address: missing: check = \"tcp\" needs address = \"HOST:PORT\"",
            "attendant.toml:11: service[1].name: duplicate service name \"a\"",
            "attendant.toml:13: service[1].unit: not a key of check = \"tcp\" (its keys: address, send, expect, quit, security, ca_file)",
            "attendant.toml:17: service[2].check: unknown check \"carrier-pigeon\" (expected one of: tcp, process, command, systemd, imap, smtp, ldap, http)",
            "attendant.toml:22: service[3].command: missing or empty: check = \"command\" needs command = [\"/path/to/plugin\", \"ARG\", ...]",
            "attendant.toml:23: service[3].timeout: must be longer than 0",
        ]
        .map(String::from)
    );
}

#[test]
fn unknown_keys_are_errors_with_their_line_and_all_are_named() {
    let p = problems(&format!(
        "{MINIMAL}\n[[service]]\nname = \"a\"\ncheck = \"tcp\"\nadress = \"x:1\"\ntimout = \"1s\"\n"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:5: service[0].address: missing: check = \"tcp\" needs address = \"HOST:PORT\"",
            "attendant.toml:8: service[0].adress: unknown key (check its spelling and section)",
            "attendant.toml:9: service[0].timout: unknown key (check its spelling and section)",
        ]
    );
}

#[test]
fn bad_durations_name_the_key() {
    let err = parse(&format!("{MINIMAL}max_clock_step = \"soon\"\n")).unwrap_err().to_string();
    assert!(err.starts_with("attendant.toml:4:"), "{err}");
    assert!(err.contains("invalid duration \"soon\""), "{err}");
}

#[test]
fn virtual_clock_offsets_may_be_negative() {
    let c = parse(&format!("{MINIMAL}clock = \"virtual\"\nclock_offset = \"-3s\"\n")).unwrap();
    assert_eq!(c.clock_offset_us, -3_000_000);
    let c = parse(&format!("{MINIMAL}clock = \"virtual\"\nclock_offset = \"45s\"\n")).unwrap();
    assert_eq!(c.clock_offset_us, 45_000_000);
    let p = problems(&format!("{MINIMAL}clock_offset = \"45s\"\n"));
    assert!(p[0].contains("clock_offset: only allowed with clock = \"virtual\""), "{p:?}");
}

#[test]
fn http_checks_need_a_url_and_a_real_status_code() {
    let c = parse(&format!(
        "{MINIMAL}[[service]]\nname = \"web\"\ncheck = \"http\"\nurl = \"https://example.org/health\"\nexpect_status = 204\nbody = \"ok\"\n"
    ))
    .unwrap();
    assert_eq!(c.services[0].check.kind(), "http");
    let p = problems(&format!(
        "{MINIMAL}[[service]]\nname = \"a\"\ncheck = \"http\"\n[[service]]\nname = \"b\"\ncheck = \"http\"\nurl = \"ftp://x\"\n[[service]]\nname = \"c\"\ncheck = \"http\"\nurl = \"http://x/\"\nexpect_status = 42\n"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:4: service[0].url: missing: check = \"http\" needs url = \"http://HOST/PATH\"",
            "attendant.toml:10: service[1].url: \"ftp://x\" is not an http:// or https:// URL",
            "attendant.toml:15: service[2].expect_status: must be an HTTP status code (100 to 599)",
        ]
    );
}

#[test]
fn mail_checks_and_probes_parse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let file = dir.path().join("attendant.toml");
    let text = format!(
        "{MINIMAL}
[[service]]
name = \"store\"
check = \"imap\"
address = \"127.0.0.1:143\"
security = \"starttls\"
user = \"probe\"
password_file = \"pw\"

[[service]]
name = \"mta\"
check = \"smtp\"
address = \"127.0.0.1:25\"

[[service]]
name = \"directory\"
check = \"ldap\"
address = \"127.0.0.1:389\"
bind_dn = \"cn=probe,dc=example,dc=org\"
password_command = [\"/bin/echo\", \"x\"]
base = \"dc=example,dc=org\"

[probe.mailbox]
server = \"127.0.0.1:143\"
user = \"rollcall-probe\"
oauth2_token_command = [\"/usr/local/bin/token\"]
interval_a = \"500ms\"

[probe.mail_loop]
smtp = \"127.0.0.1:25\"
from = \"probe@example.org\"
to = \"probe@example.org\"
"
    );
    let c = AttendantConfig::parse(file.to_str().unwrap(), &text).unwrap();
    let kinds: Vec<&str> = c.services.iter().map(|s| s.check.kind()).collect();
    assert_eq!(kinds, ["imap", "smtp", "ldap"]);
    let check: &dyn std::any::Any = c.services[0].check.as_ref();
    match check.downcast_ref::<crate::checks::kinds::imap::ImapCheck>() {
        Some(ImapCheck { login: Login { endpoint, credentials: Some(l) } }) => {
            assert_eq!(endpoint.security, Security::Starttls);
            assert_eq!(l.secret, SecretFrom::File(dir.path().join("pw")));
        }
        other => panic!("{other:?}"),
    }
    let m = c.probes.mailbox.as_ref().unwrap();
    assert_eq!(
        (m.mailbox.as_str(), m.interval_a, m.interval_b),
        ("INBOX", Duration::from_millis(500), Duration::from_secs(300))
    );
    let l = c.probes.mail_loop.as_ref().unwrap();
    assert_eq!(
        (l.interval, l.max_latency, l.credentials.is_none()),
        (Duration::from_secs(300), Duration::from_secs(60), true)
    );
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn probe_problems_are_named_with_key_and_line() {
    let p = problems(&format!(
        "{MINIMAL}
[probe.mailbox]
server = \"nohost\"
user = \"probe\"
password_file = \"/nonexistent/pw\"
password_command = [\"/bin/echo\"]
interval_a = \"0s\"

[probe.mail_loop]
smtp = \"127.0.0.1:25\"
from = \"nobody\"
to = \"probe@example.org\"
interval = \"10s\"
max_latency = \"20s\"
"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:6: probe.mailbox.server: \"nohost\" is not HOST:PORT",
            "attendant.toml:9: probe.mailbox.password_command: set together with password_file; choose one",
            "attendant.toml:10: probe.mailbox.interval_a: must be longer than 0",
            "attendant.toml:14: probe.mail_loop.from: \"nobody\" is not a mail address (user@domain)",
            "attendant.toml:17: probe.mail_loop.max_latency: 20s is longer than interval (10s): a message must be judged before the next is sent",
        ]
        .map(String::from)
    );
    let p = problems(&format!("{MINIMAL}[probe.mail_loop]\nsmtp = \"127.0.0.1:25\"\nfrom = \"a@b\"\nto = \"a@b\"\n"));
    assert!(p[0].contains("probe.mail_loop: needs [probe.mailbox]"), "{p:?}");
    let p = problems(&format!("{MINIMAL}[probe.mailbox]\nsever = \"x:1\"\n"));
    assert!(
        p.contains(&"attendant.toml:5: probe.mailbox.sever: unknown key (check its spelling and section)".to_string()),
        "{p:?}"
    );
}

#[test]
fn missing_required_keys_are_named_with_the_other_problems() {
    let p = problems(&format!(
        "{MINIMAL}[[service]]\nname = \"a\"\nadress = \"x:1\"\n[[service]]\ncheck = \"tcp\"\naddress = \"h:1\"\n"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:4: service[0]: missing: check = \"KIND\" (one of: tcp, process, command, systemd, imap, smtp, ldap, http)",
            "attendant.toml:6: service[0].adress: unknown key (check its spelling and section)",
            "attendant.toml:7: service[1].name: must not be empty",
        ]
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_its_key() {
    let p = problems(&format!(
        "{MINIMAL}[[service]]\nname = \"a\"\ncheck = \"imap\"\naddress = \"h:143\"\nsecurity = \"ssl\"\n[[service]]\nname = \"b\"\ncheck = \"tcp\"\naddress = \"h:1\"\ntimeout = 5\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("attendant.toml:8: service[0].security: unknown variant `ssl`"), "{p:?}");
    assert!(p[1].starts_with("attendant.toml:13: service[1].timeout: "), "{p:?}");
    let p = problems(&format!("{MINIMAL}[[service]]\nname = 7\ncheck = \"tcp\"\naddress = \"h:1\"\n"));
    assert_eq!(p, ["attendant.toml:5: service[0].name: must be a string, not integer"]);
}

#[test]
fn every_table_with_a_login_follows_the_same_rules() {
    // A login name without a secret: the same problem in a check and in both probe tables.
    let p = problems(&format!(
        "{MINIMAL}[[service]]\nname = \"a\"\ncheck = \"smtp\"\naddress = \"h:25\"\nuser = \"u\"\n[probe.mailbox]\nserver = \"h:143\"\nuser = \"u\"\n[probe.mail_loop]\nsmtp = \"h:25\"\nfrom = \"a@b\"\nto = \"a@b\"\nuser = \"u\"\n"
    ));
    let needs = "missing: a login as user needs password_file, password_command or oauth2_token_command";
    assert_eq!(
        p,
        [
            format!("attendant.toml:4: service[0].password_file: {needs}"),
            format!("attendant.toml:9: probe.mailbox.password_file: {needs}"),
            format!("attendant.toml:12: probe.mail_loop.password_file: {needs}"),
        ]
    );
    // LDAP names its login bind_dn and has no OAuth2; a secret needs a login name.
    let p = problems(&format!(
        "{MINIMAL}[[service]]\nname = \"d\"\ncheck = \"ldap\"\naddress = \"h:389\"\nbase = \"dc=x\"\npassword_command = [\"/bin/echo\", \"x\"]\n"
    ));
    assert_eq!(p, ["attendant.toml:4: service[0].bind_dn: missing: the password is for whom? set bind_dn"]);
}

#[test]
fn a_max_clock_step_beyond_a_day_is_named() {
    let err = AttendantConfig::parse(
        "attendant.toml",
        "insecure = true\nlisten = \"127.0.0.1:7460\"\nmax_clock_step = \"2d\"",
    )
    .unwrap_err()
    .problems();
    assert!(err.iter().any(|m| m.contains("max_clock_step") && m.contains("more than a day")), "{err:?}");
}

#[test]
fn tls_keys_are_read_at_load_and_every_bad_one_is_named() {
    use rollcall_testkit::pki::{Pki, Validity};
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "site");
    let me = ca.issue("attendant", Validity::Current);
    let file = dir.path().join("attendant.toml");
    let at = |extra: &str| AttendantConfig::parse(file.to_str().unwrap(), &format!("{MINIMAL}{extra}"));
    let good = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\nclient_ca_file = \"site-ca.pem\"\n",
        me.cert_file, me.key_file
    );
    assert!(at(&good).unwrap().tls.is_some(), "a relative client_ca_file resolves beside the config");
    assert!(at("").unwrap().tls.is_none());
    for (extra, key, says) in [
        ("client_ca_file = \"site-ca.pem\"\n", "client_ca_file", "needs tls_cert_file"),
        (&format!("tls_cert_file = {:?}\n", me.cert_file)[..], "tls_key_file", "missing"),
        (&format!("tls_key_file = {:?}\n", me.key_file)[..], "tls_cert_file", "missing"),
        (&good.replace("site-ca.pem", "nowhere.pem"), "client_ca_file", "nowhere.pem"),
        (&good.replace("site-attendant.key", "site-ca.pem"), "tls_key_file", "no PEM private key"),
        (&good.replace("site-attendant.pem", "site-attendant.key"), "tls_cert_file", "no PEM certificate"),
    ] {
        let p = at(extra).unwrap_err().problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains(&format!(": {key}: ")) && p[0].contains(says), "{extra}: {p:?}");
    }
}

#[test]
fn host_disk_excludes_replace_the_defaults_and_bad_patterns_are_named() {
    let c = parse(MINIMAL).unwrap();
    assert!(c.disks.exclude_fs_types.iter().any(|r| r.is_match("squashfs")));
    let c = parse(&format!("{MINIMAL}[host]\nexclude_fs_types = [\"nfs4?\"]\nexclude_mount_points = []\n")).unwrap();
    let types: Vec<&str> = c.disks.exclude_fs_types.iter().map(|r| r.as_str()).collect();
    assert_eq!(types, ["^(?:nfs4?)$"]);
    assert!(c.disks.exclude_mount_points.is_empty());
    let p = problems(&format!("{MINIMAL}[host]\nexclude_fs_types = [\"tmpfs\", \"fuse.(squash\"]\n"));
    assert_eq!(
        p,
        ["attendant.toml:5: host.exclude_fs_types[1]: \"fuse.(squash\" is not a regular expression: unclosed group"]
    );
}

#[test]
fn command_environment_and_tcp_strings_are_checked() {
    let p = problems(&format!(
        "{MINIMAL}[[service]]\nname = \"a\"\ncheck = \"command\"\ncommand = [\"/bin/true\"]\nenvironment = {{ \"A=B\" = \"x\" }}\n\
         [[service]]\nname = \"b\"\ncheck = \"tcp\"\naddress = \"h:25\"\nquit = \"\"\n\
         [[service]]\nname = \"c\"\ncheck = \"tcp\"\naddress = \"h:25\"\nsecurity = \"starttls\"\n"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:8: service[0].environment: \"A=B\" = \"x\" cannot be set (a name needs no \"=\", neither may hold NUL)",
            "attendant.toml:13: service[1].quit: must not be empty (leave the key out instead)",
            "attendant.toml:18: service[2].security: \"starttls\" needs a protocol (use check = \"smtp\", \"imap\" or \"ldap\"); tcp takes none or tls",
        ]
    );
}

#[test]
fn mailbox_names_are_taken_as_written_unless_they_cannot_be_quoted() {
    let text = |name: &str| {
        format!("{MINIMAL}[probe.mailbox]\nserver = \"h:143\"\nuser = \"u\"\npassword_command = [\"/bin/cat\", \"pw\"]\nmailbox = {name}\n")
    };
    for name in ["\"Überwachung\"", "\"R&D\"", "'Entwürfe \"alt\" \\ 2026'"] {
        let c = parse(&text(name)).unwrap_or_else(|e| panic!("{name}: {:?}", e.problems()));
        assert!(c.probes.mailbox.is_some());
    }
    for name in ["\"\"", "\"a\\nb\""] {
        let p = problems(&text(name));
        assert!(p[0].starts_with("attendant.toml:8: probe.mailbox.mailbox: "), "{p:?}");
        assert!(p[0].ends_with("is not a usable name (empty, or CR, LF or NUL in it)"), "{p:?}");
    }
}

#[test]
fn file_access_probe_defaults_resolution_and_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("attendant.toml");
    let c =
        AttendantConfig::parse(file.to_str().unwrap(), &format!("{MINIMAL}[probe.file_access]\npath = \"share\"\n"))
            .unwrap();
    let f = c.probes.file_access.as_ref().unwrap();
    assert_eq!(f.path, dir.path().join("share"), "relative paths resolve beside the file");
    assert_eq!(
        (f.interval, f.timeout, f.max_latency),
        (Duration::from_secs(60), Duration::from_secs(5), Duration::from_secs(1))
    );
    let p = problems(&format!(
        "{MINIMAL}[probe.file_access]\ninterval = \"0s\"\ntimeout = \"1s\"\nmax_latency = \"2s\"\nmode = 1\n"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:4: probe.file_access.path: missing: the directory on the share to write the probe's file in",
            "attendant.toml:5: probe.file_access.interval: must be longer than 0",
            "attendant.toml:7: probe.file_access.max_latency: 2s is longer than timeout (1s): a round is cut off before it could be slow",
            "attendant.toml:8: probe.file_access.mode: unknown key (check its spelling and section)",
        ]
        .map(String::from)
    );
}

#[test]
fn usage_entries_parse_and_their_problems_are_named() {
    let c = parse(&format!(
        "{MINIMAL}[[usage]]\nname = \"queue\"\nkind = \"mail_queue\"\nwarning = \"100\"\ncritical = \"@1000:\"\n\
         [[usage]]\nname = \"logins\"\nkind = \"logged_in_users\"\n"
    ))
    .unwrap();
    assert_eq!(c.usage.len(), 2);
    assert_eq!(c.usage[0].kind, UsageKind::MailQueue { mta: None, argv: None });
    assert_eq!(c.usage[0].warning.as_ref().map(ToString::to_string).as_deref(), Some("100"));
    assert_eq!(c.usage[1].kind, UsageKind::LoggedInUsers { utmp: "/var/run/utmp".into() });
    let p = problems(&format!(
        "{MINIMAL}[[usage]]\nname = \"a\"\nkind = \"command\"\n\
         [[usage]]\nname = \"a\"\nkind = \"mail_queue\"\n\
         [[usage]]\nname = \"b\"\nkind = \"disk\"\n\
         [[usage]]\nname = \"c\"\nkind = \"imap_sessions\"\nmta = \"postfix\"\nwarning = \"20:10\"\nsize = 1\n"
    ));
    assert_eq!(
        p,
        [
            "attendant.toml:4: usage[0].command: missing: kind = \"command\" runs this command",
            "attendant.toml:8: usage[1].name: duplicate usage name \"a\"",
            "attendant.toml:12: usage[2].kind: unknown usage kind \"disk\" (expected one of: command, imap_sessions, mail_queue, logged_in_users)",
            "attendant.toml:16: usage[3].mta: only for kind = \"mail_queue\"",
            "attendant.toml:17: usage[3].warning: \"20:10\" is not a Nagios range (its start is above its end); write e.g. \"10\", \"10:\", \"~:10\", \"10:20\" or \"@10:20\"",
            "attendant.toml:18: usage[3].size: unknown key (check its spelling and section)",
        ]
        .map(String::from)
    );
}
