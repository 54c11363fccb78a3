//! The simulator's knobs produce what a real poller reports: deficient servers go critical,
//! hung and unreachable ones are unreachable, flapping ones are held at their level by the
//! poller's hysteresis (`recover_after`) instead of ping-ponging; and the simulator's own
//! count of the poller's requests matches the polls the poller recorded.
//!
//! A poller (the library, in this process) polls a 10-server virtual fleet over real HTTP
//! with short intervals. Nothing here depends on timing beyond "eventually": the test
//! waits for enough polls, with a generous deadline. Damping of *notifications* for
//! flapping servers is covered by the poller's notify tests.

use std::sync::Arc;
use std::time::Duration;

use rollcall_simulator::{Kind, Knobs, VirtualFleet};
use rollcall_testkit::wait_until;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knobs_show_in_what_the_poller_reports() {
    let knobs = Knobs {
        deficient: 0.2,
        flapping: 0.2,
        hung: 0.2,
        unreachable: 0.2,
        slow: 0.1,
        slow_delay: Duration::from_millis(100),
        hang_for: Duration::from_secs(2),
        ..Knobs::default()
    };
    let fleet = Arc::new(VirtualFleet::new(10, knobs).unwrap());
    let stop = CancellationToken::new();
    let sim = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addressing = rollcall_simulator::Addressing::for_listener(sim.local_addr().unwrap());
    tokio::spawn(rollcall_simulator::serve(sim, fleet.clone(), stop.clone()));

    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"sqlite://{}\"\ntimeout = \"300ms\"\nrecover_after = 2\n\
         [[level]]\nname = \"normal\"\ninterval = \"1s\"\n[[level]]\nname = \"critical\"\ninterval = \"1s\"\n{}",
        dir.path().join("t.db").display(),
        rollcall_simulator::targets::poller_servers(10, &addressing)
    );
    let config = rollcall_poller::PollerConfig::parse("poller.toml", &text).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/api/v1/servers", listener.local_addr().unwrap());
    let poller = tokio::spawn(rollcall_poller::run(config, listener, stop.clone()));

    let client = reqwest::Client::new();
    let name = |i: usize| VirtualFleet::name(i);
    let of_kind = |k: Kind| (0..10).filter(|&i| fleet.kind(i) == k).collect::<Vec<_>>();
    let flapping = of_kind(Kind::Flapping);
    wait_until("enough polls: 6 of each flapping server, one of every server", Duration::from_secs(25), || async {
        let mut enough = true;
        for &i in &flapping {
            let h = get(&client, &format!("{api}/{}/history", name(i))).await;
            enough &= h["polls"].as_array().map_or(0, Vec::len) >= 6;
        }
        let servers = get(&client, &api).await;
        enough &= servers.as_array().unwrap().iter().all(|s| s["state"] != "unknown");
        if enough {
            Ok(())
        } else {
            Err(servers)
        }
    })
    .await;

    let servers = get(&client, &api).await;
    let server = |i: usize| servers.as_array().unwrap().iter().find(|s| s["name"] == name(i).as_str()).unwrap().clone();
    let sources = |s: &Value| -> Vec<String> {
        s["deficiencies"].as_array().unwrap().iter().map(|d| d["source"].as_str().unwrap().to_string()).collect()
    };
    for i in of_kind(Kind::Healthy).into_iter().chain(of_kind(Kind::Slow)) {
        let s = server(i);
        assert_eq!((s["state"].as_str(), s["level"].as_str()), (Some("ok"), Some("normal")), "{s}");
    }
    for i in of_kind(Kind::Deficient) {
        let s = server(i);
        assert_eq!((s["state"].as_str(), s["level"].as_str()), (Some("deficient"), Some("critical")), "{s}");
        assert_eq!(sources(&s), ["service:directory"]);
    }
    for i in of_kind(Kind::Hung) {
        let s = server(i);
        assert_eq!((s["state"].as_str(), s["level"].as_str()), (Some("unreachable"), Some("critical")), "{s}");
        assert_eq!(sources(&s), ["poll:timeout"]);
    }
    for i in of_kind(Kind::Unreachable) {
        let s = server(i);
        assert_eq!((s["state"].as_str(), s["level"].as_str()), (Some("unreachable"), Some("critical")), "{s}");
        assert!(sources(&s)[0].starts_with("poll:"), "{s}");
    }
    for &i in &flapping {
        let h = get(&client, &format!("{api}/{}/history", name(i))).await;
        let states: Vec<&str> = h["polls"].as_array().unwrap().iter().map(|p| p["state"].as_str().unwrap()).collect();
        assert!(states.contains(&"ok") && states.contains(&"deficient"), "it does flap: {states:?}");
        let levels: Vec<&str> = h["polls"].as_array().unwrap().iter().map(|p| p["level"].as_str().unwrap()).collect();
        assert!(levels.iter().all(|&l| l == "critical"), "held at critical while flapping: {levels:?}");
        let t = h["transitions"].as_array().unwrap();
        assert_eq!(t.len(), 1, "one transition (up), no ping-pong: {t:?}");
    }

    // The simulator counted the poller's requests on its own; they match its polls.
    let mut polled = 0u64;
    for i in 0..10 {
        let h = get(&client, &format!("{api}/{}/history?limit=1000", name(i))).await;
        polled += h["polls"].as_array().unwrap().len() as u64;
    }
    let stats = fleet.stats.report(None);
    let ours = stats["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["agent"].as_str().unwrap().starts_with("rollcall-poller/"));
    let counted = ours.expect("the poller is a known client")["requests"].as_u64().unwrap();
    assert!(counted.abs_diff(polled) <= 10, "simulator counted {counted}, poller recorded {polled}");

    stop.cancel();
    poller.await.unwrap().unwrap();
}
