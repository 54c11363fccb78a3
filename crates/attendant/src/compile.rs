//! Builds the compilation: query-time checks, cached host usage and probe results, the
//! clock, and the deficiencies derived from all of them.

use std::sync::Arc;

use parking_lot::RwLock;

use chrono::{DateTime, Utc};
use rollcall_protocol::{
    AttendantInfo, CheckResult, Compilation, Deficiency, HostUsage, ProbeResult, Severity, TimeReport, SCHEMA_VERSION,
};

use crate::checks;
use crate::clock::{self, Clock};
use crate::clock_keeper::{ClockKeeper, OsClock, SystemClock};
use crate::config::{AttendantConfig, HostThresholds};
use crate::host::HostCache;
use crate::probe_board::ProbeBoard;

/// Everything the attendant needs to answer a query. The config can be swapped on SIGHUP;
/// a query in progress keeps the config it started with.
pub struct Attendant {
    config: RwLock<Arc<AttendantConfig>>,
    pub clock: Clock,
    /// Latest results of the background probes.
    pub probes: ProbeBoard,
    /// Checks and applies the poller's clock orders.
    pub clock_keeper: ClockKeeper,
    host: HostCache,
    hostname: String,
    zone: Option<String>,
}

impl Attendant {
    pub fn new(config: AttendantConfig, host: HostCache) -> Attendant {
        let (clock, system): (Clock, Option<Box<dyn SystemClock>>) = match config.clock {
            clock::ClockMode::Virtual => (Clock::virtual_with_offset(config.clock_offset_us), None),
            clock::ClockMode::System => {
                let os = OsClock;
                if config.poller_public_key.is_some() && !os.may_set_time() {
                    tracing::warn!(server = %config.name, "clock = \"system\" but the attendant lacks CAP_SYS_TIME: clock orders will be refused");
                }
                (Clock::system(), Some(Box::new(os)))
            }
        };
        let clock_keeper = ClockKeeper::new(public_key(&config), config.max_clock_step.get(), system);
        Attendant {
            config: RwLock::new(Arc::new(config)),
            clock,
            probes: ProbeBoard::default(),
            clock_keeper,
            host,
            hostname: crate::host::hostname(),
            zone: clock::zone().1,
        }
    }

    pub fn config(&self) -> Arc<AttendantConfig> {
        self.config.read().clone()
    }

    /// Installs a new config; the next compilation uses it.
    pub fn replace_config(&self, new: AttendantConfig) {
        self.clock_keeper.reconfigure(public_key(&new), new.max_clock_step.get());
        *self.config.write() = Arc::new(new);
    }

    /// The whole compilation. `replied_at` is stamped here; the caller serializes at once.
    pub async fn compile(&self, received_at: DateTime<Utc>) -> Compilation {
        let config = self.config();
        let services = checks::run_all(&config.services, &self.clock).await;
        let probes = self.probes.snapshot();
        let host = self.host.latest();
        let deficiencies = deficiencies(&services, &probes, &host, &config.host);
        let utc_offset_seconds = chrono::Local::now().offset().local_minus_utc();
        let now = self.clock.now();
        Compilation {
            schema_version: SCHEMA_VERSION,
            attendant: AttendantInfo {
                name: config.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                hostname: self.hostname.clone(),
            },
            time: TimeReport { utc: now, utc_offset_seconds, zone: self.zone.clone(), received_at, replied_at: now },
            services,
            probes,
            host,
            deficiencies,
        }
    }
}

/// The poller's key; the config was validated, so a bad line cannot reach here.
fn public_key(config: &AttendantConfig) -> Option<ed25519_dalek::VerifyingKey> {
    let line = config.poller_public_key.as_deref()?;
    rollcall_protocol::clock_order::parse_public_key(line).ok()
}

/// Every warning or critical service and probe, and disks over their thresholds.
pub fn deficiencies(
    services: &[CheckResult],
    probes: &[ProbeResult],
    host: &HostUsage,
    limits: &HostThresholds,
) -> Vec<Deficiency> {
    let mut out = Vec::new();
    for r in services.iter().map(CheckResult::view).chain(probes.iter().map(ProbeResult::view)) {
        if let Some(severity) = r.status.severity() {
            out.push(Deficiency {
                source: format!("{}:{}", r.section, r.name),
                severity,
                summary: format!("{} {}: {}", r.name, r.status, r.message),
            });
        }
    }
    for d in &host.disks {
        let pct = d.used as f64 * 100.0 / d.total.max(1) as f64;
        let severity = if pct >= limits.disk_critical_percent {
            Severity::Critical
        } else if pct >= limits.disk_warning_percent {
            Severity::Warning
        } else {
            continue;
        };
        out.push(Deficiency {
            source: format!("host:disk:{}", d.mount),
            severity,
            summary: format!("disk {} is {pct:.0}% full", d.mount),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_protocol::{Disk, Status};

    fn svc(name: &str, status: Status) -> CheckResult {
        CheckResult {
            name: name.into(),
            check: "tcp".into(),
            status,
            message: "m".into(),
            observed_at: Utc::now(),
            duration_ms: 1.0,
            details: Default::default(),
        }
    }

    #[test]
    fn deficiencies_follow_statuses_and_disk_thresholds() {
        let host = HostUsage {
            disks: vec![
                Disk { mount: "/".into(), total: 100, used: 50 },
                Disk { mount: "/var".into(), total: 100, used: 91 },
                Disk { mount: "/srv".into(), total: 100, used: 99 },
            ],
            ..Default::default()
        };
        let limits = HostThresholds { disk_warning_percent: 90.0, disk_critical_percent: 95.0 };
        let d = deficiencies(
            &[svc("a", Status::Ok), svc("b", Status::Critical), svc("c", Status::Unknown)],
            &[],
            &host,
            &limits,
        );
        let got: Vec<(&str, Severity)> = d.iter().map(|d| (d.source.as_str(), d.severity)).collect();
        assert_eq!(
            got,
            [
                ("service:b", Severity::Critical),
                ("service:c", Severity::Warning),
                ("host:disk:/var", Severity::Warning),
                ("host:disk:/srv", Severity::Critical),
            ]
        );
    }
}
