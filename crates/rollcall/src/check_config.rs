//! `rollcall check-config FILE`: validates either kind of config, naming every problem.

use std::path::Path;
use std::process::ExitCode;

/// Which file it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Attendant,
    Poller,
}

/// Keys only a poller config has at its top level.
const POLLER_KEYS: &[&str] = &[
    "server",
    "level",
    "rule",
    "database",
    "max_reply_bytes",
    "max_clock_skew",
    "signing_key_file",
    "recover_after",
    "notify",
    "timeout",
    "max_concurrent_polls",
    "tls_ca_file",
    "tls_client_cert_file",
    "tls_client_key_file",
    "api",
    "api",
    "api_insecure",
];

/// Guesses the kind from the top-level keys; a file that does not parse is taken as an
/// attendant config, whose parser then names the syntax error.
pub fn guess(text: &str) -> Kind {
    match text.parse::<toml::Table>() {
        Ok(t) if t.keys().any(|k| POLLER_KEYS.contains(&k.as_str())) => Kind::Poller,
        _ => Kind::Attendant,
    }
}

pub fn run(file: &Path, kind: Option<Kind>) -> ExitCode {
    let text = match rollcall_config::read_file(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let name = file.display().to_string();
    let kind = kind.unwrap_or_else(|| guess(&text));
    let result = match kind {
        Kind::Attendant => rollcall_attendant::AttendantConfig::parse(&name, &text)
            .map(|c| format!("{name}: valid attendant config ({})", count(c.services.len(), "service"))),
        Kind::Poller => rollcall_poller::PollerConfig::parse(&name, &text).map(|c| {
            format!(
                "{name}: valid poller config ({}, levels: {})",
                count(c.servers.len(), "server"),
                c.rules.levels().iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        }),
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.problems() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `1 server`, `2 servers`.
fn count(n: usize, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(path: &Path) -> Result<Kind, Vec<String>> {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.display().to_string();
        let kind = guess(&text);
        match kind {
            Kind::Attendant => rollcall_attendant::AttendantConfig::parse(&name, &text).map(|_| kind),
            Kind::Poller => rollcall_poller::PollerConfig::parse(&name, &text).map(|_| kind),
        }
        .map_err(|e| e.problems())
    }

    #[test]
    fn counts_read_as_people_write_them() {
        assert_eq!(count(1, "server"), "1 server");
        assert_eq!((count(0, "service"), count(3, "server")), ("0 services".into(), "3 servers".into()));
    }

    /// Every shipped example must stay valid; the count guards against parsing nothing.
    #[test]
    fn every_example_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            match validate(&path) {
                Ok(kind) => kinds.push(kind),
                Err(p) => panic!("{} is invalid:\n{}", path.display(), p.join("\n")),
            }
        }
        assert!(kinds.contains(&Kind::Attendant) && kinds.contains(&Kind::Poller), "{kinds:?}");
    }

    #[test]
    fn kind_is_guessed_from_top_level_keys() {
        assert_eq!(guess("[[server]]\nname = \"a\"\n"), Kind::Poller);
        assert_eq!(guess("database = \"sqlite://x\"\n"), Kind::Poller);
        assert_eq!(guess("[[api.user]]\nname = \"ops\"\n"), Kind::Poller);
        assert_eq!(guess("[[service]]\nname = \"a\"\n"), Kind::Attendant);
        assert_eq!(guess("tls_client_cert_file = \"c.pem\"\n"), Kind::Poller);
        assert_eq!(guess("tls_cert_file = \"c.pem\"\nclient_ca_file = \"ca.pem\"\n"), Kind::Attendant);
        assert_eq!(guess("this is = = not toml"), Kind::Attendant);
    }
}
