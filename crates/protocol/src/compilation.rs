//! Schema v1 types (SPEC section 1) and the reader that turns bytes into a [`Compilation`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::SCHEMA_VERSION;

/// The one document an attendant answers `GET /v1/compilation` with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compilation {
    pub schema_version: u32,
    pub attendant: AttendantInfo,
    pub time: TimeReport,
    #[serde(default)]
    pub services: Vec<CheckResult>,
    #[serde(default)]
    pub probes: Vec<ProbeResult>,
    pub host: HostUsage,
    #[serde(default)]
    pub deficiencies: Vec<Deficiency>,
    /// Usage reports (SPEC section 14); absent when the attendant configures none, so
    /// documents without them stay as they were. Readers of schema 1 ignore it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<UsageReport>,
}

/// Who answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttendantInfo {
    pub name: String,
    pub version: String,
    pub hostname: String,
}

/// The server's clock as the attendant sees it (virtual offset included).
///
/// `received_at` and `replied_at` are the attendant's T2 and T3 of the NTP-style
/// offset estimate the poller makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeReport {
    #[serde(with = "crate::rfc3339_ms")]
    pub utc: DateTime<Utc>,
    pub utc_offset_seconds: i32,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(with = "crate::rfc3339_us")]
    pub received_at: DateTime<Utc>,
    #[serde(with = "crate::rfc3339_us")]
    pub replied_at: DateTime<Utc>,
}

/// Outcome of a check or probe, in the Nagios plugin convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// Maps a plugin exit code (0/1/2/3); anything else is `unknown`.
    pub fn from_exit_code(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::Warning,
            2 => Status::Critical,
            _ => Status::Unknown,
        }
    }

    /// The deficiency severity this status implies, if any. `unknown` counts as a warning:
    /// the attendant could not tell, which an operator must look at but need not be woken for.
    pub fn severity(self) -> Option<Severity> {
        match self {
            Status::Ok => None,
            Status::Warning | Status::Unknown => Some(Severity::Warning),
            Status::Critical => Some(Severity::Critical),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `services[]`: a service the attendant's own config lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub check: String,
    pub status: Status,
    #[serde(default)]
    pub message: String,
    #[serde(with = "crate::rfc3339_ms")]
    pub observed_at: DateTime<Utc>,
    #[serde(default)]
    pub duration_ms: f64,
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// One entry of `probes[]`: a background synthetic probe's last result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub name: String,
    pub kind: String,
    pub status: Status,
    #[serde(default)]
    pub message: String,
    #[serde(with = "crate::rfc3339_ms")]
    pub observed_at: DateTime<Utc>,
    #[serde(default)]
    pub duration_ms: f64,
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// One entry of `usage[]` (SPEC section 14): a figure of the server's use of its software,
/// measured in the background by a `[[usage]]` of the attendant's config, e.g. the
/// messages in the MTA's queue or the logged-in IMAP sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The `[[usage]]` name; for `kind = "command"` the name, a dot and the perfdata label.
    pub name: String,
    /// The figure; `null` when it could not be measured (`message` says why).
    pub value: Option<f64>,
    /// What `value` counts or measures: `messages`, `sessions`, a perfdata unit (`%`, `B`,
    /// `s`); empty when it is a plain number.
    #[serde(default)]
    pub unit: String,
    #[serde(with = "crate::rfc3339_ms")]
    pub observed_at: DateTime<Utc>,
    #[serde(default)]
    pub message: String,
}

/// A service or a probe result, seen the same way by code that treats both alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResultView<'a> {
    /// `service` or `probe`: the deficiency source prefix.
    pub section: &'static str,
    pub name: &'a str,
    /// The check (services) or kind (probes).
    pub kind: &'a str,
    pub status: Status,
    pub message: &'a str,
    pub observed_at: DateTime<Utc>,
    pub duration_ms: f64,
}

impl CheckResult {
    pub fn view(&self) -> ResultView<'_> {
        ResultView {
            section: "service",
            name: &self.name,
            kind: &self.check,
            status: self.status,
            message: &self.message,
            observed_at: self.observed_at,
            duration_ms: self.duration_ms,
        }
    }
}

impl ProbeResult {
    pub fn view(&self) -> ResultView<'_> {
        ResultView {
            section: "probe",
            name: &self.name,
            kind: &self.kind,
            status: self.status,
            message: &self.message,
            observed_at: self.observed_at,
            duration_ms: self.duration_ms,
        }
    }
}

/// Host usage, always present and cheap (cached by the attendant).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostUsage {
    pub uptime_s: u64,
    pub load: [f64; 3],
    pub cpu_percent: f64,
    pub memory: Memory,
    #[serde(default)]
    pub disks: Vec<Disk>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total: u64,
    pub used: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// The mount point.
    pub mount: String,
    /// Bytes its users can fill: used + available, so used / total is `df`'s Use%
    /// (blocks reserved for root count neither way).
    pub total: u64,
    /// Bytes in use: blocks − free blocks, as `df`'s Used.
    pub used: u64,
}

/// How bad a deficiency is. Ordered: `critical` > `warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something wrong with the server: `source` says where (`service:NAME`, `probe:NAME`,
/// `host:...`, and at the poller `poll:KIND`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deficiency {
    pub source: String,
    pub severity: Severity,
    pub summary: String,
}

/// Why bytes from an attendant are not a usable compilation.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Valid JSON of another schema version: the attendant is newer or older than we read.
    #[error("incompatible attendant: schema_version {found}, this poller reads {SCHEMA_VERSION}")]
    Incompatible { found: u64 },
    /// Not JSON, or JSON without the v1 fields.
    #[error("malformed compilation: {0}")]
    Malformed(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Header {
    schema_version: Option<u64>,
}

impl Compilation {
    /// Reads a compilation, ignoring unknown fields; another `schema_version` is
    /// [`DecodeError::Incompatible`] even where the fields happen to fit. Like every
    /// reader, it accepts only what [`check_showable`] does.
    pub fn from_slice(bytes: &[u8]) -> Result<Compilation, DecodeError> {
        match serde_json::from_slice::<Compilation>(bytes) {
            Ok(c) if c.schema_version == SCHEMA_VERSION => {
                showable::check_showable_read(bytes)?;
                Ok(c)
            }
            Ok(c) => Err(DecodeError::Incompatible { found: u64::from(c.schema_version) }),
            Err(e) => match serde_json::from_slice::<Header>(bytes) {
                Ok(Header { schema_version: Some(v) }) if v != u64::from(SCHEMA_VERSION) => {
                    Err(DecodeError::Incompatible { found: v })
                }
                _ => Err(DecodeError::Malformed(e)),
            },
        }
    }

    /// The worst status among services and probes, `ok` when there are none.
    pub fn worst_status(&self) -> Status {
        self.results().map(|r| r.status).max().unwrap_or(Status::Ok)
    }

    /// Every service, then every probe.
    pub fn results(&self) -> impl Iterator<Item = ResultView<'_>> {
        self.services.iter().map(CheckResult::view).chain(self.probes.iter().map(ProbeResult::view))
    }
}

mod digest;
mod showable;
mod substance;

pub use digest::Digest;
pub use showable::{check_showable, MAX_DEPTH};
#[cfg(test)]
mod tests;
