//! `check = "process"`: is a process running, found by name or by pidfile (Linux `/proc`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;

use crate::checks::{Kind, Outcome, ServiceCheck};
use crate::config::fields::TableCx;

/// How the config identifies the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessMatch {
    /// The process name as in `/proc/PID/comm` (e.g. `master` for Postfix).
    Name(String),
    /// A pidfile the daemon writes.
    Pidfile(PathBuf),
}

/// `check = "process"`: `process = "NAME"` or `pidfile = "PATH"`.
pub const KIND: Kind = Kind { name: "process", keys: &["process", "pidfile"], parse };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    process: Option<String>,
    pidfile: Option<PathBuf>,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    let m = match (s.process, s.pidfile) {
        (Some(n), None) if !n.is_empty() => ProcessMatch::Name(n),
        (None, Some(f)) => ProcessMatch::Pidfile(cx.resolve(&f)),
        (Some(_), Some(_)) => {
            cx.push("process", "set together with pidfile; choose one");
            return None;
        }
        _ => {
            cx.push("process", "missing: check = \"process\" needs process = \"NAME\" or pidfile = \"PATH\"");
            return None;
        }
    };
    Some(Arc::new(m))
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
        ProcessMatch::Name(name) => {
            let pids = pids_named(name);
            match pids.len() {
                0 => Outcome::new(Status::Critical, format!("no process named {name:?}")),
                n => Outcome::new(Status::Ok, format!("{n} process(es) named {name:?}")).with("pids", pids),
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
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
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

fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim_end() == name).unwrap_or(false)
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_name() -> String {
        std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string()
    }

    #[tokio::test]
    async fn finds_a_running_process_by_name() {
        let o = check(&ProcessMatch::Name(own_name())).await;
        assert_eq!(o.status, Status::Ok, "{}", o.message);
        let pids = o.details["pids"].as_array().unwrap();
        assert!(pids.iter().any(|p| p.as_u64() == Some(u64::from(std::process::id()))));
    }

    #[tokio::test]
    async fn missing_process_is_critical() {
        let o = check(&ProcessMatch::Name("no-such-daemon-xyz".into())).await;
        assert_eq!(o.status, Status::Critical);
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
