//! Scheduler and level behaviour under tokio's paused clock: fast and deterministic.

use super::*;
use crate::config::SigningKey;
use crate::fetch::Fetched;
use crate::fetch::PollError;
use crate::levels::Level;
use crate::model::ServerState;
use crate::store::SharedStore;
use rollcall_protocol::clock_order::{ClockOrder, ClockReply};
use rollcall_protocol::clock_order::{Outcome, SignedOrder};
use rollcall_protocol::{AttendantInfo, Compilation, HostUsage, TimeReport};
use rollcall_protocol::{Deficiency, Severity};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

fn test_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[5; 32])
}

/// What a scripted attendant does when polled.
#[derive(Clone)]
enum Act {
    Answer(Vec<Deficiency>),
    Fail(PollError),
    /// Never answers; the fetcher gives up after this long (as the real one's timeout does).
    Hang(Duration),
}

#[derive(Clone, Default)]
struct Script {
    acts: Arc<Mutex<HashMap<String, Act>>>,
    calls: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    /// The scripted attendants' clock error, in ms; a clock order applied moves it.
    offset_ms: Arc<Mutex<f64>>,
    orders: Arc<Mutex<Vec<SignedOrder>>>,
    /// The scripted attendants refuse clock orders.
    refuse: Arc<Mutex<bool>>,
}

impl Script {
    fn set(&self, server: &str, act: Act) {
        self.acts.lock().unwrap().insert(server.to_string(), act);
    }
    fn calls(&self, server: &str) -> Vec<Instant> {
        self.calls.lock().unwrap().get(server).cloned().unwrap_or_default()
    }
}

fn compilation(deficiencies: Vec<Deficiency>, offset_ms: f64) -> Compilation {
    let now = Utc::now() + chrono::Duration::microseconds((offset_ms * 1000.0) as i64);
    Compilation {
        schema_version: 1,
        attendant: AttendantInfo { name: "x".into(), version: "0".into(), hostname: "x".into() },
        time: TimeReport { utc: now, utc_offset_seconds: 0, zone: None, received_at: now, replied_at: now },
        services: vec![],
        probes: vec![],
        host: HostUsage::default(),
        deficiencies,
        usage: vec![],
    }
}

#[async_trait::async_trait]
impl Fetch for Script {
    async fn fetch(&self, server: &ServerConfig) -> Result<Fetched, PollError> {
        self.calls.lock().unwrap().entry(server.name.clone()).or_default().push(Instant::now());
        let act = self.acts.lock().unwrap().get(&server.name).cloned().unwrap_or(Act::Answer(vec![]));
        match act {
            Act::Answer(d) => {
                let sent_at = Utc::now();
                let c = compilation(d, *self.offset_ms.lock().unwrap());
                let raw = bytes::Bytes::from(serde_json::to_vec(&c).unwrap());
                Ok(Fetched { sent_at, received_at: sent_at, raw })
            }
            Act::Fail(e) => Err(e),
            Act::Hang(d) => {
                tokio::time::sleep(d).await;
                Err(PollError::Timeout(d))
            }
        }
    }

    async fn order_clock(&self, _server: &ServerConfig, order: &SignedOrder) -> Result<ClockReply, PollError> {
        self.orders.lock().unwrap().push(order.clone());
        let o: ClockOrder = serde_json::from_str(&order.order).unwrap();
        if *self.refuse.lock().unwrap() {
            let reason = "exceeds max_clock_step".to_string();
            return Ok(ClockReply { outcome: Outcome::Refused, method: None, correction_ms: 0.0, reason });
        }
        *self.offset_ms.lock().unwrap() += o.correction_us as f64 / 1000.0;
        let correction_ms = o.correction_us as f64 / 1000.0;
        Ok(ClockReply {
            outcome: Outcome::Applied,
            method: Some("step".into()),
            correction_ms,
            reason: "stepped".into(),
        })
    }
}

fn critical(source: &str) -> Deficiency {
    Deficiency { source: source.into(), severity: Severity::Critical, summary: "down".into() }
}

struct Rig {
    fleet: Arc<Fleet>,
    script: Script,
    store: SharedStore,
    events: broadcast::Receiver<FleetEvent>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

/// The store runs on its own runtime in real time: under a paused clock, sqlx's pool
/// timeouts would fire at once whenever the test runtime waits on SQLite's thread.
fn store_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
}

