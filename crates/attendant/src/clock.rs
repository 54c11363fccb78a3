//! The attendant's clock: the time it reports, and the offset a clock order moves when
//! the clock is virtual (`clock_keeper` decides whether an order is applied).
//!
//! `clock = "virtual"` keeps an offset inside the attendant instead of touching the OS
//! clock, so tests and demos can run drifted servers without ever changing the machine's
//! real time. `clock = "system"` reports the OS clock as it is.
//!
//! The zone ([`ZoneSource`], [`Zone`]) is read once at start from wherever the machine sets
//! it (TZ, /etc/localtime as a link or a copy, /etc/timezone), its offset taken at each
//! compilation (so a DST change shows at once), whole seconds (`+05:45` is 20700).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// Which clock the attendant reports and corrects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    System,
    Virtual,
}

/// The attendant's notion of now.
#[derive(Debug)]
pub struct Clock {
    mode: ClockMode,
    /// Virtual mode only: the error against real time, in microseconds.
    offset_us: AtomicI64,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { mode: ClockMode::System, offset_us: AtomicI64::new(0) }
    }

    /// A virtual clock running `offset_us` ahead of (or, negative, behind) real time.
    pub fn virtual_with_offset(offset_us: i64) -> Clock {
        Clock { mode: ClockMode::Virtual, offset_us: AtomicI64::new(offset_us) }
    }

    pub fn mode(&self) -> ClockMode {
        self.mode
    }

    /// The virtual offset in microseconds (always 0 for the system clock).
    pub fn offset_us(&self) -> i64 {
        self.offset_us.load(Ordering::Relaxed)
    }

    /// Moves a virtual clock by `us` microseconds (a clock order applied).
    pub fn adjust(&self, us: i64) {
        if self.mode == ClockMode::Virtual {
            self.offset_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        match self.mode {
            ClockMode::System => now,
            ClockMode::Virtual => now + chrono::Duration::microseconds(self.offset_us()),
        }
    }
}

/// Where a Linux administrator sets the time zone, read in the order the C library reads
/// them (tzset(3)): the `TZ` variable; else `/etc/localtime` (a link into the zone
/// files, or a copy of one); else Debian's `/etc/timezone` (a zone name); else UTC.
/// Every path is a field, so a test points them at a temp dir and never at the machine's
/// real zone.
#[derive(Debug, Clone)]
pub struct ZoneSource {
    /// The `TZ` environment variable (`Asia/Kolkata`, `:Asia/Kolkata`, a file path, or a
    /// POSIX rule such as `IST-5:30`).
    pub tz: Option<String>,
    pub localtime: PathBuf,
    pub timezone_file: PathBuf,
    /// The zone files (`TZDIR`, default `/usr/share/zoneinfo`).
    pub zoneinfo: PathBuf,
}

/// A resolved zone: its IANA name when one is known, and its rules.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `Asia/Kathmandu`; `None` for a POSIX rule in `TZ` or an unnamed copy.
    pub name: Option<String>,
    rules: jiff::tz::TimeZone,
}

impl Zone {
    /// UTC, named so.
    pub fn utc() -> Zone {
        Zone { name: Some("UTC".into()), rules: jiff::tz::TimeZone::UTC }
    }

    /// The offset from UTC at `at`, in seconds (`+05:45` is 20700).
    pub fn offset_seconds(&self, at: DateTime<Utc>) -> i32 {
        let ts = jiff::Timestamp::from_second(at.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        self.rules.to_offset(ts).seconds()
    }
}

impl ZoneSource {
    /// This machine's: `TZ` from the environment, `/etc/localtime`, `/etc/timezone`, and the
    /// zone files under `TZDIR` or `/usr/share/zoneinfo`.
    pub fn system() -> ZoneSource {
        ZoneSource {
            tz: std::env::var("TZ").ok(),
            localtime: "/etc/localtime".into(),
            timezone_file: "/etc/timezone".into(),
            zoneinfo: std::env::var_os("TZDIR").map_or_else(|| "/usr/share/zoneinfo".into(), PathBuf::from),
        }
    }

