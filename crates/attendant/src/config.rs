//! `attendant.toml` (SPEC section 7): parsed strictly, then validated as a whole.
//!
//! Unknown keys are errors naming key and line; every contradiction is reported at once;
//! the token is read here, so a missing token file stops start-up instead of the first poll.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rollcall_config::{ConfigError, Duration, Located, Secret, SecretSource};
use serde::Deserialize;

pub use crate::checks::ProcessMatch;
pub use crate::clock::ClockMode;

/// Default time a check may take.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
struct Raw {
    name: Option<String>,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    clock: Option<ClockMode>,
    clock_offset: Option<String>,
    max_clock_step: Option<Duration>,
    poller_public_key: Option<String>,
    #[serde(default)]
    host: RawHost,
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
    #[serde(default)]
    probe: crate::probes::settings::RawProbes,
}

#[derive(Debug, Default, Deserialize)]
struct RawHost {
    disk_warning_percent: Option<f64>,
    disk_critical_percent: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct RawService {
    // Missing keys are validation problems (named with the rest), not parse errors.
    #[serde(default)]
    name: String,
    #[serde(default)]
    check: String,
    timeout: Option<Duration>,
    unit: Option<String>,
    process: Option<String>,
    pidfile: Option<PathBuf>,
    address: Option<String>,
    expect: Option<String>,
    command: Option<Vec<String>>,
    security: Option<crate::probes::Security>,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<Vec<String>>,
    oauth2_token_command: Option<Vec<String>>,
    bind_dn: Option<String>,
    base: Option<String>,
    filter: Option<String>,
    url: Option<String>,
    expect_status: Option<u16>,
    body: Option<String>,
}

/// How the attendant knows a query comes from its poller.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Token(Secret),
    /// No authentication: only allowed on a loopback address.
    Insecure,
}

/// A validated attendant configuration.
#[derive(Debug, Clone)]
pub struct AttendantConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub auth: Auth,
    pub clock: ClockMode,
    /// Virtual clock only: its starting error against real time, in microseconds.
    pub clock_offset_us: i64,
    pub max_clock_step: Duration,
    pub poller_public_key: Option<String>,
    pub host: HostThresholds,
    pub services: Vec<Service>,
    /// The `[probe]` table: the synthetic user's mailbox and mail-loop probes.
    pub probes: crate::probes::ProbesConfig,
}

/// When disk usage becomes a deficiency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostThresholds {
    pub disk_warning_percent: f64,
    pub disk_critical_percent: f64,
}

/// One entry of the services list.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub timeout: Duration,
    pub check: Check,
}

/// How one service's status is determined.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Tcp {
        address: String,
        expect: Option<String>,
    },
    Process(ProcessMatch),
    Command {
        argv: Vec<String>,
    },
    Systemd {
        unit: String,
    },
    /// Greeting, STARTTLS when configured, optional login.
    Imap {
        endpoint: crate::probes::Endpoint,
        login: Option<crate::probes::Credentials>,
    },
    /// Greeting, EHLO, STARTTLS when configured, optional AUTH.
    Smtp {
        endpoint: crate::probes::Endpoint,
        login: Option<crate::probes::Credentials>,
    },
    /// Bind (anonymous, or as `bind` with its password) and a base search of `base`.
    Ldap {
        endpoint: crate::probes::Endpoint,
        bind: Option<crate::probes::Credentials>,
        base: String,
        filter: String,
    },
    /// A GET of `url`: the status (exactly `expect_status`, else any 2xx/3xx) and, when
    /// given, a string the body must contain.
    Http {
        url: String,
        expect_status: Option<u16>,
        body: Option<String>,
    },
}

impl Check {
    /// The `check` key's value, reported in the compilation.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Tcp { .. } => "tcp",
            Check::Process(_) => "process",
            Check::Command { .. } => "command",
            Check::Systemd { .. } => "systemd",
            Check::Imap { .. } => "imap",
            Check::Smtp { .. } => "smtp",
            Check::Ldap { .. } => "ldap",
            Check::Http { .. } => "http",
        }
    }
}

/// Keys each check kind accepts besides `name`, `check` and `timeout`.
const KEYS: &[(&str, &[&str])] = &[
    ("tcp", &["address", "expect"]),
    ("process", &["process", "pidfile"]),
    ("command", &["command"]),
    ("systemd", &["unit"]),
    ("imap", MAIL_KEYS),
    ("smtp", MAIL_KEYS),
    ("ldap", &["address", "security", "ca_file", "bind_dn", "password_file", "password_command", "base", "filter"]),
    ("http", &["url", "expect_status", "body"]),
];

