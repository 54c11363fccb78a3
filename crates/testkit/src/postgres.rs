//! A real PostgreSQL cluster for a test: Debian's `postgresql` binaries, `initdb` in a
//! temp dir, the server on a free loopback port, trust authentication for the test's own
//! role, stopped (fast shutdown) when dropped.
//!
//! Rules it keeps: nothing system-wide is used (no system cluster, no `/var/run`
//! socket: the socket lives in the cluster's own directory); when the test runs as root
//! the cluster runs as the `postgres` user, since PostgreSQL refuses to run as root;
//! `fsync` is off, since no test pulls the power (a test about durability would turn it on).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{free_port, require, Daemon};

/// The variable part of `ROLLCALL_SKIP_POSTGRES_TESTS`.
pub const WHAT: &str = "POSTGRES";

/// True (after saying why) when `ROLLCALL_SKIP_POSTGRES_TESTS=1` asks to skip.
pub fn skip() -> bool {
    crate::skip(WHAT, "PostgreSQL")
}

/// The newest installed PostgreSQL's `bin` directory (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => {
            require("/usr/lib/postgresql/15/bin/postgres", "postgresql", WHAT);
            unreachable!("require fails the test when PostgreSQL is missing")
        }
    }
}

/// `(uid, gid)` of the `postgres` user when running as root, so the cluster is not root's.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid(2) has no failure mode and touches no memory.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("no system user postgres: install the Debian package postgresql");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
}

/// A running cluster. Databases are made per test with [`Postgres::create_database`].
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Postgres {
    /// `initdb` under `root` (a test's temp dir) and starts the server on loopback.
    pub fn start(root: &Path) -> Postgres {
        let bin = bin_dir();
        let dir = root.join("pg");
        fs::create_dir_all(&dir).expect("mkdir pg");
        let owner = run_as();
        if let Some((uid, gid)) = owner {
            // The temp dir is root's and 0700: the postgres user must reach its cluster.
            fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown pg dir");
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "rollcall", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null());
        let out = as_owner(&mut initdb, owner).output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { port: free_port(), dir, daemon: None };
        pg.restart();
        pg
    }

    /// Starts (again) the server on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(bin_dir().join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "max_connections=200", "-c", "log_min_messages=warning"]);
        as_owner(&mut cmd, run_as());
        self.daemon = Some(Daemon::listening("postgres", &mut cmd, &self.dir.join("postgres.log"), &[self.port], &[]));
        // Listening is not accepting: recovery at start answers "the database system is
        // starting up" for a moment.
        let deadline = std::time::Instant::now() + crate::START_DEADLINE;
        loop {
            let ready = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "postgres never became ready:\n{}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Fast shutdown: open sessions are ended, as `pg_ctl stop -m fast` does.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop_with(libc::SIGINT);
        }
    }

    /// The URL of `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://rollcall@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` in database `db` with `psql`, failing the test with its error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", &self.url(db), "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.url(db)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
