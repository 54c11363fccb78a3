//! Usage reports (SPEC section 14, the seed's "usage of software on the server"): each
//! `[[usage]]` is measured in the background on its own interval and its latest figures
//! are served by every compilation as `usage[]`, with a deficiency `usage:NAME` when a
//! figure is outside its `warning`/`critical` Nagios range or cannot be measured.
//!
//! Rules: never measured inside a query (a query reads the board); every measurement is
//! bounded by its `timeout` (a command is killed after it); a failed measurement is a
//! figure `null` with the reason, and a `warning` (the figure is unknown, as an `unknown`
//! check is); the supervisor follows config reloads and restarts the measurements only
//! when `[[usage]]` changed, forgetting removed entries. One file per kind: `command`,
//! `imap_sessions`, `mail_queue`, `logged_in_users`; `run` runs their programs.

pub mod command;
pub mod imap_sessions;
pub mod logged_in_users;
pub mod mail_queue;
pub mod run;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use rollcall_protocol::{Deficiency, Severity, UsageReport};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{AttendantConfig, UsageConfig, UsageKind};
use crate::follow::follow;

/// One figure a measurement found.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The perfdata label (kind `command`); `None` for the kinds with one figure.
    pub label: Option<String>,
    /// `None` when the source says the value is unknown (perfdata `U`).
    pub value: Option<f64>,
    pub unit: String,
    pub message: String,
}

/// The latest figures and deficiencies of every `[[usage]]`, in config order, read by each
/// compilation.
#[derive(Clone, Default)]
pub struct UsageBoard(Arc<RwLock<Vec<Entry>>>);

struct Entry {
    name: String,
    reports: Vec<UsageReport>,
    deficiencies: Vec<Deficiency>,
}

impl UsageBoard {
    /// Replaces what the `[[usage]]` `name` reported last.
    fn post(&self, name: &str, reports: Vec<UsageReport>, deficiencies: Vec<Deficiency>) {
        let mut g = self.0.write();
        let entry = Entry { name: name.to_string(), reports, deficiencies };
        match g.iter_mut().find(|e| e.name == name) {
            Some(slot) => *slot = entry,
            None => g.push(entry),
        }
    }

    /// Lays the board out as `usage` lists it: entries in config order, figures kept for
    /// the names that stay, removed entries forgotten.
    fn lay_out(&self, usage: &[UsageConfig]) {
        let mut g = self.0.write();
        let mut old = std::mem::take(&mut *g);
        for u in usage {
            let entry = match old.iter().position(|e| e.name == u.name) {
                Some(i) => old.swap_remove(i),
                None => Entry { name: u.name.clone(), reports: Vec::new(), deficiencies: Vec::new() },
            };
            g.push(entry);
        }
    }

    /// Every figure, and the deficiencies they make, as a compilation shows them.
    pub fn snapshot(&self) -> (Vec<UsageReport>, Vec<Deficiency>) {
        let g = self.0.read();
        (
            g.iter().flat_map(|e| e.reports.iter().cloned()).collect(),
            g.iter().flat_map(|e| e.deficiencies.iter().cloned()).collect(),
        )
    }
}

/// What the usage measurements may use of the attendant.
#[derive(Clone)]
pub struct UsageContext {
    pub name: String,
    pub clock: Arc<Clock>,
    pub board: UsageBoard,
    pub config: watch::Receiver<Arc<AttendantConfig>>,
}

/// Measures what the running config lists and follows reloads, until `stop`.
pub fn spawn(cx: UsageContext, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(cx, stop))
}

async fn supervise(cx: UsageContext, stop: CancellationToken) {
    let config = cx.config.clone();
    follow(config, stop, |c| c.usage.clone(), |_, new, config, generation, tasks| {
        cx.board.lay_out(new);
        let cx = UsageContext { name: config.name.clone(), ..cx.clone() };
        for u in new {
            tracing::info!(server = %cx.name, usage = %u.name, kind = u.kind.as_str(), interval = %u.interval, "usage report started");
            tasks.spawn(measure_every(cx.clone(), u.clone(), generation.clone()));
        }
    })
    .await
}

async fn measure_every(cx: UsageContext, u: UsageConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(u.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let observed_at = cx.clock.now();
        let measured = tokio::select! {
            _ = stop.cancelled() => break,
            m = tokio::time::timeout(u.timeout.get(), measure(&u)) => {
                m.unwrap_or_else(|_| Err(format!("no answer within {}", u.timeout)))
            }
        };
        if let Err(why) = &measured {
            tracing::warn!(server = %cx.name, usage = %u.name, "cannot measure: {why}");
        }
        let (reports, deficiencies) = judge(&u, measured, observed_at);
        cx.board.post(&u.name, reports, deficiencies);
    }
}

