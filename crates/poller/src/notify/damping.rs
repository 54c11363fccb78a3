//! What to tell about a server, given what was told before: the notice rules and flap
//! damping, as pure logic over a [`Memory`] that the store keeps across restarts.
//!
//! Rules it keeps:
//! - A notice goes out when a server's condition (level, state) differs from the last one
//!   told; a poll that finds the same condition tells nothing. The memory is persisted, so
//!   after a restart the first poll of an unchanged server tells nothing either.
//! - Flap damping: every change of *state* is remembered for `window`; the change that
//!   makes their number exceed `threshold` sends one `flapping` notice instead of its own,
//!   and while flapping nothing else is told. When a whole `window` passes without a state
//!   change, one `settled` notice tells the condition it settled in.
//! - A server never seen before counts as having been fine (first level, ok): a new server
//!   that is fine tells nothing, one that is not tells a problem.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

pub use crate::config::Damping;
use crate::model::{NotifyRow, ServerState};

/// A server's condition as notices describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Condition {
    pub level: String,
    pub state: ServerState,
    /// Flapping: changing state too often to tell each change.
    pub flapping: bool,
}

impl Condition {
    /// Fine: at the first level and answering with nothing wrong.
    pub fn is_fine(&self, first_level: &str) -> bool {
        !self.flapping && self.level == first_level && self.state == ServerState::Ok
    }
}

/// Why a notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    /// From fine to not fine.
    Problem,
    /// From one not-fine condition to another (e.g. deficient to unreachable, or up a level).
    Change,
    /// Back to fine.
    Recovery,
    /// Changing state more than `flap_threshold` times within `flap_window`.
    Flapping,
    /// No state change for a whole `flap_window` after flapping.
    Settled,
    /// A clock order was sent or verified.
    Clock,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Problem => "problem",
            NoticeKind::Change => "change",
            NoticeKind::Recovery => "recovery",
            NoticeKind::Flapping => "flapping",
            NoticeKind::Settled => "settled",
            NoticeKind::Clock => "clock",
        }
    }
}

/// What is remembered of one server between polls and across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// The condition last told (with `flapping` set while flapping was told).
    pub told: Condition,
    /// The state the last poll found, to count changes.
    pub seen: ServerState,
    /// When the state changed, within the last window.
    pub changes: Vec<DateTime<Utc>>,
    /// How many notices were claimed from this memory ([`crate::notify::key::told`]).
    pub seq: i64,
}

impl Memory {
    /// A server never seen: as if it had been fine.
    pub fn fresh(first_level: &str) -> Memory {
        Memory {
            told: Condition { level: first_level.to_string(), state: ServerState::Ok, flapping: false },
            seen: ServerState::Ok,
            changes: Vec::new(),
            seq: 0,
        }
    }

    /// Takes back `decision` (its notice could not be claimed): the condition told is
    /// the one before it again, so the next poll decides it again. What the poll saw (the
    /// state and its change) stays seen.
    pub fn undo(&mut self, decision: &Decision) {
        self.told = decision.previous.clone();
    }

    /// The memory as the store keeps it.
    pub fn to_row(&self, server: &str) -> NotifyRow {
        NotifyRow {
            server: server.to_string(),
            level: self.told.level.clone(),
            state: self.told.state,
            flapping: self.told.flapping,
            seen_state: self.seen,
            changes: self.changes.clone(),
            seq: self.seq,
        }
    }

    /// The memory the store kept: `(server, memory)`.
    pub fn from_row(row: NotifyRow) -> (String, Memory) {
        let told = Condition { level: row.level, state: row.state, flapping: row.flapping };
        (row.server, Memory { told, seen: row.seen_state, changes: row.changes, seq: row.seq })
    }
}

/// What one poll's outcome calls for: at most one notice, told from `previous` to the
/// memory's new `told`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: NoticeKind,
    pub previous: Condition,
}

