//! `poller.toml` (SPEC section 7): parsed strictly, then validated as a whole.
//!
//! Defaults follow the SPEC: levels `normal` 15m and `critical` 2m, the default rule
//! "any deficiency -> the last level", `recover_after = 1`. Contradictions (a timeout not
//! shorter than the shortest interval, a rule naming an unknown level, duplicate server
//! names, an open API on a non-loopback `listen`) are rejected, every one named by key and
//! line. `[api]` (who may use the API) is validated in `config/api.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollcall_config::{ConfigError, Duration, Located, Secret, SecretSource};
use rollcall_protocol::Severity;
use serde::Deserialize;

use crate::levels::{Level, Rule, Rules};

mod api;
pub use api::{ApiConfig, ApiUser, Credential, Role};

#[derive(Debug, Deserialize)]
struct Raw {
    listen: Option<String>,
    database: Option<String>,
    database_password_file: Option<PathBuf>,
    timeout: Option<Duration>,
    max_reply_bytes: Option<u64>,
    max_clock_skew: Option<Duration>,
    signing_key_file: Option<PathBuf>,
    recover_after: Option<u32>,
    max_concurrent_polls: Option<usize>,
    first_poll_within: Option<Duration>,
    node: Option<String>,
    failover_after: Option<Duration>,
    #[serde(default, rename = "level")]
    levels: Vec<RawLevel>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    #[serde(default, rename = "server")]
    servers: Vec<RawServer>,
    flap_threshold: Option<u32>,
    flap_window: Option<Duration>,
    #[serde(default, rename = "notify")]
    notify: Vec<RawNotify>,
    retention: Option<RawRetention>,
    public_url: Option<String>,
    #[serde(default)]
    server_files: Vec<String>,
    // The poll client's TLS files (SPEC section 11); a server's own keys win, key by key.
    tls_ca_file: Option<PathBuf>,
    tls_client_cert_file: Option<PathBuf>,
    tls_client_key_file: Option<PathBuf>,
    api_insecure: Option<bool>,
    api: Option<api::RawApi>,
}

/// A file named by `server_files`: `[[server]]` tables and nothing else.
#[derive(Debug, Deserialize)]
struct RawServerFile {
    #[serde(default, rename = "server")]
    servers: Vec<RawServer>,
}

/// `[retention]`: how long history is kept (defaults in [`Retention`]).
#[derive(Debug, Deserialize)]
struct RawRetention {
    polls: Option<Duration>,
    compilations: Option<Duration>,
    transitions: Option<Duration>,
}

/// One `[[notify]]` table: every kind's keys, checked against its `kind` in validation.
#[derive(Debug, Deserialize)]
struct RawNotify {
    #[serde(default)]
    kind: String,
    name: Option<String>,
    timeout: Option<Duration>,
    retries: Option<u32>,
    backoff: Option<Duration>,
    // webhook, alertmanager
    url: Option<String>,
    token_file: Option<PathBuf>,
    resend: Option<Duration>,
    // email
    smtp: Option<String>,
    security: Option<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    from: Option<String>,
    to: Option<Vec<String>>,
    // email, webhook
    template_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct RawLevel {
    // Missing keys are validation problems (named with the rest), not parse errors.
    #[serde(default)]
    name: String,
    interval: Option<Duration>,
    escalate_after: Option<Duration>,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    #[serde(default)]
    source: String,
    severity: Option<Severity>,
    #[serde(default)]
    level: String,
}

#[derive(Debug, Deserialize)]
struct RawServer {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    token_file: Option<PathBuf>,
    #[serde(default)]
    parents: Vec<String>,
    tls_ca_file: Option<PathBuf>,
    tls_client_cert_file: Option<PathBuf>,
    tls_client_key_file: Option<PathBuf>,
}

/// A validated poller configuration.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub listen: SocketAddr,
    pub database: String,
    /// The PostgreSQL password from `database_password_file`, when set.
    pub database_password: Option<Secret>,
    pub timeout: Duration,
    pub max_reply_bytes: u64,
    pub max_clock_skew: Duration,
    /// The key clock orders are signed with; without one, no orders are sent.
    pub signing_key: Option<SigningKey>,
    pub max_concurrent_polls: usize,
    /// A server never polled is polled within this of start (or of being added), its
    /// first polls spread evenly over it (SPEC section 13).
    pub first_poll_within: std::time::Duration,
    /// This poller's name among those sharing a PostgreSQL database (SPEC section 12).
    pub node: String,
    /// A node silent this long loses its servers to the others.
    pub failover_after: std::time::Duration,
    pub rules: Rules,
    pub servers: Vec<ServerConfig>,
    /// Notification channels, in file order.
    pub notify: Vec<NotifyConfig>,
    /// Flap damping for every notification.
    pub damping: Damping,
    /// How long history is kept (`[retention]`).
    pub retention: Retention,
    /// The dashboard's address as people reach it (behind a proxy, say), without a
    /// trailing `/`: notices link to `PUBLIC_URL/servers/NAME`.
    pub public_url: Option<String>,
    /// The files `server_files` matched, in the order their servers were read.
    pub server_files: Vec<PathBuf>,
    /// The file this was loaded from (`None` when parsed from text): what a reload reads.
    pub source: Option<PathBuf>,
    /// `[api] tls_cert_file`, `tls_key_file`: the API, dashboard and /metrics over HTTPS.
    pub api_tls: Option<Arc<rollcall_netserve::tls::ServerConfig>>,
    /// Who may use the API, dashboard and `/metrics` (`[api]`, `api_insecure`).
    pub api: ApiConfig,
}