    /// The zone these settings give (see [`ZoneSource`] for the order). Settings that
    /// cannot be read are passed over, as the C library does, down to UTC.
    pub fn resolve(&self) -> Zone {
        if let Some(tz) = self.tz.as_deref().filter(|t| !t.is_empty()) {
            if let Some(z) = self.zone_of_tz(tz) {
                return z;
            }
        }
        if let Ok(data) = std::fs::read(&self.localtime) {
            let linked = std::fs::read_link(&self.localtime).ok().and_then(|t| zone_name(&t.display().to_string()));
            let name = linked
                .or_else(|| self.named_in_timezone_file().filter(|n| self.file_of(n).as_deref() == Some(&data[..])))
                .or_else(|| self.same_file_as(&data));
            if let Some(z) = tzif(name, &data) {
                return z;
            }
        }
        if let Some(name) = self.named_in_timezone_file() {
            if let Some(z) = self.file_of(&name).and_then(|data| tzif(Some(name), &data)) {
                return z;
            }
        }
        Zone::utc()
    }

    /// `TZ`: a zone file by name or path (with or without the leading `:`), else a POSIX rule.
    fn zone_of_tz(&self, tz: &str) -> Option<Zone> {
        let spec = tz.strip_prefix(':').unwrap_or(tz);
        if spec.starts_with('/') {
            let data = std::fs::read(spec).ok()?;
            return tzif(zone_name(spec), &data);
        }
        if let Some(data) = self.file_of(spec) {
            return tzif(Some(spec.to_string()), &data);
        }
        let rules = jiff::tz::TimeZone::posix(spec).ok()?;
        Some(Zone { name: None, rules })
    }

    /// The zone named in `/etc/timezone`, when it names one.
    fn named_in_timezone_file(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.timezone_file).ok()?;
        let name = text.lines().next()?.trim();
        valid_name(name).then(|| name.to_string())
    }

    /// The bytes of zone file `name`.
    fn file_of(&self, name: &str) -> Option<Vec<u8>> {
        if !valid_name(name) {
            return None;
        }
        std::fs::read(self.zoneinfo.join(name)).ok().filter(|d| d.starts_with(b"TZif"))
    }

    /// The name of a zone file holding exactly `data` (how `timedatectl` names a copied
    /// /etc/localtime): the first in name order, outside `posix/` and `right/`.
    fn same_file_as(&self, data: &[u8]) -> Option<String> {
        let mut stack = vec![self.zoneinfo.clone()];
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(rel) = path.strip_prefix(&self.zoneinfo) else { continue };
                let rel = rel.display().to_string();
                if rel.starts_with("posix") || rel.starts_with("right") || rel == "localtime" {
                    continue;
                }
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(path),
                    Ok(_) => {
                        let same_size = e.metadata().is_ok_and(|m| m.len() == data.len() as u64);
                        if same_size && std::fs::read(&path).is_ok_and(|d| d == data) && valid_name(&rel) {
                            found.push(rel);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        found.sort();
        // A region's name (`Asia/Kolkata`) says more than a legacy alias (`Singapore`, `UCT`).
        found.iter().find(|n| n.contains('/')).or(found.first()).cloned()
    }
}

/// The zone rules of TZif `data`, named `name`.
fn tzif(name: Option<String>, data: &[u8]) -> Option<Zone> {
    let rules = jiff::tz::TimeZone::tzif(name.as_deref().unwrap_or("localtime"), data).ok()?;
    Some(Zone { name, rules })
}

/// The IANA name in a path into the zone files (`/usr/share/zoneinfo/Asia/Kolkata`,
/// `../usr/share/zoneinfo/posix/Asia/Kolkata`).
fn zone_name(path: &str) -> Option<String> {
    let (_, rest) = path.rsplit_once("zoneinfo/")?;
    let rest = rest.strip_prefix("posix/").or_else(|| rest.strip_prefix("right/")).unwrap_or(rest);
    valid_name(rest).then(|| rest.to_string())
}

/// A zone name that names a file under the zone files and nothing outside them.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_runs_at_its_offset() {
        let c = Clock::virtual_with_offset(45_000_000);
        let d = c.now() - Utc::now();
        assert!((d.num_milliseconds() - 45_000).abs() < 1_000, "{d}");
        let c = Clock::virtual_with_offset(-3_000_000);
        let d = c.now() - Utc::now();
        assert!((d.num_milliseconds() + 3_000).abs() < 1_000, "{d}");
    }

