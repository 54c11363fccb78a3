//! `attendant.toml` (SPEC section 7): parsed strictly, then validated as a whole into
//! [`AttendantConfig`].
//!
//! Rules: unknown keys are errors naming key and line; every contradiction is reported at
//! once ([`rollcall_config::ConfigError::problems`]); the token is read here, so a missing
//! token file stops start-up instead of the first poll. This room owns every table of the
//! file: the top level and `[host]` here, `[probe]` in `probes`, the login/endpoint keys
//! in `login` (one type, one validator), single values in `fields`. A `[[service]]` is
//! read here up to its `check`; its kind's own keys go to that kind's `parse` in
//! `checks::kinds`, which uses `fields` and `login` (leaves that import nothing of
//! the crate but each other). `[[usage]]` is read in `usage`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollcall_config::{ConfigError, Duration, Located, Secret, SecretSource};
use serde::Deserialize;

pub mod fields;
pub mod login;
pub mod probes;
pub mod usage;

use crate::checks::{kinds, Service};
pub use crate::clock::ClockMode;
use crate::host::{whole, DiskFilter};
use fields::TableCx;
pub use login::{Credentials, Endpoint, Login, SecretFrom, Security};
pub use probes::{FileAccessProbe, MailLoopProbe, MailboxProbe, ProbesConfig};
pub use usage::{Mta, UsageConfig, UsageKind};

/// Default time a check may take (a kind may set its own: `checks::Kind::default_timeout`).
pub const DEFAULT_CHECK_TIMEOUT: Duration = crate::checks::DEFAULT_TIMEOUT;

/// The largest `max_clock_step` (SPEC section 10): a day.
const MAX_CLOCK_STEP: Duration = Duration::from_secs(24 * 3600);

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
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    host: RawHost,
    /// Read key by key: the common keys here, the rest by the check kind's `parse`.
    #[serde(default, rename = "service")]
    services: Vec<toml::Table>,
    #[serde(default)]
    probe: probes::RawProbes,
    #[serde(default)]
    usage: Vec<usage::RawUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct RawHost {
    disk_warning_percent: Option<f64>,
    disk_critical_percent: Option<f64>,
    exclude_mount_points: Option<Vec<String>>,
    exclude_fs_types: Option<Vec<String>>,
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
    /// HTTPS (`tls_cert_file`, `tls_key_file`), mutual when `client_ca_file` is set (SPEC
    /// section 11): then only clients with a certificate signed by that CA are served.
    /// Like `listen`, it takes effect at the next start, not on SIGHUP.
    pub tls: Option<Arc<rollcall_netserve::tls::ServerConfig>>,
    pub host: HostThresholds,
    /// `[host]` `exclude_mount_points` / `exclude_fs_types`: which disks are listed.
    pub disks: DiskFilter,
    pub services: Vec<Service>,
    /// The `[probe]` table: the synthetic user's mailbox, mail-loop and file-access probes.
    pub probes: ProbesConfig,
    /// The `[[usage]]` entries (SPEC section 14), measured in the background.
    pub usage: Vec<UsageConfig>,
}

/// When disk usage becomes a deficiency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostThresholds {
    pub disk_warning_percent: f64,
    pub disk_critical_percent: f64,
}

impl AttendantConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<AttendantConfig, ConfigError> {
        let text = rollcall_config::read_file(path)?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates `text` as read from `file` (relative paths resolve beside it).
    pub fn parse(file: &str, text: &str) -> Result<AttendantConfig, ConfigError> {
        let (mut raw, loc): (Raw, Located) = Located::parse(file, text)?;
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
        let mut disks = DiskFilter::default();
        let mut host_cx = TableCx::new(&loc, &mut p, "host");
        for (key, given, into) in [
            ("exclude_mount_points", raw.host.exclude_mount_points.take(), &mut disks.exclude_mount_points),
            ("exclude_fs_types", raw.host.exclude_fs_types.take(), &mut disks.exclude_fs_types),
        ] {
            if let Some(given) = given {
                *into = given
                    .iter()
                    .enumerate()
                    .filter_map(|(i, pattern)| fields::regex(&mut host_cx, &format!("{key}[{i}]"), pattern, whole))
                    .collect();
            }
        }

        let tls = tls(&raw, &loc, &mut p);
        let mut services = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, table) in raw.services.into_iter().enumerate() {
            let mut cx = TableCx::new(&loc, &mut p, format!("service[{i}]"));
            if let Some(s) = service(table, &mut cx, &mut seen) {
                services.push(s);
            }
        }

