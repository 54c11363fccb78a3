//! Builds the compilation (SPEC sections 2 and 14) from what the attendant gathered:
//! query-time check results, the probe board's latest results, the usage board's latest
//! figures, cached host usage and the clock, and derives the deficiencies from all of them.
//!
//! Rules: pure functions, no I/O and no waiting, so a compilation costs what its checks
//! cost; a deficiency comes only from a status that has a severity, a disk over its
//! threshold, or a usage figure the usage room judged (outside its range, or unmeasured).

use chrono::{DateTime, Utc};
use rollcall_protocol::{
    AttendantInfo, CheckResult, Compilation, Deficiency, HostUsage, ProbeResult, Severity, TimeReport, UsageReport,
    SCHEMA_VERSION,
};

use crate::config::HostThresholds;

/// Everything one compilation is made of.
pub struct Parts {
    pub name: String,
    pub hostname: String,
    /// The IANA zone name, when known.
    pub zone: Option<String>,
    /// The zone's offset from UTC now, in seconds (`clock::Zone::offset_seconds`).
    pub utc_offset_seconds: i32,
    /// When the query arrived and the attendant's time now (also `replied_at`).
    pub received_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub services: Vec<CheckResult>,
    pub probes: Vec<ProbeResult>,
    pub host: HostUsage,
    /// The `[[usage]]` figures and the deficiencies their thresholds made.
    pub usage: Vec<UsageReport>,
    pub usage_deficiencies: Vec<Deficiency>,
}

/// The compilation of `parts`, deficiencies judged against `limits`.
pub fn compilation(parts: Parts, limits: &HostThresholds) -> Compilation {
    let mut deficiencies = deficiencies(&parts.services, &parts.probes, &parts.host, limits);
    deficiencies.extend(parts.usage_deficiencies);
    let utc_offset_seconds = parts.utc_offset_seconds;
    Compilation {
        schema_version: SCHEMA_VERSION,
        attendant: AttendantInfo {
            name: parts.name,
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: parts.hostname,
        },
        time: TimeReport {
            utc: parts.now,
            utc_offset_seconds,
            zone: parts.zone,
            received_at: parts.received_at,
            replied_at: parts.now,
        },
        services: parts.services,
        probes: parts.probes,
        host: parts.host,
        deficiencies,
        usage: parts.usage,
    }
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
