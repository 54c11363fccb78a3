use super::*;
use chrono::TimeZone;

fn sample() -> Compilation {
    let t = Utc.with_ymd_and_hms(2026, 11, 26, 17, 0, 0).unwrap();
    Compilation {
        schema_version: 1,
        attendant: AttendantInfo {
            name: "mail-01".into(),
            version: "0.1.0".into(),
            hostname: "mail-01.example.org".into(),
        },
        time: TimeReport {
            utc: t,
            utc_offset_seconds: 3600,
            zone: Some("Europe/Berlin".into()),
            received_at: t + chrono::Duration::microseconds(1),
            replied_at: t + chrono::Duration::microseconds(350),
        },
        services: vec![CheckResult {
            name: "message-store".into(),
            check: "tcp".into(),
            status: Status::Critical,
            message: "connection refused".into(),
            observed_at: t,
            duration_ms: 0.5,
            details: Map::new(),
        }],
        probes: vec![],
        host: HostUsage {
            uptime_s: 10,
            load: [0.1, 0.2, 0.3],
            cpu_percent: 3.5,
            memory: Memory { total: 100, used: 50 },
            disks: vec![Disk { mount: "/".into(), total: 1000, used: 10 }],
        },
        deficiencies: vec![Deficiency {
            source: "service:message-store".into(),
            severity: Severity::Critical,
            summary: "connection refused".into(),
        }],
        usage: vec![UsageReport {
            name: "queue".into(),
            value: Some(3.0),
            unit: "messages".into(),
            observed_at: t,
            message: "3 messages: 2 active, 1 deferred".into(),
        }],
    }
}

#[test]
fn round_trip_keeps_every_field() {
    let c = sample();
    let bytes = serde_json::to_vec(&c).unwrap();
    assert_eq!(Compilation::from_slice(&bytes).unwrap(), c);
}

#[test]
fn times_use_the_contract_formats() {
    let v = serde_json::to_value(sample()).unwrap();
    assert_eq!(v["time"]["utc"], "2026-11-26T17:00:00.000Z");
    assert_eq!(v["time"]["received_at"], "2026-11-26T17:00:00.000001Z");
    assert_eq!(v["services"][0]["status"], "critical");
    assert_eq!(v["deficiencies"][0]["severity"], "critical");
}

#[test]
fn unknown_fields_are_ignored() {
    let mut v = serde_json::to_value(sample()).unwrap();
    v["future_section"] = serde_json::json!({"anything": [1, 2]});
    v["services"][0]["added_later"] = serde_json::json!(true);
    v["host"]["gpu"] = serde_json::json!(12);
    let c = Compilation::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(c, sample());
}

#[test]
fn other_schema_version_is_incompatible_even_when_fields_fit() {
    let mut v = serde_json::to_value(sample()).unwrap();
    v["schema_version"] = serde_json::json!(2);
    let err = Compilation::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(matches!(err, DecodeError::Incompatible { found: 2 }), "{err}");
    assert!(err.to_string().starts_with("incompatible attendant"));
}