/// Which kind of receiver a `[[notify]]` table feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    Webhook,
    Email,
    Alertmanager,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Email => "email",
            NotifyKind::Alertmanager => "alertmanager",
        }
    }
}

/// How an email channel protects its SMTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP: only sensible on loopback or a trusted relay.
    None,
    /// STARTTLS, required (the session fails rather than go on in clear).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// One notification channel (`[[notify]]`).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub kind: NotifyKind,
    /// Unique; names the channel in logs, metrics and the dashboard.
    pub name: String,
    /// One delivery attempt, connect to answer.
    pub timeout: std::time::Duration,
    /// Attempts after the first before a notice is given up.
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: std::time::Duration,
    /// Alertmanager: how often firing alerts are re-sent (it forgets unrefreshed ones).
    pub resend: std::time::Duration,
    /// Webhook: the URL posted to; alertmanager: its base URL.
    pub url: String,
    /// Bearer token for the webhook or alertmanager.
    pub token: Option<Secret>,
    /// Email: SMTP server host and port.
    pub smtp_host: String,
    pub smtp_port: u16,
    pub security: SmtpSecurity,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// Email and webhook: the body's template (`template_file`): its path (for errors) and
    /// text, checked to compile.
    pub template: Option<(String, String)>,
}

pub const DEFAULT_FLAP_THRESHOLD: u32 = 4;
pub const DEFAULT_FLAP_WINDOW: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_NOTIFY_RETRIES: u32 = 5;
pub const DEFAULT_NOTIFY_BACKOFF: Duration = Duration::from_secs(2);
pub const DEFAULT_ALERTMANAGER_RESEND: Duration = Duration::from_secs(60);

/// The poller's Ed25519 signing key; never printed.
#[derive(Clone)]
pub struct SigningKey(pub Arc<ed25519_dalek::SigningKey>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(MASKED)")
    }
}

/// One monitored server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub name: String,
    /// Base URL of the attendant, e.g. `http://10.0.0.5:7460`.
    pub address: String,
    /// Bearer token presented to the attendant; `None` for an insecure loopback attendant.
    pub token: Option<Secret>,
    /// The servers this one is reached through (routers, firewalls: SPEC 13). When every
    /// one of them is unreachable, this server's failed polls make it `behind` them.
    pub parents: Vec<String>,
    /// How an `https://` attendant is verified and what identity is presented to it;
    /// `None` for `http://` (and for an `https://` address without TLS keys built
    /// elsewhere: the system's CAs, no client certificate).
    pub tls: Option<ClientTls>,
}

/// The TLS client side of polls and clock orders to one `https://` server: its CA
/// (`tls_ca_file`, else the system's CAs) and, for mutual TLS, the client certificate
/// and key it presents.
#[derive(Clone)]
pub struct ClientTls {
    /// `tls_ca_file`, `tls_client_cert_file`, `tls_client_key_file` as resolved: two
    /// servers with the same files share one `config`.
    pub files: [Option<PathBuf>; 3],
    pub config: Arc<rollcall_netserve::tls::ClientConfig>,
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("files", &self.files).finish_non_exhaustive()
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";
pub const DEFAULT_DATABASE: &str = "sqlite://rollcall.db";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_REPLY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);
/// Bounds of a poll's `timeout` (SPEC section 10).
const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Bounds of a level's `interval` (SPEC section 10): a poll a second at most, a week at least.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The largest `max_reply_bytes` (SPEC section 10): 64 MiB.
pub const MAX_REPLY_BYTES: u64 = 64 << 20;
/// `first_poll_within` unless set: a new server is seen within half a minute.
pub const DEFAULT_FIRST_POLL_WITHIN: Duration = Duration::from_secs(30);
/// `failover_after` unless set, and its bounds (SPEC section 12).
pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_secs(30);
const FAILOVER_AFTER_BOUNDS: (std::time::Duration, std::time::Duration) =
    (std::time::Duration::from_secs(5), std::time::Duration::from_secs(600));
