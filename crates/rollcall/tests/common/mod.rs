//! Shared helpers for the integration tests: the real `rollcall` binary as child processes
//! (killed when dropped), config writers, and fake attendants that answer the poller's
//! query with whatever a test wants to inject. The client for the poller's JSON API and
//! the tcp "services" the tests stop and start are rollcall-testkit's.
//!
//! Every test gets its own temporary folder and its own loopback ports.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long any wait-until loop waits before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rollcall")
}

pub use rollcall_testkit::{free_port, Api};
use rollcall_testkit::{wait_until, LogFile};

/// Writes `text` to `dir/name` and answers the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
    p
}

/// A `rollcall` child process; killed (SIGKILL) and reaped when dropped. Its stdout and
/// stderr go to a log file, shown when a test fails.
pub struct Proc {
    child: Child,
    pub what: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(what: &str, args: &[&str], log: PathBuf) -> Proc {
        Proc::spawn_program(bin(), what, args, log)
    }

    /// Like [`Proc::spawn`], for another binary of the package (`rollcall-attendant`).
    pub fn spawn_program(program: &str, what: &str, args: &[&str], log: PathBuf) -> Proc {
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = Command::new(program)
            .args(args)
            .env("ROLLCALL_LOG", "info")
            .env_remove("ROLLCALL_POLLER")
            .env_remove("ROLLCALL_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { child, what: what.to_string(), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (without blocking the runtime) until the process exits.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.what);
        wait_until(&what, within, || {
            let exited = self.exited().ok_or_else(|| LogFile(self.log.clone()));
            async move { exited }
        })
        .await
    }

    /// Waits until `needle` shows up in the process's log.
    pub async fn wait_log(&self, needle: &str) {
        let what = format!("{}: {needle:?} in its log", self.what);
        wait_until(&what, DEADLINE, || async {
            if self.log_text().contains(needle) {
                Ok(())
            } else {
                Err(LogFile(self.log.clone()))
            }
        })
        .await
    }

    /// Waits until `url` answers with a status `answered` accepts; false if the process
    /// exited first.
    pub async fn wait_http(&mut self, url: &str, answered: impl Fn(reqwest::StatusCode) -> bool) -> bool {
        let http = reqwest::Client::new();
        let what = format!("{} to answer {url}", self.what);
        let answered = &answered;
        wait_until(&what, DEADLINE, || {
            let gone = self.exited().is_some();
            let log = LogFile(self.log.clone());
            let reply = http.get(url).timeout(Duration::from_secs(2)).send();
            async move {
                if gone {
                    return Ok(false);
                }
                match reply.await {
                    Ok(r) if answered(r.status()) => Ok(true),
                    _ => Err(log),
                }
            }
        })
        .await
    }

    /// Kills (SIGKILL) and reaps the process now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `rollcall ARGS` to completion: (exit code, stdout, stderr).
pub async fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(bin())
            .args(args)
            .env("ROLLCALL_LOG", "warn")
            .env_remove("ROLLCALL_POLLER")
            .env_remove("ROLLCALL_TOKEN_FILE")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("rollcall {args:?} did not finish within {DEADLINE:?}"))
    .expect("run rollcall");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ----------------------------------------------------------------------------------------
// Attendants

/// One `[[service]]` of check = "tcp".
pub struct TcpCheck<'a> {
    pub name: &'a str,
    pub address: String,
}

/// How the attendant authenticates its poller.
pub enum AttAuth<'a> {
    Insecure,
    TokenFile(&'a Path),
}

/// An attendant.toml on `127.0.0.1:PORT` with a virtual clock, disk thresholds that never
/// fire (so the test machine's disks do not make deficiencies) and the given tcp services.
pub fn attendant_toml(name: &str, port: u16, auth: &AttAuth, services: &[TcpCheck]) -> String {
    let auth = match auth {
        AttAuth::Insecure => "insecure = true".to_string(),
        AttAuth::TokenFile(p) => format!("token_file = {:?}", p.display().to_string()),
    };
    let mut t = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n{auth}\nclock = \"virtual\"\n\n\
         [host]\ndisk_warning_percent = 100.0\ndisk_critical_percent = 100.0\n"
    );
    for s in services {
        t += &format!(
            "\n[[service]]\nname = \"{}\"\ncheck = \"tcp\"\naddress = \"{}\"\ntimeout = \"300ms\"\n",
            s.name, s.address
        );
    }
    t
}

/// A running attendant process.
pub struct Attendant {
    pub proc: Proc,
    pub port: u16,
    pub config: PathBuf,
}