#[test]
fn other_schema_version_with_other_shape_is_incompatible() {
    let err = Compilation::from_slice(br#"{"schema_version": 7, "everything": "new"}"#).unwrap_err();
    assert!(matches!(err, DecodeError::Incompatible { found: 7 }), "{err}");
}

#[test]
fn garbage_and_missing_fields_are_malformed() {
    for bad in [&b"<html>oops</html>"[..], b"{}", b"{\"schema_version\":1}", b""] {
        let err = Compilation::from_slice(bad).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
    }
}

#[test]
fn times_with_offsets_are_read_as_utc() {
    let mut v = serde_json::to_value(sample()).unwrap();
    v["time"]["utc"] = serde_json::json!("2026-11-26T18:00:00.000+01:00");
    let c = Compilation::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(c.time.utc, sample().time.utc);
}

#[test]
fn worst_status_and_exit_codes() {
    assert_eq!(sample().worst_status(), Status::Critical);
    assert_eq!(Status::from_exit_code(1), Status::Warning);
    assert_eq!(Status::from_exit_code(42), Status::Unknown);
    assert_eq!(Status::Unknown.severity(), Some(Severity::Warning));
}

/// The substance hash is stored: its value for a given compilation must never change.
#[test]
fn substance_hash_is_pinned_and_ignores_what_changes_every_poll() {
    let a = r#"{"schema_version":1,"attendant":{"name":"m","version":"1","hostname":"m"},
        "time":{"utc":"2026-01-01T00:00:00Z","utc_offset_seconds":3600,"zone":"Europe/Berlin","received_at":"2026-01-01T00:00:00.000001Z","replied_at":"2026-01-01T00:00:00.000002Z"},
        "services":[{"name":"mta","check":"smtp","status":"ok","message":"in 3 ms","observed_at":"2026-01-01T00:00:00Z","duration_ms":3,"details":{"t":1}}],
        "probes":[{"name":"login","kind":"login","status":"critical","message":"NO","observed_at":"2026-01-01T00:00:00Z"}],
        "host":{"uptime_s":5,"load":[1,1,1],"cpu_percent":3,"memory":{"total":8,"used":2},"disks":[{"mount":"/","total":9,"used":1}]},
        "deficiencies":[{"source":"probe:login","severity":"critical","summary":"NO"}]}"#;
    let hash = |s: &str| Compilation::from_slice(s.as_bytes()).unwrap().substance_hash();
    // Computed by the first release that stored hashes; changing it re-stores every server.
    assert_eq!(hash(a), 240_293_809_628_355_226);
    let same = a
        .replace("in 3 ms", "in 4 ms")
        .replace("\"uptime_s\":5", "\"uptime_s\":6")
        .replace("\"used\":2", "\"used\":3")
        .replace("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
    assert_eq!(hash(a), hash(&same));
    for changed in [
        a.replace("\"status\":\"ok\"", "\"status\":\"warning\""),
        a.replace("\"total\":9", "\"total\":10"),
        a.replace("\"total\":8", "\"total\":16"),
        a.replace("Europe/Berlin", "UTC"),
        a.replace("\"severity\":\"critical\"", "\"severity\":\"warning\""),
        a.replace("\"version\":\"1\"", "\"version\":\"2\""),
    ] {
        assert_ne!(hash(a), hash(&changed), "{changed}");
    }
}

/// The poller reads digests, the rest of the product whole compilations: both must accept
/// and refuse the same documents and agree on what they read.
#[test]
fn the_digest_agrees_with_the_whole_compilation() {
    let mut with_probe = sample();
    with_probe.probes.push(ProbeResult {
        name: "login".into(),
        kind: "login".into(),
        status: Status::Warning,
        message: "slow \"quoted\" \u{e9}".into(),
        observed_at: with_probe.time.utc,
        duration_ms: 3.0,
        details: serde_json::from_str(r#"{"sessions": 3, "nested": {"a": [1, 2]}}"#).unwrap(),
    });
    for c in [sample(), with_probe] {
        let bytes = serde_json::to_vec(&c).unwrap();
        let d = Digest::from_slice(&bytes).unwrap();
        assert_eq!(d.attendant, c.attendant.name);
        assert_eq!((d.received_at, d.replied_at), (c.time.received_at, c.time.replied_at));
        assert_eq!(d.deficiencies, c.deficiencies);
        assert_eq!(d.substance, c.substance_hash());
    }
    let good = serde_json::to_value(sample()).unwrap();
    type Spoil = Box<dyn Fn(&mut serde_json::Value)>;
    let broken: Vec<(&str, Spoil)> = vec![
        ("no attendant", Box::new(|v| v.as_object_mut().unwrap().remove("attendant").map(drop).unwrap())),
        ("no host", Box::new(|v| v.as_object_mut().unwrap().remove("host").map(drop).unwrap())),
        (
            "no observed_at",
            Box::new(|v| v["services"][0].as_object_mut().unwrap().remove("observed_at").map(drop).unwrap()),
        ),
        ("bad status", Box::new(|v| v["services"][0]["status"] = "fine".into())),
        (
            "no memory used",
            Box::new(|v| v["host"]["memory"].as_object_mut().unwrap().remove("used").map(drop).unwrap()),
        ),
        ("bad T2", Box::new(|v| v["time"]["received_at"] = "yesterday".into())),
        ("text total", Box::new(|v| v["host"]["disks"][0]["total"] = "1 TB".into())),
        ("schema 2", Box::new(|v| v["schema_version"] = 2.into())),
    ];
    for (what, spoil) in broken {
        let mut v = good.clone();
        spoil(&mut v);
        let bytes = serde_json::to_vec(&v).unwrap();
        let whole = Compilation::from_slice(&bytes).unwrap_err().to_string();
        let digest = Digest::from_slice(&bytes).unwrap_err().to_string();
        assert_eq!(whole.split(':').next(), digest.split(':').next(), "{what}: {whole} / {digest}");
    }
    for bad in [&b"<html>oops</html>"[..], b"{}", b"{\"schema_version\":1}", b"", b"{\"schema_version\": 7}"] {
        let whole = Compilation::from_slice(bad).unwrap_err().to_string();
        let digest = Digest::from_slice(bad).unwrap_err().to_string();
        assert_eq!(whole, digest);
    }
}

#[test]
fn usage_is_left_out_when_there_is_none_and_an_unmeasured_figure_is_null() {
    let mut c = sample();
    c.usage.clear();
    let v = serde_json::to_value(&c).unwrap();
    assert!(v.get("usage").is_none(), "{v}");
    assert_eq!(Compilation::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap(), c);
    let mut c = sample();
    c.usage[0].value = None;
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["usage"][0]["value"], serde_json::Value::Null);
    assert_eq!(Compilation::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap(), c);
}
