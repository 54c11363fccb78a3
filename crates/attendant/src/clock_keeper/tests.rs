use super::*;
use chrono::Utc;
use ed25519_dalek::SigningKey;
use rollcall_protocol::clock_order::ClockOrder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const S: Duration = Duration::from_secs(1000);

#[test]
fn small_corrections_slew_large_ones_step() {
    assert_eq!(decide(100_000, S, 0, false), Decision::Slew);
    assert_eq!(decide(-128_000, S, 0, false), Decision::Slew);
    assert_eq!(decide(-129_000, S, 0, false), Decision::Step);
    assert_eq!(decide(45_000_000, S, 0, false), Decision::Step);
}

#[test]
fn limits_refuse_with_a_reason() {
    let Decision::Refuse(r) = decide(-1_001_000_000, S, 0, false) else { panic!() };
    assert_eq!(r, "correction of -1001.000 s exceeds max_clock_step = 1000 s");
    let Decision::Refuse(r) = decide(5_000_000, S, MAX_STEPS_PER_HOUR, false) else { panic!() };
    assert!(r.contains("already stepped 4 times"), "{r}");
    assert_eq!(decide(50_000, S, MAX_STEPS_PER_HOUR, false), Decision::Slew, "slews are not rate limited");
    let Decision::Refuse(r) = decide(50_000, S, 0, true) else { panic!() };
    assert!(r.contains("NTP"), "{r}");
}

struct Fixture {
    key: SigningKey,
    keeper: ClockKeeper,
    clock: Clock,
    board: ProbeBoard,
}

fn fixture(offset_us: i64, system: Option<Box<dyn SystemClock>>) -> Fixture {
    let key = SigningKey::from_bytes(&[9; 32]);
    let mode_clock = if system.is_some() { Clock::system() } else { Clock::virtual_with_offset(offset_us) };
    Fixture {
        keeper: ClockKeeper::new(Some(key.verifying_key()), S, system),
        key,
        clock: mode_clock,
        board: ProbeBoard::default(),
    }
}

fn order(f: &Fixture, correction_us: i64, nonce: &str) -> SignedOrder {
    let o = ClockOrder {
        server: "a".into(),
        correction_us,
        poller_time: f.clock.now() + chrono::Duration::microseconds(correction_us),
        nonce: nonce.into(),
    };
    SignedOrder::sign(&o, &f.key)
}

#[test]
fn a_virtual_clock_is_corrected_and_the_outcome_is_a_probe() {
    let f = fixture(45_000_000, None);
    let (code, reply) = f.keeper.handle(&order(&f, -45_000_000, "n1"), &f.clock, "a", &f.board);
    assert_eq!((code, reply.outcome, reply.method.as_deref()), (200, Outcome::Applied, Some("step")));
    assert_eq!(f.clock.offset_us(), 0);
    let p = f.board.get("clock").unwrap();
    assert_eq!((p.status, p.details["outcome"].as_str()), (Status::Ok, Some("applied")));
}

#[test]
fn replays_other_keys_stale_orders_and_other_servers_are_rejected() {
    let f = fixture(3_000_000, None);
    let o = order(&f, -3_000_000, "once");
    assert_eq!(f.keeper.handle(&o, &f.clock, "a", &f.board).1.outcome, Outcome::Applied);
    let (code, r) = f.keeper.handle(&o, &f.clock, "a", &f.board);
    assert_eq!((code, r.outcome), (401, Outcome::Rejected));
    assert!(r.reason.contains("replayed"), "{}", r.reason);
    assert_eq!(f.clock.offset_us(), 0, "a replay changes nothing");

    let other = SigningKey::from_bytes(&[8; 32]);
    let forged = SignedOrder::sign(
        &ClockOrder { server: "a".into(), correction_us: 1, poller_time: Utc::now(), nonce: "f".into() },
        &other,
    );
    let (code, r) = f.keeper.handle(&forged, &f.clock, "a", &f.board);
    assert_eq!((code, r.reason.as_str()), (401, "signature does not match the poller's public key"));
    assert_eq!(f.board.get("clock").unwrap().status, Status::Warning);

    let stale = SignedOrder::sign(
        &ClockOrder {
            server: "a".into(),
            correction_us: 0,
            poller_time: Utc::now() - chrono::Duration::seconds(120),
            nonce: "s".into(),
        },
        &f.key,
    );
    let r = f.keeper.handle(&stale, &f.clock, "a", &f.board).1;
    assert!(r.reason.starts_with("stale order"), "{}", r.reason);

    let r = f.keeper.handle(&order(&f, 1000, "x"), &f.clock, "b", &f.board).1;
    assert!(r.reason.contains("order is for \"a\", this is \"b\""), "{}", r.reason);
}

#[test]
fn without_a_public_key_every_order_is_forbidden() {
    let f = fixture(0, None);
    let keeper = ClockKeeper::new(None, S, None);
    let (code, r) = keeper.handle(&order(&f, 1000, "n"), &f.clock, "a", &f.board);
    assert_eq!((code, r.outcome), (403, Outcome::Rejected));
}

