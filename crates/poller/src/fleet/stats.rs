//! Poll statistics: what the fleet counts about its own polls (outcomes, durations,
//! lateness, polls in flight, time per phase), lock-free, read by `/metrics` at scrape time.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::model::ServerState;

/// A fixed-bucket histogram of seconds, lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// Poll durations: a healthy attendant answers in milliseconds; a timeout is seconds.
const DURATION_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Lateness of scheduled polls: should be near zero; seconds mean the poller is overloaded.
const LATENESS_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(self.bounds) {
            if s <= *bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// Appends the histogram in the exposition format as `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", b.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What the fleet counts about its own polls.
#[derive(Debug)]
pub struct PollStats {
    pub(crate) ok: AtomicU64,
    pub(crate) deficient: AtomicU64,
    pub(crate) unreachable: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    pub(crate) duration: Histogram,
    pub(crate) lateness: Histogram,
    pub(crate) phases: Phases,
}

/// The time polls spend working, in nanoseconds, by phase: what a poll costs the poller
/// beside its waits. `fetch` is the HTTP exchange's own work (not the wait for the
/// answer), `parse` reading the reply, `poll` everything a poll does (so judging, clock
/// keeping and handing the results on are `poll - fetch - parse`). The store's share is
/// the writer's ([`crate::store::WriterStats::busy_ns`]).
#[derive(Debug, Default)]
pub struct Phases {
    pub(crate) poll: AtomicU64,
    pub(crate) fetch: AtomicU64,
    pub(crate) parse: AtomicU64,
}

impl Phases {
    /// `(phase, seconds)` so far: fetch, parse, judge.
    pub fn seconds(&self) -> [(&'static str, f64); 3] {
        let [poll, fetch, parse] = [&self.poll, &self.fetch, &self.parse].map(|c| c.load(Ordering::Relaxed));
        let judge = poll.saturating_sub(fetch + parse);
        [("fetch", fetch as f64 / 1e9), ("parse", parse as f64 / 1e9), ("judge", judge as f64 / 1e9)]
    }
}

/// Adds the time since `started` to `total` (nanoseconds).
pub(crate) fn add_since(total: &AtomicU64, started: Instant) {
    total.fetch_add(started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
}

/// A future whose work is timed: the time spent inside its `poll` calls (not the waits
/// between them) is added to a counter. Two clock reads per wake-up (vDSO, tens of ns).
pub(crate) struct Busy<'a, F> {
    fut: F,
    total: &'a AtomicU64,
}

impl<'a, F: Future + Unpin> Busy<'a, F> {
    pub(crate) fn new(fut: F, total: &'a AtomicU64) -> Self {
        Busy { fut, total }
    }
}

impl<F: Future + Unpin> Future for Busy<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let out = Pin::new(&mut self.fut).poll(cx);
        add_since(self.total, started);
        out
    }
}

impl Default for PollStats {
    fn default() -> Self {
        PollStats {
            ok: AtomicU64::new(0),
            deficient: AtomicU64::new(0),
            unreachable: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            duration: Histogram::new(DURATION_BOUNDS),
            lateness: Histogram::new(LATENESS_BOUNDS),
            phases: Phases::default(),
        }
    }
}

/// Counts one poll in flight until dropped (so an abandoned poll is uncounted too).
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PollStats {
    /// Marks a poll in flight for as long as the guard lives.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Counts a finished poll by the state it found, and how long it took.
    pub fn polled(&self, state: ServerState, took: Duration) {
        let c = match state {
            ServerState::Ok => &self.ok,
            ServerState::Deficient => &self.deficient,
            ServerState::Unreachable | ServerState::Unknown => &self.unreachable,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.duration.observe(took);
    }

    /// Records how late after its slot a scheduled poll started (early counts as 0).
    pub fn started_late(&self, late: chrono::TimeDelta) {
        self.lateness.observe(late.to_std().unwrap_or_default());
    }

    /// Polls finished so far, whatever their outcome.
    pub fn polls(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.deficient.load(Ordering::Relaxed)
            + self.unreachable.load(Ordering::Relaxed)
    }
}