/// The longest `first_poll_within`: beyond it, the spread helps no one.
const MAX_FIRST_POLL_WITHIN: std::time::Duration = std::time::Duration::from_secs(3600);
/// Polls in flight at once; each costs a socket and a few kB, so this can be generous.
pub const DEFAULT_MAX_CONCURRENT_POLLS: usize = 4096;

impl PollerConfig {
    pub fn load(path: &Path) -> Result<PollerConfig, ConfigError> {
        let text = rollcall_config::read_file(path)?;
        let mut config = Self::parse(&path.display().to_string(), &text)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn parse(file: &str, text: &str) -> Result<PollerConfig, ConfigError> {
        let (raw, loc): (Raw, Located) = Located::parse(file, text)?;
        let mut p = loc.problems();

        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen.parse::<SocketAddr>().unwrap_or_else(|e| {
            p.push("listen", format!("{listen:?} is not an IP:port address ({e})"));
            SocketAddr::from(([127, 0, 0, 1], rollcall_protocol::DEFAULT_POLLER_PORT))
        });

        let database = match raw.database {
            Some(d) => d,
            None => DEFAULT_DATABASE.to_string(),
        };
        let postgres = is_postgres(&database);
        if !database.starts_with("sqlite:") && !postgres {
            p.push(
                "database",
                format!("{:?} is not a database URL (sqlite://PATH or postgres://USER@HOST/DB)", redact_url(&database)),
            );
        }
        let database_password = match &raw.database_password_file {
            Some(_) if !postgres => {
                p.push("database_password_file", "only a postgres:// database takes a password");
                None
            }
            Some(f) => SecretSource::File(loc.resolve(f)).read().map_err(|e| p.push("database_password_file", e)).ok(),
            None => None,
        };

        let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout.get()) {
            p.push("timeout", format!("{timeout} is outside 100ms to 5m"));
        }
        let max_reply_bytes = raw.max_reply_bytes.unwrap_or(DEFAULT_MAX_REPLY_BYTES);
        if max_reply_bytes < 1024 {
            p.push("max_reply_bytes", format!("{max_reply_bytes} is too small for any compilation (at least 1024)"));
        } else if max_reply_bytes > MAX_REPLY_BYTES {
            p.push(
                "max_reply_bytes",
                format!(
                    "{max_reply_bytes} is more than the poller holds for one reply (at most {MAX_REPLY_BYTES}: 64 MiB)"
                ),
            );
        }
        let max_concurrent_polls = raw.max_concurrent_polls.unwrap_or(DEFAULT_MAX_CONCURRENT_POLLS);
        if max_concurrent_polls == 0 {
            p.push("max_concurrent_polls", "must be at least 1");
        }
        const POSTGRES_ONLY: &str =
            "only pollers sharing a postgres:// database form a cluster; remove it or use PostgreSQL";
        let node = match &raw.node {
            Some(n) if n.is_empty() || n.len() > 64 || n.chars().any(char::is_control) => {
                p.push("node", format!("{n:?} is not a node name (1 to 64 printable characters)"));
                String::new()
            }
            Some(n) => n.clone(),
            None => hostname(),
        };
        if raw.node.is_some() && !postgres {
            p.push("node", POSTGRES_ONLY);
        }
        let failover_after = raw.failover_after.unwrap_or(DEFAULT_FAILOVER_AFTER).get();
        if raw.failover_after.is_some() && !postgres {
            p.push("failover_after", POSTGRES_ONLY);
        }
        if !(FAILOVER_AFTER_BOUNDS.0..=FAILOVER_AFTER_BOUNDS.1).contains(&failover_after) {
            p.push("failover_after", format!("{} is outside 5s to 10m", Duration(failover_after)));
        } else if postgres && timeout.get() * 2 > failover_after {
            p.push(
                "failover_after",
                format!(
                    "{} must be at least twice the poll timeout ({timeout}): a node cut from the database must finish its last poll before another takes over",
                    Duration(failover_after)
                ),
            );
        }
        let first_poll_within = raw.first_poll_within.unwrap_or(DEFAULT_FIRST_POLL_WITHIN);
        if first_poll_within.get().is_zero() || first_poll_within.get() > MAX_FIRST_POLL_WITHIN {
            p.push("first_poll_within", "must be longer than 0 and at most 1h");
        }
        let recover_after = raw.recover_after.unwrap_or(1);
        if recover_after == 0 {
            p.push("recover_after", "must be at least 1 (the clean reply that clears a server)");
        }

        let levels: Vec<Level> = if raw.levels.is_empty() {
            vec![
                Level::new("normal", std::time::Duration::from_secs(15 * 60)),
                Level::new("critical", std::time::Duration::from_secs(2 * 60)),
            ]
        } else {
            raw.levels
                .iter()
                .map(|l| Level {
                    escalate_after: l.escalate_after.map(Duration::get),
                    ..Level::new(&l.name, l.interval.unwrap_or_default().get())
                })
                .collect()
        };
        let mut seen = std::collections::HashSet::new();
        for (i, l) in levels.iter().enumerate() {
            if raw.levels.is_empty() {
                break;
            }
            if l.name.trim().is_empty() {
                p.push(format!("level[{i}].name"), "must not be empty");
            } else if !seen.insert(l.name.clone()) {
                p.push(format!("level[{i}].name"), format!("duplicate level name {:?}", l.name));
            }
            if let Some(after) = l.escalate_after {
                if i + 1 == levels.len() {
                    p.push(format!("level[{i}].escalate_after"), "the last level has no level above it to escalate to");
                } else if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&after) {
                    p.push(format!("level[{i}].escalate_after"), format!("{} is outside 1s to 7d", Duration(after)));
                }
            }
            if raw.levels[i].interval.is_none() {
                p.push(format!("level[{i}]"), "missing: interval = \"15m\"");
            } else if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&l.interval) {
                p.push(format!("level[{i}].interval"), format!("{} is outside 1s to 7d", Duration(l.interval)));
            } else if timeout.get() >= l.interval {
                p.push(
                    format!("level[{i}].interval"),
                    format!(
                        "{} is not longer than timeout = {timeout}: a poll could still run when the next is due",
                        Duration(l.interval)
                    ),
                );
            }
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            match levels.iter().position(|l| l.name == r.level) {
                Some(level) => rules.push(Rule { source: r.source.clone(), severity: r.severity, level }),
                None if r.level.is_empty() => p.push(format!("rule[{i}]"), "missing: level = \"NAME\""),
                None => p.push(
                    format!("rule[{i}].level"),
                    format!(
                        "unknown level {:?} (levels: {})",
                        r.level,
                        levels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
            if r.source.trim().is_empty() {
                p.push(format!("rule[{i}].source"), "must not be empty (use \"*\" for any)");
            }
        }

        // The top level's TLS files, resolved here: servers of other files inherit them.
        let top_tls = [&raw.tls_ca_file, &raw.tls_client_cert_file, &raw.tls_client_key_file]
            .map(|f| f.as_ref().map(|f| loc.resolve(f)));
        let mut tls_configs = TlsConfigs::default();
        let mut names = std::collections::HashSet::new();
        let mut servers: Vec<ServerConfig> = raw
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| server(s, i, &loc, &mut p, &mut names, &top_tls, &mut tls_configs))
            .collect();
        // Where each server was written: `None` for this file, else the index of its file.
        let mut origin: Vec<(Option<usize>, usize)> = (0..servers.len()).map(|i| (None, i)).collect();
        let server_files = match expand_server_files(&raw.server_files, &loc) {
            Ok(f) => f,
            Err(e) => {
                p.push("server_files", e);
                Vec::new()
            }
        };
        let mut file_errors = Vec::new();
        for (f, path) in server_files.iter().enumerate() {
            match read_server_file(path, &mut names, &top_tls, &mut tls_configs) {
                Ok(more) => {
                    origin.extend((0..more.len()).map(|i| (Some(f), i)));
                    servers.extend(more);
                }
                Err(e) => file_errors.push(e),
            }
        }
        for (j, message) in check_parents(&servers) {
            match origin[j] {
                (None, i) => p.push(format!("server[{i}].parents"), message),
                (Some(f), i) => file_errors.push(ConfigError::Invalid {
                    file: server_files[f].display().to_string(),
                    problems: vec![rollcall_config::Problem {
                        key: format!("server[{i}].parents"),
                        line: None,
                        message,
                    }],
                }),
            }
        }

        let notify = notify_channels(&raw.notify, &loc, &mut p);
        let flap_threshold = raw.flap_threshold.unwrap_or(DEFAULT_FLAP_THRESHOLD);
        if flap_threshold == 0 {
            p.push("flap_threshold", "must be at least 1 (state changes allowed within flap_window)");
        }
        let flap_window = raw.flap_window.unwrap_or(DEFAULT_FLAP_WINDOW);
        if flap_window.get().is_zero() {
            p.push("flap_window", "must be longer than 0");
        }

        let signing_key = raw.signing_key_file.as_ref().and_then(|f| {
            let path = loc.resolve(f);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    p.push(
                        "signing_key_file",
                        format!("cannot read {}: {e} (create one with `rollcall keygen --out DIR`)", path.display()),
                    );
                    return None;
                }
            };
            match rollcall_protocol::clock_order::parse_signing_key(&text) {
                Ok(k) => Some(SigningKey(Arc::new(k))),
                Err(e) => {
                    p.push("signing_key_file", format!("{}: {e}", path.display()));
                    None
                }
            }
        });
        let mut retention = Retention::default();
        if let Some(r) = &raw.retention {
            for (key, value, slot) in [
                ("retention.polls", r.polls, &mut retention.polls),
                ("retention.compilations", r.compilations, &mut retention.compilations),
                ("retention.transitions", r.transitions, &mut retention.transitions),
            ] {
                match value {
                    Some(d) if d.get() < std::time::Duration::from_secs(3600) => {
                        p.push(key, format!("{d} is too short to be history (at least 1h)"))
                    }
                    Some(d) => *slot = d.get(),
                    None => {}
                }
            }
        }
        let public_url = match raw.public_url {
            Some(u) if (u.starts_with("http://") || u.starts_with("https://")) && reqwest::Url::parse(&u).is_ok() => {
                Some(u.trim_end_matches('/').to_string())
            }
            Some(u) => {
                p.push(
                    "public_url",
                    format!("{u:?} is not an http:// or https:// URL (the dashboard as people reach it)"),
                );
                None
            }
            None => None,
        };
        let api_tls = api_tls(raw.api.as_ref(), &loc, &mut p);
        let api = api::parse(raw.api.as_ref(), raw.api_insecure, listen, &loc, &mut p);
        p.finish()?;
        if let Some(e) = file_errors.into_iter().next() {
            return Err(e);
        }
        Ok(PollerConfig {
            api_tls,
            api,
            retention,
            public_url,
            server_files,
            source: None,
            listen,
            database: resolve_sqlite(&database, &loc),
            database_password,
            timeout,
            max_reply_bytes,
            max_clock_skew: raw.max_clock_skew.unwrap_or(DEFAULT_MAX_CLOCK_SKEW),
            signing_key,
            max_concurrent_polls,
            first_poll_within: first_poll_within.get(),
            node,
            failover_after,
            rules: Rules::new(levels, rules, recover_after),
            servers,
            notify,
            damping: Damping { threshold: flap_threshold, window: flap_window.get() },
        })
    }
}

