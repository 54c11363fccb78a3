use super::*;

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
            "attendant.toml:13: service[1].unit: not a key of check = \"tcp\" (its keys: address, expect)",
            "attendant.toml:17: service[2].check: unknown check \"carrier-pigeon\" (expected one of: tcp, process, command, systemd)",
            "attendant.toml:22: service[3].command: missing or empty: check = \"command\" needs command = [\"/path/to/plugin\", \"ARG\", ...]",
            "attendant.toml:23: service[3].timeout: must be longer than 0",
        ]
        .map(String::from)
    );
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    let err = parse(&format!("{MINIMAL}\n[[service]]\nname = \"a\"\ncheck = \"tcp\"\nadress = \"x:1\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("attendant.toml:8:"), "{err}");
    assert!(err.contains("unknown field `adress`"), "{err}");
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
fn spec_checks_not_yet_built_are_named_honestly() {
    let p = problems(&format!("{MINIMAL}[[service]]\nname = \"dir\"\ncheck = \"ldap\"\n"));
    assert!(p[0].contains("check = \"ldap\" is not available in this version"), "{p:?}");
}
