//! Test support shared by every crate's tests, one copy of each helper:
//!
//! - [`wait`]: waiting until something holds ([`wait_for`], [`wait_until`]), always bounded;
//! - [`Daemon`]: outside programs (Dovecot, Postfix, slapd, Prometheus, Alertmanager,
//!   chromedriver...) started for real, on loopback, and stopped;
//! - [`mailstack`]: a real mail stack (Dovecot, Postfix, slapd) built from [`Daemon`]s;
//! - [`postgres`]: a real PostgreSQL cluster, one per test, in a temp dir;
//! - [`TcpService`]: a tcp "service" the test stops and starts under an attendant's check;
//! - [`Api`]: a client for the poller's JSON API, with waits on what it answers;
//! - [`pki`]: a throwaway CA (rcgen) and the certificates it signs, for TLS tests;
//! - [`skip`] and [`require`]: what a test does when an outside program is missing.
//!
//! Rules it keeps: every wait is bounded, and a wait that runs out fails the test saying
//! what it waited for (and what it saw instead, or the program's log); nothing
//! system-wide is touched; each program runs in its own process group, so stopping it
//! stops its children too; a program is always stopped when its [`Daemon`] is dropped,
//! even when the test panics; a program that exits or never listens fails the test with
//! its log.

pub mod api;
pub mod mailstack;
pub mod pki;
pub mod postgres;
pub mod service;
pub mod wait;

pub use api::Api;
pub use service::TcpService;
pub use wait::{wait_for, wait_for_within, wait_until, LogFile, DEADLINE};

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a program gets to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The variable that skips the tests needing `what`: `ROLLCALL_SKIP_{what}_TESTS`.
pub fn skip_var(what: &str) -> String {
    format!("ROLLCALL_SKIP_{what}_TESTS")
}

/// True (after saying why) when `ROLLCALL_SKIP_{what}_TESTS=1` asks to skip the tests that
/// need `needs`; the test then returns at once.
pub fn skip(what: &str, needs: &str) -> bool {
    let var = skip_var(what);
    if std::env::var(&var).is_ok_and(|v| v == "1") {
        eprintln!("{var}=1: skipping a test that needs {needs}");
        return true;
    }
    false
}

/// Fails the test naming the Debian package to install when `path` is missing, and the
/// variable (`ROLLCALL_SKIP_{what}_TESTS`) that skips such tests instead.
pub fn require(path: &str, package: &str, what: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (scripts/install-test-deps does, as root), \
         or set {}=1 to skip these tests",
        skip_var(what)
    );
}

/// An outside program in its own process group, stopped (group and all) on drop.
pub struct Daemon {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr in `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Daemon {
        let out = fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { name: name.to_string(), log: log.to_path_buf(), child }
    }

    /// Starts `cmd` as [`Daemon::spawn`] does and waits until it listens on every one of
    /// `ports` ([`Daemon::wait_for`]).
    pub fn listening(name: &str, cmd: &mut Command, log: &Path, ports: &[u16], more_logs: &[&Path]) -> Daemon {
        let mut d = Daemon::spawn(name, cmd, log);
        for &port in ports {
            d.wait_for(port, more_logs);
        }
        d
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The program's log followed by `more` logs it writes elsewhere.
    pub fn logs_with(&self, more: &[&Path]) -> String {
        std::iter::once(self.log.as_path())
            .chain(more.iter().copied())
            .map(|p| format!("--- {}\n{}", p.display(), fs::read_to_string(p).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `port` on loopback accepts connections.
    pub fn wait_for(&mut self, port: u16, more_logs: &[&Path]) {
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before listening on {port}:\n{}", self.name, self.logs_with(more_logs));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not listen on {port} within {START_DEADLINE:?}:\n{}", self.name, self.logs_with(more_logs));
    }

    /// Waits until `url` answers 2xx; fails with the log if the program exits first.
    pub async fn wait_http(&mut self, url: &str) {
        let what = format!("{} to answer {url}", self.name);
        wait_until(&what, START_DEADLINE, || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("{} exited ({st}) before answering {url}:\n{}", self.name, self.log_text());
            }
            let log = LogFile(self.log.clone());
            async move {
                match reqwest::get(url).await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    _ => Err(log),
                }
            }
        })
        .await
    }

    /// SIGTERM to the group, up to 5 s to exit, then SIGKILL to whatever is left.
    pub fn stop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }

    /// `signal` to the program (its own stop request, e.g. SIGINT for PostgreSQL's fast
    /// shutdown), up to 5 s to exit, then SIGKILL to whatever is left of the group.
    pub fn stop_with(&mut self, signal: libc::c_int) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
