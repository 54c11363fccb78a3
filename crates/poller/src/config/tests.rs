use super::*;

fn parse(text: &str) -> Result<PollerConfig, ConfigError> {
    PollerConfig::parse("poller.toml", text)
}

fn problems(text: &str) -> Vec<String> {
    parse(text).unwrap_err().problems()
}

#[test]
fn defaults_follow_the_spec() {
    let c = parse("").unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7470");
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert_eq!(c.max_reply_bytes, 1_048_576);
    assert_eq!(c.max_clock_skew, Duration::from_secs(2));
    let levels: Vec<(&str, u64)> = c.rules.levels().iter().map(|l| (l.name.as_str(), l.interval.as_secs())).collect();
    assert_eq!(levels, [("normal", 900), ("critical", 120)]);
    assert_eq!(c.rules.recover_after(), 1);
    assert!(c.database.starts_with("sqlite://") && c.database.ends_with("rollcall.db"));
}

#[test]
fn a_full_file_parses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0k\n").unwrap();
    let file = dir.path().join("poller.toml");
    let c = PollerConfig::parse(
        file.to_str().unwrap(),
        r#"
listen = "127.0.0.1:0"
database = "sqlite://state/rollcall.db"
timeout = "3s"
recover_after = 2

[[level]]
name = "normal"
interval = "15m"
[[level]]
name = "warning"
interval = "5m"
[[level]]
name = "critical"
interval = "2m"

[[rule]]
source = "host:disk:*"
severity = "warning"
level = "warning"

[[server]]
name = "mail-01"
address = "http://10.0.0.5:7460/"
token_file = "token"
"#,
    )
    .unwrap();
    assert_eq!(c.rules.levels().len(), 3);
    assert_eq!(c.rules.recover_after(), 2);
    assert_eq!(c.servers[0].address, "http://10.0.0.5:7460", "trailing slash trimmed");
    assert_eq!(c.servers[0].token.as_ref().unwrap().expose(), "t0k");
    assert_eq!(c.database, format!("sqlite://{}/state/rollcall.db", dir.path().display()));
}

#[test]
fn contradictions_are_all_named_with_key_and_line() {
    let p = problems(
        r#"timeout = "30s"

[[level]]
name = "normal"
interval = "15m"
[[level]]
name = "critical"
interval = "20s"

[[rule]]
source = "service:directory"
level = "panic"

[[server]]
name = "a"
address = "http://a:7460"
[[server]]
name = "a"
address = "ftp://b"
"#,
    );
    assert_eq!(
        p,
        [
            "poller.toml:8: level[1].interval: 20s is not longer than timeout = 30s: a poll could still run when the next is due",
            "poller.toml:12: rule[0].level: unknown level \"panic\" (levels: normal, critical)",
            "poller.toml:18: server[1].name: duplicate server name \"a\"",
            "poller.toml:19: server[1].address: \"ftp://b\" is not an http:// or https:// URL",
        ]
    );
}

#[test]
fn unknown_keys_and_bad_values_name_their_line() {
    let err = parse("[[server]]\nname = \"a\"\naddress = \"http://a:1\"\ntokenfile = \"x\"\n").unwrap_err().to_string();
    assert_eq!(err, "poller.toml:4: server[0].tokenfile: unknown key (check its spelling and section)");
    let err = parse("[[level]]\nname = \"normal\"\ninterval = 900\n").unwrap_err().to_string();
    assert!(err.starts_with("poller.toml:3:"), "{err}");
    let err = parse("[[rule]]\nsource = \"*\"\nseverity = \"fatal\"\nlevel = \"normal\"\n").unwrap_err().to_string();
    assert!(err.starts_with("poller.toml:3:") && err.contains("fatal"), "{err}");
}

