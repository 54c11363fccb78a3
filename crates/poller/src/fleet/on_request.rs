//! Polls on request (`POST /api/v1/servers/{name}/poll`, SPEC section 11): coalesced and
//! spaced per server, so a storm of requests is never a storm of polls.
//!
//! Rules it keeps:
//! - At most one poll on request in flight per server: a request that comes while one runs
//!   joins it and answers its result.
//! - At most one poll on request started per server per [`MIN_SPACING`]; a request after
//!   one finished and before that is [`PollNowError::TooSoon`], with how long to wait
//!   (the API answers `429` with `Retry-After`).
//! - Once started, a poll on request runs to its end even if every requester hangs up: it
//!   is a poll like any other, recorded and announced, and never cut half-way.
//! - A poll on request does not lift the clock-order back-off
//!   ([`super::clock_keeping::ORDER_BACKOFF`]): requests must not become signed orders to
//!   an attendant that refuses them.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::ServerSummary;

/// The shortest time between the starts of two polls on request of one server.
pub const MIN_SPACING: Duration = Duration::from_secs(1);

/// Why a poll on request did not answer a server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PollNowError {
    /// A poll on request of this server started less than [`MIN_SPACING`] ago.
    #[error("polled on request less than {}s ago; ask again in {} ms", MIN_SPACING.as_secs(), .retry_after.as_millis())]
    TooSoon { retry_after: Duration },
    /// The poll ended without an answer (its task was stopped with the runtime).
    #[error("the poll on request ended without an answer (is the poller stopping?)")]
    Lost,
}

/// Where a poll on request's result is announced, once.
pub(crate) type Answer = watch::Receiver<Option<ServerSummary>>;

/// What a request for a poll gets.
pub(crate) enum Ticket {
    /// Start the poll, then send its result on the sender (the receiver waits for it).
    Lead(watch::Sender<Option<ServerSummary>>, Answer),
    /// A poll on request is in flight: wait for its result.
    Join(Answer),
    /// Too soon after the last; ask again after this long.
    TooSoon(Duration),
}

/// One server's polls on request.
#[derive(Default)]
pub(crate) struct Gate {
    started: Option<Instant>,
    running: Option<Answer>,
}

impl Gate {
    /// The ticket of a request at `now`.
    pub(crate) fn ticket(&mut self, now: Instant) -> Ticket {
        // A closed channel is a poll whose task ended without answering: not in flight.
        if let Some(answer) = self.running.take().filter(|a| a.has_changed().is_ok()) {
            self.running = Some(answer.clone());
            return Ticket::Join(answer);
        }
        if let Some(wait) = self.started.map(|t| (t + MIN_SPACING).saturating_duration_since(now)) {
            if !wait.is_zero() {
                return Ticket::TooSoon(wait);
            }
        }
        let (tx, rx) = watch::channel(None);
        self.started = Some(now);
        self.running = Some(rx.clone());
        Ticket::Lead(tx, rx)
    }

    /// The poll in flight has its result: later requests no longer join it.
    pub(crate) fn finished(&mut self) {
        self.running = None;
    }
}

/// Waits for the result `answer` carries.
pub(crate) async fn wait(mut answer: Answer) -> Result<ServerSummary, PollNowError> {
    let summary = answer.wait_for(Option::is_some).await.map_err(|_| PollNowError::Lost)?;
    summary.clone().ok_or(PollNowError::Lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_joins_the_poll_in_flight_and_waits_its_turn_after_it() {
        let t0 = Instant::now();
        let mut gate = Gate::default();
        let Ticket::Lead(tx, _) = gate.ticket(t0) else { panic!("the first request leads") };
        assert!(matches!(gate.ticket(t0 + Duration::from_millis(1500)), Ticket::Join(_)), "in flight: join");
        gate.finished();
        drop(tx);
        match gate.ticket(t0 + Duration::from_millis(400)) {
            Ticket::TooSoon(wait) => assert_eq!(wait, Duration::from_millis(600)),
            _ => panic!("a second poll within MIN_SPACING"),
        }
        assert!(matches!(gate.ticket(t0 + MIN_SPACING), Ticket::Lead(..)), "spaced enough: a new poll");
    }

    #[test]
    fn a_poll_that_died_without_answering_is_not_joined() {
        let t0 = Instant::now();
        let mut gate = Gate::default();
        let Ticket::Lead(tx, _) = gate.ticket(t0) else { panic!("the first request leads") };
        drop(tx);
        assert!(matches!(gate.ticket(t0 + MIN_SPACING), Ticket::Lead(..)));
    }
}