/// One measurement of `u`'s kind.
async fn measure(u: &UsageConfig) -> Result<Vec<Figure>, String> {
    match &u.kind {
        UsageKind::Command { argv } => command::measure(argv).await,
        UsageKind::ImapSessions { argv } => imap_sessions::measure(argv.as_deref()).await,
        UsageKind::MailQueue { mta, argv } => mail_queue::measure(*mta, argv.as_deref()).await,
        UsageKind::LoggedInUsers { utmp } => logged_in_users::measure(utmp).await,
    }
}

/// The reports and deficiencies of one measurement: each figure against the ranges, a
/// failure as a figure `null` and a warning.
pub fn judge(
    u: &UsageConfig,
    measured: Result<Vec<Figure>, String>,
    observed_at: DateTime<Utc>,
) -> (Vec<UsageReport>, Vec<Deficiency>) {
    let figures = match measured {
        Ok(f) => f,
        Err(why) => {
            let message = format!("cannot measure: {why}");
            let deficiency = Deficiency {
                source: format!("usage:{}", u.name),
                severity: Severity::Warning,
                summary: format!("usage {}: {message}", u.name),
            };
            let report = UsageReport { name: u.name.clone(), value: None, unit: String::new(), observed_at, message };
            return (vec![report], vec![deficiency]);
        }
    };
    let mut reports = Vec::new();
    let mut deficiencies = Vec::new();
    for f in figures {
        let name = match &f.label {
            Some(l) => format!("{}.{l}", u.name),
            None => u.name.clone(),
        };
        let mut message = f.message;
        let breach = f.value.and_then(|v| {
            let hit = |r: &Option<crate::nagios_range::Range>| r.as_ref().filter(|r| r.alerts(v)).cloned();
            hit(&u.critical)
                .map(|r| (Severity::Critical, r))
                .or_else(|| hit(&u.warning).map(|r| (Severity::Warning, r)))
        });
        if let (Some((severity, range)), Some(v)) = (breach, f.value) {
            let figure = if f.unit.is_empty() { number(v) } else { format!("{} {}", number(v), f.unit) };
            let note = format!("{figure} breaks the {severity} range \"{range}\"");
            message = format!("{message} ({note})");
            deficiencies.push(Deficiency {
                source: format!("usage:{name}"),
                severity,
                summary: format!("usage {name}: {note}"),
            });
        }
        reports.push(UsageReport { name, value: f.value, unit: f.unit, observed_at, message });
    }
    (reports, deficiencies)
}

/// A figure as people write it: `3`, `0.25`.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_config::Duration;

    fn usage(warning: Option<&str>, critical: Option<&str>) -> UsageConfig {
        UsageConfig {
            name: "queue".into(),
            kind: UsageKind::MailQueue { mta: None, argv: None },
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            warning: warning.map(|w| w.parse().expect("range")),
            critical: critical.map(|c| c.parse().expect("range")),
        }
    }

    fn figure(label: Option<&str>, value: f64) -> Figure {
        Figure { label: label.map(String::from), value: Some(value), unit: "messages".into(), message: "m".into() }
    }

    #[test]
    fn figures_outside_their_ranges_are_deficiencies_critical_first() {
        let u = usage(Some("100"), Some("1000"));
        let now = Utc::now();
        for (value, want) in [(5.0, None), (150.0, Some(Severity::Warning)), (1500.0, Some(Severity::Critical))] {
            let (r, d) = judge(&u, Ok(vec![figure(None, value)]), now);
            assert_eq!(r[0].value, Some(value));
            assert_eq!(d.first().map(|d| d.severity), want, "{value}: {d:?}");
            if let Some(d) = d.first() {
                assert_eq!(d.source, "usage:queue");
                let range =
                    if want == Some(Severity::Critical) { "critical range \"1000\"" } else { "warning range \"100\"" };
                assert_eq!(d.summary, format!("usage queue: {} messages breaks the {range}", number(value)));
            }
        }
        let (r, d) = judge(&usage(None, Some("@0:0")), Ok(vec![figure(Some("licenses"), 0.0)]), now);
        assert_eq!(r[0].name, "queue.licenses");
        assert_eq!(d[0].source, "usage:queue.licenses");
        assert_eq!(r[0].message, "m (0 messages breaks the critical range \"@0:0\")");
    }

    #[test]
    fn a_failed_measurement_is_a_null_figure_and_a_warning() {
        let (r, d) = judge(&usage(None, None), Err("postqueue: not found".into()), Utc::now());
        assert_eq!(r[0].value, None);
        assert_eq!(r[0].message, "cannot measure: postqueue: not found");
        assert_eq!((d[0].source.as_str(), d[0].severity), ("usage:queue", Severity::Warning));
    }
}
