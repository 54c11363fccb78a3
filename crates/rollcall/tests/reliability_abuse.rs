//! Reliability suite, connection abuse (SPEC section 10; issue 12, fault 4): 1,000 idle
//! and 300 slowloris clients, reconnecting as soon as they are shed, against the real
//! attendant and the real poller's API, while authenticated requests must each be
//! answered within their timeout. Figures are printed for docs/reliability.md.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: usize = 1000;
const SLOWLORIS: usize = 300;
/// Each authenticated request's own timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests asked during the attack, one every 500 ms: past at least one first-request
/// deadline (5 s) of the attackers, so their reconnection storm is inside the window.
const REQUESTS: usize = 14;

/// Attackers on `addr` until dropped: `IDLE` connections that send nothing and
/// `SLOWLORIS` that send a request head a byte a second; each reconnects when closed.
struct Attack {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    reconnects: Arc<AtomicUsize>,
}

impl Attack {
    async fn start(addr: String) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let reconnects = Arc::new(AtomicUsize::new(0));
        for i in 0..IDLE + SLOWLORIS {
            let (addr, stop, connected, reconnects) =
                (addr.clone(), stop.clone(), connected.clone(), reconnects.clone());
            let slow = i >= IDLE;
            tokio::spawn(async move {
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if first {
                        connected.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    } else {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    hold(&mut s, slow, &stop).await;
                }
            });
        }
        let attack = Attack { stop, connected, reconnects };
        let start = Instant::now();
        while attack.connected.load(Ordering::Relaxed) < IDLE + SLOWLORIS {
            assert!(
                start.elapsed() < DEADLINE,
                "only {} attackers connected",
                attack.connected.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        attack
    }
}

impl Attack {
    /// Waits until the attackers were shed (and reconnected) as often as there are of
    /// them: every stranger loses its slot within the first-request deadline. Answers the
    /// count.
    async fn wait_shed(&self) -> usize {
        let start = Instant::now();
        loop {
            let n = self.reconnects.load(Ordering::Relaxed);
            if n >= IDLE + SLOWLORIS {
                return n;
            }
            assert!(start.elapsed() < DEADLINE, "the attackers were never all shed ({n} reconnects in {DEADLINE:?})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Holds one attacking connection until the server closes it (or the attack stops).
async fn hold(s: &mut TcpStream, slow: bool, stop: &AtomicBool) {
    let head = b"GET /v1/compilation HTTP/1.1\r\nHost: victim\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut buf = [0u8; 256];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        if slow {
            if s.write_all(&head[i % head.len()..i % head.len() + 1]).await.is_err() {
                return;
            }
            i += 1;
        }
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            _ => {}
        }
    }
}

/// Asks `url` `REQUESTS` times on new connections under attack; answers the slowest
/// answer's time. Every request must succeed within `REQUEST_TIMEOUT`.
async fn ask_under_attack(url: &str, token: Option<&str>) -> Duration {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(REQUEST_TIMEOUT).build().unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..REQUESTS {
        let mut req = http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let started = Instant::now();
        let r = req.send().await;
        let took = started.elapsed();
        match r {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => panic!("request {i} under attack answered {}", r.status()),
            Err(e) => panic!("request {i} under attack failed after {took:?} (timeout {REQUEST_TIMEOUT:?}): {e}"),
        }
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_clients_do_not_keep_the_poller_from_the_attendant() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "s3cret-token\n");
    let att = start_attendant(dir.path(), "mail-01", |port| {
        attendant_toml("mail-01", port, &AttAuth::TokenFile(&token), &[])
    })
    .await;
    let attack = Attack::start(att.addr()).await;
    let slowest = ask_under_attack(&format!("{}/v1/compilation", att.url()), Some("s3cret-token")).await;
    let reconnects = attack.wait_shed().await;
    drop(attack);
    println!(
        "figure: attendant under {IDLE} idle + {SLOWLORIS} slowloris: {REQUESTS}/{REQUESTS} authenticated queries \
         answered, slowest {slowest:?}; attackers shed and reconnected {reconnects} times"
    );
    assert_eq!(att.proc.log_text().matches("panicked").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_clients_do_not_keep_operators_from_the_poller_api() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeAttendant::start(Fake::Healthy).await;
    let poller = start_poller(dir.path(), &PollerToml::fast(vec![ServerEntry::new("s", fake.url())])).await;
    let attack = Attack::start(format!("127.0.0.1:{}", poller.port)).await;
    let slowest = ask_under_attack(&format!("{}/api/v1/servers", poller.api.base), None).await;
    let reconnects = attack.wait_shed().await;
    drop(attack);
    println!(
        "figure: poller API under {IDLE} idle + {SLOWLORIS} slowloris: {REQUESTS}/{REQUESTS} requests answered, \
         slowest {slowest:?}; attackers shed and reconnected {reconnects} times"
    );
    assert!(fake.queries() > 0, "the poller stopped polling under attack");
    assert_eq!(poller.proc.log_text().matches("panicked").count(), 0);
}
