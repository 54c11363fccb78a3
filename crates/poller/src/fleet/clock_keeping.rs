//! Clock keeping (SPEC section 4): after each answered poll, verify the last correction,
//! and order a new one when the offset is beyond `max_clock_skew` by more than network
//! asymmetry could explain.
//!
//! Rules it keeps:
//! - Orders are only sent with a signing key; each is signed and carries a fresh nonce.
//! - After an applied order, the next poll says whether it took (`verified` or `not
//!   effective`).
//! - After a refused or failed order, no new one for [`ORDER_BACKOFF`]: the attendant would
//!   only refuse again, once per poll. A poll on request does not lift it (SPEC section
//!   11): requests must not become signed orders to an attendant that refuses them.
//! - A clock beyond `max_clock_skew` that this poll does not correct (no signing key, the
//!   back-off, a refused or failed order) is never silent: it is the deficiency
//!   [`SKEW_SOURCE`] (a warning, judged by the rules like any other), and the first time
//!   for lack of a key it is logged.
//! - A correction applied by stepping is verified [`VERIFY_AFTER`] later rather than at the
//!   next slot, so the offset shown is a measured one within seconds. A slewed correction
//!   takes time to complete and waits for the next slot.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rollcall_protocol::clock_order::{ClockOrder, Outcome, SignedOrder};
use rollcall_protocol::{Deficiency, Severity};

use crate::clock_estimate::ClockEstimate;
use crate::config::{ServerConfig, SigningKey};
use crate::fetch::Fetch;
use crate::model::ClockCorrectionRow;
use crate::schedule::Timebase;

/// How long after a refused or failed clock order the poller waits before ordering again.
pub const ORDER_BACKOFF: chrono::Duration = chrono::Duration::minutes(30);
/// How soon after a stepped correction the server is polled again to verify it.
pub const VERIFY_AFTER: chrono::Duration = chrono::Duration::seconds(5);
/// The deficiency source of a clock beyond `max_clock_skew` that is not being corrected.
pub const SKEW_SOURCE: &str = "clock:skew";

/// How the poller keeps clocks.
#[derive(Clone, Debug)]
pub struct ClockPolicy {
    /// Orders are only sent with a key.
    pub key: Option<SigningKey>,
    /// Correct when |offset| − delay/2 exceeds this.
    pub max_skew: std::time::Duration,
}

/// Clock keeping's memory of one server, in the server's live state.
#[derive(Debug, Clone, Default)]
pub struct ClockState {
    /// A correction was applied; the next poll checks that it took.
    pub pending: bool,
    /// No new order before this.
    pub quiet_until: Option<DateTime<Utc>>,
    /// Why the last order was not applied (shown while the back-off lasts).
    pub last_refusal: Option<String>,
    /// The lack of a signing key was logged for this excursion beyond the skew.
    pub unkeyed_logged: bool,
}

/// What clock keeping did after one poll.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// The server's new clock state.
    pub state: ClockState,
    /// Orders sent and verifications, for the history (none, one or two).
    pub rows: Vec<ClockCorrectionRow>,
    /// The clock is beyond `max_clock_skew` and this poll did not correct it.
    pub deficiency: Option<Deficiency>,
    /// Poll again [`VERIFY_AFTER`] from now to verify a stepped correction.
    pub verify_soon: bool,
}

/// Keeps every server's clock under one policy.
#[derive(Debug)]
pub struct ClockKeeper {
    policy: ClockPolicy,
    timebase: Timebase,
    nonces: AtomicU64,
}

impl ClockKeeper {
    pub fn new(policy: ClockPolicy, timebase: Timebase) -> ClockKeeper {
        ClockKeeper { policy, timebase, nonces: AtomicU64::new(0) }
    }