/// Runs a store operation on the store's runtime.
async fn on_store<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    store_runtime().spawn(f).await.unwrap()
}

async fn rig(names: &[&str], normal_s: u64, critical_s: u64, recover_after: u32) -> Rig {
    // The first-poll window as long as the interval: first polls at the normal slots.
    rig_with(names, normal_s, critical_s, recover_after, Duration::from_secs(normal_s)).await
}

async fn rig_with(names: &[&str], normal_s: u64, critical_s: u64, recover_after: u32, first: Duration) -> Rig {
    let configs = names
        .iter()
        .map(|n| ServerConfig {
            name: n.to_string(),
            address: format!("http://{n}:7460"),
            token: None,
            parents: vec![],
            tls: None,
        })
        .collect();
    rig_of(configs, normal_s, critical_s, recover_after, first).await
}

/// A rig of servers with parents: `(name, parents)`.
async fn rig_parents(servers: &[(&str, &[&str])], normal_s: u64, critical_s: u64) -> Rig {
    let configs = servers
        .iter()
        .map(|(n, p)| ServerConfig {
            name: n.to_string(),
            address: format!("http://{n}:7460"),
            token: None,
            parents: p.iter().map(|p| p.to_string()).collect(),
            tls: None,
        })
        .collect();
    rig_of(configs, normal_s, critical_s, 1, Duration::from_secs(normal_s)).await
}

async fn rig_of(
    configs: Vec<ServerConfig>,
    normal_s: u64,
    critical_s: u64,
    recover_after: u32,
    first: Duration,
) -> Rig {
    let rules = Rules::new(
        vec![
            Level::new("normal", Duration::from_secs(normal_s)),
            Level::new("critical", Duration::from_secs(critical_s)),
        ],
        vec![],
        recover_after,
    );
    rig_rules(configs, rules, first).await
}

async fn rig_rules(configs: Vec<ServerConfig>, rules: Rules, first: Duration) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let (store, writer) = std::thread::spawn(move || {
        store_runtime().block_on(async move {
            let store = crate::store::open(&url, None).await.unwrap();
            let (writer, _) = crate::store::Writer::start(store.clone());
            (store, writer)
        })
    })
    .join()
    .unwrap();
    let script = Script::default();
    // 1_800_000_000 is a whole minute (and 10 s), so slots are easy to reason about.
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let options = FleetOptions {
        timebase: Timebase::starting_at(t0),
        max_in_flight: 64,
        clock: ClockPolicy { key: Some(SigningKey(Arc::new(test_key()))), max_skew: Duration::from_secs(2) },
        first_poll_within: first,
        holdings: None,
        source: None,
    };
    let fleet = Arc::new(Fleet::new(configs, vec![], rules, Arc::new(script.clone()), writer, options));
    let events = fleet.subscribe();
    let stop = CancellationToken::new();
    fleet.start(&stop, &TaskTracker::new());
    Rig { fleet, script, store, events, stop, _dir: dir }
}

/// A second fleet of the one server `s`, as after a restart: no signing key, the rig's
/// rules, `stored` rows and `script`'s replies.
fn restarted(r: &Rig, stored: Vec<StoredServer>, script: Script, writer: Writer) -> Arc<Fleet> {
    Arc::new(Fleet::new(
        vec![ServerConfig {
            name: "s".into(),
            address: "http://s:7460".into(),
            token: None,
            parents: vec![],
            tls: None,
        }],
        stored,
        r.fleet.rules().clone(),
        Arc::new(script),
        writer,
        FleetOptions {
            timebase: Timebase::now(),
            max_in_flight: 4,
            clock: ClockPolicy { key: None, max_skew: Duration::from_secs(2) },
            first_poll_within: Duration::from_secs(30),
            holdings: None,
            source: None,
        },
    ))
}

fn gaps(calls: &[Instant]) -> Vec<u64> {
    calls.windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect()
}

fn level(r: &Rig, name: &str) -> String {
    r.fleet.summary(&r.fleet.get(name).unwrap()).facts.level
}