/// `[api] tls_cert_file` and `tls_key_file`, read now so a bad file stops start-up.
fn api_tls(
    api: Option<&api::RawApi>,
    loc: &Located,
    p: &mut rollcall_config::Problems<'_>,
) -> Option<Arc<rollcall_netserve::tls::ServerConfig>> {
    let api = api?;
    let (cert, key) = match (&api.tls_cert_file, &api.tls_key_file) {
        (Some(c), Some(k)) => (loc.resolve(c), loc.resolve(k)),
        (None, None) => return None,
        (Some(_), None) => {
            p.push("api.tls_key_file", "missing: tls_cert_file needs the key file beside it");
            return None;
        }
        (None, Some(_)) => {
            p.push("api.tls_cert_file", "missing: tls_key_file needs the certificate file beside it");
            return None;
        }
    };
    rollcall_netserve::tls::server_config(&cert, &key, None)
        .map_err(|e| {
            let k = match &e {
                rollcall_netserve::tls::TlsError::NoCertificate { .. } => "api.tls_cert_file",
                _ if e.path() == Some(&key) => "api.tls_key_file",
                _ => "api.tls_cert_file",
            };
            p.push(k, e)
        })
        .ok()
}

/// The TLS client configs of the servers, built once per distinct set of files.
#[derive(Default)]
struct TlsConfigs(std::collections::HashMap<[Option<PathBuf>; 3], Arc<rollcall_netserve::tls::ClientConfig>>);

