//! Clock keeping (SPEC section 4): after each answered poll, verify the last correction,
//! and order a new one when the offset is beyond `max_clock_skew` by more than network
//! asymmetry could explain.
//!
//! Rules it keeps:
//! - Orders are only sent with a signing key; each is signed and carries a fresh nonce.
//! - After an applied order, the next poll says whether it took (`verified` or `not
//!   effective`).
//! - After a refused or failed order, no new one for [`ORDER_BACKOFF`]: the attendant would
//!   only refuse again, once per poll. An operator's poll on request lifts the back-off.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rollcall_protocol::clock_order::{ClockOrder, Outcome, SignedOrder};

use crate::clock_estimate::ClockEstimate;
use crate::config::{ServerConfig, SigningKey};
use crate::fetch::Fetch;
use crate::model::ClockCorrectionRow;
use crate::schedule::Timebase;

/// How long after a refused or failed clock order the poller waits before ordering again.
pub const ORDER_BACKOFF: chrono::Duration = chrono::Duration::minutes(30);

/// How the poller keeps clocks.
#[derive(Clone, Debug)]
pub struct ClockPolicy {
    /// Orders are only sent with a key.
    pub key: Option<SigningKey>,
    /// Correct when |offset| − delay/2 exceeds this.
    pub max_skew: std::time::Duration,
}

/// Clock keeping's memory of one server, in the server's live state.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClockState {
    /// A correction was applied; the next poll checks that it took.
    pub pending: bool,
    /// No new order before this.
    pub quiet_until: Option<DateTime<Utc>>,
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
    /// `at`: verifies the last correction and orders a new one when needed. Answers the
    /// server's new clock state and the rows for the history (none, one or two).
    pub async fn keep(
        &self,
        fetcher: &dyn Fetch,
        server: &ServerConfig,
        attendant: &str,
        e: ClockEstimate,
        at: DateTime<Utc>,
        mut state: ClockState,
    ) -> (ClockState, Vec<ClockCorrectionRow>) {
        let name = &server.name;
        let max_ms = self.policy.max_skew.as_secs_f64() * 1000.0;
        let off = e.certain_skew_ms() > max_ms;
        let mut rows = Vec::new();
        if std::mem::take(&mut state.pending) {
            let (outcome, detail) = if off {
                tracing::warn!(server = %name, offset_ms = e.offset_ms, "clock still off after a correction");
                ("not effective", format!("offset still {:.1} ms after the correction", e.offset_ms))
            } else {
                tracing::info!(server = %name, offset_ms = e.offset_ms, "clock correction verified");
                ("verified", format!("offset now {:.1} ms (delay {:.1} ms)", e.offset_ms, e.delay_ms))
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
            return (state, rows);
        }
        let Some(key) = &self.policy.key else {
            tracing::debug!(server = %name, offset_ms = e.offset_ms, "clock beyond max_clock_skew; no signing_key_file, so no correction");
            return (state, rows);
        };
        if state.quiet_until.is_some_and(|t| at < t) {
            return (state, rows);
        }
        let correction_us = -(e.offset_ms * 1000.0).round() as i64;
        let order =
            ClockOrder { server: attendant.to_string(), correction_us, poller_time: Utc::now(), nonce: self.nonce() };
        let signed = SignedOrder::sign(&order, &key.0);
        let correction_ms = correction_us as f64 / 1000.0;
        let (outcome, detail) = match fetcher.order_clock(server, &signed).await {
            Ok(reply) => {
                if reply.outcome == Outcome::Applied {
                    state = ClockState { pending: true, quiet_until: None };
                    tracing::info!(server = %name, offset_ms = e.offset_ms, correction_ms, "clock corrected");
                } else {
                    state.quiet_until = Some(at + ORDER_BACKOFF);
                    tracing::warn!(server = %name, offset_ms = e.offset_ms, outcome = reply.outcome.as_str(), reason = %reply.reason, "clock order not applied");
                }
                (reply.outcome.as_str().to_string(), reply.reason)
            }
            Err(err) => {
                state.quiet_until = Some(at + ORDER_BACKOFF);
                tracing::warn!(server = %name, error = %err, "clock order failed");
                ("failed".to_string(), err.to_string())
            }
        };
        rows.push(ClockCorrectionRow { at, offset_ms: e.offset_ms, correction_ms, outcome, detail });
        (state, rows)
    }

    /// Unique per order: the process, the time and a counter. Not secret: the signature
    /// makes orders unforgeable; the nonce only makes each one single-use.
    fn nonce(&self) -> String {
        let n = self.nonces.fetch_add(1, Ordering::Relaxed);
        let t = self.timebase.wall_now().timestamp_micros();
        format!("{:x}-{t:x}-{n:x}", std::process::id())
    }
}
