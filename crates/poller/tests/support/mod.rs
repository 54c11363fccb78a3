//! Shared helpers for the poller's end-to-end tests: a real fleet in this process (real
//! attendants and the real poller on loopback, each attendant watching a tcp "service" the
//! test stops and starts), and the real outside programs the tests talk to: Prometheus,
//! Alertmanager, chromedriver with Chromium, each from its Debian package, started on free
//! loopback ports with their own config and state in a temp dir, killed on drop.
//!
//! Rules: nothing system-wide is touched; a missing program fails the test naming the
//! package to install, unless `ROLLCALL_SKIP_<WHAT>_TESTS=1` says to skip (and the test
//! prints why); every wait is bounded and a failure shows the program's log. What other
//! crates' tests need too (waits, the tcp service, the API client, the mail stack) is in
//! rollcall-testkit.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use rollcall_testkit::{free_port, require, wait_for, Api, Daemon, TcpService};

/// Attendants (in this process, virtual clocks, insecure on loopback), one per name, each
/// watching its own tcp service named `smtp`.
pub struct Attendants {
    pub addresses: Vec<(String, String)>,
    pub services: HashMap<String, TcpService>,
    stop: CancellationToken,
    /// Each attendant's own stop (a child of `stop`).
    stops: HashMap<String, CancellationToken>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Attendants {
    pub async fn start(dir: &Path, names: &[&str]) -> Attendants {
        let clocks: Vec<(&str, &str)> = names.iter().map(|n| (*n, "0s")).collect();
        Attendants::start_with_clocks(dir, &clocks).await
    }

    /// As [`Attendants::start`], each attendant's virtual clock set ahead by its offset
    /// (a config duration: `"1500ms"`, `"5s"`).
    pub async fn start_with_clocks(dir: &Path, clocks: &[(&str, &str)]) -> Attendants {
        let stop = CancellationToken::new();
        let mut addresses = Vec::new();
        let mut services = HashMap::new();
        let mut tasks = Vec::new();
        let mut stops = HashMap::new();
        for (name, offset) in clocks {
            let svc = TcpService::start().await;
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind attendant");
            let addr = listener.local_addr().expect("local_addr");
            let path = dir.join(format!("attendant-{name}.toml"));
            // The machine's own disk must not make a test server deficient.
            fs::write(
                &path,
                format!(
                    "name = \"{name}\"\nlisten = \"{addr}\"\ninsecure = true\nclock = \"virtual\"\nclock_offset = \"{offset}\"\n\n\
                     [host]\ndisk_warning_percent = 100.0\ndisk_critical_percent = 100.0\n\n\
                     [[service]]\nname = \"smtp\"\ncheck = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"1s\"\n",
                    svc.port
                ),
            )
            .expect("write attendant config");
            let config = rollcall_attendant::AttendantConfig::load(&path).expect("attendant config");
            let own = stop.child_token();
            stops.insert(name.to_string(), own.clone());
            tasks.push(tokio::spawn(rollcall_attendant::run_on(path, config, listener, own)));
            addresses.push((name.to_string(), format!("http://{addr}")));
            services.insert(name.to_string(), svc);
        }
        Attendants { addresses, services, stop, stops, tasks }
    }

    pub fn service(&mut self, name: &str) -> &mut TcpService {
        self.services.get_mut(name).expect("no such service")
    }

    /// Stops one attendant: its polls are refused from now on.
    pub async fn stop_attendant(&self, name: &str) {
        self.stops.get(name).expect("no such attendant").cancel();
        let (_, url) = self.addresses.iter().find(|(n, _)| n == name).expect("no such attendant");
        let url = format!("{url}/v1/compilation");
        wait_for(&format!("attendant {name} to stop"), || async { reqwest::get(&url).await.is_err().then_some(()) })
            .await;
    }

    /// The `[[server]]` tables for a poller watching these attendants.
    pub fn server_tables(&self) -> String {
        self.addresses.iter().map(|(n, a)| format!("\n[[server]]\nname = \"{n}\"\naddress = \"{a}\"\n")).collect()
    }
}

impl Drop for Attendants {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The real poller in this process, on its own port, with its database in `dir`.
pub struct Poller {
    pub base: String,
    pub api: Api,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Short levels so tests see movement within seconds: normal every 3 s, critical every 1 s.
pub const LEVELS: &str = "timeout = \"800ms\"\nrecover_after = 1\n\n[[level]]\nname = \"normal\"\ninterval = \"3s\"\n\n[[level]]\nname = \"critical\"\ninterval = \"1s\"\n";

impl Poller {
    /// Starts a poller from `extra` (top-level keys and tables) plus the fleet's servers.
    pub async fn start(dir: &Path, att: &Attendants, top: &str, tables: &str) -> Poller {
        Poller::start_servers(dir, &att.server_tables(), top, tables).await
    }

