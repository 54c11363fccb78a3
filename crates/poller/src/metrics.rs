//! `/metrics`: the fleet and the poller itself in Prometheus' text exposition format
//! (version 0.0.4), so Grafana users plug straight in.
//!
//! Rules it keeps: base units (seconds, not milliseconds); one series per server for each
//! gauge, labelled `server`; enum-like values (level, state) both as a numeric gauge and as
//! a 0/1 series per possible value, Prometheus' idiom for state sets; a series whose value
//! is not known (no RTT before the first answer) is left out rather than reported as 0.
//! Everything is read from memory at scrape time: a scrape never touches the store.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::fetch::Fetch;
use crate::fleet::Fleet;
use crate::model::ServerState;
use crate::notify::Notifier;

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

    fn render(&self, out: &mut String, name: &str, help: &str) {
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
    ok: AtomicU64,
    deficient: AtomicU64,
    unreachable: AtomicU64,
    in_flight: AtomicI64,
    duration: Histogram,
    lateness: Histogram,
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

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The whole exposition text.
pub fn render<F: Fetch>(fleet: &Fleet<F>, notifier: Option<&Notifier>) -> String {
    let now = chrono::Utc::now();
    let summaries: Vec<_> = fleet.servers().iter().map(|s| fleet.summary(s)).collect();
    let levels = fleet.rules().levels();
    let mut out = String::with_capacity(256 + summaries.len() * 900);

    header(&mut out, "rollcall_server_up", "gauge", "1 when the last poll got a usable answer, else 0.");
    for s in &summaries {
        let up = matches!(s.state, ServerState::Ok | ServerState::Deficient);
        let _ = writeln!(out, "rollcall_server_up{{server=\"{}\"}} {}", label(&s.name), u8::from(up));
    }
    header(&mut out, "rollcall_server_level", "gauge", "The server's polling level: 0 is the first (normal).");
    for s in &summaries {
        let i = levels.iter().position(|l| l.name == s.level).unwrap_or(0);
        let _ =
            writeln!(out, "rollcall_server_level{{server=\"{}\",level=\"{}\"}} {i}", label(&s.name), label(&s.level));
    }
    header(&mut out, "rollcall_server_state", "gauge", "1 for the server's current state, 0 for the others.");
    for s in &summaries {
        for st in [ServerState::Ok, ServerState::Deficient, ServerState::Unreachable, ServerState::Unknown] {
            let _ = writeln!(
                out,
                "rollcall_server_state{{server=\"{}\",state=\"{}\"}} {}",
                label(&s.name),
                st.as_str(),
                u8::from(s.state == st)
            );
        }
    }
    header(&mut out, "rollcall_server_deficiencies", "gauge", "Deficiencies found by the last poll.");
    for s in &summaries {
        let _ = writeln!(out, "rollcall_server_deficiencies{{server=\"{}\"}} {}", label(&s.name), s.deficiencies.len());
    }
    header(&mut out, "rollcall_server_rtt_seconds", "gauge", "Network round trip of the last answered poll.");
    for s in &summaries {
        if let Some(v) = s.rtt_ms {
            let _ = writeln!(out, "rollcall_server_rtt_seconds{{server=\"{}\"}} {}", label(&s.name), v / 1000.0);
        }
    }
    header(
        &mut out,
        "rollcall_server_clock_offset_seconds",
        "gauge",
        "The server's clock minus the poller's, NTP-style, at the last answered poll.",
    );
    for s in &summaries {
        if let Some(v) = s.clock_offset_ms {
            let _ =
                writeln!(out, "rollcall_server_clock_offset_seconds{{server=\"{}\"}} {}", label(&s.name), v / 1000.0);
        }
    }
    header(&mut out, "rollcall_server_last_poll_age_seconds", "gauge", "Seconds since the server was last polled.");
    for s in &summaries {
        if let Some(at) = s.last_poll_at {
            let age = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
            let _ = writeln!(out, "rollcall_server_last_poll_age_seconds{{server=\"{}\"}} {age}", label(&s.name));
        }
    }
    header(&mut out, "rollcall_server_last_poll_timestamp_seconds", "gauge", "When the server was last polled.");
    for s in &summaries {
        if let Some(at) = s.last_poll_at {
            let t = at.timestamp_millis() as f64 / 1000.0;
            let _ = writeln!(out, "rollcall_server_last_poll_timestamp_seconds{{server=\"{}\"}} {t}", label(&s.name));
        }
    }

    let st = fleet.stats();
    header(&mut out, "rollcall_polls_total", "counter", "Polls finished, by the state they found.");
    for (outcome, c) in [("ok", &st.ok), ("deficient", &st.deficient), ("unreachable", &st.unreachable)] {
        let _ = writeln!(out, "rollcall_polls_total{{outcome=\"{outcome}\"}} {}", c.load(Ordering::Relaxed));
    }
    header(&mut out, "rollcall_polls_in_flight", "gauge", "Polls waiting for their attendant's answer now.");
    let _ = writeln!(out, "rollcall_polls_in_flight {}", st.in_flight.load(Ordering::Relaxed).max(0));
    st.duration.render(
        &mut out,
        "rollcall_poll_duration_seconds",
        "Time from asking to the whole answer (or failure).",
    );
    st.lateness.render(&mut out, "rollcall_poll_lateness_seconds", "How late after its slot a scheduled poll started.");
    header(&mut out, "rollcall_servers", "gauge", "Servers configured.");
    let _ = writeln!(out, "rollcall_servers {}", summaries.len());

    if let Some(n) = notifier {
        let channels = n.channels();
        header(&mut out, "rollcall_notifications_total", "counter", "Notifications delivered or given up, by channel.");
        for c in &channels {
            let _ = writeln!(
                out,
                "rollcall_notifications_total{{channel=\"{}\",result=\"sent\"}} {}\nrollcall_notifications_total{{channel=\"{}\",result=\"failed\"}} {}",
                label(&c.name),
                c.sent,
                label(&c.name),
                c.failed
            );
        }
        header(
            &mut out,
            "rollcall_notification_attempt_failures_total",
            "counter",
            "Delivery attempts that failed (each retry counts).",
        );
        for c in &channels {
            let _ = writeln!(
                out,
                "rollcall_notification_attempt_failures_total{{channel=\"{}\"}} {}",
                label(&c.name),
                c.attempt_failures
            );
        }
    }
    out
}

/// What the `/metrics` handler needs.
pub struct MetricsState<F: Fetch> {
    pub fleet: Arc<Fleet<F>>,
    pub notifier: Option<Arc<Notifier>>,
}

/// `GET /metrics`.
pub async fn handler<F: Fetch>(State(m): State<Arc<MetricsState<F>>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&m.fleet, m.notifier.as_deref()))
}

/// The `/metrics` route.
pub fn router<F: Fetch>(state: Arc<MetricsState<F>>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(handler::<F>)).with_state(state)
}