#[test]
fn missing_token_file_is_explained() {
    let p = problems("[[server]]\nname = \"a\"\naddress = \"http://a:1\"\ntoken_file = \"/nonexistent/t\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("poller.toml:4: server[0].token_file: cannot read secret file"), "{p:?}");
}

#[test]
fn postgres_urls_and_their_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("db.pass");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let c =
        parse(&format!("database = \"postgres://rollcall@db.example/fleet\"\ndatabase_password_file = {secret:?}\n"))
            .unwrap();
    assert_eq!(c.database, "postgres://rollcall@db.example/fleet");
    assert_eq!(c.database_password.as_ref().map(|s| s.expose()), Some("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"), "the password shows in Debug");
    assert!(parse("database = \"postgresql://u@h/db\"\n").is_ok());

    let p = problems("database = \"mysql://u:pw@h/db\"\n");
    assert_eq!(p, ["poller.toml:1: database: \"mysql://u:***@h/db\" is not a database URL (sqlite://PATH or postgres://USER@HOST/DB)"]);
    let p = problems(&format!("database_password_file = {secret:?}\n"));
    assert_eq!(p, ["poller.toml:1: database_password_file: only a postgres:// database takes a password"]);
    let p = problems("database = \"postgres://u@h/db\"\ndatabase_password_file = \"/nonexistent/p\"\n");
    assert!(p[0].starts_with("poller.toml:2: database_password_file: cannot read secret file /nonexistent/p"), "{p:?}");
}

#[test]
fn zero_values_are_refused() {
    let p = problems("recover_after = 0\nmax_concurrent_polls = 0\n");
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn notify_channels_and_damping_parse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("smtp-pw"), "s3cret\n").unwrap();
    let file = dir.path().join("poller.toml");
    let c = PollerConfig::parse(
        file.to_str().unwrap(),
        r#"
flap_threshold = 3
flap_window = "10m"

[[notify]]
kind = "webhook"
url = "https://chat.example.org/hooks/ops/"
retries = 2
backoff = "500ms"

[[notify]]
kind = "email"
name = "ops-mail"
smtp = "mail.example.org:587"
user = "rollcall"
password_file = "smtp-pw"
from = "rollcall@example.org"
to = ["ops@example.org"]

[[notify]]
kind = "alertmanager"
url = "http://127.0.0.1:9093"
resend = "30s"
"#,
    )
    .unwrap();
    assert_eq!(c.damping.threshold, 3);
    assert_eq!(c.damping.window, std::time::Duration::from_secs(600));
    let names: Vec<&str> = c.notify.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["webhook", "ops-mail", "alertmanager-2"]);
    assert_eq!(c.notify[0].url, "https://chat.example.org/hooks/ops");
    assert_eq!((c.notify[0].retries, c.notify[0].backoff.as_millis()), (2, 500));
    let mail = &c.notify[1];
    assert_eq!(
        (mail.smtp_host.as_str(), mail.smtp_port, mail.security),
        ("mail.example.org", 587, SmtpSecurity::Starttls)
    );
    assert_eq!(mail.password.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(c.notify[2].resend.as_secs(), 30);
}

#[test]
fn notify_problems_are_named_with_key_and_line() {
    let p = problems(
        r#"flap_threshold = 0

[[notify]]
kind = "pager"

[[notify]]
kind = "webhook"
smtp = "a:25"

[[notify]]
kind = "email"
smtp = "nohost"
from = "me"
security = "ssl"
"#,
    );
    assert_eq!(
        p,
        [
            "poller.toml:1: flap_threshold: must be at least 1 (state changes allowed within flap_window)",
            "poller.toml:4: notify[0].kind: unknown kind \"pager\" (webhook | email | alertmanager)",
            "poller.toml:6: notify[1].url: missing: kind = \"webhook\" needs the receiver's http(s):// URL",
            "poller.toml:8: notify[1].smtp: is not a key of kind = \"webhook\"",
            "poller.toml:10: notify[2].to: missing: at least one recipient address",
            "poller.toml:12: notify[2].smtp: \"nohost\" is not HOST:PORT",
            "poller.toml:13: notify[2].from: \"me\" is not a mail address",
            "poller.toml:14: notify[2].security: unknown security \"ssl\" (none | starttls | tls)",
        ]
    );
    let err = parse("[[notify]]\nkind = \"webhook\"\nurl = \"http://x\"\nuri = \"y\"\n").unwrap_err().to_string();
    assert_eq!(err, "poller.toml:4: notify[0].uri: unknown key (check its spelling and section)");
}

