//! The latest result of every background probe, read by each compilation.
//!
//! The mailbox and mail-loop probes post here on their own schedules, the clock keeper
//! after each clock order (probe `clock`); a query never waits for a probe, it reports the
//! last result with its `observed_at`. Results are kept by name: one per probe.

use std::sync::Arc;

use parking_lot::RwLock;

use rollcall_protocol::ProbeResult;

/// Shared, cheap to clone; results keep the order in which probes first reported.
#[derive(Clone, Default)]
pub struct ProbeBoard(Arc<RwLock<Vec<ProbeResult>>>);

impl ProbeBoard {
    /// Replaces the result of the probe with the same name, or adds it.
    pub fn report(&self, result: ProbeResult) {
        let mut g = self.0.write();
        match g.iter_mut().find(|p| p.name == result.name) {
            Some(slot) => *slot = result,
            None => g.push(result),
        }
    }

    /// Forgets a probe (its config was removed).
    pub fn remove(&self, name: &str) {
        self.0.write().retain(|p| p.name != name);
    }

    /// The latest result of the probe `name`, if it has reported since it (re)started.
    pub fn get(&self, name: &str) -> Option<ProbeResult> {
        self.0.read().iter().find(|p| p.name == name).cloned()
    }

    /// Every probe's latest result, in first-report order (what a compilation shows).
    pub fn snapshot(&self) -> Vec<ProbeResult> {
        self.0.read().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_protocol::Status;

    fn r(name: &str, status: Status) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            kind: "test".into(),
            status,
            message: String::new(),
            observed_at: chrono::Utc::now(),
            duration_ms: 0.0,
            details: Default::default(),
        }
    }

    #[test]
    fn latest_result_per_probe_in_first_report_order() {
        let b = ProbeBoard::default();
        b.report(r("login", Status::Ok));
        b.report(r("mail_read", Status::Ok));
        b.report(r("login", Status::Critical));
        let s = b.snapshot();
        assert_eq!(
            s.iter().map(|p| (p.name.as_str(), p.status)).collect::<Vec<_>>(),
            [("login", Status::Critical), ("mail_read", Status::Ok)]
        );
        b.remove("login");
        assert_eq!(b.snapshot().len(), 1);
        assert!(b.get("mail_read").is_some());
    }
}