impl TlsConfigs {
    /// Server `i`'s TLS: `None` for `http://`; for `https://`, its own `tls_*` keys over the
    /// top level's, read now so a missing or mismatched file stops start-up naming its key.
    fn for_server(
        &mut self,
        i: usize,
        s: &RawServer,
        inherited: [&Option<PathBuf>; 3],
        loc: &Located,
        p: &mut rollcall_config::Problems<'_>,
    ) -> Option<ClientTls> {
        let own = [&s.tls_ca_file, &s.tls_client_cert_file, &s.tls_client_key_file];
        const KEYS: [&str; 3] = ["tls_ca_file", "tls_client_cert_file", "tls_client_key_file"];
        if !s.address.starts_with("https://") {
            if let Some(k) = own.iter().position(|f| f.is_some()) {
                p.push(format!("server[{i}].{}", KEYS[k]), "only applies to an https:// address");
            }
            return None;
        }
        // Where each file comes from, so a problem names the key that set it.
        let mut at = [String::new(), String::new(), String::new()];
        let mut files: [Option<PathBuf>; 3] = [None, None, None];
        for k in 0..3 {
            (at[k], files[k]) = match (own[k], inherited[k]) {
                (Some(f), _) => (format!("server[{i}].{}", KEYS[k]), Some(loc.resolve(f))),
                (None, Some(f)) => (KEYS[k].to_string(), Some(loc.resolve(f))),
                (None, None) => (KEYS[k].to_string(), None),
            };
        }
        let identity = match (&files[1], &files[2]) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            (Some(_), None) => {
                p.push(format!("server[{i}]"), "tls_client_cert_file needs tls_client_key_file beside it");
                return None;
            }
            (None, Some(_)) => {
                p.push(format!("server[{i}]"), "tls_client_key_file needs tls_client_cert_file beside it");
                return None;
            }
        };
        if let Some(config) = self.0.get(&files) {
            return Some(ClientTls { files, config: config.clone() });
        }
        match rollcall_netserve::tls::client_config(files[0].as_deref(), identity) {
            Ok(config) => {
                self.0.insert(files.clone(), config.clone());
                Some(ClientTls { files, config })
            }
            Err(e) => {
                let k = files.iter().position(|f| f.is_some() && f.as_ref() == e.path()).unwrap_or(0);
                p.push(at[k].clone(), e);
                None
            }
        }
    }
}