#[test]
fn missing_required_keys_are_named_with_the_other_problems() {
    let p = problems(
        "[[level]]\nname = \"normal\"\n[[rule]]\nsource = \"*\"\n[[server]]\nname = \"a\"\nadress = \"http://a:1\"\n",
    );
    assert_eq!(
        p,
        [
            "poller.toml:1: level[0]: missing: interval = \"15m\"",
            "poller.toml:3: rule[0]: missing: level = \"NAME\"",
            "poller.toml:5: server[0].address: missing: address = \"http://HOST:7460\"",
            "poller.toml:7: server[0].adress: unknown key (check its spelling and section)",
        ]
    );
}

#[test]
fn a_notify_channel_without_kind_is_named() {
    let p = problems("[[notify]]\nurl = \"http://x\"\n");
    assert_eq!(p, ["poller.toml:1: notify[0]: missing: kind = \"webhook\" (or email, alertmanager)"]);
}

#[test]
fn retention_has_defaults_and_refuses_nonsense() {
    let c = parse("").unwrap();
    assert_eq!(c.retention, crate::store::Retention::default());
    assert_eq!(c.retention.polls, std::time::Duration::from_secs(30 * 86_400));
    let c = parse("[retention]\npolls = \"7d\"\n").unwrap();
    assert_eq!(c.retention.polls, std::time::Duration::from_secs(7 * 86_400));
    assert_eq!(c.retention.compilations, crate::store::Retention::default().compilations);
    let p = problems("[retention]\ncompilations = \"5m\"\n");
    assert!(p.iter().any(|l| l.contains("retention.compilations") && l.contains("at least 1h")), "{p:?}");
    assert!(!problems("[retention]\nforever = true\n").is_empty());
}

#[test]
fn sizes_and_windows_beyond_their_bounds_are_named_with_the_bound() {
    let p = problems("max_reply_bytes = 10000000000000\nfirst_poll_within = \"2h\"");
    assert!(p.iter().any(|m| m.contains("max_reply_bytes") && m.contains("64 MiB")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("first_poll_within") && m.contains("at most 1h")), "{p:?}");
    let c = parse("max_reply_bytes = 67108864\nfirst_poll_within = \"5s\"").unwrap();
    assert_eq!((c.max_reply_bytes, c.first_poll_within), (64 << 20, std::time::Duration::from_secs(5)));
    assert_eq!(parse("").unwrap().first_poll_within, std::time::Duration::from_secs(30));
}

#[test]
fn intervals_and_timeouts_beyond_their_bounds_are_named() {
    // As tried: an interval of 300000000 years polled without pause; 1ns/2ns was accepted.
    let p = problems("[[level]]\nname = \"normal\"\ninterval = \"300000000years\"");
    assert!(p.iter().any(|m| m.contains("level[0].interval") && m.contains("outside 1s to 7d")), "{p:?}");
    let p = problems("timeout = \"1ns\"\n[[level]]\nname = \"normal\"\ninterval = \"2ns\"");
    assert!(p.iter().any(|m| m.contains("timeout") && m.contains("outside 100ms to 5m")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("level[0].interval") && m.contains("outside 1s to 7d")), "{p:?}");
    assert!(parse("timeout = \"100ms\"\n[[level]]\nname = \"n\"\ninterval = \"1s\"").is_ok());
    assert!(parse("timeout = \"5m\"\n[[level]]\nname = \"n\"\ninterval = \"7d\"").is_ok());
}

