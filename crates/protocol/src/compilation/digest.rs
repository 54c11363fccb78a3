//! What the poller needs from a compilation at every poll, read without building one.
//!
//! Parsing the whole [`Compilation`] allocates every name, message and perfdata map: a
//! third of the poller's CPU at 5,000 polls/s (perf). A [`Digest`] reads the same document
//! with borrowed text, checks the same required fields and the types of what it keeps, and
//! skips messages and details (still checked to be well-formed JSON). The reply itself is
//! kept as received, so nothing is lost for the API or the dashboard: a digest is made
//! only of a document [`check_showable`](super::check_showable) accepts, so what is skipped here is still a
//! document the API can show.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::substance::hash_parts;
use super::{DecodeError, Deficiency, Header, Status};
use crate::SCHEMA_VERSION;

/// A compilation as the poller judges it: who answered, the clock stamps, the
/// deficiencies and the substance hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    pub attendant: String,
    /// T2 and T3 of the clock estimate.
    pub received_at: DateTime<Utc>,
    pub replied_at: DateTime<Utc>,
    pub deficiencies: Vec<Deficiency>,
    /// [`Compilation::substance_hash`](super::Compilation::substance_hash) of the same document.
    pub substance: i64,
}

#[derive(Deserialize)]
struct Wire<'a> {
    schema_version: u32,
    #[serde(borrow)]
    attendant: Attendant<'a>,
    #[serde(borrow)]
    time: Time<'a>,
    #[serde(borrow, default)]
    services: Vec<Item<'a>>,
    #[serde(borrow, default)]
    probes: Vec<Probe<'a>>,
    #[serde(borrow)]
    host: Host<'a>,
    #[serde(default)]
    deficiencies: Vec<Deficiency>,
}

#[derive(Deserialize)]
struct Attendant<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    hostname: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Time<'a> {
    #[allow(dead_code)]
    utc: IgnoredAny,
    utc_offset_seconds: i32,
    #[serde(borrow, default)]
    zone: Option<Cow<'a, str>>,
    #[serde(with = "crate::rfc3339_us")]
    received_at: DateTime<Utc>,
    #[serde(with = "crate::rfc3339_us")]
    replied_at: DateTime<Utc>,
}

/// A service; `check` is what substance keeps of its kind.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    check: Cow<'a, str>,
    status: Status,
    #[allow(dead_code)]
    observed_at: IgnoredAny,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    status: Status,
    #[allow(dead_code)]
    observed_at: IgnoredAny,
}

#[derive(Deserialize)]
struct Host<'a> {
    #[allow(dead_code)]
    uptime_s: IgnoredAny,
    #[allow(dead_code)]
    load: IgnoredAny,
    #[allow(dead_code)]
    cpu_percent: IgnoredAny,
    memory: Memory,
    #[serde(borrow, default)]
    disks: Vec<Disk<'a>>,
}

#[derive(Deserialize)]
struct Memory {
    total: u64,
    #[allow(dead_code)]
    used: IgnoredAny,
}

#[derive(Deserialize)]
struct Disk<'a> {
    #[serde(borrow)]
    mount: Cow<'a, str>,
    total: u64,
    #[allow(dead_code)]
    used: IgnoredAny,
}

impl Digest {
    /// Reads a compilation's digest; errors exactly as [`Compilation::from_slice`](super::Compilation::from_slice)
    /// does for a document of another schema version or without the v1 fields.
    pub fn from_slice(bytes: &[u8]) -> Result<Digest, DecodeError> {
        // One UTF-8 pass over the whole reply (SIMD), then serde_json reads it as text and
        // does not validate each string again: `from_utf8` and `parse_str` were a tenth of
        // the poller's CPU at 1,000 polls/s (perf). A reply that is not UTF-8 takes the
        // byte reader, which says where it breaks.
        let text = simdutf8::basic::from_utf8(bytes).ok();
        let read = match text {
            Some(text) => serde_json::from_str::<Wire>(text),
            None => serde_json::from_slice::<Wire>(bytes),
        };
        let w = match read {
            Ok(w) if w.schema_version == SCHEMA_VERSION => {
                match text {
                    Some(text) => super::showable::check_showable_text(text)?,
                    None => super::showable::check_showable(bytes)?,
                }
                w
            }
            Ok(w) => return Err(DecodeError::Incompatible { found: u64::from(w.schema_version) }),
            Err(e) => {
                return match serde_json::from_slice::<Header>(bytes) {
                    Ok(Header { schema_version: Some(v) }) if v != u64::from(SCHEMA_VERSION) => {
                        Err(DecodeError::Incompatible { found: v })
                    }
                    _ => Err(DecodeError::Malformed(e)),
                }
            }
        };
        let substance = hash_parts(
            [&w.attendant.name, &w.attendant.version, &w.attendant.hostname],
            (i64::from(w.time.utc_offset_seconds), w.time.zone.as_deref()),
            w.services.iter().map(|s| (s.name.as_ref(), s.check.as_ref(), s.status)),
            w.probes.iter().map(|p| (p.name.as_ref(), p.kind.as_ref(), p.status)),
            w.deficiencies.iter().map(|d| (d.source.as_str(), d.severity)),
            w.host.memory.total,
            w.host.disks.iter().map(|d| (d.mount.as_ref(), d.total)),
        );
        Ok(Digest {
            attendant: w.attendant.name.into_owned(),
            received_at: w.time.received_at,
            replied_at: w.time.replied_at,
            deficiencies: w.deficiencies,
            substance,
        })
    }
}