#[tokio::test(start_paused = true)]
async fn a_failing_server_escalates_at_once_and_is_polled_at_the_critical_interval() {
    let r = rig(&["mail-01"], 60, 10, 1).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(r.script.calls("mail-01").len(), 1, "one poll per normal interval");
    assert_eq!(level(&r, "mail-01"), "normal");

    r.script.set("mail-01", Act::Fail(PollError::Refused("connection refused".into())));
    tokio::time::sleep(Duration::from_secs(95)).await;
    let s = r.fleet.summary(&r.fleet.get("mail-01").unwrap());
    assert_eq!((s.facts.level.as_str(), s.facts.state), ("critical", ServerState::Unreachable));
    assert_eq!(s.facts.deficiencies[0].source, "poll:refused");
    let calls = r.script.calls("mail-01");
    let g = gaps(&calls[1..]);
    assert!(g.len() >= 3 && g.iter().all(|&ms| ms == 10_000), "critical gaps {g:?}");

    r.script.set("mail-01", Act::Answer(vec![]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(level(&r, "mail-01"), "normal", "recover_after = 1: one clean reply clears");
    let n = r.script.calls("mail-01").len();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(r.script.calls("mail-01").len() - n <= 1, "back to the normal interval");

    r.stop.cancel();
    let mut events = r.events;
    let mut t = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let FleetEvent::Transition { transition, .. } = e {
            t.push((transition.from, transition.to, transition.reason));
        }
    }
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!((t[0].0.as_str(), t[0].1.as_str()), ("normal", "critical"));
    assert!(t[0].2.starts_with("poll:refused"), "{}", t[0].2);
    assert_eq!((t[1].0.as_str(), t[1].1.as_str(), t[1].2.as_str()), ("critical", "normal", "all deficiencies cleared"));

    // The same story is in the stored history.
    let writer = r.fleet.writer().clone();
    let store = r.store.clone();
    let h = on_store(async move {
        writer.flush().await.unwrap();
        store.history("mail-01", 100).await.unwrap()
    })
    .await;
    let stored: Vec<(&str, &str)> = h.transitions.iter().rev().map(|t| (t.from.as_str(), t.to.as_str())).collect();
    assert_eq!(stored, [("normal", "critical"), ("critical", "normal")]);
    assert_eq!(h.polls.len(), r.script.calls("mail-01").len());
}

#[tokio::test(start_paused = true)]
async fn hysteresis_needs_recover_after_clean_replies_in_a_row() {
    let r = rig(&["s"], 60, 10, 3).await;
    r.script.set("s", Act::Answer(vec![critical("service:directory")]));
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(level(&r, "s"), "critical");
    let mut seen = Vec::new();
    r.script.set("s", Act::Answer(vec![]));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        seen.push(level(&r, "s"));
    }
    assert_eq!(seen, ["critical", "critical", "normal"]);
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_relapse_during_recovery_restarts_the_count() {
    let r = rig(&["s"], 60, 10, 2).await;
    r.script.set("s", Act::Fail(PollError::Malformed("x".into())));
    tokio::time::sleep(Duration::from_secs(61)).await;
    let mut seen = Vec::new();
    for act in
        [Act::Answer(vec![]), Act::Fail(PollError::Malformed("x".into())), Act::Answer(vec![]), Act::Answer(vec![])]
    {
        r.script.set("s", act);
        tokio::time::sleep(Duration::from_secs(10)).await;
        seen.push(level(&r, "s"));
    }
    assert_eq!(seen, ["critical", "critical", "critical", "normal"]);
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_hung_attendant_delays_no_other_server() {
    let r = rig(&["hung", "fine-1", "fine-2"], 5, 1, 1).await;
    r.script.set("hung", Act::Hang(Duration::from_secs(3600)));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(r.script.calls("hung").len(), 1, "the hung poll is still waiting");
    for name in ["fine-1", "fine-2"] {
        let g = gaps(&r.script.calls(name));
        assert!(g.len() >= 10 && g.iter().all(|&ms| ms == 5_000), "{name}: {g:?}");
    }
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn first_polls_of_2000_servers_spread_evenly_over_the_interval() {
    let names: Vec<String> = (0..2000).map(|i| format!("server-{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let start = Instant::now();
    let r = rig(&refs, 10, 2, 1).await;
    tokio::time::sleep(Duration::from_millis(10_001)).await;
    let mut buckets = [0usize; 10];
    for n in &names {
        let calls = r.script.calls(n);
        assert_eq!(calls.len(), 1, "{n} polled once in its first interval");
        buckets[((calls[0] - start).as_millis() / 1000).min(9) as usize] += 1;
    }
    for (i, &c) in buckets.iter().enumerate() {
        assert!((170..=230).contains(&c), "bucket {i}: {c} polls, mean 200 ± 15 %: {buckets:?}");
    }
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn new_servers_are_first_polled_within_first_poll_within_spread_evenly() {
    let names: Vec<String> = (0..300).map(|i| format!("server-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let start = Instant::now();
    // A 15-minute normal interval: without the window, first polls would take 15 minutes.
    let r = rig_with(&refs, 900, 120, 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(30_001)).await;
    let mut buckets = [0usize; 10];
    for n in &names {
        let calls = r.script.calls(n);
        assert_eq!(
            calls.len(),
            1,
            "{n} polled once within the 30 s window: {:?}",
            calls.iter().map(|c| (*c - start).as_millis()).collect::<Vec<_>>()
        );
        buckets[((calls[0] - start).as_millis() / 3000).min(9) as usize] += 1;
    }
    // Spread over the window: servers whose normal slot falls within it keep that slot
    // (one poll, not two), so the first buckets are a little lighter.
    for (i, &c) in buckets.iter().enumerate() {
        assert!((15..=45).contains(&c), "bucket {i}: {c} polls, mean 30 ± 50 %: {buckets:?}");
    }
    // The next poll each answered is in the future, at its normal slot.
    let now = r.fleet.timebase.wall_now();
    for s in r.fleet.servers().iter() {
        let next = s.summary().next_poll_at.expect("a next poll");
        assert!(next > now, "{}: next poll {next} not after {now}", s.config.name);
    }
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn the_poll_event_and_a_poll_on_request_carry_the_next_poll_not_the_last() {
    let r = rig(&["s"], 60, 10, 1).await;
    let mut events = r.events.resubscribe();
    // A scheduled poll: its event must name the slot after it, not the one it ran in.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let mut polled = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let FleetEvent::Polled(s) = e {
            polled.push(s);
        }
    }
    assert_eq!(polled.len(), 1);
    let (last, next) = (polled[0].facts.last_poll_at.unwrap(), polled[0].next_poll_at.unwrap());
    assert_eq!(next - last, chrono::Duration::seconds(60), "the event's next poll is the next slot");
    // A poll on request answers the slot its loop will keep.
    let server = r.fleet.get("s").unwrap().clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let answered = r.fleet.poll_now(&server).await.unwrap();
    let next = answered.next_poll_at.expect("a next poll");
    assert!(next > answered.facts.last_poll_at.unwrap());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(r.fleet.summary(&server).next_poll_at, Some(next), "the loop keeps the answered slot");
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn poll_now_answers_the_new_state_and_the_loop_follows_the_new_level() {
    let r = rig(&["s"], 600, 10, 1).await;
    r.script.set("s", Act::Fail(PollError::Auth("HTTP 401".into())));
    let server = r.fleet.get("s").unwrap().clone();
    let s = r.fleet.poll_now(&server).await.unwrap();
    assert_eq!((s.facts.level.as_str(), s.facts.deficiencies[0].source.as_str()), ("critical", "poll:auth"));
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(r.script.calls("s").len() >= 3, "now polled every 10 s, not every 600 s");
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_levels_from_the_store() {
    let r = rig(&["s"], 60, 10, 1).await;
    r.script.set("s", Act::Answer(vec![critical("service:mta")]));
    tokio::time::sleep(Duration::from_secs(61)).await;
    r.stop.cancel();
    let writer = r.fleet.writer().clone();
    let store = r.store.clone();
    let stored = on_store(async move {
        writer.flush().await.unwrap();
        store.load_servers().await.unwrap()
    })
    .await;
    let fleet = restarted(&r, stored, Script::default(), r.fleet.writer().clone());
    let s = fleet.summary(&fleet.get("s").unwrap());
    assert_eq!((s.facts.level.as_str(), s.facts.state), ("critical", ServerState::Deficient));
    assert_eq!(s.facts.deficiencies[0].source, "service:mta");
}

#[tokio::test(start_paused = true)]
async fn a_drifted_clock_is_ordered_back_and_the_next_poll_verifies_it() {
    let r = rig(&["s"], 60, 10, 1).await;
    *r.script.offset_ms.lock().unwrap() = 45_000.0;
    tokio::time::sleep(Duration::from_secs(61)).await;
    let orders = r.script.orders.lock().unwrap().clone();
    assert_eq!(orders.len(), 1);
    let order = orders[0].verify(&test_key().verifying_key()).unwrap();
    assert_eq!(order.server, "x", "addressed by the attendant's own name");
    assert!((order.correction_us + 45_000_000).abs() < 50_000, "{}", order.correction_us);
    // A stepped correction is verified within seconds, not at the next slot: the offset
    // shown is a measured one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let offset = r.fleet.summary(&r.fleet.get("s").unwrap()).facts.clock_offset_ms.unwrap();
    assert!(offset.abs() < 50.0, "offset shown {offset} ms after the verification poll");
    assert_eq!(r.script.calls("s").len(), 2, "one verification poll");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(r.script.orders.lock().unwrap().len(), 1, "no new order once corrected");
    r.stop.cancel();
    let mut events = r.events;
    let mut outcomes = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let FleetEvent::ClockCorrection { correction, .. } = e {
            outcomes.push(correction.outcome);
        }
    }
    assert_eq!(outcomes, ["applied", "verified"]);
}

#[tokio::test(start_paused = true)]
async fn skew_within_max_clock_skew_is_left_alone() {
    let r = rig(&["s"], 60, 10, 1).await;
    *r.script.offset_ms.lock().unwrap() = 1_500.0;
    tokio::time::sleep(Duration::from_secs(130)).await;
    assert!(r.script.orders.lock().unwrap().is_empty());
    assert!((r.fleet.summary(&r.fleet.get("s").unwrap()).facts.clock_offset_ms.unwrap() - 1_500.0).abs() < 50.0);
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_refused_order_is_not_repeated_at_every_poll() {
    let r = rig(&["s"], 60, 10, 1).await;
    *r.script.offset_ms.lock().unwrap() = 45_000.0;
    *r.script.refuse.lock().unwrap() = true;
    tokio::time::sleep(Duration::from_secs(61 + 10 * 60)).await;
    assert_eq!(r.script.orders.lock().unwrap().len(), 1, "one order, then quiet for ORDER_BACKOFF");
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    assert_eq!(r.script.orders.lock().unwrap().len(), 2, "tried again after the back-off");
    r.stop.cancel();
}

/// How many compilations the history holds for `name`, after everything queued is written.
async fn stored_compilations(writer: &Writer, store: &SharedStore, name: &str) -> usize {
    let (writer, store, name) = (writer.clone(), store.clone(), name.to_string());
    on_store(async move {
        writer.flush().await.unwrap();
        store.compilations(&name, 100).await.unwrap().len()
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn the_history_gets_a_compilation_only_when_its_substance_changes_even_across_a_restart() {
    let r = rig(&["s"], 600, 600, 1).await;
    let server = r.fleet.get("s").unwrap().clone();
    for _ in 0..3 {
        // Each reply differs in its times, not in substance.
        r.fleet.poll_now(&server).await.unwrap();
        tokio::time::sleep(on_request::MIN_SPACING).await;
    }
    assert_eq!(stored_compilations(r.fleet.writer(), &r.store, "s").await, 1);
    r.script.set("s", Act::Answer(vec![critical("service:mta")]));
    r.fleet.poll_now(&server).await.unwrap();
    tokio::time::sleep(on_request::MIN_SPACING).await;
    r.fleet.poll_now(&server).await.unwrap();
    assert_eq!(stored_compilations(r.fleet.writer(), &r.store, "s").await, 2, "one more for the change");
    // The latest as received is in memory, the newest of the polls.
    let (summary, latest) = r.fleet.detail(&server);
    let latest: Compilation = serde_json::from_slice(&latest.expect("a latest compilation")).unwrap();
    assert_eq!(latest.deficiencies, summary.facts.deficiencies);
    assert_eq!(r.fleet.latest_compilations().len(), 1);
    r.stop.cancel();

    let (writer, store) = (r.fleet.writer().clone(), r.store.clone());
    let stored = on_store(async move { store.load_servers().await.unwrap() }).await;
    let fleet = restarted(&r, stored, r.script.clone(), writer.clone());
    assert!(fleet.detail(&fleet.get("s").unwrap()).1.is_none(), "nothing received yet in this run");
    fleet.poll_now(&fleet.get("s").unwrap()).await.unwrap();
    assert_eq!(stored_compilations(&writer, &r.store, "s").await, 2, "the same substance after a restart");
}

#[tokio::test(start_paused = true)]
async fn a_clock_the_poller_cannot_correct_is_a_deficiency_not_silence() {
    let r = rig(&["s"], 60, 10, 1).await;
    r.stop.cancel();
    let script = Script::default();
    *script.offset_ms.lock().unwrap() = 45_000.0;
    let fleet = restarted(&r, vec![], script.clone(), r.fleet.writer().clone());
    let s = fleet.poll_now(&fleet.get("s").unwrap()).await.unwrap();
    assert_eq!(s.facts.state, ServerState::Deficient);
    let d = &s.facts.deficiencies[0];
    assert_eq!((d.source.as_str(), d.severity), ("clock:skew", Severity::Warning));
    assert!(d.summary.contains("no signing_key_file"), "{}", d.summary);
    assert!(script.orders.lock().unwrap().is_empty(), "no key, no order");
    // Back within the skew: the deficiency goes.
    *script.offset_ms.lock().unwrap() = 0.0;
    tokio::time::sleep(on_request::MIN_SPACING).await;
    let s = fleet.poll_now(&fleet.get("s").unwrap()).await.unwrap();
    assert_eq!((s.facts.state, s.facts.deficiencies.len()), (ServerState::Ok, 0));
}

#[tokio::test(start_paused = true)]
async fn a_refused_order_leaves_a_deficiency_naming_the_refusal() {
    let r = rig(&["s"], 60, 10, 1).await;
    *r.script.offset_ms.lock().unwrap() = 45_000.0;
    *r.script.refuse.lock().unwrap() = true;
    tokio::time::sleep(Duration::from_secs(61 + 10)).await;
    let s = r.fleet.summary(&r.fleet.get("s").unwrap());
    let d = s.facts.deficiencies.iter().find(|d| d.source == "clock:skew").expect("a clock:skew deficiency");
    assert!(d.summary.contains("refused") && d.summary.contains("max_clock_step"), "{}", d.summary);
    r.stop.cancel();
}

fn summary(r: &Rig, name: &str) -> ServerSummary {
    r.fleet.summary(&r.fleet.get(name).unwrap())
}

fn transitions_of(events: &mut broadcast::Receiver<FleetEvent>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let FleetEvent::Transition { server, transition } = e {
            out.push(format!("{server}: {} -> {}", transition.from, transition.to));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn children_behind_an_unreachable_parent_move_no_level_and_are_counted_by_it() {
    let kids: &[&str] = &["router"];
    let mut r = rig_parents(&[("router", &[]), ("web-1", kids), ("web-2", kids), ("web-3", kids)], 60, 10).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    // The segment goes away: the router and everything behind it stop answering.
    for n in ["router", "web-1", "web-2", "web-3"] {
        r.script.set(n, Act::Fail(PollError::Refused("connection refused".into())));
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    let router = summary(&r, "router");
    assert_eq!((router.facts.level.as_str(), router.facts.state), ("critical", ServerState::Unreachable));
    assert_eq!(router.servers_behind, 3);
    for n in ["web-1", "web-2", "web-3"] {
        let s = summary(&r, n);
        assert_eq!(s.facts.state, ServerState::Unreachable, "{n}");
        assert_eq!(s.facts.behind.as_deref(), Some("router"), "{n}");
        assert_eq!(s.facts.level, "normal", "{n}: no level moves for being behind");
    }
    assert_eq!(transitions_of(&mut r.events), ["router: normal -> critical"]);

    // The router answers again: its children are polled at once, not at their next slot.
    for n in ["router", "web-1", "web-2", "web-3"] {
        r.script.set(n, Act::Answer(vec![]));
    }
    let before: Vec<usize> = ["web-1", "web-2", "web-3"].iter().map(|n| r.script.calls(n).len()).collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let router_back = *r.script.calls("router").last().unwrap();
    for (i, n) in ["web-1", "web-2", "web-3"].iter().enumerate() {
        let calls = r.script.calls(n);
        assert_eq!(calls.len(), before[i] + 1, "{n} polled once more");
        assert!(calls.last().unwrap().duration_since(router_back) < Duration::from_millis(10), "{n} polled at once");
        let s = summary(&r, n);
        assert_eq!((s.facts.state, s.facts.behind.as_deref()), (ServerState::Ok, None), "{n}");
    }
    assert_eq!(summary(&r, "router").servers_behind, 0);
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_child_that_fails_while_its_parent_answers_has_its_own_problem() {
    let mut r = rig_parents(&[("router", &[]), ("web-1", &["router"])], 60, 10).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    r.script.set("web-1", Act::Fail(PollError::Refused("connection refused".into())));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let s = summary(&r, "web-1");
    assert_eq!((s.facts.level.as_str(), s.facts.behind.as_deref()), ("critical", None));
    assert_eq!(transitions_of(&mut r.events), ["web-1: normal -> critical"]);
    // Its parent was asked at once (reachability is judged at the poll), and answered.
    assert!(r.script.calls("router").len() >= 2);
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_ack_silences_the_problem_it_saw_and_ends_when_it_gets_worse() {
    let r = rig(&["s"], 60, 10, 1).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    let server = r.fleet.get("s").unwrap().clone();
    let e = r.fleet.acknowledge(&server, "ops", "x").await.unwrap_err();
    assert_eq!(e.to_string(), "s has no problem to acknowledge (state ok, no deficiencies)");

    r.script.set("s", Act::Answer(vec![critical("service:smtp")]));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let ack = r.fleet.acknowledge(&server, "ops", "on it").await.unwrap();
    assert_eq!((ack.sources.as_slice(), ack.level.as_str()), (&["service:smtp".to_string()][..], "critical"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(summary(&r, "s").facts.ack.as_ref().map(|a| a.comment.as_str()), Some("on it"), "same problem");

    r.script.set("s", Act::Answer(vec![critical("service:smtp"), critical("service:imap")]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(summary(&r, "s").facts.ack, None, "a new deficiency source ends it");
    let (writer, store) = (r.fleet.writer().clone(), r.store.clone());
    let stored = on_store(async move {
        writer.flush().await.unwrap();
        store.load_servers().await.unwrap()
    })
    .await;
    assert_eq!(stored[0].facts.ack, None, "its end is stored");
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_reload_adds_removes_and_restarts_servers_and_leaves_the_others_alone() {
    let r = rig_with(&["gone", "steady", "moved"], 60, 10, 1, Duration::from_secs(5)).await;
    r.script.set("steady", Act::Fail(PollError::Refused("connection refused".into())));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = summary(&r, "steady");
    assert_eq!(before.facts.level, "critical");
    let steady = r.fleet.get("steady").unwrap();

    let config = |name: &str, address: &str| ServerConfig {
        name: name.into(),
        address: address.into(),
        token: None,
        parents: vec![],
        tls: None,
    };
    let report = r.fleet.reload(vec![
        config("steady", "http://steady:7460"),
        config("moved", "http://moved-elsewhere:7460"),
        config("new", "http://new:7460"),
    ]);
    assert_eq!(
        report,
        ReloadReport {
            added: vec!["new".into()],
            removed: vec!["gone".into()],
            changed: vec!["moved".into()],
            unchanged: 1,
            restart_needed: vec![],
        }
    );
    // The untouched server is the same one: level, state and next poll as they were.
    assert!(Arc::ptr_eq(&steady, &r.fleet.get("steady").unwrap()));
    let after = summary(&r, "steady");
    assert_eq!((after.facts.level.as_str(), after.next_poll_at), ("critical", before.next_poll_at));
    assert!(r.fleet.get("gone").is_none());
    assert_eq!(summary(&r, "moved").facts.address, "http://moved-elsewhere:7460");

    let gone_calls = r.script.calls("gone").len();
    let moved_calls = r.script.calls("moved").len();
    let added_at = Instant::now();
    // first_poll_within = 5 s: a slot at exactly +5 s is polled just after it.
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let new_calls = r.script.calls("new");
    assert_eq!(new_calls.len(), 1, "the new server is polled within first_poll_within");
    assert!(new_calls[0] - added_at <= Duration::from_secs(5));
    assert_eq!(r.script.calls("moved").len(), moved_calls + 1, "the changed server's loop restarted: polled soon");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(r.script.calls("gone").len(), gone_calls, "a removed server is no longer polled");
    let names: Vec<String> = r.fleet.servers().iter().map(|s| s.config.name.clone()).collect();
    assert_eq!(names, ["steady", "moved", "new"]);
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn deficient_for_escalate_after_at_a_level_moves_up_one_and_stays_until_clean() {
    let warning =
        Level { escalate_after: Some(Duration::from_secs(120)), ..Level::new("warning", Duration::from_secs(30)) };
    let rules = Rules::new(
        vec![Level::new("normal", Duration::from_secs(60)), warning, Level::new("critical", Duration::from_secs(10))],
        vec![crate::levels::Rule { source: "service:*".into(), severity: None, level: 1 }],
        1,
    );
    let config =
        ServerConfig { name: "s".into(), address: "http://s:7460".into(), token: None, parents: vec![], tls: None };
    let mut r = rig_rules(vec![config], rules, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    r.script.set("s", Act::Answer(vec![critical("service:disk-report")]));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(level(&r, "s"), "warning");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(level(&r, "s"), "warning", "deficient for less than 2m at warning");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(level(&r, "s"), "critical", "deficient for 2m at warning");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(level(&r, "s"), "critical", "an escalation holds while the server is deficient");
    r.script.set("s", Act::Answer(vec![]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(level(&r, "s"), "normal", "moving down is unchanged: clean, back to normal");
    let t = transitions_of(&mut r.events);
    assert_eq!(t, ["s: normal -> warning", "s: warning -> critical", "s: critical -> normal"]);
    let (writer, store) = (r.fleet.writer().clone(), r.store.clone());
    let h = on_store(async move {
        writer.flush().await.unwrap();
        store.history("s", 10).await.unwrap()
    })
    .await;
    assert_eq!(h.transitions[1].reason, "deficient for 2m at warning");
}

#[tokio::test(start_paused = true)]
async fn requests_for_a_poll_join_the_one_in_flight_and_more_wait_their_turn() {
    let r = rig(&["s"], 600, 600, 1).await;
    let server = r.fleet.get("s").unwrap().clone();
    // A slow attendant: 50 requests come while its poll runs.
    r.script.set("s", Act::Hang(Duration::from_secs(3)));
    let answers = futures::future::join_all((0..50).map(|_| async { r.fleet.poll_now(&server).await })).await;
    assert_eq!(r.script.calls("s").len(), 1, "one poll for 50 requests in flight together");
    let first = answers[0].clone().expect("an answer");
    assert!(answers.iter().all(|a| a.as_ref() == Ok(&first)), "every request answers the same poll: {answers:?}");
    // Right after a quick poll, the next request is told when to come back.
    r.script.set("s", Act::Answer(vec![]));
    tokio::time::sleep(on_request::MIN_SPACING).await;
    r.fleet.poll_now(&server).await.expect("spaced enough");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = r.fleet.poll_now(&server).await.expect_err("a second poll within a second");
    let PollNowError::TooSoon { retry_after } = err else { panic!("{err:?}") };
    assert!(!retry_after.is_zero() && retry_after <= Duration::from_millis(700), "{retry_after:?}");
    assert_eq!(r.script.calls("s").len(), 2);
    tokio::time::sleep(retry_after).await;
    r.fleet.poll_now(&server).await.expect("after Retry-After");
    assert_eq!(r.script.calls("s").len(), 3);
    r.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn polls_on_request_do_not_lift_the_clock_order_back_off() {
    let r = rig(&["s"], 60, 10, 1).await;
    *r.script.offset_ms.lock().unwrap() = 45_000.0;
    *r.script.refuse.lock().unwrap() = true;
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(r.script.orders.lock().unwrap().len(), 1, "the scheduled poll sent one order, refused");
    let server = r.fleet.get("s").unwrap().clone();
    let before = r.script.calls("s").len();
    for _ in 0..20 {
        let s = r.fleet.poll_now(&server).await.expect("spaced polls on request are answered");
        let d = s.facts.deficiencies.iter().find(|d| d.source == "clock:skew").expect("clock:skew");
        assert!(d.summary.contains("refused"), "{}", d.summary);
        tokio::time::sleep(on_request::MIN_SPACING).await;
    }
    assert!(r.script.calls("s").len() - before >= 20, "every request polled");
    assert_eq!(r.script.orders.lock().unwrap().len(), 1, "20 polls on request, still one order");
    r.stop.cancel();
}