    /// After an answered poll of `server` (whose attendant calls itself `attendant`) at
    /// `at`: verifies the last correction and orders a new one when needed.
    pub async fn keep(
        &self,
        fetcher: &dyn Fetch,
        server: &ServerConfig,
        attendant: &str,
        e: ClockEstimate,
        at: DateTime<Utc>,
        mut state: ClockState,
    ) -> Kept {
        let name = &server.name;
        let max_ms = self.policy.max_skew.as_secs_f64() * 1000.0;
        let off = e.certain_skew_ms() > max_ms;
        let offset = Ms(e.offset_ms);
        let mut rows = Vec::new();
        if std::mem::take(&mut state.pending) {
            let (outcome, detail) = if off {
                tracing::warn!(server = %name, offset_ms = %offset, "clock still off after a correction");
                ("not effective", format!("offset still {offset} ms after the correction"))
            } else {
                tracing::info!(server = %name, offset_ms = %offset, "clock correction verified");
                ("verified", format!("offset now {offset} ms (delay {} ms)", Ms(e.delay_ms)))
            };
            rows.push(ClockCorrectionRow {
                at,
                offset_ms: e.offset_ms,
                correction_ms: 0.0,
                outcome: outcome.into(),
                detail,
            });
        }
        if !off {
            state.unkeyed_logged = false;
            state.last_refusal = None;
            return Kept { state, rows, ..Kept::default() };
        }
        let skew = |why: String| {
            Some(Deficiency {
                source: SKEW_SOURCE.into(),
                severity: Severity::Warning,
                summary: format!("clock off by {offset} ms (max_clock_skew {} ms): {why}", Ms(max_ms)),
            })
        };
        let Some(key) = &self.policy.key else {
            if !std::mem::replace(&mut state.unkeyed_logged, true) {
                tracing::warn!(server = %name, offset_ms = %offset, "clock beyond max_clock_skew; no signing_key_file, so the poller cannot correct it");
            }
            let deficiency = skew("no signing_key_file, so the poller cannot correct it".into());
            return Kept { state, rows, deficiency, verify_soon: false };
        };
        if let Some(until) = state.quiet_until.filter(|t| at < *t) {
            let why = state.last_refusal.clone().unwrap_or_else(|| "the last order was not applied".into());
            let deficiency = skew(format!("{why}; next order after {}", until.format("%H:%M:%S UTC")));
            return Kept { state, rows, deficiency, verify_soon: false };
        }
        let correction_us = -(e.offset_ms * 1000.0).round() as i64;
        let order =
            ClockOrder { server: attendant.to_string(), correction_us, poller_time: Utc::now(), nonce: self.nonce() };
        let signed = SignedOrder::sign(&order, &key.0);
        let correction_ms = correction_us as f64 / 1000.0;
        let mut deficiency = None;
        let mut verify_soon = false;
        let (outcome, detail) = match fetcher.order_clock(server, &signed).await {
            Ok(reply) => {
                if reply.outcome == Outcome::Applied {
                    verify_soon = reply.method.as_deref() == Some("step");
                    state = ClockState { pending: true, ..ClockState::default() };
                    tracing::info!(server = %name, offset_ms = %offset, correction_ms = %Ms(correction_ms), "clock corrected");
                } else {
                    let why = format!("the attendant {} the order: {}", reply.outcome.as_str(), reply.reason);
                    state.quiet_until = Some(at + ORDER_BACKOFF);
                    state.last_refusal = Some(why.clone());
                    deficiency = skew(why);
                    tracing::warn!(server = %name, offset_ms = %offset, outcome = reply.outcome.as_str(), reason = %reply.reason, "clock order not applied");
                }
                (reply.outcome.as_str().to_string(), reply.reason)
            }
            Err(err) => {
                let why = format!("the clock order failed: {err}");
                state.quiet_until = Some(at + ORDER_BACKOFF);
                state.last_refusal = Some(why.clone());
                deficiency = skew(why);
                tracing::warn!(server = %name, error = %err, "clock order failed");
                ("failed".to_string(), err.to_string())
            }
        };
        rows.push(ClockCorrectionRow { at, offset_ms: e.offset_ms, correction_ms, outcome, detail });
        Kept { state, rows, deficiency, verify_soon }
    }

    /// Unique per order: the process, the time and a counter. Not secret: the signature
    /// makes orders unforgeable; the nonce only makes each one single-use.
    fn nonce(&self) -> String {
        let n = self.nonces.fetch_add(1, Ordering::Relaxed);
        let t = self.timebase.wall_now().timestamp_micros();
        format!("{:x}-{t:x}-{n:x}", std::process::id())
    }
}

/// Milliseconds as people read them in logs, messages and the dashboard: one decimal, no
/// float noise (`1.5019090000000002` prints `1.5`, `-0.04` prints `0.0`).
#[derive(Debug, Clone, Copy)]
pub struct Ms(pub f64);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Rounded first, then `+ 0.0` turns a rounded `-0.0` into `0.0`.
        write!(f, "{:.1}", (self.0 * 10.0).round() / 10.0 + 0.0)
    }
}

#[cfg(test)]
#[test]
fn milliseconds_read_with_one_decimal_and_never_minus_zero() {
    assert_eq!(Ms(1.5019090000000002).to_string(), "1.5");
    assert_eq!(Ms(-0.04).to_string(), "0.0");
    assert_eq!(Ms(-45000.26).to_string(), "-45000.3");
}
