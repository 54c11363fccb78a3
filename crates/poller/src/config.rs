//! `poller.toml` (SPEC section 7): parsed strictly, then validated as a whole.
//!
//! Defaults follow the SPEC: levels `normal` 15m and `critical` 2m, the default rule
//! "any deficiency -> the last level", `recover_after = 1`. Contradictions (a timeout not
//! shorter than the shortest interval, a rule naming an unknown level, duplicate server
//! names) are rejected, every one named by key and line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollcall_config::{ConfigError, Duration, Located, Secret, SecretSource};
use rollcall_protocol::Severity;
use serde::Deserialize;

use crate::levels::{Level, Rule, Rules};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    database: Option<String>,
    timeout: Option<Duration>,
    max_reply_bytes: Option<u64>,
    max_clock_skew: Option<Duration>,
    signing_key_file: Option<PathBuf>,
    recover_after: Option<u32>,
    max_concurrent_polls: Option<usize>,
    #[serde(default, rename = "level")]
    levels: Vec<RawLevel>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    #[serde(default, rename = "server")]
    servers: Vec<RawServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevel {
    name: String,
    interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    source: String,
    severity: Option<Severity>,
    level: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    address: String,
    token_file: Option<PathBuf>,
}

/// A validated poller configuration.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub listen: SocketAddr,
    pub database: String,
    pub timeout: Duration,
    pub max_reply_bytes: u64,
    pub max_clock_skew: Duration,
    /// The key clock orders are signed with; without one, no orders are sent.
    pub signing_key: Option<SigningKey>,
    pub max_concurrent_polls: usize,
    pub rules: Rules,
    pub servers: Vec<ServerConfig>,
}

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
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";
pub const DEFAULT_DATABASE: &str = "sqlite://rollcall.db";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_REPLY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);
/// Polls in flight at once; each costs a socket and a few kB, so this can be generous.
pub const DEFAULT_MAX_CONCURRENT_POLLS: usize = 4096;

impl PollerConfig {
    pub fn load(path: &Path) -> Result<PollerConfig, ConfigError> {
        let text = rollcall_config::read_file(path)?;
        Self::parse(&path.display().to_string(), &text)
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
        if !database.starts_with("sqlite:") {
            if database.starts_with("postgres://") || database.starts_with("postgresql://") {
                p.push("database", "PostgreSQL is not available in this version yet; use sqlite://PATH");
            } else {
                p.push("database", format!("{database:?} is not a database URL (sqlite://PATH)"));
            }
        }

        let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.get().is_zero() {
            p.push("timeout", "must be longer than 0");
        }
        let max_reply_bytes = raw.max_reply_bytes.unwrap_or(DEFAULT_MAX_REPLY_BYTES);
        if max_reply_bytes < 1024 {
            p.push("max_reply_bytes", format!("{max_reply_bytes} is too small for any compilation (at least 1024)"));
        }
        let max_concurrent_polls = raw.max_concurrent_polls.unwrap_or(DEFAULT_MAX_CONCURRENT_POLLS);
        if max_concurrent_polls == 0 {
            p.push("max_concurrent_polls", "must be at least 1");
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
            raw.levels.iter().map(|l| Level::new(&l.name, l.interval.get())).collect()
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
            if l.interval.is_zero() {
                p.push(format!("level[{i}].interval"), "must be longer than 0");
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

        let mut servers = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, s) in raw.servers.iter().enumerate() {
            let at = |k: &str| format!("server[{i}].{k}");
            if s.name.trim().is_empty() {
                p.push(at("name"), "must not be empty");
            } else if !names.insert(s.name.clone()) {
                p.push(at("name"), format!("duplicate server name {:?}", s.name));
            }
            if !(s.address.starts_with("http://") || s.address.starts_with("https://"))
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
            servers.push(ServerConfig {
                name: s.name.clone(),
                address: s.address.trim_end_matches('/').to_string(),
                token,
            });
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
        p.finish()?;
        Ok(PollerConfig {
            listen,
            database: resolve_sqlite(&database, &loc),
            timeout,
            max_reply_bytes,
            max_clock_skew: raw.max_clock_skew.unwrap_or(DEFAULT_MAX_CLOCK_SKEW),
            signing_key,
            max_concurrent_polls,
            rules: Rules::new(levels, rules, recover_after),
            servers,
        })
    }
}

/// A relative SQLite path is taken beside the config file, like every other path in it.
fn resolve_sqlite(url: &str, loc: &Located) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
            format!("sqlite://{}", loc.resolve(Path::new(path)).display())
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