#[test]
fn cluster_keys_need_postgres_and_bounds() {
    let pg = "database = \"postgres://u@h/db\"\n";
    let c = parse(&format!("{pg}node = \"poller-a\"\nfailover_after = \"5s\"\ntimeout = \"2s\"\n")).unwrap();
    assert_eq!((c.node.as_str(), c.failover_after), ("poller-a", std::time::Duration::from_secs(5)));
    let c = parse(pg).unwrap();
    assert!(!c.node.is_empty(), "the host name by default");
    assert_eq!(c.failover_after, std::time::Duration::from_secs(30));

    let p = problems("node = \"a\"\nfailover_after = \"10s\"\n");
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("poller.toml:1: node: only pollers sharing a postgres:// database"), "{p:?}");
    assert!(p[1].starts_with("poller.toml:2: failover_after: only pollers sharing"), "{p:?}");
    let p = problems(&format!("{pg}failover_after = \"4s\"\n"));
    assert_eq!(p, ["poller.toml:2: failover_after: 4s is outside 5s to 10m"]);
    let p = problems(&format!("{pg}failover_after = \"11m\"\n"));
    assert_eq!(p, ["poller.toml:2: failover_after: 11m is outside 5s to 10m"]);
    let p = problems(&format!("{pg}failover_after = \"5s\"\ntimeout = \"3s\"\n"));
    assert!(
        p[0].starts_with("poller.toml:2: failover_after: 5s must be at least twice the poll timeout (3s)"),
        "{p:?}"
    );
    let p = problems(&format!("{pg}node = \"\"\n"));
    assert_eq!(p, ["poller.toml:2: node: \"\" is not a node name (1 to 64 printable characters)"]);
}

#[test]
fn parents_name_configured_servers_and_never_form_a_cycle() {
    let server = |name: &str, parents: &str| {
        format!("[[server]]\nname = \"{name}\"\naddress = \"http://{name}:7460\"\nparents = [{parents}]\n")
    };
    let ok = parse(&(server("router-01", "") + &server("web-01", "\"router-01\""))).unwrap();
    assert_eq!(ok.servers[1].parents, ["router-01"]);

    let text =
        server("a", "\"b\"") + &server("b", "\"c\"") + &server("c", "\"a\"") + &server("d", "\"d\", \"nowhere\"");
    assert_eq!(
        problems(&text),
        [
            "poller.toml:4: server[0].parents: a cycle of parents: a -> b -> c -> a",
            "poller.toml:16: server[3].parents: \"d\" names itself",
            "poller.toml:16: server[3].parents: \"nowhere\" of \"d\" is no configured server",
        ]
    );
}

#[test]
fn public_url_is_an_http_url_without_its_trailing_slash() {
    assert_eq!(
        parse("public_url = \"https://rollcall.example.org/\"\n").unwrap().public_url.as_deref(),
        Some("https://rollcall.example.org")
    );
    assert_eq!(
        problems("public_url = \"rollcall.example.org\"\n"),
        ["poller.toml:1: public_url: \"rollcall.example.org\" is not an http:// or https:// URL (the dashboard as people reach it)"]
    );
}