    /// Starts a poller of the `[[server]]` tables `servers`, with `top` and `tables`.
    pub async fn start_servers(dir: &Path, servers: &str, top: &str, tables: &str) -> Poller {
        Poller::start_with(dir, &format!("{top}\n{LEVELS}\n{servers}\n{tables}")).await
    }

    /// Starts a poller from `text` (all of poller.toml but `database`, which is
    /// `dir/rollcall.db`); its API is ready (`GET /api/v1/health` answers) on return.
    pub async fn start_with(dir: &Path, text: &str) -> Poller {
        let path = dir.join("poller.toml");
        let text = format!("database = \"sqlite://{}\"\n{text}", dir.join("rollcall.db").display());
        fs::write(&path, text).expect("write poller config");
        let config = rollcall_poller::PollerConfig::load(&path).unwrap_or_else(|e| panic!("poller config: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind poller");
        let base = format!("http://{}", listener.local_addr().expect("local_addr"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(rollcall_poller::run(config, listener, stop.clone()));
        let p = Poller { api: Api::new(&base), base, stop, task: Some(task) };
        // Open whatever the users: the API is ready when it answers.
        let url = format!("{}/api/v1/health", p.base);
        wait_for("the poller's API", || async { reqwest::get(&url).await.ok().filter(|r| r.status().is_success()) })
            .await;
        p
    }

    /// Stops the poller cleanly (everything recorded is written) and waits for it.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(20), t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("poller failed: {e:#}"),
                Ok(Err(e)) => panic!("poller task failed: {e}"),
                Err(_) => panic!("poller did not stop within 20 s"),
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A webhook receiver that answers 500 to its first `fail` requests, then records bodies.
pub struct Hook {
    pub url: String,
    pub got: Arc<Mutex<Vec<Value>>>,
    pub attempts: Arc<AtomicUsize>,
    /// The `Idempotency-Key` header of every attempt, failed ones included ("" if none).
    pub keys: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct HookState {
    got: Arc<Mutex<Vec<Value>>>,
    attempts: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<String>>>,
    fail: usize,
}

async fn hook_post(State(s): State<HookState>, headers: axum::http::HeaderMap, body: axum::Json<Value>) -> StatusCode {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    s.keys.lock().unwrap().push(key.to_string());
    if s.attempts.fetch_add(1, Ordering::SeqCst) < s.fail {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    s.got.lock().unwrap().push(body.0);
    StatusCode::NO_CONTENT
}

pub async fn hook(fail: usize) -> Hook {
    let got = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(Mutex::new(Vec::new()));
    let state = HookState { got: got.clone(), attempts: attempts.clone(), keys: keys.clone(), fail };
    let app = axum::Router::new().route("/hook", axum::routing::post(hook_post)).with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.ok() });
    Hook { url, got, attempts, keys }
}

impl Hook {
    pub fn kinds(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|n| n["kind"].as_str().unwrap_or("?").to_string()).collect()
    }

    pub async fn wait_kinds(&self, want: &[&str]) {
        wait_for(&format!("webhook notices {want:?} (have {:?})", self.kinds()), || async {
            (self.kinds() == want).then_some(())
        })
        .await;
    }
}

/// A notifier alone (no fleet, no writer) on `store` with `config`'s channels and damping,
/// fed the fleet events the test sends on the answered sender; it stops with `stop`.
pub async fn notifier(
    config: &rollcall_poller::PollerConfig,
    store: rollcall_poller::store::SharedStore,
    stop: &CancellationToken,
) -> (tokio::sync::broadcast::Sender<rollcall_poller::fleet::FleetEvent>, Arc<rollcall_poller::notify::Notifier>) {
    let (events, rx) = tokio::sync::broadcast::channel(16);
    let setup = rollcall_poller::notify::NotifierSetup {
        channels: config.notify.clone(),
        damping: config.damping,
        first_level: config.rules.level(0).name.clone(),
        store,
        events: rx,
        public_url: None,
        writer: None,
        node: config.node.clone(),
    };
    let tracker = tokio_util::task::TaskTracker::new();
    let notifier = rollcall_poller::notify::Notifier::start(setup, stop, &tracker).await.unwrap();
    (events, notifier)
}

/// Prometheus (Debian `prometheus`) scraping `target` (host:port) every second.
pub async fn prometheus(dir: &Path, target: &str) -> (Daemon, String) {
    require("/usr/bin/prometheus", "prometheus", "PROMETHEUS");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: rollcall\n    static_configs:\n      - targets: ['{target}']\n"
    );
    prometheus_program(dir, "prometheus", "/usr/bin/prometheus", &config, "--storage.tsdb.path", &[]).await
}

/// Alertmanager (Debian `prometheus-alertmanager`) with a receiver that sends nowhere.
pub async fn alertmanager(dir: &Path) -> (Daemon, String) {
    require("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager", "ALERTMANAGER");
    let config = "route:\n  receiver: nowhere\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: nowhere\n";
    let no_cluster = ["--cluster.listen-address="];
    prometheus_program(dir, "alertmanager", "/usr/bin/prometheus-alertmanager", config, "--storage.path", &no_cluster)
        .await
}

/// A program of the Prometheus project (their flags alike): `config` in `dir/NAME.yml`,
/// state in `dir/NAME-data` (given with `storage_flag`), the web interface on a free
/// loopback port; answers it once `/-/ready`, with its base URL.
async fn prometheus_program(
    dir: &Path,
    name: &str,
    program: &str,
    config: &str,
    storage_flag: &str,
    more_args: &[&str],
) -> (Daemon, String) {
    let port = free_port();
    let cfg = dir.join(format!("{name}.yml"));
    fs::write(&cfg, config).unwrap_or_else(|e| panic!("write {}: {e}", cfg.display()));
    let mut d = Daemon::spawn(
        name,
        Command::new(program)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("{storage_flag}={}", dir.join(format!("{name}-data")).display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(more_args),
        &dir.join(format!("{name}.log")),
    );
    let base = format!("http://127.0.0.1:{port}");
    d.wait_http(&format!("{base}/-/ready")).await;
    (d, base)
}

/// chromedriver (Debian `chromium-driver`) ready to drive headless Chromium.
pub async fn chromedriver(dir: &Path) -> (Daemon, String) {
    require("/usr/bin/chromium", "chromium", "BROWSER");
    require("/usr/bin/chromedriver", "chromium-driver", "BROWSER");
    let port = free_port();
    let mut d = Daemon::spawn(
        "chromedriver",
        Command::new("/usr/bin/chromedriver").arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1"),
        &dir.join("chromedriver.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    d.wait_http(&format!("{base}/status")).await;
    (d, base)
}

/// A webdriver session in headless Chromium with a fresh profile; `width` x `height`.
pub async fn browser(driver: &str, profile: &Path, width: u32, height: u32) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ]
        }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}
