//! Reliability suite, hostile clock orders over the wire (SPEC sections 4 and 11; issue
//! 12, fault 5) against a real attendant: stale, absurd (validly signed 9e18 µs), and
//! oversized orders are refused with a reason, the clock unchanged, the attendant still
//! answering. Replays and foreign keys over the wire are `clock.rs`'s; a replay after the
//! nonce window needs time travel and is the attendant's `clock_keeper` unit test.

mod common;

use common::*;
use rollcall_protocol::clock_order::{parse_signing_key, ClockOrder, SignedOrder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_absurd_and_oversized_clock_orders_are_refused_and_the_clock_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let (code, public, err) = run_cli(&["keygen", "--out", out.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{err}");
    let key = parse_signing_key(&std::fs::read_to_string(out.join("poller.key")).unwrap()).unwrap();
    let att = start_attendant(dir.path(), "a", |port| {
        attendant_toml("a", port, &AttAuth::Insecure, &[]).replace(
            "clock = \"virtual\"\n",
            &format!("clock = \"virtual\"\npoller_public_key = \"{}\"\n", public.trim()),
        )
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/clock", att.url());
    let post = |order: ClockOrder| {
        let req = http.post(&url).json(&SignedOrder::sign(&order, &key));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let now = chrono::Utc::now();
    let order = |correction_us: i64, at: chrono::DateTime<chrono::Utc>, nonce: &str| ClockOrder {
        server: "a".into(),
        correction_us,
        poller_time: at,
        nonce: nonce.into(),
    };

    let (status, r) = post(order(1_000_000, now - chrono::TimeDelta::minutes(10), "stale")).await;
    assert_eq!((status, r["outcome"].as_str()), (401, Some("rejected")), "{r:#}");
    assert!(text(&r, "reason").contains("stale"), "{r:#}");

    for absurd in [9_000_000_000_000_000_000, i64::MIN, i64::MAX] {
        let (status, r) = post(order(absurd, now, &format!("absurd-{absurd}"))).await;
        assert!(r["outcome"] != "applied", "{absurd} µs applied: {status} {r:#}");
        assert!(!text(&r, "reason").is_empty(), "{r:#}");
    }

    let big = format!("{{\"order\":\"{}\"}}", "x".repeat(1 << 20));
    let r = http.post(&url).header("content-type", "application/json").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413, "a 1 MiB order body is refused by size");

    // Nothing moved the clock, and the attendant still answers.
    let body = reqwest::get(format!("{}/v1/compilation", att.url())).await.unwrap().bytes().await.unwrap();
    let c = rollcall_protocol::Compilation::from_slice(&body).unwrap();
    let skew = (c.time.replied_at - chrono::Utc::now()).num_milliseconds();
    assert!(skew.abs() < 1000, "a refused order moved the clock by {skew} ms");
    assert!(!att.proc.log_text().contains("panicked"), "{}", att.proc.log_text());
}
