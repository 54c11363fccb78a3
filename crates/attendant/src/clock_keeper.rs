//! Clock orders at the attendant: authenticity first, then the attendant's own limits.
//!
//! Rules it keeps, in this order: no `poller_public_key` → every order is rejected (403);
//! the signature must verify, the order must name this attendant, its time must agree
//! with ours once corrected (within [`ORDER_WINDOW`]), and its nonce must be new —
//! otherwise rejected (401). A nonce is remembered for as long as its order could still
//! pass the time check: twice the window plus the size of its correction (an order that
//! moved the clock by C agrees with the corrected clock again |C| later). A correction
//! that does not fit the clock's range is refused, never added. An authentic order is still refused when it exceeds
//! `max_clock_step` (like ntpd's panic threshold), when the OS clock is already disciplined
//! by NTP, or when it would be a step beyond [`MAX_STEPS_PER_HOUR`]. Corrections up to
//! [`STEP_THRESHOLD`] are slewed, larger ones stepped. Every outcome is posted as probe
//! `clock`; `clock = "virtual"` applies the same rules to the in-process offset.

use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use rollcall_protocol::clock_order::{ClockReply, Outcome, SignedOrder};
use rollcall_protocol::{ProbeResult, Status};
use serde_json::json;

use crate::clock::{Clock, ClockMode};
use crate::probe_board::ProbeBoard;

/// How far an order's time may lie from ours (after its correction): covers the network
/// and the poller's own work, and makes a recorded order useless soon after.
pub const ORDER_WINDOW: Duration = Duration::from_secs(30);
/// Corrections up to this are slewed, larger ones stepped (ntpd's step threshold).
pub const STEP_THRESHOLD: Duration = Duration::from_millis(128);
/// Steps accepted per rolling hour; a poller gone wrong cannot make the clock jump around.
pub const MAX_STEPS_PER_HOUR: usize = 4;

/// The OS clock as the system mode needs it; a trait so the decisions are tested without
/// touching the machine's real clock.
pub trait SystemClock: Send + Sync {
    /// True when an NTP daemon (chrony, ntpd, timesyncd) disciplines the clock.
    fn ntp_synchronized(&self) -> bool;
    /// True when this process may set the clock (CAP_SYS_TIME).
    fn may_set_time(&self) -> bool;
    fn slew(&self, us: i64) -> Result<(), String>;
    fn step(&self, us: i64) -> Result<(), String>;
}

/// What to do with an authentic order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Slew,
    Step,
    Refuse(String),
}

/// The policy, as a pure function of its inputs.
pub fn decide(correction_us: i64, max_step: Duration, steps_last_hour: usize, ntp_synchronized: bool) -> Decision {
    let size = Duration::from_micros(correction_us.unsigned_abs());
    if size > max_step {
        return Decision::Refuse(format!(
            "correction of {:.3} s exceeds max_clock_step = {} s",
            correction_us as f64 / 1e6,
            max_step.as_secs_f64()
        ));
    }
    if ntp_synchronized {
        return Decision::Refuse("the OS clock is disciplined by NTP; not fighting it".into());
    }
    if size <= STEP_THRESHOLD {
        return Decision::Slew;
    }
    if steps_last_hour >= MAX_STEPS_PER_HOUR {
        return Decision::Refuse(format!(
            "already stepped {steps_last_hour} times in the last hour (limit {MAX_STEPS_PER_HOUR})"
        ));
    }
    Decision::Step
}

/// Checks and applies clock orders for one attendant.
pub struct ClockKeeper {
    /// The poller's key and `max_clock_step`: both follow config reloads.
    settings: RwLock<(Option<VerifyingKey>, Duration)>,
    system: Option<Box<dyn SystemClock>>,
    /// Each nonce seen, with the instant it may be forgotten.
    nonces: Mutex<HashMap<String, Instant>>,
    steps: Mutex<VecDeque<Instant>>,
}

impl ClockKeeper {
    /// `system` is the OS clock for `clock = "system"`, `None` for the virtual clock.
    pub fn new(key: Option<VerifyingKey>, max_step: Duration, system: Option<Box<dyn SystemClock>>) -> ClockKeeper {
        ClockKeeper {
            settings: RwLock::new((key, max_step)),
            system,
            nonces: Mutex::new(HashMap::new()),
            steps: Mutex::new(VecDeque::new()),
        }
    }

    /// Installs a new poller key and step limit (config reloaded).
    pub fn reconfigure(&self, key: Option<VerifyingKey>, max_step: Duration) {
        *self.settings.write() = (key, max_step);
    }

