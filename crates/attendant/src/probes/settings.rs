//! The `[probe.mailbox]` and `[probe.mail_loop]` tables and the keys the mail checks
//! (`imap`, `smtp`, `ldap`) share: parsed strictly, validated into typed settings.
//!
//! Rules: every problem is named by its key (and so its line) through `Problems::push`;
//! a credential is a *source* (file, command, OAuth2 token command), never a value, and is
//! read at each login so a rotated password needs no restart; exactly one source is set.

use std::path::PathBuf;

use rollcall_config::{Duration, Located, Problems};
use serde::Deserialize;

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain TCP (fine on loopback or a trusted segment).
    #[default]
    None,
    /// Plain TCP upgraded by the protocol's STARTTLS command before any credential is sent.
    Starttls,
    /// TLS from the first byte (IMAPS 993, SMTPS 465, LDAPS 636).
    Tls,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::Starttls => "starttls",
            Security::Tls => "tls",
        }
    }
}

/// Where to connect and how to protect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST:PORT`; HOST is also the name the server's certificate must carry.
    pub address: String,
    pub security: Security,
    /// PEM file of the CAs to trust instead of the system's (a site's private CA).
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    /// The host part of `address`, without IPv6 brackets.
    pub fn host(&self) -> &str {
        let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Where a login secret comes from; the config never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// A file holding the password (trailing newline trimmed).
    File(PathBuf),
    /// A command printing the password (run with a timeout, output trimmed).
    Command(Vec<String>),
    /// A command printing an OAuth2 access token, used with SASL XOAUTH2.
    OAuth2Command(Vec<String>),
}

/// A user name and where its secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: SecretFrom,
}

/// `[probe.mailbox]`: the synthetic user's interval A (login / mail read) and interval B
/// (refresh) probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxProbe {
    pub endpoint: Endpoint,
    pub credentials: Credentials,
    pub mailbox: String,
    pub interval_a: Duration,
    pub interval_b: Duration,
    /// Bound of every network step (connect, TLS, each command) and of secret commands.
    pub timeout: Duration,
}

/// `[probe.mail_loop]`: a tagged message submitted over SMTP and found by interval A.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLoopProbe {
    pub endpoint: Endpoint,
    /// SMTP AUTH, when the submission server wants it.
    pub credentials: Option<Credentials>,
    pub from: String,
    pub to: String,
    pub interval: Duration,
    pub max_latency: Duration,
    pub timeout: Duration,
}

/// The `[probe]` table as validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbesConfig {
    pub mailbox: Option<MailboxProbe>,
    pub mail_loop: Option<MailLoopProbe>,
}

pub const DEFAULT_INTERVAL_A: Duration = Duration::from_secs(60);
pub const DEFAULT_INTERVAL_B: Duration = Duration::from_secs(300);
pub const DEFAULT_LOOP_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_LATENCY: Duration = Duration::from_secs(60);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawProbes {
    mailbox: Option<RawMailbox>,
    mail_loop: Option<RawMailLoop>,
}

