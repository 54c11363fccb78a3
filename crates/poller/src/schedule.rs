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

/// Each server's phase as a fraction of any interval, in `[0, 1)`.
///
/// Servers are ranked by a stable hash of their name and spaced evenly by rank: a pure
/// hash (as Prometheus uses) leaves random clumps, ±2σ per second at a few hundred servers
/// a second; ranking removes them while a restart with the same fleet keeps every slot,
/// and adding a server moves the others by at most one group's spacing, never into a
/// burst. From [`GROUP_FROM`] servers on, [`GROUP`] neighbours in rank share a phase: they
/// are polled together, on one timer wake-up and with warm caches, where alone each poll
/// paid for waking the poller (measured at 100 servers @ 1 s: see `docs/performance.md`).
pub fn phases(names: &[&str]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&i| (stable_hash(names[i]), names[i]));
    let n = names.len().max(1) as f64;
    let group = if names.len() >= GROUP_FROM { GROUP } else { 1 };
    let mut out = vec![0.0; names.len()];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = (rank / group * group) as f64 / n;
    }
    out
}

/// How many servers share a phase in a fleet of at least [`GROUP_FROM`].
pub const GROUP: usize = 8;
/// The smallest fleet whose servers are polled in groups: a handful of servers is spread
/// one by one.
pub const GROUP_FROM: usize = 64;

/// Slots fall on a grid of this many milliseconds (or a hundredth of a shorter interval's
/// length): the servers of one tick share one timer wake-up of the poller instead of one
/// each. The gap between a server's polls stays exactly the interval, so lateness is
/// unchanged; a tick's polls go out together, a burst of at most a hundredth of a level's
/// servers. Measured at 1,000 servers @ 1 s: see `docs/performance.md`.
pub const TICK_MS: i64 = 10;

/// The first slot at `phase` (from [`phases`]) of `interval` strictly after `after`, on the
/// [`TICK_MS`] grid.
pub fn next_slot(phase: f64, interval: Duration, after: DateTime<Utc>) -> DateTime<Utc> {
    let ms = interval.as_millis().max(1) as i64;
    let tick = (ms / 100).clamp(1, TICK_MS);
    let phase = ((phase.clamp(0.0, 1.0) * ms as f64) as i64).min(ms - 1) / tick * tick;
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
    stable_hash_bytes(s.bytes())
}

/// [`stable_hash`] of any bytes: what every poller computes alike, whatever its build
/// (the cluster's rendezvous weights use it too, so nodes of different builds agree).
pub(crate) fn stable_hash_bytes(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
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
        let s1 = next_slot(0.37, iv, t);
        assert!(s1 > t && s1 - t <= chrono::Duration::seconds(60));
        assert_eq!(s1.timestamp_millis() % 60_000, 22_200);
        let s2 = next_slot(0.37, iv, s1);
        assert_eq!(s2 - s1, chrono::Duration::seconds(60));
        assert_eq!(next_slot(0.37, iv, s1 - chrono::Duration::milliseconds(1)), s1);
    }

    #[test]
    fn phases_are_stable_and_independent_of_config_order() {
        // Pinned: a change of the hash moves every server's slot after an upgrade.
        assert_eq!(stable_hash("mail-01"), 0xa942_9ad6_c8ec_f2d6);
        let a = phases(&["a", "b", "c"]);
        let b = phases(&["c", "a", "b"]);
        assert_eq!((a[0], a[1], a[2]), (b[1], b[2], b[0]));
    }

    #[test]
    fn phases_spread_evenly_over_the_interval() {
        for (n, iv) in [(2_000usize, 10usize), (50_000, 10), (7, 7)] {
            let names: Vec<String> = (0..n).map(|i| format!("server-{i:05}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut b = vec![0usize; iv];
            for p in phases(&refs) {
                b[(p * iv as f64) as usize] += 1;
            }
            let mean = n as f64 / iv as f64;
            for (i, &c) in b.iter().enumerate() {
                assert!((c as f64 - mean).abs() <= 0.15 * mean, "{n} servers / {iv}s: bucket {i} has {c}, mean {mean}");
            }
        }
    }

    #[test]
    fn slots_fall_on_the_tick_grid_so_neighbours_share_a_wake_up() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let iv = Duration::from_secs(1);
        // 1,000 servers at 1 s: 100 distinct slots of 10 each, every one on the grid.
        let slots: std::collections::BTreeSet<i64> =
            (0..1000).map(|i| next_slot(i as f64 / 1000.0, iv, t).timestamp_millis()).collect();
        assert_eq!(slots.len(), 100);
        assert!(slots.iter().all(|s| s % TICK_MS == 0), "{slots:?}");
        // A short interval keeps a hundred slots: 200 ms ticks at 2 ms.
        let short: std::collections::BTreeSet<i64> =
            (0..1000).map(|i| next_slot(i as f64 / 1000.0, Duration::from_millis(200), t).timestamp_millis()).collect();
        assert_eq!(short.len(), 100);
        // The gap between one server's polls is still exactly the interval.
        let s1 = next_slot(0.4567, iv, t);
        assert_eq!(next_slot(0.4567, iv, s1) - s1, chrono::Duration::seconds(1));
    }

    #[test]
    fn neighbours_in_rank_share_a_phase_in_groups_and_a_small_fleet_is_spread_one_by_one() {
        let names: Vec<String> = (0..100).map(|i| format!("server-{i:03}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut count: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
        for p in phases(&refs) {
            *count.entry((p * 1e6) as u64).or_default() += 1;
        }
        assert_eq!(count.len(), 13, "100 servers in groups of 8: {count:?}");
        assert!(count.values().all(|&c| c == GROUP || c == 100 % GROUP), "{count:?}");
        let few = phases(&["a", "b", "c", "d"]);
        let distinct: std::collections::BTreeSet<u64> = few.iter().map(|p| (p * 1e6) as u64).collect();
        assert_eq!(distinct.len(), 4);
    }
}