    /// Handles one order; answers the HTTP status and reply, and posts probe `clock`.
    pub fn handle(&self, signed: &SignedOrder, clock: &Clock, name: &str, board: &ProbeBoard) -> (u16, ClockReply) {
        let started = Instant::now();
        let (status, reply) = self.judge(signed, clock, name, Instant::now());
        match reply.outcome {
            Outcome::Applied => {
                tracing::info!(server = %name, correction_ms = reply.correction_ms, method = reply.method.as_deref().unwrap_or("-"), "clock corrected")
            }
            _ => {
                tracing::warn!(server = %name, outcome = reply.outcome.as_str(), reason = %reply.reason, "clock order not applied")
            }
        }
        let probe_status = match reply.outcome {
            Outcome::Applied => Status::Ok,
            Outcome::Refused => Status::Critical,
            Outcome::Rejected => Status::Warning,
        };
        let mut details = serde_json::Map::new();
        details.insert("outcome".into(), json!(reply.outcome.as_str()));
        details.insert("correction_ms".into(), json!(reply.correction_ms));
        if let Some(m) = &reply.method {
            details.insert("method".into(), json!(m));
        }
        board.report(ProbeResult {
            name: "clock".into(),
            kind: "clock".into(),
            status: probe_status,
            message: format!("last order {}: {}", reply.outcome.as_str(), reply.reason),
            observed_at: clock.now(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            details,
        });
        (status, reply)
    }

    /// Judges an order at `now` (the instant nonces are remembered against).
    pub(crate) fn judge(&self, signed: &SignedOrder, clock: &Clock, name: &str, now: Instant) -> (u16, ClockReply) {
        let reject = |status: u16, correction_ms: f64, reason: String| {
            (status, ClockReply { outcome: Outcome::Rejected, method: None, correction_ms, reason })
        };
        let (key, max_step) = *self.settings.read();
        let Some(key) = &key else {
            return reject(
                403,
                0.0,
                "no poller_public_key is configured; this attendant accepts no clock orders".into(),
            );
        };
        let order = match signed.verify(key) {
            Ok(o) => o,
            Err(e) => return reject(401, 0.0, e.to_string()),
        };
        let correction_ms = order.correction_us as f64 / 1000.0;
        if order.server != name {
            return reject(401, correction_ms, format!("order is for {:?}, this is {name:?}", order.server));
        }
        // Any i64 of microseconds is a TimeDelta; the sum is what may not fit.
        let Some(corrected) = clock.now().checked_add_signed(chrono::TimeDelta::microseconds(order.correction_us))
        else {
            let reason =
                format!("a correction of {} s does not fit the clock's range", order.correction_us / 1_000_000);
            return (200, ClockReply { outcome: Outcome::Refused, method: None, correction_ms, reason });
        };
        let disagreement = (corrected - order.poller_time).abs();
        if disagreement.to_std().unwrap_or(Duration::MAX) > ORDER_WINDOW {
            return reject(
                401,
                correction_ms,
                format!(
                    "stale order: its time is {:.1} s away from ours once corrected (window {} s)",
                    disagreement.num_milliseconds() as f64 / 1000.0,
                    ORDER_WINDOW.as_secs()
                ),
            );
        }
        {
            let mut nonces = self.nonces.lock();
            nonces.retain(|_, until| *until > now);
            let remember = 2 * ORDER_WINDOW + Duration::from_micros(order.correction_us.unsigned_abs());
            if nonces.insert(order.nonce.clone(), now + remember).is_some() {
                return reject(401, correction_ms, "replayed order: this nonce was already used".into());
            }
        }
        let mut steps = self.steps.lock();
        while steps.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600)) {
            steps.pop_front();
        }
        let ntp = self.system.as_ref().is_some_and(|s| s.ntp_synchronized());
        let refuse =
            |reason: String| (200, ClockReply { outcome: Outcome::Refused, method: None, correction_ms, reason });
        let decision = decide(order.correction_us, max_step, steps.len(), ntp);
        let method = match decision {
            Decision::Refuse(reason) => return refuse(reason),
            Decision::Slew => "slew",
            Decision::Step => "step",
        };
        let applied = match (&self.system, clock.mode()) {
            (Some(sys), ClockMode::System) => {
                if !sys.may_set_time() {
                    return refuse("the attendant lacks CAP_SYS_TIME and cannot set the clock".into());
                }
                if method == "slew" {
                    sys.slew(order.correction_us)
                } else {
                    sys.step(order.correction_us)
                }
            }
            // A virtual clock takes a slew at once: there is no real clock to keep smooth.
            _ => {
                clock.adjust(order.correction_us);
                Ok(())
            }
        };
        match applied {
            Ok(()) => {
                if method == "step" {
                    steps.push_back(now);
                }
                let done = if method == "slew" { "slewed" } else { "stepped" };
                let reason = format!("{done} by {correction_ms:.3} ms");
                (200, ClockReply { outcome: Outcome::Applied, method: Some(method.into()), correction_ms, reason })
            }
            Err(e) => refuse(format!("the OS refused to {method} the clock: {e}")),
        }
    }
}

/// The real OS clock (Linux): adjtimex for NTP state, adjtime to slew, clock_settime to step.
pub struct OsClock;

impl SystemClock for OsClock {
    fn ntp_synchronized(&self) -> bool {
        // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state into `tx`.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let state = unsafe { libc::adjtimex(&mut tx) };
        state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
    }

    fn may_set_time(&self) -> bool {
        const CAP_SYS_TIME: u32 = 25;
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
            .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_TIME) != 0)
    }

    fn slew(&self, us: i64) -> Result<(), String> {
        let tv = libc::timeval { tv_sec: us / 1_000_000, tv_usec: us % 1_000_000 };
        // SAFETY: adjtime reads `tv`; the old-delta pointer may be null.
        let r = unsafe { libc::adjtime(&tv, std::ptr::null_mut()) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    }

    fn step(&self, us: i64) -> Result<(), String> {
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: clock_gettime/clock_settime on CLOCK_REALTIME with a valid timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let total_ns = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec) + i128::from(us) * 1000;
        ts.tv_sec = (total_ns.div_euclid(1_000_000_000)) as libc::time_t;
        ts.tv_nsec = (total_ns.rem_euclid(1_000_000_000)) as libc::c_long;
        if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    }
}

#[cfg(test)]
mod tests;
