//! The virtual servers: which ones misbehave and how, and what each one answers.
//!
//! Rules it keeps: a server's kind, its services (10–20 of a mail server's usual ones),
//! host figures and clock offset all derive from `(seed, index)`; knob fractions are exact
//! counts (`round(fraction × N)`), assigned by a hashed rank so misbehaving servers are
//! spread over the fleet, not clumped at its start; per server the simulator keeps only a
//! kind and a request counter.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rollcall_protocol::{
    AttendantInfo, CheckResult, Compilation, Deficiency, Disk, HostUsage, Memory, ProbeResult, Severity, Status,
    TimeReport, SCHEMA_VERSION,
};
use serde_json::{Map, Value};

use crate::stats::Stats;

/// How a virtual server behaves when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Answers at once, nothing wrong.
    Healthy,
    /// Answers at once with its directory service critical, every time.
    Deficient,
    /// Answers at once, deficient and clean in turn (see [`Knobs::flap_every`]).
    Flapping,
    /// Answers healthy after [`Knobs::slow_delay`].
    Slow,
    /// Reads the request and never answers; the connection is closed after
    /// [`Knobs::hang_for`] so hung polls cannot pile up sockets forever.
    Hung,
    /// Resets the connection: at accept when addressed by IP, after the request otherwise.
    Unreachable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Healthy => "healthy",
            Kind::Deficient => "deficient",
            Kind::Flapping => "flapping",
            Kind::Slow => "slow",
            Kind::Hung => "hung",
            Kind::Unreachable => "unreachable",
        }
    }
}

/// The fleet's make-up: fractions of servers of each misbehaving kind, and how they misbehave.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub deficient: f64,
    pub flapping: f64,
    pub slow: f64,
    pub hung: f64,
    pub unreachable: f64,
    /// How long a slow server takes to answer.
    pub slow_delay: Duration,
    /// How long a hung server holds a request before dropping the connection unanswered.
    pub hang_for: Duration,
    /// A flapping server changes between deficient and clean every this many requests.
    pub flap_every: u32,
    /// Varies the fleet (services, figures, which servers misbehave).
    pub seed: u64,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            deficient: 0.0,
            flapping: 0.0,
            slow: 0.0,
            hung: 0.0,
            unreachable: 0.0,
            slow_delay: Duration::from_millis(300),
            hang_for: Duration::from_secs(60),
            flap_every: 1,
            seed: 1,
        }
    }
}

