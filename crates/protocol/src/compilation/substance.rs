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

use super::Compilation;

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

impl Compilation {
    /// The hash of this compilation's substance (see the module doc).
    pub fn substance_hash(&self) -> i64 {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        let a = &self.attendant;
        Some(Named { name: Some(&a.name), version: Some(&a.version), hostname: Some(&a.hostname) }).hash(&mut h);
        Some(Zone {
            utc_offset_seconds: Some(i64::from(self.time.utc_offset_seconds)),
            zone: self.time.zone.as_deref(),
        })
        .hash(&mut h);
        let services: Vec<Item> = self
            .services
            .iter()
            .map(|s| Item { name: Some(&s.name), check: Some(&s.check), kind: None, status: Some(s.status.as_str()) })
            .collect();
        services.hash(&mut h);
        let probes: Vec<Item> = self
            .probes
            .iter()
            .map(|p| Item { name: Some(&p.name), check: None, kind: Some(&p.kind), status: Some(p.status.as_str()) })
            .collect();
        probes.hash(&mut h);
        let defs: Vec<Def> = self
            .deficiencies
            .iter()
            .map(|d| Def { source: Some(&d.source), severity: Some(d.severity.as_str()) })
            .collect();
        defs.hash(&mut h);
        Some(Total { total: Some(self.host.memory.total) }).hash(&mut h);
        let disks: Vec<DiskSize> =
            self.host.disks.iter().map(|d| DiskSize { mount: Some(&d.mount), total: Some(d.total) }).collect();
        disks.hash(&mut h);
        h.finish() as i64
    }
}
