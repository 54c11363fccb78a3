//! `check = "process"`: is a process running, found by name, by its command line, or by
//! pidfile (Linux `/proc`).
//!
//! Rules (as `pgrep` and `check_procs -C/-a` find processes, without their 15-character
//! blind spot):
//! - `process = "NAME"` matches a process whose kernel name (`/proc/PID/comm`, cut by the
//!   kernel to 15 characters), program (`/proc/PID/exe`) or `argv[0]` is NAME, either
//!   whole (a path) or by its last path component: `rollcall-attendant` and
//!   `/usr/sbin/sshd` are found as an operator writes them;
//! - `command_pattern = "REGEX"` matches the full command line (arguments joined by
//!   spaces, as `pgrep -f` and `ps -o args` show it); with `process` too, both must match;
//!   the attendant itself never counts for a pattern (as `pgrep` leaves itself out);
//! - zombies (exited, not yet reaped) are not running;
//! - the PIDs found are in `details.pids`; the check reads `/proc` directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use regex::Regex;
use rollcall_protocol::Status;
use serde::Deserialize;

use crate::checks::{DEFAULT_TIMEOUT, Kind, Outcome, ServiceCheck};
use crate::config::fields::{regex, TableCx};

/// How the config identifies the process.
#[derive(Debug, Clone)]
pub enum ProcessMatch {
    /// By name and/or command line (at least one is set).
    Running(Matcher),
    /// A pidfile the daemon writes.
    Pidfile(PathBuf),
}

/// What a running process must look like.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// The program name, or its path.
    pub name: Option<String>,
    /// A regex searched in the full command line.
    pub pattern: Option<Regex>,
}

impl Matcher {
    /// A matcher by `name` alone.
    pub fn name(name: &str) -> Matcher {
        Matcher { name: Some(name.to_string()), pattern: None }
    }

    /// `process "NAME"`, `command matching /RE/`, or both: for messages.
    fn describe(&self) -> String {
        match (&self.name, &self.pattern) {
            (Some(n), None) => format!("named {n:?}"),
            (None, Some(p)) => format!("with a command line matching /{p}/"),
            (Some(n), Some(p)) => format!("named {n:?} with a command line matching /{p}/"),
            (None, None) => "at all".to_string(),
        }
    }

    /// Whether `p` is a match (see the module rules).
    pub fn matches(&self, p: &ProcInfo) -> bool {
        let name_ok = self.name.as_deref().is_none_or(|n| p.names().any(|m| m == n));
        let pattern_ok = self.pattern.as_ref().is_none_or(|re| !p.is_self && re.is_match(&p.cmdline()));
        name_ok && pattern_ok
    }
}

/// What `/proc/PID` says of one process.
#[derive(Debug, Clone, Default)]
pub struct ProcInfo {
    pub pid: u32,
    /// `/proc/PID/comm`: at most 15 characters.
    pub comm: String,
    /// `/proc/PID/exe`'s target (empty when unreadable: a kernel thread, another user's).
    pub exe: String,
    /// `/proc/PID/cmdline` split at NULs.
    pub argv: Vec<String>,
    pub zombie: bool,
    /// The attendant's own process.
    pub is_self: bool,
}

