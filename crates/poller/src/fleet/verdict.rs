//! The verdict on one poll: pure, no I/O. A reply is judged by the deficiencies its
//! attendant reported; a poll error is one critical deficiency `poll:KIND` and the state
//! `unreachable` (the poller learned nothing about the server).

use rollcall_protocol::{Deficiency, Severity};

use crate::clock_estimate::ClockEstimate;
use crate::fetch::{self, Fetched, PollError};
use crate::model::ServerState;

/// What one poll found.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub state: ServerState,
    pub deficiencies: Vec<Deficiency>,
    /// Why the poll failed, as the API shows it.
    pub error: Option<PollError>,
    /// The clock estimate, from an answered poll's four stamps.
    pub estimate: Option<ClockEstimate>,
    /// The reply, when there was one.
    pub reply: Option<Reply>,
}

impl Verdict {
    /// Adds a deficiency the poller itself found (a clock it cannot correct): an answered
    /// server with one is deficient.
    pub fn add(&mut self, d: Deficiency) {
        if self.state == ServerState::Ok {
            self.state = ServerState::Deficient;
        }
        self.deficiencies.push(d);
    }
}

/// An answered poll's reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// [`rollcall_protocol::Compilation::substance_hash`] of the reply.
    pub substance: i64,
    /// The reply body as received.
    pub raw: bytes::Bytes,
    /// The attendant's own name, which clock orders are addressed to.
    pub attendant: String,
}

/// Judges a poll's outcome: a reply is read ([`fetch::decode`]) first, and one that is not
/// a compilation is a failed poll like any other.
pub fn judge(result: Result<Fetched, PollError>) -> Verdict {
    match result.and_then(|f| fetch::decode(&f.raw).map(|digest| (f, digest))) {
        Ok((f, digest)) => {
            let estimate = ClockEstimate::from_stamps(f.sent_at, digest.received_at, digest.replied_at, f.received_at);
            let deficiencies = digest.deficiencies;
            Verdict {
                state: if deficiencies.is_empty() { ServerState::Ok } else { ServerState::Deficient },
                deficiencies,
                error: None,
                estimate: Some(estimate),
                reply: Some(Reply { substance: digest.substance, raw: f.raw, attendant: digest.attendant }),
            }
        }
        Err(e) => Verdict {
            state: ServerState::Unreachable,
            deficiencies: vec![poll_deficiency(&e)],
            error: Some(e),
            estimate: None,
            reply: None,
        },
    }
}

/// The deficiency a failed poll stands for: `poll:KIND`, always critical.
pub fn poll_deficiency(e: &PollError) -> Deficiency {
    Deficiency { source: format!("poll:{}", e.kind()), severity: Severity::Critical, summary: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_poll_is_unreachable_with_one_critical_deficiency_named_by_its_kind() {
        let v = judge(Err(PollError::Refused("connection refused by http://a".into())));
        assert_eq!(v.state, ServerState::Unreachable);
        assert_eq!(v.deficiencies.len(), 1);
        assert_eq!(
            (v.deficiencies[0].source.as_str(), v.deficiencies[0].severity),
            ("poll:refused", Severity::Critical)
        );
        assert!(v.estimate.is_none() && v.reply.is_none());
    }
}
