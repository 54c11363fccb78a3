//! A bounded fuzz of the compilation reader (issue 12): random bytes, and valid
//! compilations with random byte edits, through both readers (the poller's `Digest`, the
//! whole `Compilation`). Run by `cargo test` with a fixed number of cases; the inputs that
//! crashed or fooled the poller before (faults 1–3) are explicit cases.
//!
//! Properties: no input panics either reader; whatever either accepts, a full JSON parse
//! reads too, nested at most `MAX_DEPTH`, and it still parses once embedded in the API's
//! reply (accepted => showable, SPEC section 10).

use proptest::prelude::*;
use rollcall_protocol::{check_showable, Compilation, Digest, MAX_DEPTH};

fn valid() -> Vec<u8> {
    let now = "2026-11-30T12:00:00.000Z";
    let stamp = "2026-11-30T12:00:00.000001Z";
    format!(
        r#"{{"schema_version":1,"attendant":{{"name":"mail-01","version":"1","hostname":"h"}},
"time":{{"utc":"{now}","utc_offset_seconds":0,"zone":"UTC","received_at":"{stamp}","replied_at":"{stamp}"}},
"services":[{{"name":"mta","check":"tcp","status":"ok","message":"220 ready \u00e9","observed_at":"{now}",
"duration_ms":1.5,"details":{{"perfdata":[{{"label":"time","value":0.01,"uom":"s"}}]}}}}],
"probes":[{{"name":"login","kind":"login","status":"warning","message":"slow","observed_at":"{now}","details":{{}}}}],
"host":{{"uptime_s":1,"load":[0.1,0.2,0.3],"cpu_percent":2.0,"memory":{{"total":10,"used":5}},
"disks":[{{"mount":"/","total":100,"used":1}}]}},
"deficiencies":[{{"source":"probe:login","severity":"warning","summary":"slow"}}]}}"#
    )
    .into_bytes()
}

/// Both readers on `bytes`: no panic (proptest reports one), and accepted => showable.
fn check(bytes: &[u8]) {
    let digest = Digest::from_slice(bytes);
    let whole = Compilation::from_slice(bytes);
    if digest.is_ok() || whole.is_ok() {
        let v: serde_json::Value = serde_json::from_slice(bytes).expect("accepted, but a full parse refuses it");
        assert!(depth(&v) <= MAX_DEPTH, "accepted a document nested {} deep", depth(&v));
        let reply = serde_json::to_vec(&serde_json::json!({ "name": "s", "compilation": v })).unwrap();
        serde_json::from_slice::<serde_json::Value>(&reply).expect("the API's reply does not parse");
        check_showable(bytes).expect("accepted without passing the rule");
    }
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

/// One edit of a document: (position as a fraction of its length, what to do, a byte).
fn edits() -> impl Strategy<Value = Vec<(f64, u8, u8)>> {
    prop::collection::vec((0.0..1.0f64, 0u8..3, any::<u8>()), 1..8)
}

fn apply(mut doc: Vec<u8>, edits: &[(f64, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        let i = ((doc.len() as f64) * at) as usize;
        match op {
            0 if i < doc.len() => doc[i] = byte,
            1 => doc.insert(i.min(doc.len()), byte),
            _ if i < doc.len() => {
                doc.remove(i);
            }
            _ => {}
        }
    }
    doc
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_what_is_accepted_is_showable(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn edited_compilations_never_panic_and_what_is_accepted_is_showable(e in edits()) {
        check(&apply(valid(), &e));
    }

    #[test]
    fn deep_details_of_any_depth_are_accepted_only_within_the_bound(n in 1usize..200) {
        let deep = format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let doc = String::from_utf8(valid()).unwrap().replace(r#"{"perfdata""#, &format!(r#"{{"deep":{deep},"perfdata""#));
        check(doc.as_bytes());
        // The document, services, the service, details and `deep` hold n arrays and 1.
        prop_assert_eq!(Digest::from_slice(doc.as_bytes()).is_ok(), 4 + n < MAX_DEPTH);
    }
}

/// The seeds: what crashed or fooled the poller before (issue 12, fault 3).
#[test]
fn the_inputs_of_fault_3_are_refused() {
    let text = String::from_utf8(valid()).unwrap();
    let with_message = |m: &[u8]| {
        let i = text.find("220 ready").unwrap();
        [&text.as_bytes()[..i], m, &text.as_bytes()[i + "220 ready".len()..]].concat()
    };
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    for (what, doc) in [
        ("invalid UTF-8 in a message", with_message(b"caf\xe9 \xff")),
        ("a lone surrogate in a message", with_message(br"\ud800")),
        (
            "100,000-deep details",
            text.replace(r#"{"perfdata""#, &format!(r#"{{"deep":{deep},"perfdata""#)).into_bytes(),
        ),
        ("a number beyond f64", text.replace("1.5", "1e400").into_bytes()),
    ] {
        check(&doc);
        assert!(Digest::from_slice(&doc).is_err(), "{what}: accepted");
        assert!(Compilation::from_slice(&doc).is_err(), "{what}: accepted");
    }
    check(&valid());
    assert!(Digest::from_slice(&valid()).is_ok());
}