#[derive(Debug, Deserialize)]
struct RawMailbox {
    server: Option<String>,
    #[serde(default)]
    security: Security,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<Vec<String>>,
    oauth2_token_command: Option<Vec<String>>,
    mailbox: Option<String>,
    interval_a: Option<Duration>,
    interval_b: Option<Duration>,
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
struct RawMailLoop {
    smtp: Option<String>,
    #[serde(default)]
    security: Security,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<Vec<String>>,
    oauth2_token_command: Option<Vec<String>>,
    from: Option<String>,
    to: Option<String>,
    interval: Option<Duration>,
    max_latency: Option<Duration>,
    timeout: Option<Duration>,
}

/// The three ways to name a secret; at most one may be set.
#[derive(Debug, Default)]
pub(crate) struct RawSecret {
    pub password_file: Option<PathBuf>,
    pub password_command: Option<Vec<String>>,
    pub oauth2_token_command: Option<Vec<String>>,
}

impl RawSecret {
    pub fn is_set(&self) -> bool {
        self.password_file.is_some() || self.password_command.is_some() || self.oauth2_token_command.is_some()
    }
}

/// Validates `raw` as the secret of `at("user")`; `oauth2` says whether XOAUTH2 is allowed.
pub(crate) fn secret(
    raw: &RawSecret,
    loc: &Located,
    p: &mut Problems<'_>,
    at: &dyn Fn(&str) -> String,
    oauth2: bool,
) -> Option<SecretFrom> {
    let mut set = Vec::new();
    if let Some(f) = &raw.password_file {
        set.push(("password_file", SecretFrom::File(loc.resolve(f))));
    }
    if let Some(c) = &raw.password_command {
        set.push(("password_command", SecretFrom::Command(c.clone())));
    }
    if let Some(c) = &raw.oauth2_token_command {
        if !oauth2 {
            p.push(at("oauth2_token_command"), "not supported here (use password_file or password_command)");
            return None;
        }
        set.push(("oauth2_token_command", SecretFrom::OAuth2Command(c.clone())));
    }
    if set.len() > 1 {
        let names: Vec<&str> = set.iter().map(|(k, _)| *k).collect();
        p.push(at(set[1].0), format!("set together with {}; choose one", names[0]));
        return None;
    }
    let (key, s) = set.pop()?;
    match &s {
        SecretFrom::Command(argv) | SecretFrom::OAuth2Command(argv) if argv.is_empty() || argv[0].is_empty() => {
            p.push(at(key), "empty: write it as [\"/path/to/program\", \"ARG\", ...]");
            None
        }
        SecretFrom::File(path) if !path.is_file() => {
            p.push(at(key), format!("cannot read secret file {}: not a file", path.display()));
            None
        }
        _ => Some(s),
    }
}

/// Validates `HOST:PORT` under `key`.
pub(crate) fn address(value: Option<&str>, key: &str, p: &mut Problems<'_>) -> Option<String> {
    match value {
        Some(a) if crate::config::valid_host_port(a) => Some(a.to_string()),
        Some(a) => {
            p.push(key, format!("{a:?} is not HOST:PORT"));
            None
        }
        None => {
            p.push(key, "missing: write it as \"HOST:PORT\"");
            None
        }
    }
}

fn positive(d: Duration, key: &str, p: &mut Problems<'_>) {
    if d.get().is_zero() {
        p.push(key, "must be longer than 0");
    }
}

fn mail_address(value: Option<&str>, key: &str, p: &mut Problems<'_>) -> Option<String> {
    match value {
        Some(a) if a.contains('@') && !a.contains(['<', '>', ' ', '\r', '\n']) => Some(a.to_string()),
        Some(a) => {
            p.push(key, format!("{a:?} is not a mail address (user@domain)"));
            None
        }
        None => {
            p.push(key, "missing: write it as \"user@domain\"");
            None
        }
    }
}

impl RawProbes {
    /// Validates the `[probe]` table; problems go to `p`.
    pub(crate) fn validate(&self, loc: &Located, p: &mut Problems<'_>) -> ProbesConfig {
        let mut out = ProbesConfig::default();
        if let Some(m) = &self.mailbox {
            let at = |k: &str| format!("probe.mailbox.{k}");
            let address = address(m.server.as_deref(), &at("server"), p);
            let user = match &m.user {
                Some(u) if !u.trim().is_empty() => Some(u.clone()),
                _ => {
                    p.push(at("user"), "missing: the probe account's login name");
                    None
                }
            };
            let raw_secret = RawSecret {
                password_file: m.password_file.clone(),
                password_command: m.password_command.clone(),
                oauth2_token_command: m.oauth2_token_command.clone(),
            };
            let secret = if raw_secret.is_set() {
                secret(&raw_secret, loc, p, &at, true)
            } else {
                p.push(at("password_file"), "missing: set password_file, password_command or oauth2_token_command");
                None
            };
            let mailbox = m.mailbox.clone().unwrap_or_else(|| "INBOX".to_string());
            if mailbox.is_empty() || mailbox.contains(['\r', '\n', '"', '\\']) {
                p.push(at("mailbox"), format!("{mailbox:?} is not a usable name"));
            }
            let interval_a = m.interval_a.unwrap_or(DEFAULT_INTERVAL_A);
            let interval_b = m.interval_b.unwrap_or(DEFAULT_INTERVAL_B);
            let timeout = m.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
            positive(interval_a, &at("interval_a"), p);
            positive(interval_b, &at("interval_b"), p);
            positive(timeout, &at("timeout"), p);
            if let (Some(address), Some(user), Some(secret)) = (address, user, secret) {
                out.mailbox = Some(MailboxProbe {
                    endpoint: Endpoint {
                        address,
                        security: m.security,
                        ca_file: m.ca_file.as_deref().map(|f| loc.resolve(f)),
                    },
                    credentials: Credentials { user, secret },
                    mailbox,
                    interval_a,
                    interval_b,
                    timeout,
                });
            }
        }
        if let Some(l) = &self.mail_loop {
            let at = |k: &str| format!("probe.mail_loop.{k}");
            if self.mailbox.is_none() {
                p.push("probe.mail_loop", "needs [probe.mailbox]: the mailbox probe is what finds the looped message");
            }
            let address = address(l.smtp.as_deref(), &at("smtp"), p);
            let raw_secret = RawSecret {
                password_file: l.password_file.clone(),
                password_command: l.password_command.clone(),
                oauth2_token_command: l.oauth2_token_command.clone(),
            };
            let credentials = match (&l.user, raw_secret.is_set()) {
                (None, false) => Some(None),
                (Some(u), true) if !u.trim().is_empty() => {
                    secret(&raw_secret, loc, p, &at, true).map(|s| Some(Credentials { user: u.clone(), secret: s }))
                }
                (Some(_), _) => {
                    p.push(
                        at("user"),
                        "SMTP AUTH needs a user and one of password_file, password_command, oauth2_token_command",
                    );
                    None
                }
                (None, true) => {
                    p.push(at("user"), "missing: SMTP AUTH needs the login name");
                    None
                }
            };
            let from = mail_address(l.from.as_deref(), &at("from"), p);
            let to = mail_address(l.to.as_deref(), &at("to"), p);
            let interval = l.interval.unwrap_or(DEFAULT_LOOP_INTERVAL);
            let max_latency = l.max_latency.unwrap_or(DEFAULT_MAX_LATENCY);
            let timeout = l.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
            positive(interval, &at("interval"), p);
            positive(max_latency, &at("max_latency"), p);
            positive(timeout, &at("timeout"), p);
            if max_latency > interval {
                p.push(
                    at("max_latency"),
                    format!("{max_latency} is longer than interval ({interval}): a message must be judged before the next is sent"),
                );
            }
            if let (Some(address), Some(credentials), Some(from), Some(to)) = (address, credentials, from, to) {
                out.mail_loop = Some(MailLoopProbe {
                    endpoint: Endpoint {
                        address,
                        security: l.security,
                        ca_file: l.ca_file.as_deref().map(|f| loc.resolve(f)),
                    },
                    credentials,
                    from,
                    to,
                    interval,
                    max_latency,
                    timeout,
                });
            }
        }
        out
    }
}

/// The keys of a `[[service]]` that the mail checks read.
pub(crate) struct RawCheckKeys<'a> {
    pub address: Option<&'a str>,
    pub security: Option<Security>,
    pub ca_file: Option<&'a std::path::Path>,
    pub user: Option<&'a str>,
    pub secret: RawSecret,
    pub bind_dn: Option<&'a str>,
    pub base: Option<&'a str>,
    pub filter: Option<&'a str>,
}