    #[test]
    fn system_clock_has_no_offset() {
        let d = Clock::system().now() - Utc::now();
        assert!(d.num_milliseconds().abs() < 1_000);
    }

    const ZONEINFO: &str = "/usr/share/zoneinfo";

    /// A zone source in `dir` (no localtime, no timezone file) over the real zone files.
    fn source(dir: &std::path::Path) -> ZoneSource {
        ZoneSource {
            tz: None,
            localtime: dir.join("localtime"),
            timezone_file: dir.join("timezone"),
            zoneinfo: ZONEINFO.into(),
        }
    }

    fn at_noon() -> DateTime<Utc> {
        "2026-07-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn every_way_an_admin_sets_the_zone() {
        assert!(std::path::Path::new(ZONEINFO).join("Asia/Kathmandu").is_file(), "install tzdata");
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let got = |s: &ZoneSource| {
            let z = s.resolve();
            (z.name.clone(), z.offset_seconds(at_noon()))
        };
        // Nothing set: UTC, as the C library assumes.
        assert_eq!(got(&src), (Some("UTC".into()), 0));
        // /etc/timezone alone (Debian's name file).
        std::fs::write(dir.path().join("timezone"), "Asia/Kolkata\n").unwrap();
        assert_eq!(got(&src), (Some("Asia/Kolkata".into()), 5 * 3600 + 1800));
        // /etc/localtime a link (timedatectl, dpkg-reconfigure): it wins over /etc/timezone.
        std::os::unix::fs::symlink(format!("{ZONEINFO}/Asia/Kathmandu"), dir.path().join("localtime")).unwrap();
        assert_eq!(got(&src), (Some("Asia/Kathmandu".into()), 5 * 3600 + 2700));
        // /etc/localtime a copy (containers, old installers): named by /etc/timezone when
        // that names the same file, else by the zone file it equals.
        std::fs::remove_file(dir.path().join("localtime")).unwrap();
        std::fs::copy(format!("{ZONEINFO}/Asia/Kathmandu"), dir.path().join("localtime")).unwrap();
        std::fs::write(dir.path().join("timezone"), "Asia/Kathmandu\n").unwrap();
        assert_eq!(got(&src), (Some("Asia/Kathmandu".into()), 20_700));
        std::fs::remove_file(dir.path().join("timezone")).unwrap();
        let (name, offset) = got(&src);
        assert_eq!(offset, 20_700);
        let name = name.expect("a copy is named by the file it equals");
        assert_eq!(
            std::fs::read(format!("{ZONEINFO}/{name}")).unwrap(),
            std::fs::read(format!("{ZONEINFO}/Asia/Kathmandu")).unwrap()
        );
        // TZ wins over all files, by name (with or without ':'), path, or POSIX rule.
        for (tz, want) in [
            ("America/St_Johns", (Some("America/St_Johns".to_string()), -2 * 3600 - 1800)),
            (":Australia/Adelaide", (Some("Australia/Adelaide".to_string()), 9 * 3600 + 1800)),
            ("/usr/share/zoneinfo/Asia/Kolkata", (Some("Asia/Kolkata".to_string()), 19_800)),
            ("IST-5:30", (None, 19_800)),
            ("<+0545>-5:45", (None, 20_700)),
        ] {
            let s = ZoneSource { tz: Some(tz.into()), ..source(dir.path()) };
            assert_eq!(got(&s), want, "TZ={tz}");
        }
        // Daylight saving time follows the date.
        let s = ZoneSource { tz: Some("Europe/Berlin".into()), ..source(dir.path()) };
        let z = s.resolve();
        assert_eq!(z.offset_seconds(at_noon()), 7200);
        assert_eq!(z.offset_seconds("2026-01-15T12:00:00Z".parse().unwrap()), 3600);
        // A TZ that names nothing is passed over, as the C library passes it over.
        let s = ZoneSource { tz: Some("Nowhere/Atlantis".into()), ..source(dir.path()) };
        assert_eq!(got(&s).1, 20_700);
        // A name never leaves the zone files.
        assert!(!valid_name("../../etc/passwd") && !valid_name("/etc/passwd") && valid_name("Etc/GMT+5"));
    }
}