impl ProcInfo {
    /// Reads `/proc/PID` under `proc_root`; `None` when the process is gone.
    pub fn read(proc_root: &Path, pid: u32) -> Option<ProcInfo> {
        let dir = proc_root.join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?.trim_end_matches('\n').to_string();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // The state follows the `(comm)` field, which may itself hold spaces and parens.
        let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let exe = std::fs::read_link(dir.join("exe"))
            .map(|p| p.display().to_string().trim_end_matches(" (deleted)").to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(ProcInfo { pid, comm, exe, argv, zombie, is_self: pid == std::process::id() })
    }

    /// The names the process goes by: comm, exe and argv[0], each whole and by its last
    /// path component (argv[0] also by its first word: `nginx: master process`).
    fn names(&self) -> impl Iterator<Item = &str> {
        let arg0 = self.argv.first().map_or("", String::as_str);
        let word0 = arg0.split_whitespace().next().unwrap_or("").trim_end_matches(':');
        [self.comm.as_str(), self.exe.as_str(), arg0, word0]
            .into_iter()
            .filter(|s| !s.is_empty())
            .flat_map(|s| [s, s.rsplit('/').next().unwrap_or(s)])
    }

    /// The command line as `ps -o args` shows it (the comm in brackets when there is none).
    pub fn cmdline(&self) -> String {
        if self.argv.is_empty() {
            format!("[{}]", self.comm)
        } else {
            self.argv.join(" ")
        }
    }
}

/// `check = "process"`: `process = "NAME"` and/or `command_pattern = "REGEX"`, or
/// `pidfile = "PATH"`.
pub const KIND: Kind = Kind { name: "process", keys: &["process", "command_pattern", "pidfile"], default_timeout: DEFAULT_TIMEOUT, parse };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    process: Option<String>,
    command_pattern: Option<String>,
    pidfile: Option<PathBuf>,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    if s.pidfile.is_some() && (s.process.is_some() || s.command_pattern.is_some()) {
        let key = if s.process.is_some() { "process" } else { "command_pattern" };
        cx.push(key, "set together with pidfile; choose one");
        return None;
    }
    if let Some(f) = s.pidfile {
        return Some(Arc::new(ProcessMatch::Pidfile(cx.resolve(&f))));
    }
    let mut ok = true;
    let name = match s.process {
        Some(n) if n.trim().is_empty() => {
            cx.push("process", "must not be empty");
            ok = false;
            None
        }
        Some(n) if n.contains(['\0', '\n']) || n.trim() != n => {
            cx.push("process", format!("{n:?} can never match: process names hold no NUL, newline or edge spaces"));
            ok = false;
            None
        }
        Some(n) if n.ends_with('/') => {
            cx.push("process", format!("{n:?} can never match: a program path does not end in /"));
            ok = false;
            None
        }
        n => n,
    };
    let pattern = match s.command_pattern.as_deref() {
        None => None,
        Some(p) => {
            let re = regex(cx, "command_pattern", p, Regex::new);
            ok &= re.is_some();
            re
        }
    };
    if ok && name.is_none() && pattern.is_none() {
        cx.push(
            "process",
            "missing: check = \"process\" needs process = \"NAME\", command_pattern = \"REGEX\" or pidfile = \"PATH\"",
        );
        return None;
    }
    ok.then(|| Arc::new(ProcessMatch::Running(Matcher { name, pattern })) as Arc<dyn ServiceCheck>)
}

impl ServiceCheck for ProcessMatch {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, _timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(self))
    }
}

/// Reads `/proc` directly: cheaper than a full process table refresh and needs no crate.
pub async fn check(m: &ProcessMatch) -> Outcome {
    let m = m.clone();
    match tokio::task::spawn_blocking(move || check_blocking(&m)).await {
        Ok(o) => o,
        Err(e) => Outcome::new(Status::Unknown, format!("process check failed: {e}")),
    }
}

fn check_blocking(m: &ProcessMatch) -> Outcome {
    match m {
        ProcessMatch::Running(matcher) => {
            let pids = find(Path::new("/proc"), matcher);
            let what = matcher.describe();
            match pids.len() {
                0 => Outcome::new(Status::Critical, format!("no process {what}")),
                n => Outcome::new(Status::Ok, format!("{n} process(es) {what}")).with("pids", pids),
            }
        }
        ProcessMatch::Pidfile(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    return Outcome::new(Status::Critical, format!("cannot read pidfile {}: {e}", path.display()))
                }
            };
            let Ok(pid) = text.trim().parse::<u32>() else {
                return Outcome::new(
                    Status::Critical,
                    format!("pidfile {} does not hold a pid: {:?}", path.display(), text.trim()),
                );
            };
            let running = ProcInfo::read(Path::new("/proc"), pid).is_some_and(|p| !p.zombie);
            if running {
                Outcome::new(Status::Ok, format!("pid {pid} is running")).with("pid", pid)
            } else {
                Outcome::new(
                    Status::Critical,
                    format!("pid {pid} from {} is not running (stale pidfile)", path.display()),
                )
                .with("pid", pid)
            }
        }
    }
}