/// Validates a `check = "imap" | "smtp" | "ldap"` service; `at` names its keys.
pub(crate) fn mail_check(
    kind: &str,
    raw: RawCheckKeys<'_>,
    loc: &Located,
    p: &mut Problems<'_>,
    at: &dyn Fn(&str) -> String,
) -> Option<crate::config::Check> {
    use crate::config::Check;
    let address = address(raw.address, &at("address"), p);
    let endpoint = address.map(|address| Endpoint {
        address,
        security: raw.security.unwrap_or_default(),
        ca_file: raw.ca_file.map(|f| loc.resolve(f)),
    });
    let login_name = if kind == "ldap" { raw.bind_dn } else { raw.user };
    let name_key = if kind == "ldap" { "bind_dn" } else { "user" };
    let login = match (login_name, raw.secret.is_set()) {
        (None, false) => Some(None),
        (Some(u), true) if !u.trim().is_empty() => secret(&raw.secret, loc, p, at, kind != "ldap")
            .map(|s| Some(Credentials { user: u.to_string(), secret: s })),
        (Some(_), _) => {
            p.push(
                at("password_file"),
                format!("missing: a login as {name_key} needs password_file or password_command"),
            );
            None
        }
        (None, true) => {
            p.push(at(name_key), format!("missing: the password is for whom? set {name_key}"));
            None
        }
    };
    let (endpoint, login) = (endpoint?, login?);
    match kind {
        "imap" => Some(Check::Imap { endpoint, login }),
        "smtp" => Some(Check::Smtp { endpoint, login }),
        _ => match raw.base {
            Some(base) => Some(Check::Ldap {
                endpoint,
                bind: login,
                base: base.to_string(),
                filter: raw.filter.unwrap_or("(objectClass=*)").to_string(),
            }),
            None => {
                p.push(at("base"), "missing: check = \"ldap\" needs base = \"DN\" (the entry searched)");
                None
            }
        },
    }
}