/// Knobs that cannot describe a fleet.
#[derive(Debug, thiserror::Error)]
pub enum KnobsError {
    #[error("{name} = {value} is not a fraction between 0 and 1")]
    NotAFraction { name: &'static str, value: f64 },
    #[error("the fractions of misbehaving servers add up to {0}, more than 1")]
    TooMany(f64),
    #[error("flap_every must be at least 1")]
    FlapEvery,
}

impl Knobs {
    fn fractions(&self) -> [(&'static str, f64, Kind); 5] {
        [
            ("unreachable", self.unreachable, Kind::Unreachable),
            ("hung", self.hung, Kind::Hung),
            ("slow", self.slow, Kind::Slow),
            ("flapping", self.flapping, Kind::Flapping),
            ("deficient", self.deficient, Kind::Deficient),
        ]
    }

    /// Checks every fraction is in [0, 1] and that they fit in one fleet.
    pub fn validate(&self) -> Result<(), KnobsError> {
        let mut sum = 0.0;
        for (name, value, _) in self.fractions() {
            if !(0.0..=1.0).contains(&value) {
                return Err(KnobsError::NotAFraction { name, value });
            }
            sum += value;
        }
        if sum > 1.0 + 1e-9 {
            return Err(KnobsError::TooMany(sum));
        }
        if self.flap_every == 0 {
            return Err(KnobsError::FlapEvery);
        }
        Ok(())
    }
}

/// One virtual server's mutable part.
struct Slot {
    kind: Kind,
    /// Requests for its compilation or metrics so far (drives flapping).
    asked: AtomicU32,
}

/// The whole virtual fleet and its request counters.
pub struct VirtualFleet {
    knobs: Knobs,
    slots: Vec<Slot>,
    /// When the fleet started (uptime and slowly varying figures follow it).
    started: DateTime<Utc>,
    pub stats: Stats,
}

/// A mail server's usual services: (name, check, what an ok answer says, perfdata key).
const SERVICES: [(&str, &str, &str, &str); 20] = [
    ("directory", "ldap", "LDAP OK - bind and base search", "time"),
    ("message-store", "imap", "IMAP OK - STARTTLS, login", "time"),
    ("mta", "smtp", "SMTP OK - 220 ESMTP Postfix", "time"),
    ("submission", "smtp", "SMTP OK - 220 submission, STARTTLS", "time"),
    ("webmail", "http", "HTTP OK: HTTP/1.1 200 OK", "time"),
    ("spam-filter", "tcp", "TCP OK - rspamd on 127.0.0.1:11333", "time"),
    ("antivirus", "process", "PROCS OK: 1 process with command name 'clamd'", "procs"),
    ("dns", "tcp", "TCP OK - 127.0.0.1:53", "time"),
    ("ntp", "systemd", "chrony.service active (running)", "time"),
    ("backup", "command", "FILE_AGE OK: /var/backups/mail.tar is 3600 seconds old", "age"),
    ("lmtp", "tcp", "TCP OK - 127.0.0.1:24", "time"),
    ("sieve", "tcp", "TCP OK - 127.0.0.1:4190", "time"),
    ("file-sharing", "systemd", "smbd.service active (running)", "time"),
    ("fax", "command", "HYLAFAX OK - modem ready", "time"),
    ("mail-queue", "command", "OK: mailq is empty", "queue"),
    ("ssh", "process", "PROCS OK: 1 process with command name 'sshd'", "procs"),
    ("cron", "systemd", "cron.service active (running)", "time"),
    ("database", "tcp", "TCP OK - 127.0.0.1:5432", "time"),
    ("web", "http", "HTTP OK: HTTP/1.1 200 OK", "time"),
    ("certificates", "command", "SSL OK - certificate will expire in 63 days", "days"),
];

/// The mailbox probes every attendant reports (SPEC section 2).
const PROBES: [(&str, &str, u32); 4] = [
    ("login", "mailbox", 60),
    ("mail_read", "mailbox", 60),
    ("refresh", "mailbox", 300),
    ("mail_loop", "mail_loop", 300),
];

/// SplitMix64: the fleet's only source of variety, fixed so runs are comparable.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl VirtualFleet {
    /// A fleet of `servers` virtual attendants made up as `knobs` say.
    pub fn new(servers: usize, knobs: Knobs) -> Result<VirtualFleet, KnobsError> {
        knobs.validate()?;
        let mut order: Vec<usize> = (0..servers).collect();
        order.sort_by_key(|&i| mix(knobs.seed ^ mix(i as u64)));
        let mut kinds = vec![Kind::Healthy; servers];
        let mut next = 0usize;
        for (_, fraction, kind) in knobs.fractions() {
            let count = ((fraction * servers as f64).round() as usize).min(servers - next);
            for &i in &order[next..next + count] {
                kinds[i] = kind;
            }
            next += count;
        }
        let slots = kinds.into_iter().map(|kind| Slot { kind, asked: AtomicU32::new(0) }).collect();
        Ok(VirtualFleet { knobs, slots, started: Utc::now(), stats: Stats::new(servers) })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// How server `i` behaves (`Healthy` for an index outside the fleet).
    pub fn kind(&self, i: usize) -> Kind {
        self.slots.get(i).map_or(Kind::Healthy, |s| s.kind)
    }

    /// The name the target lists give server `i`; also its attendant name and hostname.
    pub fn name(i: usize) -> String {
        format!("sim-{i:05}")
    }

    fn hash(&self, i: usize, what: u64) -> u64 {
        mix(self.knobs.seed.wrapping_mul(0x100_0000_01b3) ^ mix((i as u64) << 8 | what))
    }

    /// The virtual clock's error against real time, in ms: within ±800 ms, so a poller's
    /// default `max_clock_skew` of 2 s leaves it alone.
    pub fn clock_offset_ms(&self, i: usize) -> i64 {
        (self.hash(i, 1) % 1601) as i64 - 800
    }

    /// Counts one request for server `i`'s state and says whether it is deficient now.
    fn deficient_now(&self, i: usize) -> bool {
        let Some(slot) = self.slots.get(i) else { return false };
        let n = slot.asked.fetch_add(1, Ordering::Relaxed);
        match slot.kind {
            Kind::Deficient => true,
            Kind::Flapping => (n / self.knobs.flap_every).is_multiple_of(2),
            _ => false,
        }
    }

    fn service_count(&self, i: usize) -> usize {
        10 + (self.hash(i, 2) % 11) as usize
    }

    /// Server `i`'s compilation at `now` (real time); `received_at` is when the request
    /// arrived. Counts the request (flapping servers change on it).
    pub fn compilation(&self, i: usize, received_at: DateTime<Utc>, now: DateTime<Utc>) -> Compilation {
        let deficient = self.deficient_now(i);
        let offset = chrono::Duration::milliseconds(self.clock_offset_ms(i));
        let vnow = now + offset;
        let first = (self.hash(i, 3) % SERVICES.len() as u64) as usize;
        let n = self.service_count(i);
        let elapsed = (now - self.started).num_milliseconds().max(0) as f64 / 1000.0;
        let mut services = Vec::with_capacity(n);
        for k in 0..n {
            // The directory is always listed: it is what a deficient server loses.
            let (name, check, ok, key) = if k == 0 { SERVICES[0] } else { SERVICES[1 + (first + k) % 19] };
            let down = k == 0 && deficient;
            let ms = 1.0 + (self.hash(i, 10 + k as u64) % 40) as f64 / 4.0;
            let mut details = Map::new();
            details.insert(key.to_string(), Value::from(ms / 1000.0));
            services.push(CheckResult {
                name: name.to_string(),
                check: check.to_string(),
                status: if down { Status::Critical } else { Status::Ok },
                message: if down {
                    "LDAP CRITICAL - bind failed: connection refused".into()
                } else {
                    format!("{ok} in {ms:.1} ms")
                },
                observed_at: vnow,
                duration_ms: ms,
                details,
            });
        }
        let probes = PROBES
            .iter()
            .map(|&(name, kind, every)| {
                let age = (elapsed as u64 + self.hash(i, 40) % u64::from(every)) % u64::from(every);
                let mut details = Map::new();
                if name == "mail_loop" {
                    details.insert("latency_ms".into(), Value::from(800 + self.hash(i, 41) % 2000));
                }
                ProbeResult {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    status: Status::Ok,
                    message: format!("{name} ok"),
                    observed_at: vnow - chrono::Duration::seconds(age as i64),
                    duration_ms: 20.0 + (self.hash(i, 42) % 200) as f64,
                    details,
                }
            })
            .collect::<Vec<_>>();
        let wave = (elapsed / 300.0 + (self.hash(i, 5) % 628) as f64 / 100.0).sin();
        let gib = 1u64 << 30;
        let mem_total = gib * [8, 16, 32][(self.hash(i, 6) % 3) as usize];
        let disk = |mount: &str, total_gib: u64, salt: u64| {
            let total = total_gib * gib;
            let used = total / 100 * (35 + self.hash(i, salt) % 40);
            Disk { mount: mount.to_string(), total, used }
        };
        let host = HostUsage {
            uptime_s: 86_400 * (1 + self.hash(i, 7) % 200) + elapsed as u64,
            load: [0.4 + 0.3 * wave, 0.4 + 0.2 * wave, 0.4 + 0.1 * wave],
            cpu_percent: 12.0 + 8.0 * wave,
            memory: Memory { total: mem_total, used: (mem_total as f64 * (0.5 + 0.1 * wave)) as u64 },
            disks: vec![disk("/", 40, 8), disk("/var/mail", 500, 9)],
        };
        let mut deficiencies = Vec::new();
        for s in services.iter().filter(|s| s.status != Status::Ok) {
            deficiencies.push(Deficiency {
                source: format!("service:{}", s.name),
                severity: Severity::Critical,
                summary: format!("{} {}: {}", s.name, s.status, s.message),
            });
        }
        let name = Self::name(i);
        Compilation {
            schema_version: SCHEMA_VERSION,
            attendant: AttendantInfo { name: name.clone(), version: "0.1.0-sim".into(), hostname: name },
            time: TimeReport {
                utc: vnow,
                utc_offset_seconds: 3600,
                zone: Some("Europe/Berlin".into()),
                received_at: received_at + offset,
                replied_at: vnow,
            },
            services,
            probes,
            host,
            deficiencies,
            usage: Vec::new(),
        }
    }

    /// The same information as [`Self::compilation`] as Prometheus exposition text: one
    /// gauge per service and probe status (0 ok, 1 warning, 2 critical, 3 unknown), host
    /// usage, the deficiency count and the clock. Counts the request like a compilation.
    pub fn exposition(&self, i: usize, now: DateTime<Utc>) -> String {
        let c = self.compilation(i, now, now);
        let code = |s: Status| match s {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        };
        let mut out = String::with_capacity(2048);
        out.push_str("# TYPE rollcall_service_status gauge\n");
        for s in &c.services {
            let _ = writeln!(
                out,
                "rollcall_service_status{{service=\"{}\",check=\"{}\"}} {}",
                s.name,
                s.check,
                code(s.status)
            );
        }
        out.push_str("# TYPE rollcall_probe_status gauge\n");
        for p in &c.probes {
            let _ = writeln!(out, "rollcall_probe_status{{probe=\"{}\"}} {}", p.name, code(p.status));
        }
        let h = &c.host;
        let _ = write!(
            out,
            "# TYPE rollcall_host_uptime_seconds gauge\nrollcall_host_uptime_seconds {}\n\
             # TYPE rollcall_host_load gauge\nrollcall_host_load{{minutes=\"1\"}} {:.2}\nrollcall_host_load{{minutes=\"5\"}} {:.2}\nrollcall_host_load{{minutes=\"15\"}} {:.2}\n\
             # TYPE rollcall_host_cpu_percent gauge\nrollcall_host_cpu_percent {:.1}\n\
             # TYPE rollcall_host_memory_bytes gauge\nrollcall_host_memory_bytes{{kind=\"total\"}} {}\nrollcall_host_memory_bytes{{kind=\"used\"}} {}\n",
            h.uptime_s, h.load[0], h.load[1], h.load[2], h.cpu_percent, h.memory.total, h.memory.used
        );
        out.push_str("# TYPE rollcall_host_disk_bytes gauge\n");
        for d in &h.disks {
            let _ = writeln!(out, "rollcall_host_disk_bytes{{mount=\"{}\",kind=\"total\"}} {}", d.mount, d.total);
            let _ = writeln!(out, "rollcall_host_disk_bytes{{mount=\"{}\",kind=\"used\"}} {}", d.mount, d.used);
        }
        let _ = write!(
            out,
            "# TYPE rollcall_deficiencies gauge\nrollcall_deficiencies {}\n\
             # TYPE rollcall_clock_seconds gauge\nrollcall_clock_seconds {:.3}\n",
            c.deficiencies.len(),
            c.time.utc.timestamp_millis() as f64 / 1000.0
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_fractions_are_exact_counts() {
        let knobs = Knobs { deficient: 0.1, flapping: 0.05, hung: 0.02, unreachable: 0.01, ..Knobs::default() };
        let f = VirtualFleet::new(1000, knobs).unwrap();
        let count = |k| (0..1000).filter(|&i| f.kind(i) == k).count();
        assert_eq!(
            [count(Kind::Deficient), count(Kind::Flapping), count(Kind::Hung), count(Kind::Unreachable)],
            [100, 50, 20, 10]
        );
        assert!(f.kind(0) == Kind::Healthy || f.kind(1) == Kind::Healthy, "spread, not clumped at the start");
    }

    #[test]
    fn knobs_out_of_range_are_refused() {
        assert!(VirtualFleet::new(10, Knobs { hung: 1.5, ..Knobs::default() }).is_err());
        assert!(VirtualFleet::new(10, Knobs { hung: 0.6, slow: 0.6, ..Knobs::default() }).is_err());
    }

    #[test]
    fn compilations_are_realistic_and_flapping_alternates() {
        let f = VirtualFleet::new(4, Knobs { flapping: 0.25, deficient: 0.25, ..Knobs::default() }).unwrap();
        let now = Utc::now();
        for i in 0..4 {
            let c = f.compilation(i, now, now);
            assert!((10..=20).contains(&c.services.len()), "{}", c.services.len());
            assert_eq!(c.probes.len(), 4);
            let names: std::collections::HashSet<_> = c.services.iter().map(|s| &s.name).collect();
            assert_eq!(names.len(), c.services.len(), "service names are unique");
            let bytes = serde_json::to_vec(&c).unwrap();
            let back = Compilation::from_slice(&bytes).unwrap();
            assert_eq!((back.services.len(), back.deficiencies), (c.services.len(), c.deficiencies));
        }
        let flapping = (0..4).find(|&i| f.kind(i) == Kind::Flapping).unwrap();
        let seen: Vec<usize> = (0..4).map(|_| f.compilation(flapping, now, now).deficiencies.len()).collect();
        assert_eq!(seen, [0, 1, 0, 1], "the first request above was deficient");
        let deficient = (0..4).find(|&i| f.kind(i) == Kind::Deficient).unwrap();
        let text = f.exposition(deficient, now);
        assert!(text.contains("rollcall_service_status{service=\"directory\",check=\"ldap\"} 2"), "{text}");
        assert!(text.contains("rollcall_deficiencies 1"));
    }
}