impl Attendant {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Starts `rollcall attendant` with the config `make(port)`, written to `dir/NAME.toml`, and
/// waits until it answers HTTP. Retries on another port if the chosen one was taken.
pub async fn start_attendant(dir: &Path, name: &str, make: impl Fn(u16) -> String) -> Attendant {
    for _ in 0..5 {
        let port = free_port();
        let config = write(dir, &format!("{name}.toml"), &make(port));
        let mut proc = Proc::spawn(
            &format!("attendant {name}"),
            &["attendant", "--config", config.to_str().unwrap()],
            dir.join(format!("{name}.log")),
        );
        if proc.wait_http(&format!("http://127.0.0.1:{port}/v1/compilation"), |_| true).await {
            return Attendant { proc, port, config };
        }
        if !proc.log_text().contains("cannot listen") {
            panic!("attendant {name} did not start; log:\n{}", proc.log_text());
        }
    }
    panic!("attendant {name}: no free port after 5 tries");
}

// ----------------------------------------------------------------------------------------
// Pollers

/// One `[[server]]` of a poller.toml.
pub struct ServerEntry {
    pub name: String,
    pub address: String,
    pub token_file: Option<PathBuf>,
}

impl ServerEntry {
    pub fn new(name: &str, address: impl Into<String>) -> ServerEntry {
        ServerEntry { name: name.to_string(), address: address.into(), token_file: None }
    }
}

/// What a test's poller.toml says; rendered with the port and database path.
pub struct PollerToml {
    pub timeout: &'static str,
    pub levels: Vec<(&'static str, &'static str)>,
    pub recover_after: u32,
    pub max_reply_bytes: Option<u64>,
    /// More top-level lines, as written.
    pub extra: String,
    pub servers: Vec<ServerEntry>,
}

impl PollerToml {
    /// normal 2s, critical 1s, timeout 500ms, recover_after 1.
    pub fn fast(servers: Vec<ServerEntry>) -> PollerToml {
        PollerToml {
            timeout: "500ms",
            levels: vec![("normal", "2s"), ("critical", "1s")],
            recover_after: 1,
            max_reply_bytes: None,
            extra: String::new(),
            servers,
        }
    }

    pub fn render(&self, port: u16, db: &Path) -> String {
        let mut t = format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"sqlite://{}\"\ntimeout = \"{}\"\nrecover_after = {}\n",
            db.display(),
            self.timeout,
            self.recover_after
        );
        if let Some(m) = self.max_reply_bytes {
            t += &format!("max_reply_bytes = {m}\n");
        }
        t += &self.extra;
        for (name, interval) in &self.levels {
            t += &format!("\n[[level]]\nname = \"{name}\"\ninterval = \"{interval}\"\n");
        }
        for s in &self.servers {
            t += &format!("\n[[server]]\nname = \"{}\"\naddress = \"{}\"\n", s.name, s.address);
            if let Some(f) = &s.token_file {
                t += &format!("token_file = {:?}\n", f.display().to_string());
            }
        }
        t
    }
}

/// A running poller process and a client for its API.
pub struct Poller {
    pub proc: Proc,
    pub port: u16,
    pub config: PathBuf,
    pub api: Api,
}

/// Starts `rollcall poller` with `cfg` (database `dir/rollcall.db`) and waits until its
/// API answers. Retries on another port if the chosen one was taken.
pub async fn start_poller(dir: &Path, cfg: &PollerToml) -> Poller {
    for _ in 0..5 {
        let port = free_port();
        let config = write(dir, "poller.toml", &cfg.render(port, &dir.join("rollcall.db")));
        match spawn_poller(dir, &config, port).await {
            Ok(p) => return p,
            Err(proc) if proc.log_text().contains("cannot listen") => continue,
            Err(proc) => panic!("poller did not start; log:\n{}", proc.log_text()),
        }
    }
    panic!("poller: no free port after 5 tries");
}

/// Starts a poller on an existing config (e.g. again after a restart) listening on `port`.
pub async fn spawn_poller(dir: &Path, config: &Path, port: u16) -> Result<Poller, Proc> {
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let mut proc =
        Proc::spawn("poller", &["poller", "--config", config.to_str().unwrap()], dir.join(format!("poller-{n}.log")));
    let api = Api::new(&format!("http://127.0.0.1:{port}")).with_deadline(DEADLINE);
    // The health check is open whatever the poller's users: it answers once the API does.
    if proc.wait_http(&format!("{}/api/v1/health", api.base), |s| s.is_success()).await {
        Ok(Poller { proc, port, config: config.to_path_buf(), api })
    } else {
        Err(proc)
    }
}

// ----------------------------------------------------------------------------------------
// Reading API values

pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {v:#}"))
}

