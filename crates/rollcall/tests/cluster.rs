//! Several pollers on one real PostgreSQL (SPEC section 12), as an operator runs them:
//! real poller processes sharing one inventory of attendants that note when they are
//! asked. A server polled by two nodes at once would be asked twice as often; a server
//! nobody polls would not be asked at all. Every node tells one webhook receiver: a
//! notice told by two nodes, or by a node that could not claim it, arrives twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rollcall_testkit::postgres::{self, Postgres};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Every server is polled every second at every level.
const INTERVAL: Duration = Duration::from_secs(1);
const FAILOVER_AFTER: Duration = Duration::from_secs(5);

/// Attendants that answer healthy (or, once taken down, close the connection unanswered)
/// and note the instant of each query.
struct Fleet {
    urls: Vec<(String, String)>,
    asked: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    down: Arc<Mutex<HashSet<String>>>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    async fn start(n: usize) -> Fleet {
        let asked: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
        let down: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut urls = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let name = format!("mx-{i:02}");
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.push((name.clone(), format!("http://{}", l.local_addr().unwrap())));
            let (asked, down) = (asked.clone(), down.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok((mut c, _)) = l.accept().await {
                    let (asked, down) = (asked.clone(), down.clone());
                    let name = name.clone();
                    tokio::spawn(async move {
                        if read_request_head(&mut c).await {
                            let is_down = down.lock().unwrap().contains(&name);
                            asked.lock().unwrap().entry(name).or_default().push(Instant::now());
                            if !is_down {
                                answer_healthy(c).await;
                            }
                        }
                    });
                }
            }));
        }
        Fleet { urls, asked, down, _tasks: tasks }
    }

    /// From now on `server`'s attendant closes every query unanswered: it is deficient.
    fn take_down(&self, server: &str) {
        self.down.lock().unwrap().insert(server.to_string());
    }

    fn names(&self) -> Vec<String> {
        self.urls.iter().map(|(n, _)| n.clone()).collect()
    }

    /// How often each of `servers` was asked between `from` and `to`.
    fn asked_between(&self, servers: &[String], from: Instant, to: Instant) -> HashMap<String, usize> {
        let asked = self.asked.lock().unwrap();
        servers
            .iter()
            .map(|s| {
                let n = asked.get(s).map_or(0, |t| t.iter().filter(|&&at| at >= from && at < to).count());
                (s.clone(), n)
            })
            .collect()
    }

    /// The first time each of `servers` was asked after `from`.
    fn first_asked_after(&self, server: &str, from: Instant) -> Option<Instant> {
        self.asked.lock().unwrap().get(server)?.iter().copied().find(|&at| at > from)
    }
}

/// A poller node's config on the shared database `url`, telling the webhook `hook`.
fn node_config(
    dir: &std::path::Path,
    node: &str,
    port: u16,
    url: &str,
    fleet: &Fleet,
    hook: &str,
) -> std::path::PathBuf {
    let servers = fleet.urls.iter().map(|(n, u)| ServerEntry::new(n, u.clone())).collect();
    let mut cfg = PollerToml::fast(servers);
    cfg.levels = vec![("normal", "1s"), ("critical", "1s")];
    cfg.extra = format!(
        "node = \"{node}\"\nfailover_after = \"{}s\"\n\n[[notify]]\nkind = \"webhook\"\nurl = \"{hook}\"\n",
        FAILOVER_AFTER.as_secs()
    );
    let text: String = cfg
        .render(port, &dir.join("unused.db"))
        .lines()
        .map(|l| if l.starts_with("database") { format!("database = \"{url}\"") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    write(dir, &format!("poller-{node}.toml"), &text)
}

async fn start_node(dir: &std::path::Path, node: &str, url: &str, fleet: &Fleet, hook: &str) -> Poller {
    let port = free_port();
    let config = node_config(dir, node, port, url, fleet, hook);
    spawn_poller(dir, &config, port).await.unwrap_or_else(|p| panic!("node {node} did not start:\n{}", p.log_text()))
}

/// Servers each node holds, as `GET /api/v1/servers` on `api` shows them.
async fn owners(p: &Poller) -> HashMap<String, String> {
    p.api
        .servers()
        .await
        .iter()
        .filter_map(|s| Some((text(s, "name").to_string(), s["node"].as_str()?.to_string())))
        .collect()
}

/// The owners `p` shows once they stay the same over more than one heartbeat round (no
/// server still moving between nodes).
async fn settled_owners(p: &Poller) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = owners(p).await;
    loop {
        tokio::time::sleep(FAILOVER_AFTER / 3 + Duration::from_millis(300)).await;
        let now = owners(p).await;
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "owners still changing after 30 s: {now:?}");
        last = now;
    }
}

