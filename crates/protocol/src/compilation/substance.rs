//! A compilation's *substance*: what an operator would call a change. The poller keeps a
//! compilation in its history only when this differs from the server's previous one.
//!
//! Substance: the attendant's identity, the zone, which services and probes there are with
//! their check kind and status, the deficiencies (source and severity), the disks' mounts
//! and sizes and the memory size. Not substance: times, durations, messages, details
//! (perfdata) and usage figures (load, CPU, memory and disk used), which differ on every poll.
//!
//! The hash is stored, so its input is fixed forever: FNV-1a (not the standard library's
//! hasher, which may change between releases) fed the same shapes in the same order as
//! when it was first written, so a stored hash still compares equal after an upgrade.

use std::hash::{Hash, Hasher};

use super::{Compilation, Severity, Status};

#[derive(Hash)]
struct Named<'a> {
    name: Option<&'a str>,
    version: Option<&'a str>,
    hostname: Option<&'a str>,
}

#[derive(Hash)]
struct Zone<'a> {
    utc_offset_seconds: Option<i64>,
    zone: Option<&'a str>,
}

#[derive(Hash)]
struct Item<'a> {
    name: Option<&'a str>,
    check: Option<&'a str>,
    kind: Option<&'a str>,
    status: Option<&'a str>,
}

#[derive(Hash)]
struct Def<'a> {
    source: Option<&'a str>,
    severity: Option<&'a str>,
}

#[derive(Hash)]
struct Total {
    total: Option<u64>,
}

#[derive(Hash)]
struct DiskSize<'a> {
    mount: Option<&'a str>,
    total: Option<u64>,
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One service or probe as substance sees it: name, check (services) or kind (probes), status.
pub(crate) type ItemParts<'a> = (&'a str, &'a str, Status);

/// Hashes the substance from its parts, whoever parsed them (the full [`Compilation`] or
/// the poller's [`super::Digest`]): one definition, so both always agree.
#[allow(clippy::too_many_arguments)]
pub(crate) fn hash_parts<'a>(
    attendant: [&'a str; 3],
    zone: (i64, Option<&'a str>),
    services: impl ExactSizeIterator<Item = ItemParts<'a>>,
    probes: impl ExactSizeIterator<Item = ItemParts<'a>>,
    deficiencies: impl ExactSizeIterator<Item = (&'a str, Severity)>,
    memory_total: u64,
    disks: impl ExactSizeIterator<Item = (&'a str, u64)>,
) -> i64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let [name, version, hostname] = attendant;
    Some(Named { name: Some(name), version: Some(version), hostname: Some(hostname) }).hash(&mut h);
    Some(Zone { utc_offset_seconds: Some(zone.0), zone: zone.1 }).hash(&mut h);
    // A slice hashes as its length, then each element (what the stored hashes were fed).
    h.write_usize(services.len());
    for (name, check, status) in services {
        Item { name: Some(name), check: Some(check), kind: None, status: Some(status.as_str()) }.hash(&mut h);
    }
    h.write_usize(probes.len());
    for (name, kind, status) in probes {
        Item { name: Some(name), check: None, kind: Some(kind), status: Some(status.as_str()) }.hash(&mut h);
    }
    h.write_usize(deficiencies.len());
    for (source, severity) in deficiencies {
        Def { source: Some(source), severity: Some(severity.as_str()) }.hash(&mut h);
    }
    Some(Total { total: Some(memory_total) }).hash(&mut h);
    h.write_usize(disks.len());
    for (mount, total) in disks {
        DiskSize { mount: Some(mount), total: Some(total) }.hash(&mut h);
    }
    h.finish() as i64
}

impl Compilation {
    /// The hash of this compilation's substance (see the module doc).
    pub fn substance_hash(&self) -> i64 {
        let a = &self.attendant;
        hash_parts(
            [&a.name, &a.version, &a.hostname],
            (i64::from(self.time.utc_offset_seconds), self.time.zone.as_deref()),
            self.services.iter().map(|s| (s.name.as_str(), s.check.as_str(), s.status)),
            self.probes.iter().map(|p| (p.name.as_str(), p.kind.as_str(), p.status)),
            self.deficiencies.iter().map(|d| (d.source.as_str(), d.severity)),
            self.host.memory.total,
            self.host.disks.iter().map(|d| (d.mount.as_str(), d.total)),
        )
    }
}