impl Damping {
    /// Applies one poll's outcome to `mem`; answers the notice to send, if any, and whether
    /// `mem` changed in a way worth persisting.
    pub fn observe(
        &self,
        mem: &mut Memory,
        level: &str,
        state: ServerState,
        at: DateTime<Utc>,
        first_level: &str,
    ) -> (Option<Decision>, bool) {
        let mut dirty = false;
        if state != mem.seen {
            mem.seen = state;
            mem.changes.push(at);
            dirty = true;
        }
        let window = TimeDelta::from_std(self.window).unwrap_or(TimeDelta::MAX);
        let before = mem.changes.len();
        mem.changes.retain(|t| at.signed_duration_since(*t) < window);
        dirty |= mem.changes.len() != before;
        let now = Condition { level: level.to_string(), state, flapping: false };
        let previous = mem.told.clone();
        if previous.flapping {
            if mem.changes.is_empty() {
                mem.told = now;
                return (Some(Decision { kind: NoticeKind::Settled, previous }), true);
            }
            return (None, dirty);
        }
        if mem.changes.len() > self.threshold as usize {
            mem.told = Condition { flapping: true, ..now };
            return (Some(Decision { kind: NoticeKind::Flapping, previous }), true);
        }
        if now == previous {
            return (None, dirty);
        }
        let kind = match (previous.is_fine(first_level), now.is_fine(first_level)) {
            (true, false) => NoticeKind::Problem,
            (false, true) => NoticeKind::Recovery,
            _ => NoticeKind::Change,
        };
        mem.told = now;
        (Some(Decision { kind, previous }), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerState::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn kinds(d: &Damping, polls: &[(i64, &str, ServerState)]) -> Vec<Option<NoticeKind>> {
        let mut m = Memory::fresh("normal");
        polls.iter().map(|(s, l, st)| d.observe(&mut m, l, *st, t(*s), "normal").0.map(|d| d.kind)).collect()
    }

    const D: Damping = Damping { threshold: 3, window: std::time::Duration::from_secs(60) };

    #[test]
    fn changes_are_told_once_and_same_condition_never() {
        use NoticeKind::*;
        let k = kinds(
            &D,
            &[
                (0, "normal", Ok),
                (10, "critical", Deficient),
                (20, "critical", Deficient),
                (30, "critical", Unreachable),
                (200, "critical", Ok),
                (210, "normal", Ok),
                (220, "normal", Ok),
            ],
        );
        assert_eq!(k, [None, Some(Problem), None, Some(Change), Some(Change), Some(Recovery), None]);
    }

    #[test]
    fn flapping_is_told_once_then_settled_once() {
        use NoticeKind::*;
        let k = kinds(
            &D,
            &[
                (0, "critical", Deficient),  // change 1: problem
                (5, "normal", Ok),           // 2: recovery
                (10, "critical", Deficient), // 3: problem
                (15, "normal", Ok),          // 4 > 3: flapping
                (20, "critical", Deficient),
                (25, "normal", Ok),
                (30, "critical", Deficient), // last change
                (80, "critical", Deficient), // within the window of the last change
                (91, "critical", Deficient), // a whole window without change: settled
                (100, "critical", Deficient),
                (110, "normal", Ok),
            ],
        );
        assert_eq!(
            k,
            [
                Some(Problem),
                Some(Recovery),
                Some(Problem),
                Some(Flapping),
                None,
                None,
                None,
                None,
                Some(Settled),
                None,
                Some(Recovery)
            ]
        );
    }

    #[test]
    fn a_new_server_that_is_fine_tells_nothing_and_memory_survives() {
        let mut m = Memory::fresh("normal");
        assert_eq!(D.observe(&mut m, "normal", Ok, t(0), "normal").0, None);
        let (d, dirty) = D.observe(&mut m, "critical", Unreachable, t(1), "normal");
        assert_eq!(d.map(|d| d.kind), Some(NoticeKind::Problem));
        assert!(dirty);
        // A restart hands the same memory back: the same condition tells nothing.
        let mut again = m.clone();
        assert_eq!(D.observe(&mut again, "critical", Unreachable, t(2), "normal"), (None, false));
    }

    #[test]
    fn a_decision_taken_back_is_decided_again_by_the_next_poll() {
        let mut m = Memory::fresh("normal");
        let (d, _) = D.observe(&mut m, "critical", Unreachable, t(1), "normal");
        m.undo(&d.unwrap());
        let (again, _) = D.observe(&mut m, "critical", Unreachable, t(2), "normal");
        assert_eq!(again.map(|d| d.kind), Some(NoticeKind::Problem));
        assert_eq!(m.changes, [t(1)], "the state change is counted once");
        // Flapping taken back: told again at the next poll.
        let mut m = Memory::fresh("normal");
        let polls = [(0, Deficient), (1, Ok), (2, Deficient), (3, Ok)];
        let mut last = None;
        for (s, st) in polls {
            last = D.observe(&mut m, "normal", st, t(s), "normal").0;
        }
        let flapping = last.unwrap();
        assert_eq!(flapping.kind, NoticeKind::Flapping);
        m.undo(&flapping);
        let (again, _) = D.observe(&mut m, "normal", Ok, t(4), "normal");
        assert_eq!(again.map(|d| d.kind), Some(NoticeKind::Flapping));
    }
}