/// Waits until `GET /api/v1/cluster` on `p` shows `live` nodes holding every server, each
/// at least `min_each`.
async fn wait_spread(p: &Poller, live: &[&str], servers: usize, min_each: usize) -> Value {
    let what = format!("{live:?} live, holding {servers} servers, each at least {min_each}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let c = p.api.get("/api/v1/cluster").await;
        let nodes = c["nodes"].as_array().unwrap();
        let live_ok = live.iter().all(|n| nodes.iter().any(|x| x["name"] == *n && x["live"] == true));
        let held: Vec<usize> = live
            .iter()
            .map(|n| nodes.iter().find(|x| x["name"] == *n).map_or(0, |x| x["servers"].as_u64().unwrap() as usize))
            .collect();
        if live_ok && held.iter().sum::<usize>() == servers && held.iter().all(|&h| h >= min_each) {
            return c;
        }
        assert!(Instant::now() < deadline, "waited 40s for {what}; last: {c:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The notices the webhook got about `server`.
fn notices_about(got: &Mutex<Vec<Value>>, server: &str) -> Vec<Value> {
    got.lock().unwrap().iter().filter(|n| n["server"] == server).cloned().collect()
}

/// Waits (up to 20 s) until the webhook got a notice about `server`.
async fn wait_notice(got: &Mutex<Vec<Value>>, server: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while notices_about(got, server).is_empty() {
        assert!(Instant::now() < deadline, "no notice about {server} within 20 s: {:#?}", got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts no server in `counts` was asked more than once per interval over `window`
/// (plus one for a poll at the window's edge): two nodes polling it would double that.
fn assert_never_twice(counts: &HashMap<String, usize>, window: Duration) {
    let most = (window.as_secs_f64() / INTERVAL.as_secs_f64()).ceil() as usize + 1;
    for (s, n) in counts {
        assert!(*n <= most, "{s} was asked {n} times in {window:?}: more than one node polls it ({counts:?})");
    }
}

/// As [`assert_never_twice`], and every server was polled at nearly every interval: in a
/// settled cluster nobody's server is left out.
fn assert_polled_once_each(counts: &HashMap<String, usize>, window: Duration) {
    assert_never_twice(counts, window);
    let least = (window.as_secs_f64() / INTERVAL.as_secs_f64()).floor() as usize - 1;
    for (s, n) in counts {
        assert!(*n >= least, "{s} was asked {n} times in {window:?}: nobody polls it ({counts:?})");
    }
}

/// A lone node, or one restarted, polls its fleet within seconds of starting: its first
/// heartbeat round only announces it, and the second comes 2 s later, not after a whole
/// round (`failover_after / 3`: 10 s at the default 30 s, which this node uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_polls_its_fleet_within_seconds_of_starting() {
    if postgres::skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (hook, _got) = webhook_receiver().await;
    let pg = Postgres::start(dir.path());
    let url = pg.create_database("fleet");
    let fleet = Fleet::start(3).await;
    let port = free_port();
    let config = node_config(dir.path(), "solo", port, &url, &fleet, &hook);
    let ours = format!("failover_after = \"{}s\"", FAILOVER_AFTER.as_secs());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&ours));
    std::fs::write(&config, text.replace(&ours, "failover_after = \"30s\"")).unwrap();
    for start in ["first start", "restart"] {
        let spawned = Instant::now();
        let mut solo =
            spawn_poller(dir.path(), &config, port).await.unwrap_or_else(|p| panic!("{start}:\n{}", p.log_text()));
        let deadline = spawned + Duration::from_secs(6);
        while !fleet.names().iter().all(|s| fleet.first_asked_after(s, spawned).is_some()) {
            assert!(
                Instant::now() < deadline,
                "{start}: not every server polled 6 s after spawn:\n{}",
                solo.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        solo.proc.signal("TERM");
        solo.proc.wait_exit(DEADLINE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_fleet_and_take_over_from_a_killed_one() {
    if postgres::skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = webhook_receiver().await;
    let pg = Postgres::start(dir.path());
    let url = pg.create_database("fleet");
    let fleet = Fleet::start(30).await;
    let names = fleet.names();
    let a = start_node(dir.path(), "a", &url, &fleet, &hook).await;
    let b = start_node(dir.path(), "b", &url, &fleet, &hook).await;
    let mut c = start_node(dir.path(), "c", &url, &fleet, &hook).await;

    // Spread over the three, every node showing the whole fleet with who polls what.
    wait_spread(&a, &["a", "b", "c"], 30, 5).await;
    // Servers a took before c's first heartbeat move to c a few per round; then every
    // node shows the same owner for every server.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen_by_a = loop {
        let (seen_by_a, seen_by_b) = (owners(&a).await, owners(&b).await);
        if seen_by_a.len() == 30 && seen_by_a == seen_by_b {
            break seen_by_a;
        }
        assert!(Instant::now() < deadline, "a and b never showed the same 30 owners:\n{seen_by_a:?}\n{seen_by_b:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Each server is asked once per interval: by exactly one node.
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_polled_once_each(&fleet.asked_between(&names, from, Instant::now()), Duration::from_secs(5));

    // Poll-now on a node that does not hold the server is refused, naming the holder.
    let (elsewhere, holder) = seen_by_a.iter().find(|(_, n)| *n != "a").unwrap();
    let r =
        reqwest::Client::new().post(format!("{}/api/v1/servers/{elsewhere}/poll", a.api.base)).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains(&format!("polled by node {holder}")));

    // kill -9 of c: its servers are asked again within failover_after + an interval +
    // a heartbeat round, and never by two nodes at once meanwhile.
    let c_had: Vec<String> = seen_by_a.iter().filter(|(_, n)| *n == "c").map(|(s, _)| s.clone()).collect();
    assert!(!c_had.is_empty());
    c.proc.kill();
    let killed = Instant::now();
    // One of c's servers fails during the failover: told once, by the node that takes it.
    let failing = &c_had[0];
    fleet.take_down(failing);
    let bound = FAILOVER_AFTER + INTERVAL + FAILOVER_AFTER / 3 + Duration::from_secs(1);
    tokio::time::sleep(bound + Duration::from_millis(500)).await;
    for s in &c_had {
        let again = fleet.first_asked_after(s, killed + Duration::from_millis(600));
        let after = again.map(|t| t - killed);
        assert!(after.is_some_and(|d| d <= bound), "{s} (c's) asked again {after:?} after the kill; bound {bound:?}");
    }
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_polled_once_each(&fleet.asked_between(&names, from, Instant::now()), Duration::from_secs(4));
    let owners_now = owners(&a).await;
    assert!(owners_now.values().all(|n| n == "a" || n == "b"), "{owners_now:?}");
    wait_notice(&got, failing).await;

    // c comes back: it gets servers back, a few at a time, never one server polled by two
    // nodes (a server handed over waits at most two heartbeat rounds for its next poll).
    drop(c);
    let back = Instant::now();
    let c = start_node(dir.path(), "c", &url, &fleet, &hook).await;
    wait_spread(&c, &["a", "b", "c"], 30, 5).await;
    assert_never_twice(&fleet.asked_between(&names, back, Instant::now()), back.elapsed());
    // Across the failover and c's return (which may take the failing server back): one
    // notice, under the first key of its memory, and nothing about the healthy servers.
    let told = got.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "{told:#?}");
    assert_eq!((told[0]["server"].as_str(), told[0]["kind"].as_str()), (Some(failing.as_str()), Some("problem")));
    assert_eq!(told[0]["key"], format!("told:1:{failing}"));
    assert!(told[0]["node"] == "a" || told[0]["node"] == "b", "told by the node that took it: {:#}", told[0]);
    drop((a, b, c, pg));
}

/// A TCP proxy the test can cut: every connection through it dropped, new ones refused.
struct Cuttable {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Cuttable {
    async fn to(target: u16) -> Cuttable {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = watch => {} }
                });
            }
        });
        Cuttable { port, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_database_steps_aside_and_the_other_takes_over() {
    if postgres::skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = webhook_receiver().await;
    let pg = Postgres::start(dir.path());
    let url = pg.create_database("fleet");
    let proxy = Cuttable::to(pg.port).await;
    let via_proxy = url.replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
    let fleet = Fleet::start(20).await;
    let names = fleet.names();
    let a = start_node(dir.path(), "a", &url, &fleet, &hook).await;
    let b = start_node(dir.path(), "b", &via_proxy, &fleet, &hook).await;
    wait_spread(&a, &["a", "b"], 20, 4).await;
    let b_had: Vec<String> = settled_owners(&a).await.into_iter().filter(|(_, n)| n == "b").map(|(s, _)| s).collect();

    proxy.cut.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    // One of b's servers fails at once: b, cut off, polls it and decides a notice it
    // cannot claim, so it sends nothing; a tells it once it has taken the server.
    let failing = &b_had[0];
    fleet.take_down(failing);
    b.proc.wait_log("cannot reach the database").await;
    // a takes b's servers once their leases run out; b has stopped polling them by then.
    let c = wait_spread(&a, &["a"], 20, 20).await;
    let took = cut.elapsed();
    assert!(took <= FAILOVER_AFTER + FAILOVER_AFTER / 3 + Duration::from_secs(2), "took {took:?}: {c:#}");
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let counts = fleet.asked_between(&b_had, from, Instant::now());
    assert_polled_once_each(&counts, Duration::from_secs(4));
    // b, still running and cut off, polls nothing: every server is asked at a's pace only.
    assert_polled_once_each(&fleet.asked_between(&names, from, Instant::now()), Duration::from_secs(4));
    wait_notice(&got, failing).await;
    let key = format!("told:1:{failing}");
    b.proc.wait_log(&key).await;
    assert!(b.proc.log_text().contains("notice not sent: cannot claim it"), "{}", b.proc.log_text());

    // b gets its database back and, a few rounds later, its servers: what a told is what
    // b remembers of them, so nothing is told again.
    proxy.cut.store(false, Ordering::SeqCst);
    wait_spread(&a, &["a", "b"], 20, 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = got.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "{told:#?}");
    assert_eq!((told[0]["key"].as_str(), told[0]["kind"].as_str()), (Some(key.as_str()), Some("problem")));
    assert_eq!(told[0]["node"], "a", "told by the node that took the server, not the cut one");
    drop((a, b, pg));
}