#[test]
fn server_files_join_the_inventory_and_their_problems_name_their_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("servers.d");
    std::fs::create_dir(&d).unwrap();
    let server =
        |name: &str, more: &str| format!("[[server]]\nname = \"{name}\"\naddress = \"http://{name}:7460\"\n{more}");
    std::fs::write(d.join("b.toml"), server("web-01", "parents = [\"router-01\"]\n")).unwrap();
    std::fs::write(d.join("a.toml"), server("router-01", "")).unwrap();
    std::fs::write(d.join("notes.txt"), "not toml").unwrap();
    let main = dir.path().join("poller.toml");
    let load = |text: &str| {
        std::fs::write(&main, text).unwrap();
        PollerConfig::load(&main)
    };
    let c = load(&format!("server_files = [\"servers.d/*.toml\"]\n{}", server("mail-01", ""))).unwrap();
    let names: Vec<&str> = c.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["mail-01", "router-01", "web-01"], "this file's first, then the files by name");
    assert_eq!(c.server_files, [d.join("a.toml"), d.join("b.toml")]);
    assert_eq!(c.source.as_deref(), Some(main.as_path()));

    // A duplicate across files, an unknown key: named by the server file, key and line.
    std::fs::write(d.join("c.toml"), server("mail-01", "colour = \"red\"\n")).unwrap();
    let e = load(&format!("server_files = [\"servers.d/*.toml\"]\n{}", server("mail-01", ""))).unwrap_err();
    let c_toml = d.join("c.toml").display().to_string();
    assert_eq!(
        e.problems(),
        [
            format!("{c_toml}:2: server[0].name: duplicate server name \"mail-01\""),
            format!("{c_toml}:4: server[0].colour: unknown key (check its spelling and section)"),
        ]
    );
    let e = load("server_files = [\"nowhere.d/*.toml\"]\n").unwrap_err().to_string();
    assert!(e.contains("poller.toml:1: server_files: \"nowhere.d/*.toml\": cannot read the folder"), "{e}");
    let e = load("server_files = [\"*.d/x.toml\"]\n").unwrap_err().to_string();
    assert!(e.contains("wildcards are allowed in the file name only"), "{e}");
}

#[test]
fn escalate_after_is_bounded_and_never_on_the_last_level() {
    let levels = |a: &str, b: &str| {
        format!("[[level]]\nname = \"normal\"\ninterval = \"15m\"\nescalate_after = \"{a}\"\n[[level]]\nname = \"critical\"\ninterval = \"2m\"\nescalate_after = \"{b}\"\n")
    };
    assert_eq!(
        problems(&levels("8d", "10m")),
        [
            "poller.toml:4: level[0].escalate_after: 8days is outside 1s to 7d",
            "poller.toml:8: level[1].escalate_after: the last level has no level above it to escalate to",
        ]
    );
    let ok = "[[level]]\nname = \"normal\"\ninterval = \"15m\"\nescalate_after = \"1h\"\n[[level]]\nname = \"critical\"\ninterval = \"2m\"\n";
    assert_eq!(parse(ok).unwrap().rules.levels()[0].escalate_after, Some(Duration::from_secs(3600).get()));
}

#[test]
fn notify_templates_are_read_and_checked_and_only_for_email_and_webhook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.j2"), "{\"text\": {{ summary | tojson }}}").unwrap();
    std::fs::write(dir.path().join("bad.j2"), "fine\n{% for %}\n").unwrap();
    let file = dir.path().join("poller.toml");
    let parse_here = |t: &str| PollerConfig::parse(file.to_str().unwrap(), t);
    let hook = |f: &str| format!("[[notify]]\nkind = \"webhook\"\nurl = \"http://h/x\"\ntemplate_file = \"{f}\"\n");
    let c = parse_here(&hook("ok.j2")).unwrap();
    assert_eq!(c.notify[0].template.as_ref().map(|(_, t)| t.as_str()), Some("{\"text\": {{ summary | tojson }}}"));
    let e = parse_here(&hook("bad.j2")).unwrap_err().problems();
    let bad = dir.path().join("bad.j2").display().to_string();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains(&format!("notify[0].template_file: {bad}:2: ")), "{e:?}");
    let e = parse_here("[[notify]]\nkind = \"alertmanager\"\nurl = \"http://am:9093\"\ntemplate_file = \"ok.j2\"\n")
        .unwrap_err()
        .problems();
    assert!(e[0].ends_with("notify[0].template_file: is not a key of kind = \"alertmanager\""), "{e:?}");
}

