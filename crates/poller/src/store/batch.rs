//! A batch: the poll results the writer hands a backend in one transaction.
//!
//! Rules it keeps:
//! - A server's facts appear once, the newest; they are carried when any record in the
//!   batch changed them (a record that changes nothing but time, offset and delay leaves
//!   them to its poll row, from which the store reads them back).
//! - Rows keep the order the polls finished in, so each server's poll chain and history
//!   stay in time order; acknowledgement changes keep their order too (a set and its
//!   end in one batch are applied in turn).
//! - [`Batch::shed`] drops only history that can be spared, oldest first: poll rows and
//!   compilations in the history. Facts, transitions, clock corrections, acknowledgements
//!   and operator actions are never dropped.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::model::{
    AckChange, ActionRow, ChangedCompilation, ClockCorrectionRow, PollRecord, PollRow, ServerFacts, TransitionRow,
};

/// Poll results to write together. Each row is `(server, row)`.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The newest facts of each server whose facts changed, in first-changed order.
    pub facts: Vec<ServerFacts>,
    pub polls: Vec<(String, PollRow)>,
    pub transitions: Vec<(String, TransitionRow)>,
    pub clock_corrections: Vec<(String, ClockCorrectionRow)>,
    /// Compilations that changed in substance, with the poll's time.
    pub compilations: Vec<(String, DateTime<Utc>, ChangedCompilation)>,
    /// Acknowledgements set and ended, in the order they happened.
    pub acks: Vec<(String, AckChange)>,
    /// Operator actions (the audit trail).
    pub actions: Vec<(String, ActionRow)>,
    /// Where each server's facts are in `facts`.
    facts_at: HashMap<String, usize>,
}

/// What [`Batch::shed`] dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub polls: usize,
    pub compilations: usize,
}

impl Batch {
    /// Adds one poll's results.
    pub fn push(&mut self, rec: PollRecord) {
        let PollRecord { mut facts, facts_changed, poll, transition, compilation, clock_corrections } = rec;
        // Most polls change no fact: their facts are dropped, so their name is moved out
        // rather than copied (one allocation per poll fewer on the writer's path).
        let name = if facts_changed { facts.name.clone() } else { std::mem::take(&mut facts.name) };
        if let Some(t) = transition {
            self.transitions.push((name.clone(), t));
        }
        for c in clock_corrections {
            self.clock_corrections.push((name.clone(), c));
        }
        if let Some(c) = compilation {
            self.compilations.push((name.clone(), poll.at, c));
        }
        if facts_changed {
            match self.facts_at.get(&name) {
                Some(&i) => self.facts[i] = facts,
                None => {
                    self.facts_at.insert(name.clone(), self.facts.len());
                    self.facts.push(facts);
                }
            }
        }
        self.polls.push((name, poll));
    }

    /// Adds an acknowledgement set or ended.
    pub fn push_ack(&mut self, server: String, change: AckChange) {
        self.acks.push((server, change));
    }

    /// Adds an operator action.
    pub fn push_action(&mut self, server: String, action: ActionRow) {
        self.actions.push((server, action));
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
            && self.polls.is_empty()
            && self.transitions.is_empty()
            && self.clock_corrections.is_empty()
            && self.compilations.is_empty()
            && self.acks.is_empty()
            && self.actions.is_empty()
    }

    /// Rows of every kind, for logs and `/metrics`.
    pub fn len(&self) -> usize {
        self.facts.len()
            + self.polls.len()
            + self.transitions.len()
            + self.clock_corrections.len()
            + self.compilations.len()
            + self.acks.len()
            + self.actions.len()
    }

    /// Poll rows waiting.
    pub fn polls(&self) -> usize {
        self.polls.len()
    }

    /// Drops the oldest poll rows beyond `max_polls` and the oldest history compilations
    /// beyond `max_compilations`; everything else is kept.
    pub fn shed(&mut self, max_polls: usize, max_compilations: usize) -> Shed {
        let polls = self.polls.len().saturating_sub(max_polls);
        self.polls.drain(..polls);
        let compilations = self.compilations.len().saturating_sub(max_compilations);
        self.compilations.drain(..compilations);
        Shed { polls, compilations }
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.facts.clear();
        self.facts_at.clear();
        self.polls.clear();
        self.transitions.clear();
        self.clock_corrections.clear();
        self.compilations.clear();
        self.acks.clear();
        self.actions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServerState;

    fn record(name: &str, at_ms: i64, changed: bool, transition: bool) -> PollRecord {
        let at = DateTime::from_timestamp_millis(at_ms).unwrap();
        let mut facts = ServerFacts::new(name, "http://x", "normal");
        facts.last_poll_at = Some(at);
        PollRecord {
            facts,
            facts_changed: changed,
            poll: PollRow {
                at,
                state: ServerState::Ok,
                level: "normal".into(),
                rtt_ms: None,
                clock_offset_ms: None,
                error: None,
                deficiencies: 0,
            },
            transition: transition.then(|| TransitionRow {
                at,
                from: "normal".into(),
                to: "critical".into(),
                reason: "x".into(),
            }),
            compilation: None,
            clock_corrections: vec![],
        }
    }

    #[test]
    fn a_server_s_facts_appear_once_the_newest() {
        let mut b = Batch::default();
        b.push(record("a", 1, true, false));
        b.push(record("b", 2, false, false));
        b.push(record("a", 3, true, false));
        b.push(record("a", 4, false, false));
        assert_eq!(b.facts.len(), 1, "b changed nothing; a once");
        assert_eq!(b.facts[0].last_poll_at.unwrap().timestamp_millis(), 3);
        assert_eq!(b.polls(), 4);
    }

    #[test]
    fn shedding_drops_the_oldest_polls_and_never_a_transition_or_facts() {
        let mut b = Batch::default();
        for i in 0..10 {
            b.push(record("a", i, i == 0, i % 3 == 0));
        }
        let shed = b.shed(4, 100);
        assert_eq!(shed, Shed { polls: 6, compilations: 0 });
        let kept: Vec<i64> = b.polls.iter().map(|(_, p)| p.at.timestamp_millis()).collect();
        assert_eq!(kept, [6, 7, 8, 9]);
        assert_eq!(b.transitions.len(), 4);
        assert_eq!(b.facts.len(), 1);
    }
}