/// Validates every `[[notify]]` table: the kind's required keys present, other kinds'
/// keys absent, URLs and addresses well-formed, secrets readable, names unique.
fn notify_channels(raw: &[RawNotify], loc: &Located, p: &mut rollcall_config::Problems<'_>) -> Vec<NotifyConfig> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, n) in raw.iter().enumerate() {
        let at = |k: &str| format!("notify[{i}].{k}");
        let kind = match n.kind.as_str() {
            "webhook" => NotifyKind::Webhook,
            "email" => NotifyKind::Email,
            "alertmanager" => NotifyKind::Alertmanager,
            "" => {
                p.push(format!("notify[{i}]"), "missing: kind = \"webhook\" (or email, alertmanager)");
                continue;
            }
            other => {
                p.push(at("kind"), format!("unknown kind {other:?} (webhook | email | alertmanager)"));
                continue;
            }
        };
        let k = kind.as_str();
        let name = n.name.clone().unwrap_or_else(|| if i == 0 { k.to_string() } else { format!("{k}-{i}") });
        if name.trim().is_empty() {
            p.push(at("name"), "must not be empty");
        } else if !names.insert(name.clone()) {
            p.push(at("name"), format!("duplicate channel name {name:?}"));
        }
        let web = matches!(kind, NotifyKind::Webhook | NotifyKind::Alertmanager);
        let misplaced = [
            ("url", n.url.is_some() && !web),
            ("token_file", n.token_file.is_some() && !web),
            ("resend", n.resend.is_some() && kind != NotifyKind::Alertmanager),
            ("smtp", n.smtp.is_some() && web),
            ("security", n.security.is_some() && web),
            ("user", n.user.is_some() && web),
            ("password_file", n.password_file.is_some() && web),
            ("from", n.from.is_some() && web),
            ("to", n.to.is_some() && web),
            ("template_file", n.template_file.is_some() && kind == NotifyKind::Alertmanager),
        ];
        for (key, bad) in misplaced {
            if bad {
                p.push(at(key), format!("is not a key of kind = \"{k}\""));
            }
        }
        let timeout = n.timeout.unwrap_or(DEFAULT_NOTIFY_TIMEOUT).get();
        if timeout.is_zero() {
            p.push(at("timeout"), "must be longer than 0");
        }
        let backoff = n.backoff.unwrap_or(DEFAULT_NOTIFY_BACKOFF).get();
        let resend = n.resend.unwrap_or(DEFAULT_ALERTMANAGER_RESEND).get();
        if resend.is_zero() {
            p.push(at("resend"), "must be longer than 0");
        }
        let secret = |key: &str, f: &Option<PathBuf>, p: &mut rollcall_config::Problems<'_>| match f {
            Some(f) => match SecretSource::File(loc.resolve(f)).read() {
                Ok(t) => Some(t),
                Err(e) => {
                    p.push(at(key), e);
                    None
                }
            },
            None => None,
        };
        let mut c = NotifyConfig {
            kind,
            name,
            timeout,
            retries: n.retries.unwrap_or(DEFAULT_NOTIFY_RETRIES),
            backoff,
            resend,
            url: String::new(),
            token: None,
            smtp_host: String::new(),
            smtp_port: 0,
            security: SmtpSecurity::Starttls,
            user: n.user.clone(),
            password: None,
            from: String::new(),
            to: Vec::new(),
            template: None,
        };
        if let (Some(f), false) = (&n.template_file, kind == NotifyKind::Alertmanager) {
            let path = loc.resolve(f);
            match std::fs::read_to_string(&path) {
                Err(e) => p.push(at("template_file"), format!("cannot read {}: {e}", path.display())),
                Ok(text) => match template_problem(&path.display().to_string(), &text) {
                    Some(why) => p.push(at("template_file"), why),
                    None => c.template = Some((path.display().to_string(), text)),
                },
            }
        }
        if web {
            match &n.url {
                None => p.push(at("url"), format!("missing: kind = \"{k}\" needs the receiver's http(s):// URL")),
                Some(u)
                    if !(u.starts_with("http://") || u.starts_with("https://")) || reqwest::Url::parse(u).is_err() =>
                {
                    p.push(at("url"), format!("{u:?} is not an http:// or https:// URL"))
                }
                Some(u) => c.url = u.trim_end_matches('/').to_string(),
            }
            c.token = secret("token_file", &n.token_file, p);
        } else {
            match n.smtp.as_deref().map(split_host_port) {
                None => p.push(at("smtp"), "missing: kind = \"email\" needs the SMTP server as HOST:PORT"),
                Some(None) => p.push(at("smtp"), format!("{:?} is not HOST:PORT", n.smtp.as_deref().unwrap_or(""))),
                Some(Some((h, port))) => (c.smtp_host, c.smtp_port) = (h, port),
            }
            c.security = match n.security.as_deref() {
                None | Some("starttls") => SmtpSecurity::Starttls,
                Some("none") => SmtpSecurity::None,
                Some("tls") => SmtpSecurity::Tls,
                Some(other) => {
                    p.push(at("security"), format!("unknown security {other:?} (none | starttls | tls)"));
                    SmtpSecurity::Starttls
                }
            };
            c.password = secret("password_file", &n.password_file, p);
            if c.password.is_some() != c.user.is_some() {
                p.push(at("user"), "user and password_file go together (SMTP AUTH needs both)");
            }
            match &n.from {
                Some(f) if f.contains('@') => c.from = f.clone(),
                Some(f) => p.push(at("from"), format!("{f:?} is not a mail address")),
                None => p.push(at("from"), "missing: the sender address of notification mail"),
            }
            match &n.to {
                Some(to) if !to.is_empty() => {
                    for t in to.iter().filter(|t| !t.contains('@')) {
                        p.push(at("to"), format!("{t:?} is not a mail address"));
                    }
                    c.to = to.clone();
                }
                _ => p.push(at("to"), "missing: at least one recipient address"),
            }
        }
        out.push(c);
    }
    out
}