#[test]
fn tls_keys_apply_to_https_servers_a_servers_own_winning_and_bad_files_named() {
    use rollcall_testkit::pki::{Pki, Validity};
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "site");
    // Written beside the config: site-poller.pem/.key and other-ca.pem.
    let _me = ca.issue("poller", Validity::Current);
    let _other = Pki::new(dir.path(), "other");
    let file = dir.path().join("poller.toml");
    let at = |text: &str| PollerConfig::parse(file.to_str().unwrap(), text);
    let top = "tls_ca_file = \"site-ca.pem\"\ntls_client_cert_file = \"site-poller.pem\"\ntls_client_key_file = \"site-poller.key\"\n\
               [api]\ntls_cert_file = \"site-poller.pem\"\ntls_key_file = \"site-poller.key\"\n";
    let servers = "[[server]]\nname = \"a\"\naddress = \"https://127.0.0.1:7460\"\n\
                   [[server]]\nname = \"b\"\naddress = \"https://127.0.0.1:7461\"\ntls_ca_file = \"other-ca.pem\"\n\
                   [[server]]\nname = \"c\"\naddress = \"http://127.0.0.1:7462\"\n";
    let c = at(&format!("{top}{servers}")).unwrap();
    assert!(c.api_tls.is_some());
    let files: Vec<_> = c.servers.iter().map(|s| s.tls.as_ref().map(|t| t.files.clone())).collect();
    let f = |name: &str| Some(dir.path().join(name));
    assert_eq!(files[0], Some([f("site-ca.pem"), f("site-poller.pem"), f("site-poller.key")]));
    assert_eq!(files[1], Some([f("other-ca.pem"), f("site-poller.pem"), f("site-poller.key")]), "its own CA wins");
    assert_eq!(files[2], None, "http:// takes no TLS");
    assert!(!Arc::ptr_eq(&c.servers[0].tls.as_ref().unwrap().config, &c.servers[1].tls.as_ref().unwrap().config));
    for (text, key, says) in [
        (
            "[[server]]\nname = \"c\"\naddress = \"http://127.0.0.1:1\"\ntls_ca_file = \"site-ca.pem\"\n",
            "server[0].tls_ca_file",
            "only applies to an https:// address",
        ),
        (
            "[[server]]\nname = \"a\"\naddress = \"https://127.0.0.1:1\"\ntls_client_cert_file = \"site-poller.pem\"\ntls_ca_file = \"site-ca.pem\"\n",
            "server[0]",
            "needs tls_client_key_file",
        ),
        ("tls_ca_file = \"nowhere.pem\"\n[[server]]\nname = \"a\"\naddress = \"https://127.0.0.1:1\"\n", "tls_ca_file", "nowhere.pem"),
        (
            "[[server]]\nname = \"a\"\naddress = \"https://127.0.0.1:1\"\ntls_ca_file = \"site-poller.key\"\n",
            "server[0].tls_ca_file",
            "no PEM certificate",
        ),
        ("[api]\ntls_cert_file = \"site-poller.pem\"\n", "api.tls_key_file", "missing"),
        ("[api]\ntls_cert_file = \"site-poller.pem\"\ntls_key_file = \"site-ca.pem\"\n", "api.tls_key_file", "no PEM private key"),
    ] {
        let p = at(text).unwrap_err().problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains(&format!(": {key}: ")) && p[0].contains(says), "{text}: {p:?}");
    }
}

#[test]
fn api_users_parse_with_their_roles_and_credentials() {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let c = with_tokens(&format!(
        "listen = \"0.0.0.0:7470\"\n\n[[api.user]]\nname = \"ops\"\nrole = \"operator\"\ntoken_file = \"ops.token\"\n\n\
         [[api.user]]\nname = \"noc\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n"
    ))
    .unwrap();
    let users: Vec<(&str, Role)> = c.api.users.iter().map(|u| (u.name.as_str(), u.role)).collect();
    assert_eq!(users, [("ops", Role::Operator), ("noc", Role::Viewer)]);
    assert_eq!(c.api.users[0].credential, Credential::Token(Secret::new("0123456789abcdefghijklmn")));
    assert!(matches!(&c.api.users[1].credential, Credential::PasswordHash(h) if h.expose() == hash));
    assert!(!format!("{:?}", c.api).contains(&hash), "the hash never prints");
    assert!(!c.api.is_open(), "users: a non-loopback listen is fine");
}