pub fn time(v: &Value, key: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text(v, key))
        .unwrap_or_else(|e| panic!("{key} is not RFC 3339 ({e}) in {v:#}"))
        .with_timezone(&Utc)
}

/// The text `key` of every item of the array `list` in `v`, in order.
pub fn texts(v: &Value, list: &str, key: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} array in {v:#}"))
        .iter()
        .map(|item| text(item, key).to_string())
        .collect()
}

/// The sources of a server's `deficiencies`.
pub fn sources(server: &Value) -> Vec<String> {
    texts(server, "deficiencies", "source")
}

/// A history list (`polls`, `transitions`), oldest first.
pub fn oldest_first(history: &Value, list: &str) -> Vec<Value> {
    let mut v = history[list].as_array().unwrap_or_else(|| panic!("no {list} in {history:#}")).clone();
    v.reverse();
    v
}

/// `(from, to)` of every transition, oldest first.
pub fn transition_pairs(history: &Value) -> Vec<(String, String)> {
    oldest_first(history, "transitions")
        .iter()
        .map(|t| (text(t, "from").to_string(), text(t, "to").to_string()))
        .collect()
}

// ----------------------------------------------------------------------------------------
// Notification receivers

/// A webhook receiver keeping every notice's JSON, answering 204.
pub async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = c.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    if buf.len() < head_end + 4 + len {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf[head_end + 4..head_end + 4 + len]) {
                        keep.lock().unwrap().push(v);
                    }
                    let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
                    return;
                }
            });
        }
    });
    (url, got)
}

// ----------------------------------------------------------------------------------------
// Fake attendants for fault injection

/// What a fake attendant does with a query.
#[derive(Clone)]
pub enum Fake {
    /// Writes these bytes (a whole HTTP response, or part of one) and closes.
    Raw(Vec<u8>),
    /// Reads the request and never answers (holds the connection).
    Hang,
    /// Answers a valid schema-1 compilation, stamped now, with extra unknown fields, one of
    /// them `query_number` (1 for the first query, and so on).
    Healthy,
}

/// A fake attendant on a loopback port; counts the queries it got.
pub struct FakeAttendant {
    pub port: u16,
    pub queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeAttendant {
    pub async fn start(behaviour: Fake) -> FakeAttendant {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().unwrap().port();
        let queries = Arc::new(AtomicUsize::new(0));
        let q = queries.clone();
        let task = tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let b = behaviour.clone();
                let q = q.clone();
                tokio::spawn(async move { answer(c, b, q).await });
            }
        });
        FakeAttendant { port, queries, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAttendant {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (the poller sends a GET without a body), at most 64 KiB; false
/// when the client went away first.
pub async fn read_request_head(c: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Answers a valid schema-1 compilation, stamped now, and closes.
pub async fn answer_healthy(mut c: TcpStream) {
    let body = compilation_json(1).to_string();
    let _ = c.write_all(http_response("200 OK", &body).as_bytes()).await;
    let _ = c.shutdown().await;
}

async fn answer(mut c: TcpStream, behaviour: Fake, queries: Arc<AtomicUsize>) {
    if !read_request_head(&mut c).await {
        return;
    }
    let n = queries.fetch_add(1, Ordering::SeqCst) + 1;
    match behaviour {
        Fake::Raw(bytes) => {
            let _ = c.write_all(&bytes).await;
            let _ = c.shutdown().await;
        }
        Fake::Hang => {
            // Keep the connection open until the poller gives up and closes it.
            let _ = c.read(&mut [0u8; 64]).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Fake::Healthy => {
            let mut doc = compilation_json(1);
            doc["query_number"] = n.into();
            let body = doc.to_string();
            let _ = c.write_all(http_response("200 OK", &body).as_bytes()).await;
            let _ = c.shutdown().await;
        }
    }
}

/// A complete HTTP/1.1 response with `Content-Length`, closing the connection.
pub fn http_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A compilation of `schema_version`, stamped now, with a field no reader knows.
pub fn compilation_json(schema_version: u32) -> Value {
    let now = Utc::now();
    json!({
        "schema_version": schema_version,
        "attendant": { "name": "fake", "version": "0.0.0", "hostname": "fake.example.org" },
        "time": {
            "utc": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "utc_offset_seconds": 0,
            "zone": "UTC",
            "received_at": now.to_rfc3339_opts(SecondsFormat::Micros, true),
            "replied_at": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        },
        "services": [],
        "probes": [],
        "host": { "uptime_s": 1, "load": [0.0, 0.0, 0.0], "cpu_percent": 0.0,
                  "memory": { "total": 1024, "used": 512 }, "disks": [] },
        "deficiencies": [],
        "a_field_from_the_future": { "readers": "must ignore it" },
    })
}