/// Validates one `[[server]]` table (`server[i]` of the file `loc` read); a name seen
/// before (in any file) is a duplicate.
fn server(
    s: &RawServer,
    i: usize,
    loc: &Located,
    p: &mut rollcall_config::Problems<'_>,
    names: &mut std::collections::HashSet<String>,
    top_tls: &[Option<PathBuf>; 3],
    tls_configs: &mut TlsConfigs,
) -> ServerConfig {
    let at = |k: &str| format!("server[{i}].{k}");
    if s.name.trim().is_empty() {
        p.push(at("name"), "must not be empty");
    } else if !names.insert(s.name.clone()) {
        p.push(at("name"), format!("duplicate server name {:?}", s.name));
    }
    if s.address.is_empty() {
        p.push(at("address"), "missing: address = \"http://HOST:7460\"");
    } else if !(s.address.starts_with("http://") || s.address.starts_with("https://"))
        || reqwest::Url::parse(&s.address).is_err()
    {
        p.push(at("address"), format!("{:?} is not an http:// or https:// URL", s.address));
    }
    let token = match &s.token_file {
        Some(f) => match SecretSource::File(loc.resolve(f)).read() {
            Ok(t) => Some(t),
            Err(e) => {
                p.push(at("token_file"), e);
                None
            }
        },
        None => None,
    };
    let tls = tls_configs.for_server(i, s, [&top_tls[0], &top_tls[1], &top_tls[2]], loc, p);
    ServerConfig {
        name: s.name.clone(),
        address: s.address.trim_end_matches('/').to_string(),
        token,
        parents: s.parents.clone(),
        tls,
    }
}

/// Most files `server_files` may match, all globs together.
const MAX_SERVER_FILES: usize = 10_000;

/// The files `server_files` names, each glob relative to the config's folder: a glob in
/// the file name only (`servers.d/*.toml`; `*` any run, `?` one character), matches sorted
/// by name; a name without wildcards must exist.
fn expand_server_files(globs: &[String], loc: &Located) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for g in globs {
        let path = loc.resolve(Path::new(g));
        let (Some(dir), Some(pattern)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
            return Err(format!("{g:?} names no file"));
        };
        if dir.to_str().is_some_and(|d| d.contains(['*', '?'])) {
            return Err(format!("{g:?}: wildcards are allowed in the file name only (like servers.d/*.toml)"));
        }
        if !pattern.contains(['*', '?']) {
            if !path.is_file() {
                return Err(format!("{g:?}: no such file ({})", path.display()));
            }
            out.push(path);
            continue;
        }
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("{g:?}: cannot read the folder {}: {e}", dir.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| e.file_name().to_str().is_some_and(|n| crate::levels::glob_match(pattern, n)))
            .map(|e| e.path())
            .collect();
        found.sort();
        out.extend(found);
        if out.len() > MAX_SERVER_FILES {
            return Err(format!("matches more than {MAX_SERVER_FILES} files"));
        }
    }
    Ok(out)
}