#[test]
fn api_user_problems_are_all_named_with_key_and_line() {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let dear = hash.replacen("$04$", "$15$", 1);
    let p = with_tokens(&format!(
        r#"
[[api.user]]
name = "ops"
role = "operator"
token_file = "ops.token"

[[api.user]]
name = "ops"
role = "admin"
token_file = "copy.token"

[[api.user]]
name = "guest"
role = "viewer"
token_file = "short.token"

[[api.user]]
name = ""
password_hash = "plain-text"

[[api.user]]
name = "both"
role = "viewer"
token_file = "ops.token"
password_hash = "{hash}"

[[api.user]]
name = "none"
role = "viewer"

[[api.user]]
name = "slow"
role = "viewer"
password_hash = "{dear}"
"#
    ))
    .unwrap_err()
    .problems();
    let at = |line: usize, start: &str| {
        assert!(
            p.iter().any(|x| x.contains(&format!("/poller.toml:{line}: {start}"))),
            "no problem at line {line} starting {start:?}: {p:#?}"
        )
    };
    at(8, "api.user[1].name: duplicate user name \"ops\"");
    at(9, "api.user[1].role: unknown role \"admin\" (viewer | operator)");
    at(10, "api.user[1].token_file: holds the same token as user \"ops\"");
    at(15, "api.user[2].token_file: the token in ");
    at(18, "api.user[3].name: must not be empty");
    at(17, "api.user[3]: missing: role = ");
    at(19, "api.user[3].password_hash: is not a bcrypt hash");
    at(21, "api.user[4]: token_file and password_hash are set together; choose one");
    at(27, "api.user[5]: missing: token_file = ");
    at(34, "api.user[6].password_hash: bcrypt cost 15 makes every login take seconds");
    assert_eq!(p.len(), 10, "{p:#?}");
    assert!(p.iter().all(|x| !x.contains(&hash[7..]) && !x.contains("plain-text")), "a hash never prints: {p:#?}");
}

#[test]
fn an_open_api_listens_only_on_loopback_unless_api_insecure() {
    for ok in ["listen = \"127.0.0.1:7470\"\n", "listen = \"[::1]:7470\"\n", ""] {
        assert!(parse(ok).is_ok(), "{ok}");
    }
    let p = problems("listen = \"0.0.0.0:7470\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("poller.toml:1: listen: refused: 0.0.0.0:7470 is not a loopback address and no [[api.user]]")
            && p[0].contains("api_insecure = true"),
        "{p:?}"
    );
    let c = parse("listen = \"0.0.0.0:7470\"\napi_insecure = true\n").unwrap();
    assert!(c.api.is_open() && c.api.insecure);
    assert!(c.api.check_listen("192.0.2.1:7470".parse().unwrap()).is_ok());
    assert!(parse("listen = \"0.0.0.0:7470\"\n").is_err());
    // With users, api_insecure says nothing true: refused.
    let p = with_tokens(
        "api_insecure = true\n[[api.user]]\nname = \"ops\"\nrole = \"viewer\"\ntoken_file = \"ops.token\"\n",
    )
    .unwrap_err()
    .problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].ends_with(
            "/poller.toml:1: api_insecure: set together with [[api.user]]: with users the API is not open; remove it"
        ),
        "{p:?}"
    );
}

/// A poller.toml in a temporary folder holding the token files `ops.token` (24 chars),
/// `copy.token` (the same token) and `short.token` (8 chars).
fn with_tokens(text: &str) -> Result<PollerConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ops.token"), "0123456789abcdefghijklmn\n").unwrap();
    std::fs::write(dir.path().join("copy.token"), "0123456789abcdefghijklmn").unwrap();
    std::fs::write(dir.path().join("short.token"), "12345678").unwrap();
    PollerConfig::parse(dir.path().join("poller.toml").to_str().unwrap(), text)
}
