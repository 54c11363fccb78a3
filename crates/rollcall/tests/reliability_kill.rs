//! Reliability: the poller killed with `kill -9` again and again while it writes, as a
//! power cut or the OOM killer would. Servers change level meanwhile and a webhook is
//! told. After every kill the poller must start on its database as it was left; in the
//! end every server's history must be one unbroken chain of transitions, nothing the
//! webhook was told may be missing from it, and no notice may be repeated.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::net::TcpListener;

/// An attendant that can be taken down (connections refused) and brought back on its port.
struct Switchable {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Switchable {
    async fn start() -> Switchable {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut s = Switchable { port, task: None };
        s.serve(l);
        s
    }

    fn serve(&mut self, l: TcpListener) {
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    if read_request_head(&mut c).await {
                        answer_healthy(c).await;
                    }
                });
            }
        }));
    }

    fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn up(&mut self) {
        if self.task.is_none() {
            let l = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
            self.serve(l);
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_loop_during_writes_loses_no_transition_and_repeats_no_notice() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, notices) = webhook_receiver().await;
    let mut flappy = Vec::new();
    for _ in 0..4 {
        flappy.push(Switchable::start().await);
    }
    let steady = Switchable::start().await;
    let mut servers: Vec<ServerEntry> =
        flappy.iter().enumerate().map(|(i, a)| ServerEntry::new(&format!("flappy-{i}"), a.url())).collect();
    servers.push(ServerEntry::new("steady", steady.url()));
    let mut cfg = PollerToml::fast(servers);
    cfg.levels = vec![("normal", "1s"), ("critical", "1s")];
    // Flap damping would fold these changes into one "flapping" notice: every change is told.
    cfg.extra = format!("flap_threshold = 1000\n\n[[notify]]\nkind = \"webhook\"\nurl = \"{hook}\"\n");
    let mut poller = start_poller(dir.path(), &cfg).await;
    let (port, config) = (poller.port, poller.config.clone());

    // Kill the poller at uneven moments, while the flappy attendants go down and come back.
    for round in 0..8u64 {
        let before = Duration::from_millis(300 + (round * 389) % 900);
        tokio::time::sleep(before).await;
        for (i, a) in flappy.iter_mut().enumerate() {
            if (round + i as u64).is_multiple_of(2) {
                a.down();
            } else {
                a.up().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(700 + (round * 577) % 1100)).await;
        poller.proc.kill(); // SIGKILL: no flush, no goodbye
        poller = spawn_poller(dir.path(), &config, port)
            .await
            .unwrap_or_else(|p| panic!("the poller did not start after kill {}:\n{}", round + 1, p.log_text()));
    }

    // Settle: every attendant up, every server back to normal, told.
    for a in &mut flappy {
        a.up().await;
    }
    for i in 0..flappy.len() {
        poller.api.wait_server(&format!("flappy-{i}"), "normal again", |s| s["level"] == "normal").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let told = notices.lock().unwrap().clone();
    let mut by_server: HashMap<String, Vec<&Value>> = HashMap::new();
    for n in &told {
        by_server.entry(text(n, "server").to_string()).or_default().push(n);
    }
    assert!(told.iter().any(|n| n["kind"] == "problem"), "the flapping servers were told about: {told:#?}");
    // Each notice has its own key: none was sent twice, under any condition.
    let mut keys: Vec<&str> = told.iter().map(|n| text(n, "key")).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), before, "a notice key was sent twice: {told:#?}");
    for i in 0..flappy.len() {
        let name = format!("flappy-{i}");
        let history = poller.api.history(&name).await;
        let pairs = transition_pairs(&history);
        // One unbroken chain: each transition starts where the one before ended.
        for w in pairs.windows(2) {
            assert_eq!(w[0].1, w[1].0, "{name}: a transition is missing between {w:?}: {pairs:?}");
        }
        // No notice repeated: two notices in a row telling the same level are a repeat
        // unless the server left that level and came back between them (a notice lost
        // with a killed process is not a repeat).
        let mine: Vec<&Value> = by_server.get(&name).cloned().unwrap_or_default();
        let levels: Vec<&str> = mine.iter().map(|n| text(n, "level")).collect();
        let transitions = oldest_first(&history, "transitions");
        for w in mine.windows(2) {
            let (a, b) = (w[0], w[1]);
            if text(a, "level") != text(b, "level") {
                continue;
            }
            let (from, to) = (time(a, "at"), time(b, "at"));
            let left = transitions.iter().any(|t| {
                let at = time(t, "at");
                at > from && at <= to && text(t, "from") == text(a, "level")
            });
            assert!(left, "{name}: {} told twice without leaving it: {a}\n{b}\nhistory: {pairs:?}", text(a, "level"));
        }
        // Nothing told is missing from the history.
        for level in &levels {
            assert!(
                pairs.iter().any(|(_, to)| to == level),
                "{name}: told {level} but its history has no transition to it: {pairs:?}"
            );
        }
    }
    assert!(
        by_server.get("steady").is_none_or(|v| v.is_empty()),
        "steady was told about: {:?}",
        by_server.get("steady")
    );
}
