//! `/metrics`: the fleet and the poller itself in Prometheus' text exposition format
//! (version 0.0.4), so Grafana users plug straight in.
//!
//! Rules it keeps: base units (seconds, not milliseconds); one series per server for each
//! gauge, labelled `server`; enum-like values (level, state) both as a numeric gauge and as
//! a 0/1 series per possible value, Prometheus' idiom for state sets; a series whose value
//! is not known (no RTT before the first answer) is left out rather than reported as 0.
//! Everything is read from memory at scrape time: a scrape never touches the store.
//! Every float goes through `seconds`: rounded to the microsecond and printed shortest
//! (`0.001502`, never `0.0015019090000000002`); whole counts are printed as integers.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::fleet::Fleet;
use crate::model::ServerState;
use crate::notify::Notifier;

/// Escapes a label value as the exposition format requires; borrowed when there is
/// nothing to escape (every ordinary server name: a scrape at 50,000 servers escapes
/// 550,000 labels).
fn label(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    Cow::Owned(v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// A value in seconds as the exposition text shows it: rounded to the microsecond (more
/// than a poll's clock can tell), trailing zeros dropped, `-0` as `0`; the format's
/// `NaN`, `+Inf`, `-Inf` for values that are not finite.
pub(crate) fn seconds(v: f64) -> String {
    let mut s = String::new();
    push_seconds(&mut s, v);
    s
}

/// [`seconds`] written at the end of `out`.
pub(crate) fn push_seconds(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    let start = out.len();
    let _ = write!(out, "{v:.6}");
    if out[start..].contains('.') {
        let kept = out[start..].trim_end_matches('0').trim_end_matches('.').len();
        out.truncate(start + kept);
    }
    if &out[start..] == "-0" {
        out.truncate(start);
        out.push('0');
    }
}

/// One line `NAME{server="S"} VALUE`, the value in seconds.
fn server_seconds(out: &mut String, name: &str, server: &str, v: f64) {
    let _ = write!(out, "{name}{{server=\"{server}\"}} ");
    push_seconds(out, v);
    out.push('\n');
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The whole exposition text.
pub fn render(fleet: &Fleet, notifier: Option<&Notifier>) -> String {
    let now = chrono::Utc::now();
    let summaries = fleet.summaries();
    // Each server's name escaped once, for its eleven lines.
    let names: Vec<Cow<str>> = summaries.iter().map(|s| label(&s.facts.name)).collect();
    let servers = || summaries.iter().zip(&names);
    let levels = fleet.rules().levels();
    let mut out = String::with_capacity(256 + summaries.len() * 900);

    header(&mut out, "rollcall_server_up", "gauge", "1 when the last poll got a usable answer, else 0.");
    for (s, name) in servers() {
        let up = matches!(s.facts.state, ServerState::Ok | ServerState::Deficient);
        let _ = writeln!(out, "rollcall_server_up{{server=\"{name}\"}} {}", u8::from(up));
    }
    header(&mut out, "rollcall_server_level", "gauge", "The server's polling level: 0 is the first (normal).");
    for (s, name) in servers() {
        let i = levels.iter().position(|l| l.name == s.facts.level).unwrap_or(0);
        let _ = writeln!(out, "rollcall_server_level{{server=\"{name}\",level=\"{}\"}} {i}", label(&s.facts.level));
    }
    header(&mut out, "rollcall_server_state", "gauge", "1 for the server's current state, 0 for the others.");
    for (s, name) in servers() {
        for st in [ServerState::Ok, ServerState::Deficient, ServerState::Unreachable, ServerState::Unknown] {
            let _ = writeln!(
                out,
                "rollcall_server_state{{server=\"{name}\",state=\"{}\"}} {}",
                st.as_str(),
                u8::from(s.facts.state == st)
            );
        }
    }
    header(&mut out, "rollcall_server_deficiencies", "gauge", "Deficiencies found by the last poll.");
    for (s, name) in servers() {
        let _ = writeln!(out, "rollcall_server_deficiencies{{server=\"{name}\"}} {}", s.facts.deficiencies.len());
    }
    header(&mut out, "rollcall_server_rtt_seconds", "gauge", "Network round trip of the last answered poll.");
    for (s, name) in servers() {
        if let Some(v) = s.facts.rtt_ms {
            server_seconds(&mut out, "rollcall_server_rtt_seconds", name, v / 1000.0);
        }
    }
    header(
        &mut out,
        "rollcall_server_clock_offset_seconds",
        "gauge",
        "The server's clock minus the poller's, NTP-style, at the last answered poll.",
    );
    for (s, name) in servers() {
        if let Some(v) = s.facts.clock_offset_ms {
            server_seconds(&mut out, "rollcall_server_clock_offset_seconds", name, v / 1000.0);
        }
    }
    header(&mut out, "rollcall_server_last_poll_age_seconds", "gauge", "Seconds since the server was last polled.");
    for (s, name) in servers() {
        if let Some(at) = s.facts.last_poll_at {
            let age = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
            server_seconds(&mut out, "rollcall_server_last_poll_age_seconds", name, age);
        }
    }
    header(&mut out, "rollcall_server_last_poll_timestamp_seconds", "gauge", "When the server was last polled.");
    for (s, name) in servers() {
        if let Some(at) = s.facts.last_poll_at {
            let t = at.timestamp_millis() as f64 / 1000.0;
            server_seconds(&mut out, "rollcall_server_last_poll_timestamp_seconds", name, t);
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
    header(
        &mut out,
        "rollcall_poll_phase_seconds_total",
        "counter",
        "Time polls spent working (not waiting), by phase: fetch (the HTTP exchange), parse \
         (reading the reply), judge (levels, clock keeping, handing on), store (the writer's \
         batches).",
    );
    let store = fleet.writer().stats().busy_ns.load(Ordering::Relaxed) as f64 / 1e9;
    for (phase, s) in st.phases.seconds().into_iter().chain([("store", store)]) {
        let _ = writeln!(out, "rollcall_poll_phase_seconds_total{{phase=\"{phase}\"}} {}", seconds(s));
    }
    header(&mut out, "rollcall_servers", "gauge", "Servers configured.");
    let _ = writeln!(out, "rollcall_servers {}", summaries.len());

    let w = fleet.writer().stats();
    let counters = [
        ("rollcall_store_batches_total", "counter", "Batches of poll results committed to the store.", &w.batches),
        (
            "rollcall_store_errors_total",
            "counter",
            "Batch writes the store refused (each retry counts); the batch is kept and retried.",
            &w.failures,
        ),
        (
            "rollcall_store_pending_rows",
            "gauge",
            "Rows waiting to be written (grows while the store fails).",
            &w.pending,
        ),
    ];
    for (name, kind, help, v) in counters {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    header(
        &mut out,
        "rollcall_store_dropped_rows_total",
        "counter",
        "History rows dropped, oldest first, while the store failed for long (never transitions or clock corrections).",
    );
    let _ = writeln!(
        out,
        "rollcall_store_dropped_rows_total{{what=\"polls\"}} {}",
        w.dropped_polls.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "rollcall_store_dropped_rows_total{{what=\"compilations\"}} {}",
        w.dropped_compilations.load(Ordering::Relaxed)
    );

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
pub struct MetricsState {
    pub fleet: Arc<Fleet>,
    pub notifier: Option<Arc<Notifier>>,
}

/// `GET /metrics`, rendered beside the polls (`web::whole_fleet`).
pub async fn handler(State(m): State<Arc<MetricsState>>) -> axum::response::Response {
    match super::whole_fleet::build(move || render(&m.fleet, m.notifier.as_deref())).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "/metrics could not be rendered");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("/metrics could not be rendered: {e}\n"))
                .into_response()
        }
    }
}

/// The `/metrics` route.
pub fn router(state: Arc<MetricsState>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(handler)).with_state(state)
}

#[cfg(test)]
mod tests {
    use super::{label, seconds};

    #[test]
    fn label_values_are_escaped_and_plain_ones_borrowed() {
        assert!(matches!(label("mail-01.example.org"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn seconds_are_rounded_to_the_microsecond_and_printed_shortest() {
        // The noise the trial found: one unit in the last place above 1.501909.
        let noisy = 1.501909_f64 + f64::EPSILON;
        assert_eq!(noisy.to_string(), "1.5019090000000002");
        assert_eq!(seconds(noisy), "1.501909");
        assert_eq!(seconds(0.1 + 0.2), "0.3");
        assert_eq!(seconds(1.5), "1.5");
        assert_eq!(seconds(2.0), "2");
        assert_eq!(seconds(0.0), "0");
        assert_eq!(seconds(-0.0000001), "0");
        assert_eq!(seconds(-45.0000012), "-45.000001");
        assert_eq!(seconds(1_764_523_200.123), "1764523200.123");
        assert_eq!(seconds(f64::NAN), "NaN");
        assert_eq!(seconds(f64::INFINITY), "+Inf");
        assert_eq!(seconds(f64::NEG_INFINITY), "-Inf");
    }
}