/// Every check kind, for error messages.
const AVAILABLE: &str = "tcp, process, command, systemd, imap, smtp, ldap, http";

const MAIL_KEYS: &[&str] =
    &["address", "security", "ca_file", "user", "password_file", "password_command", "oauth2_token_command"];

impl AttendantConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<AttendantConfig, ConfigError> {
        let text = rollcall_config::read_file(path)?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates `text` as read from `file` (relative paths resolve beside it).
    pub fn parse(file: &str, text: &str) -> Result<AttendantConfig, ConfigError> {
        let (raw, loc): (Raw, Located) = Located::parse(file, text)?;
        let mut p = loc.problems();

        let listen = match raw.listen.as_deref().unwrap_or("0.0.0.0:7460").parse::<SocketAddr>() {
            Ok(a) => a,
            Err(e) => {
                p.push("listen", format!("not an IP:port address ({e})"));
                SocketAddr::from(([0, 0, 0, 0], rollcall_protocol::DEFAULT_ATTENDANT_PORT))
            }
        };

        let auth = match (&raw.token_file, raw.insecure) {
            (Some(_), true) => {
                p.push("insecure", "set together with token_file; choose one");
                Auth::Insecure
            }
            (None, true) => {
                if !listen.ip().is_loopback() {
                    p.push(
                        "insecure",
                        format!("refused: listen {listen} is not a loopback address; an unauthenticated attendant may only listen on 127.0.0.1 or ::1"),
                    );
                }
                Auth::Insecure
            }
            (Some(f), false) => match SecretSource::File(loc.resolve(f)).read() {
                Ok(s) => Auth::Token(s),
                Err(e) => {
                    p.push("token_file", e);
                    Auth::Insecure
                }
            },
            (None, false) => {
                p.push("token_file", "missing: set token_file (or insecure = true on a loopback listen)");
                Auth::Insecure
            }
        };

        let clock = raw.clock.unwrap_or(ClockMode::System);
        let clock_offset_us = match raw.clock_offset.as_deref() {
            None => 0,
            Some(_) if clock != ClockMode::Virtual => {
                p.push("clock_offset", "only allowed with clock = \"virtual\"");
                0
            }
            Some(s) => match parse_signed_us(s) {
                Ok(us) => us,
                Err(e) => {
                    p.push("clock_offset", e);
                    0
                }
            },
        };

        let host = HostThresholds {
            disk_warning_percent: raw.host.disk_warning_percent.unwrap_or(90.0),
            disk_critical_percent: raw.host.disk_critical_percent.unwrap_or(95.0),
        };
        for (key, v) in [
            ("host.disk_warning_percent", host.disk_warning_percent),
            ("host.disk_critical_percent", host.disk_critical_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                p.push(key, format!("{v} is not a percentage (0 to 100)"));
            }
        }
        if host.disk_warning_percent > host.disk_critical_percent {
            p.push("host.disk_warning_percent", "is above host.disk_critical_percent");
        }

        let mut services = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, s) in raw.services.iter().enumerate() {
            let at = |k: &str| format!("service[{i}].{k}");
            if s.name.trim().is_empty() {
                p.push(at("name"), "must not be empty");
            } else if !seen.insert(s.name.clone()) {
                p.push(at("name"), format!("duplicate service name {:?}", s.name));
            }
            let timeout = s.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT);
            if timeout.get().is_zero() {
                p.push(at("timeout"), "must be longer than 0");
            }
            let Some((_, allowed)) = KEYS.iter().find(|(k, _)| *k == s.check) else {
                if s.check.is_empty() {
                    p.push(format!("service[{i}]"), format!("missing: check = \"KIND\" (one of: {AVAILABLE})"));
                } else {
                    p.push(at("check"), format!("unknown check {:?} (expected one of: {AVAILABLE})", s.check));
                }
                continue;
            };
            for (key, set) in [
                ("unit", s.unit.is_some()),
                ("process", s.process.is_some()),
                ("pidfile", s.pidfile.is_some()),
                ("address", s.address.is_some()),
                ("expect", s.expect.is_some()),
                ("command", s.command.is_some()),
                ("security", s.security.is_some()),
                ("ca_file", s.ca_file.is_some()),
                ("user", s.user.is_some()),
                ("url", s.url.is_some()),
                ("expect_status", s.expect_status.is_some()),
                ("body", s.body.is_some()),
                ("password_file", s.password_file.is_some()),
                ("password_command", s.password_command.is_some()),
                ("oauth2_token_command", s.oauth2_token_command.is_some()),
                ("bind_dn", s.bind_dn.is_some()),
                ("base", s.base.is_some()),
                ("filter", s.filter.is_some()),
            ] {
                if set && !allowed.contains(&key) {
                    p.push(at(key), format!("not a key of check = {:?} (its keys: {})", s.check, allowed.join(", ")));
                }
            }
            let check = match s.check.as_str() {
                "tcp" => match &s.address {
                    Some(a) if valid_host_port(a) => Some(Check::Tcp { address: a.clone(), expect: s.expect.clone() }),
                    Some(a) => {
                        p.push(at("address"), format!("{a:?} is not HOST:PORT"));
                        None
                    }
                    None => {
                        p.push(at("address"), "missing: check = \"tcp\" needs address = \"HOST:PORT\"");
                        None
                    }
                },
                "process" => match (&s.process, &s.pidfile) {
                    (Some(n), None) if !n.is_empty() => Some(Check::Process(ProcessMatch::Name(n.clone()))),
                    (None, Some(f)) => Some(Check::Process(ProcessMatch::Pidfile(loc.resolve(f)))),
                    (Some(_), Some(_)) => {
                        p.push(at("process"), "set together with pidfile; choose one");
                        None
                    }
                    _ => {
                        p.push(
                            at("process"),
                            "missing: check = \"process\" needs process = \"NAME\" or pidfile = \"PATH\"",
                        );
                        None
                    }
                },
                "command" => {
                    match &s.command {
                        Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                            Some(Check::Command { argv: argv.clone() })
                        }
                        _ => {
                            p.push(at("command"), "missing or empty: check = \"command\" needs command = [\"/path/to/plugin\", \"ARG\", ...]");
                            None
                        }
                    }
                }
                "imap" | "smtp" | "ldap" => crate::probes::settings::mail_check(
                    &s.check,
                    crate::probes::settings::RawCheckKeys {
                        address: s.address.as_deref(),
                        security: s.security,
                        ca_file: s.ca_file.as_deref(),
                        user: s.user.as_deref(),
                        secret: crate::probes::settings::RawSecret {
                            password_file: s.password_file.clone(),
                            password_command: s.password_command.clone(),
                            oauth2_token_command: s.oauth2_token_command.clone(),
                        },
                        bind_dn: s.bind_dn.as_deref(),
                        base: s.base.as_deref(),
                        filter: s.filter.as_deref(),
                    },
                    &loc,
                    &mut p,
                    &at,
                ),
                "http" => match &s.url {
                    Some(u) if (u.starts_with("http://") || u.starts_with("https://")) && u.len() > 8 => {
                        if s.expect_status.is_some_and(|c| !(100..=599).contains(&c)) {
                            p.push(at("expect_status"), "must be an HTTP status code (100 to 599)");
                        }
                        Some(Check::Http { url: u.clone(), expect_status: s.expect_status, body: s.body.clone() })
                    }
                    Some(u) => {
                        p.push(at("url"), format!("{u:?} is not an http:// or https:// URL"));
                        None
                    }
                    None => {
                        p.push(at("url"), "missing: check = \"http\" needs url = \"http://HOST/PATH\"");
                        None
                    }
                },
                _ => match &s.unit {
                    Some(u) if !u.is_empty() => Some(Check::Systemd { unit: u.clone() }),
                    _ => {
                        p.push(at("unit"), "missing: check = \"systemd\" needs unit = \"NAME.service\"");
                        None
                    }
                },
            };
            if let Some(check) = check {
                services.push(Service { name: s.name.clone(), timeout, check });
            }
        }

        let probes = raw.probe.validate(&loc, &mut p);
        let max_clock_step = raw.max_clock_step.unwrap_or(Duration::from_secs(1000));
        if let Some(k) = &raw.poller_public_key {
            if let Err(e) = rollcall_protocol::clock_order::parse_public_key(k) {
                p.push("poller_public_key", e);
            }
        }
        p.finish()?;
        Ok(AttendantConfig {
            name: raw.name.unwrap_or_else(hostname),
            listen,
            auth,
            clock,
            clock_offset_us,
            max_clock_step,
            poller_public_key: raw.poller_public_key,
            host,
            services,
            probes,
        })
    }
}

/// `"45s"`, `"-3s"`, `"1m 30s"` as signed microseconds.
fn parse_signed_us(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.trim().trim_start_matches('+')),
    };
    let d: Duration = body.parse()?;
    let us = i64::try_from(d.get().as_micros()).map_err(|_| format!("{s:?} is too large"))?;
    Ok(if neg { -us } else { us })
}

pub(crate) fn valid_host_port(a: &str) -> bool {
    match a.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// The machine's hostname, the default attendant name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests;