/// The PIDs of live processes under `proc_root` that `m` matches, in order.
pub fn find(proc_root: &Path, m: &Matcher) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| ProcInfo::read(proc_root, pid))
        .filter(|p| !p.zombie && m.matches(p))
        .map(|p| p.pid)
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(comm: &str, exe: &str, argv: &[&str]) -> ProcInfo {
        ProcInfo {
            pid: 42,
            comm: comm.into(),
            exe: exe.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn running(name: &str) -> ProcessMatch {
        ProcessMatch::Running(Matcher::name(name))
    }

    #[test]
    fn names_match_as_operators_write_them() {
        // The kernel cut the name to 15 characters; exe and argv[0] keep it whole.
        let attendant = info(
            "rollcall-attend",
            "/usr/bin/rollcall-attendant",
            &["/usr/bin/rollcall-attendant", "--config", "/etc/rollcall/attendant.toml"],
        );
        for name in ["rollcall-attendant", "rollcall-attend", "/usr/bin/rollcall-attendant"] {
            assert!(Matcher::name(name).matches(&attendant), "{name}");
        }
        for name in ["rollcall", "attendant", "rollcall-attendan"] {
            assert!(!Matcher::name(name).matches(&attendant), "{name}");
        }
        // A daemon that rewrites its title (nginx, Postfix's qmgr), a kernel thread.
        let nginx = info("nginx", "/usr/sbin/nginx", &["nginx: master process /usr/sbin/nginx -g daemon on;"]);
        assert!(Matcher::name("nginx").matches(&nginx));
        let kthread = info("kworker/0:1", "", &[]);
        assert!(Matcher::name("kworker/0:1").matches(&kthread));
        assert_eq!(kthread.cmdline(), "[kworker/0:1]");
    }

    #[test]
    fn a_command_pattern_searches_the_whole_command_line() {
        let java = info("java", "/usr/lib/jvm/bin/java", &["/usr/bin/java", "-jar", "/opt/app/jenkins.war"]);
        let m = Matcher { name: None, pattern: Some(Regex::new(r"jenkins\.war").unwrap()) };
        assert!(m.matches(&java));
        let m = Matcher { name: Some("java".into()), pattern: Some(Regex::new("-jar .*jenkins").unwrap()) };
        assert!(m.matches(&java));
        let m = Matcher { name: Some("python3".into()), pattern: Some(Regex::new("jenkins").unwrap()) };
        assert!(!m.matches(&java));
        let mut me = java.clone();
        me.is_self = true;
        let m = Matcher { name: None, pattern: Some(Regex::new("jenkins").unwrap()) };
        assert!(!m.matches(&me), "the attendant never counts for a pattern");
    }

    #[tokio::test]
    async fn finds_a_running_process_by_name() {
        let own = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
        let o = check(&running(&own)).await;
        assert_eq!(o.status, Status::Ok, "{}", o.message);
        let pids = o.details["pids"].as_array().unwrap();
        assert!(pids.iter().any(|p| p.as_u64() == Some(u64::from(std::process::id()))));
    }

    #[tokio::test]
    async fn missing_process_is_critical() {
        let o = check(&running("no-such-daemon-xyz")).await;
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.message, "no process named \"no-such-daemon-xyz\"");
    }

    #[tokio::test]
    async fn pidfile_live_stale_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.pid");
        std::fs::write(&p, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(check(&ProcessMatch::Pidfile(p.clone())).await.status, Status::Ok);
        std::fs::write(&p, "4194304999").unwrap();
        let o = check(&ProcessMatch::Pidfile(p.clone())).await;
        assert_eq!(o.status, Status::Critical);
        std::fs::write(&p, "not a pid").unwrap();
        let o = check(&ProcessMatch::Pidfile(p.clone())).await;
        assert!(o.message.contains("does not hold a pid"), "{}", o.message);
        let o = check(&ProcessMatch::Pidfile(dir.path().join("absent.pid"))).await;
        assert!(o.message.contains("cannot read pidfile"), "{}", o.message);
    }
}