/// Reads the `[[server]]` tables of one file of `server_files`; its problems are named by
/// its own file, key and line.
fn read_server_file(
    path: &Path,
    names: &mut std::collections::HashSet<String>,
    top_tls: &[Option<PathBuf>; 3],
    tls_configs: &mut TlsConfigs,
) -> Result<Vec<ServerConfig>, ConfigError> {
    let file = path.display().to_string();
    let text = rollcall_config::read_file(path)?;
    let (raw, loc): (RawServerFile, Located) = Located::parse(&file, &text)?;
    let mut p = loc.problems();
    let servers =
        raw.servers.iter().enumerate().map(|(i, s)| server(s, i, &loc, &mut p, names, top_tls, tls_configs)).collect();
    p.finish()?;
    Ok(servers)
}

/// Every `parents` entry names another configured server, and following parents never
/// comes back to where it started (a cycle would make each server wait on the other).
/// Answers each problem with the index of the server it is about.
fn check_parents(servers: &[ServerConfig]) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    let index: std::collections::HashMap<&str, usize> =
        servers.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    for (i, s) in servers.iter().enumerate() {
        for parent in &s.parents {
            if *parent == s.name {
                problems.push((i, format!("{:?} names itself", s.name)));
            } else if !index.contains_key(parent.as_str()) {
                problems.push((i, format!("{:?} of {:?} is no configured server", parent, s.name)));
            }
        }
    }
    // Depth-first over parents: 0 unseen, 1 on the current path, 2 done.
    let mut mark = vec![0u8; servers.len()];
    let mut reported = std::collections::HashSet::new();
    for start in 0..servers.len() {
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        if mark[start] != 0 {
            continue;
        }
        mark[start] = 1;
        while let Some(top) = path.last_mut() {
            let (node, next) = *top;
            let parents = &servers[node].parents;
            if next == parents.len() {
                mark[node] = 2;
                path.pop();
                continue;
            }
            top.1 += 1;
            let parent = &parents[next];
            let Some(&j) = index.get(parent.as_str()) else { continue };
            if j == node {
                continue; // named itself: reported above
            }
            match mark[j] {
                0 => {
                    mark[j] = 1;
                    path.push((j, 0));
                }
                1 => {
                    let from = path.iter().position(|&(n, _)| n == j).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[from..].iter().map(|&(n, _)| servers[n].name.as_str()).collect();
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if reported.insert(key) {
                        cycle.push(servers[j].name.as_str());
                        problems.push((j, format!("a cycle of parents: {}", cycle.join(" -> "))));
                    }
                }
                _ => {}
            }
        }
    }
    problems
}

/// Why a notice template (minijinja, Jinja2 syntax) does not compile: file, line, what.
fn template_problem(file: &str, text: &str) -> Option<String> {
    let env = minijinja::Environment::new();
    let e = env.template_from_str(text).err()?;
    Some(match e.line() {
        Some(line) => format!("{file}:{line}: {}", e.detail().unwrap_or(&e.kind().to_string())),
        None => format!("{file}: {e}"),
    })
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, port) = s.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty()).then_some(())?;
    Some((h.to_string(), port.parse().ok()?))
}

/// A relative SQLite path is taken beside the config file, like every other path in it.
/// This machine's host name, the default `node` (`/proc/sys/kernel/hostname`, else
/// `"poller"`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "poller".to_string())
}

/// A PostgreSQL database URL (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its password, if any, replaced by `***`: how a database URL is shown in
/// messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn resolve_sqlite(url: &str, loc: &Located) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
            format!("sqlite://{}", loc.resolve(Path::new(path)).display())
        }
        _ => url.to_string(),
    }
}

/// How long history is kept (`[retention]` in poller.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Per-poll rows.
    pub polls: std::time::Duration,
    /// Compilations in the history (the latest of each server is always kept).
    pub compilations: std::time::Duration,
    /// Level transitions, clock corrections, operator actions and notice claims: rare,
    /// so kept much longer.
    pub transitions: std::time::Duration,
}

const DAY: u64 = 24 * 3600;

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            polls: std::time::Duration::from_secs(30 * DAY),
            compilations: std::time::Duration::from_secs(30 * DAY),
            transitions: std::time::Duration::from_secs(400 * DAY),
        }
    }
}

/// The damping settings (`flap_threshold`, `flap_window` in poller.toml).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Damping {
    /// More state changes than this within `window` is flapping.
    pub threshold: u32,
    pub window: std::time::Duration,
}

#[cfg(test)]
mod tests;