#[test]
fn beyond_max_clock_step_is_refused_and_critical() {
    let f = fixture(2_000_000_000, None);
    let (code, r) = f.keeper.handle(&order(&f, -2_000_000_000, "n"), &f.clock, "a", &f.board);
    assert_eq!((code, r.outcome), (200, Outcome::Refused));
    assert_eq!(f.clock.offset_us(), 2_000_000_000, "never applied");
    assert_eq!(f.board.get("clock").unwrap().status, Status::Critical);
}

#[derive(Default)]
struct FakeOs {
    ntp: AtomicBool,
    no_cap: AtomicBool,
    calls: Mutex<Vec<(&'static str, i64)>>,
}

impl SystemClock for Arc<FakeOs> {
    fn ntp_synchronized(&self) -> bool {
        self.ntp.load(Ordering::Relaxed)
    }
    fn may_set_time(&self) -> bool {
        !self.no_cap.load(Ordering::Relaxed)
    }
    fn slew(&self, us: i64) -> Result<(), String> {
        self.calls.lock().push(("slew", us));
        Ok(())
    }
    fn step(&self, us: i64) -> Result<(), String> {
        self.calls.lock().push(("step", us));
        Ok(())
    }
}

#[test]
fn the_system_path_slews_steps_and_rate_limits_without_touching_the_real_clock() {
    let os = Arc::new(FakeOs::default());
    let f = fixture(0, Some(Box::new(os.clone())));
    for (i, us) in [50_000, 2_000_000, -2_000_000, 3_000_000, 4_000_000].iter().enumerate() {
        // The fake never moves the real clock, so each order is built from the real time.
        let o = SignedOrder::sign(
            &ClockOrder {
                server: "a".into(),
                correction_us: *us,
                poller_time: Utc::now() + chrono::Duration::microseconds(*us),
                nonce: format!("n{i}"),
            },
            &f.key,
        );
        f.keeper.handle(&o, &f.clock, "a", &f.board);
    }
    let o = SignedOrder::sign(
        &ClockOrder {
            server: "a".into(),
            correction_us: 5_000_000,
            poller_time: Utc::now() + chrono::Duration::seconds(5),
            nonce: "n9".into(),
        },
        &f.key,
    );
    let r = f.keeper.handle(&o, &f.clock, "a", &f.board).1;
    assert_eq!(r.outcome, Outcome::Refused, "{}", r.reason);
    assert_eq!(
        *os.calls.lock(),
        [("slew", 50_000), ("step", 2_000_000), ("step", -2_000_000), ("step", 3_000_000), ("step", 4_000_000)]
    );
}

#[test]
fn the_system_path_refuses_under_ntp_or_without_cap_sys_time() {
    let os = Arc::new(FakeOs::default());
    let f = fixture(0, Some(Box::new(os.clone())));
    os.ntp.store(true, Ordering::Relaxed);
    let o = SignedOrder::sign(
        &ClockOrder { server: "a".into(), correction_us: 1000, poller_time: Utc::now(), nonce: "1".into() },
        &f.key,
    );
    assert!(f.keeper.handle(&o, &f.clock, "a", &f.board).1.reason.contains("NTP"));
    os.ntp.store(false, Ordering::Relaxed);
    os.no_cap.store(true, Ordering::Relaxed);
    let o = SignedOrder::sign(
        &ClockOrder { server: "a".into(), correction_us: 1000, poller_time: Utc::now(), nonce: "2".into() },
        &f.key,
    );
    assert!(f.keeper.handle(&o, &f.clock, "a", &f.board).1.reason.contains("CAP_SYS_TIME"));
    assert!(os.calls.lock().is_empty());
}

#[test]
fn a_correction_beyond_the_clock_s_range_is_refused_not_a_panic() {
    let f = fixture(0, None);
    for c in [9_000_000_000_000_000_000, i64::MIN, i64::MAX] {
        let o = SignedOrder::sign(
            &ClockOrder { server: "a".into(), correction_us: c, poller_time: Utc::now(), nonce: format!("n{c}") },
            &f.key,
        );
        let (code, r) = f.keeper.handle(&o, &f.clock, "a", &f.board);
        assert_ne!(r.outcome, Outcome::Applied, "{c}: {}", r.reason);
        assert!(code == 200 || code == 401, "{c}: {code}");
    }
    assert_eq!(f.clock.offset_us(), 0, "nothing applied");
}

#[test]
fn an_order_replayed_when_the_corrected_clock_agrees_again_is_still_a_replay() {
    // The clock is 80 s ahead; the order steps it back.
    let f = fixture(80_000_000, None);
    let o = order(&f, -80_000_000, "recorded");
    let t0 = std::time::Instant::now();
    assert_eq!(f.keeper.judge(&o, &f.clock, "a", t0).1.outcome, Outcome::Applied);
    // 80 s later the corrected clock reads the order's time plus 80 s, so with the order's
    // correction it agrees with the order's time again: only the nonce stops the replay.
    f.clock.adjust(80_000_000);
    let (code, r) = f.keeper.judge(&o, &f.clock, "a", t0 + std::time::Duration::from_secs(80));
    assert_eq!((code, r.outcome), (401, Outcome::Rejected), "{}", r.reason);
    assert!(r.reason.contains("replayed"), "{}", r.reason);
}