        let probes = raw.probe.validate(&mut TableCx::new(&loc, &mut p, "probe"));
        let usage = usage::validate(&raw.usage, &loc, &mut p);
        let max_clock_step = raw.max_clock_step.unwrap_or(Duration::from_secs(1000));
        if max_clock_step > MAX_CLOCK_STEP {
            p.push("max_clock_step", format!("{max_clock_step} is more than a day: no clock needs a larger step"));
        }
        if let Some(k) = &raw.poller_public_key {
            if let Err(e) = rollcall_protocol::clock_order::parse_public_key(k) {
                p.push("poller_public_key", e);
            }
        }
        p.finish()?;
        Ok(AttendantConfig {
            name: raw.name.unwrap_or_else(crate::host::hostname),
            listen,
            auth,
            clock,
            clock_offset_us,
            max_clock_step,
            poller_public_key: raw.poller_public_key,
            tls,
            host,
            disks,
            services,
            probes,
            usage,
        })
    }
}

/// `tls_cert_file`, `tls_key_file` and `client_ca_file`: read and checked now, so a
/// missing or mismatched file stops start-up (and `check-config`) naming the key.
fn tls(
    raw: &Raw,
    loc: &Located,
    p: &mut rollcall_config::Problems<'_>,
) -> Option<Arc<rollcall_netserve::tls::ServerConfig>> {
    let (cert, key) = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (Some(c), Some(k)) => (loc.resolve(c), loc.resolve(k)),
        (None, None) => {
            if raw.client_ca_file.is_some() {
                p.push("client_ca_file", "needs tls_cert_file and tls_key_file (mutual TLS is TLS first)");
            }
            return None;
        }
        (Some(_), None) => {
            p.push("tls_key_file", "missing: tls_cert_file needs the key file beside it");
            return None;
        }
        (None, Some(_)) => {
            p.push("tls_cert_file", "missing: tls_key_file needs the certificate file beside it");
            return None;
        }
    };
    let ca = raw.client_ca_file.as_ref().map(|f| loc.resolve(f));
    match rollcall_netserve::tls::server_config(&cert, &key, ca.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            // Named by the key whose file is wrong.
            use rollcall_netserve::tls::TlsError;
            let key_name = match &e {
                TlsError::NoKey { .. } => "tls_key_file",
                TlsError::NoCertificate { path } if *path == cert => "tls_cert_file",
                _ if e.path().is_some() && e.path() == ca.as_ref() => "client_ca_file",
                _ if e.path() == Some(&key) => "tls_key_file",
                _ => "tls_cert_file",
            };
            p.push(key_name, e.to_string());
            None
        }
    }
}

/// One `[[service]]`: `name`, `check` and `timeout` here, the rest by its kind; `None`
/// when a problem was pushed. `seen` holds the names read so far.
fn service(
    mut table: toml::Table,
    cx: &mut TableCx<'_, '_>,
    seen: &mut std::collections::HashSet<String>,
) -> Option<Service> {
    // Missing keys are problems named with the rest, not parse errors.
    let name = string_key(&mut table, "name", cx);
    let check = string_key(&mut table, "check", cx);
    let timeout = match table.remove("timeout").map(|v| v.try_into::<Duration>()) {
        None => Some(None),
        Some(Ok(t)) if t.get().is_zero() => {
            cx.push("timeout", "must be longer than 0");
            None
        }
        Some(Ok(t)) => Some(Some(t)),
        Some(Err(e)) => {
            cx.push("timeout", e.message().trim());
            None
        }
    };
    match &name {
        Some(n) if n.trim().is_empty() => cx.push("name", "must not be empty"),
        Some(n) if !seen.insert(n.clone()) => cx.push("name", format!("duplicate service name {n:?}")),
        _ => {}
    }
    let check = check?;
    let Some(kind) = kinds::find(&check) else {
        if check.is_empty() {
            cx.push_table(format!("missing: check = \"KIND\" (one of: {})", kinds::names()));
        } else {
            cx.push("check", format!("unknown check {check:?} (expected one of: {})", kinds::names()));
        }
        for key in table.keys().filter(|k| !kinds::known_key(k)) {
            cx.push(key, UNKNOWN_KEY);
        }
        return None;
    };
    let mut foreign = false;
    for key in table.keys().filter(|k| !kind.reads(k)) {
        foreign = true;
        if kinds::known_key(key) {
            cx.push(key, format!("not a key of check = {check:?} (its keys: {})", kind.keys.join(", ")));
        } else {
            cx.push(key, UNKNOWN_KEY);
        }
    }
    table.retain(|k, _| kind.reads(k));
    let parsed = (kind.parse)(&table, cx);
    if foreign {
        return None;
    }
    Some(Service { name: name?, timeout: timeout?.unwrap_or(kind.default_timeout), check: parsed? })
}

/// What `rollcall_config` says of a key no table knows.
const UNKNOWN_KEY: &str = "unknown key (check its spelling and section)";

/// Takes the string `key` out of `table` (empty when missing); another type is a problem,
/// and then the answer is `None`.
fn string_key(table: &mut toml::Table, key: &str, cx: &mut TableCx<'_, '_>) -> Option<String> {
    match table.remove(key) {
        None => Some(String::new()),
        Some(toml::Value::String(s)) => Some(s),
        Some(other) => {
            cx.push(key, format!("must be a string, not {}", other.type_str()));
            None
        }
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

#[cfg(test)]
mod tests;
