//! `check = "command"`: any Nagios / Monitoring-Plugins compatible plugin.
//!
//! Exit code 0/1/2/3 is ok/warning/critical/unknown; the first line is the message;
//! performance data after `|` goes into `details.perfdata`. The plugin runs in its own
//! process group, which is killed whole when the timeout strikes.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::checks::{parse_perfdata, Kind, Outcome, ServiceCheck};
use crate::config::fields::{usable_argv, TableCx};

/// Plugins' output beyond this is cut: Nagios itself keeps only a few kB.
const MAX_OUTPUT: u64 = 64 * 1024;

/// `check = "command"`: `command = ["/path/to/plugin", "ARG", ...]`.
pub const KIND: Kind = Kind { name: "command", keys: &["command"], parse };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    command: Option<Vec<String>>,
}

#[derive(Debug)]
struct Command {
    argv: Vec<String>,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    match s.command {
        Some(argv) if usable_argv(&argv) => Some(Arc::new(Command { argv })),
        _ => {
            cx.push(
                "command",
                "missing or empty: check = \"command\" needs command = [\"/path/to/plugin\", \"ARG\", ...]",
            );
            None
        }
    }
}

impl ServiceCheck for Command {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(&self.argv, timeout))
    }
}

pub async fn check(argv: &[String], timeout: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::new(Status::Unknown, "empty command");
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::new(Status::Unknown, format!("cannot run {program}: {e}")),
    };
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let run = async {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(MAX_OUTPUT).read_to_end(&mut out).await;
        }
        let status = child.wait().await;
        (out, status)
    };
    // A margin under the caller's timeout, so the plugin is killed and named by us.
    match tokio::time::timeout(timeout.mul_f32(0.95), run).await {
        Ok((out, Ok(status))) => {
            let code = status.code().unwrap_or(3);
            let mut o = parse_output(&String::from_utf8_lossy(&out), code);
            if status.code().is_none() {
                o.message = format!("{program} was killed by a signal: {}", o.message);
            }
            o.with("exit_code", code)
        }
        Ok((_, Err(e))) => Outcome::new(Status::Unknown, format!("waiting for {program}: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the plugin's own process group; no memory is touched.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            Outcome::new(Status::Unknown, format!("{program} timed out after {timeout:?} and was killed"))
        }
    }
}

/// Splits plugin output into message, long output and perfdata (Nagios plugin API).
fn parse_output(out: &str, code: i32) -> Outcome {
    let mut lines = out.lines();
    let first = lines.next().unwrap_or("");
    let (message, mut perf) = match first.split_once('|') {
        Some((m, p)) => (m.trim().to_string(), p.trim().to_string()),
        None => (first.trim().to_string(), String::new()),
    };
    let mut long = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(' ');
            perf.push_str(line.trim());
        } else if let Some((text, p)) = line.split_once('|') {
            long.push(text.trim_end().to_string());
            perf.push(' ');
            perf.push_str(p.trim());
            in_perf = true;
        } else {
            long.push(line.to_string());
        }
    }
    let message = if message.is_empty() { format!("(no output, exit code {code})") } else { message };
    let mut o = Outcome::new(Status::from_exit_code(code), message);
    let perf = parse_perfdata(&perf);
    if !perf.is_empty() {
        o = o.with("perfdata", perf);
    }
    let long = long.join("\n");
    if !long.trim().is_empty() {
        o = o.with("long_output", json!(long));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_map_to_statuses() {
        for (code, status) in
            [(0, Status::Ok), (1, Status::Warning), (2, Status::Critical), (3, Status::Unknown), (7, Status::Unknown)]
        {
            let o = check(&sh(&format!("echo 'SMTP said hi'; exit {code}")), Duration::from_secs(5)).await;
            assert_eq!(o.status, status, "exit {code}");
            assert_eq!(o.message, "SMTP said hi");
            assert_eq!(o.details["exit_code"], code);
        }
    }

    #[tokio::test]
    async fn perfdata_and_long_output_are_kept() {
        let o = check(
            &sh("printf 'DISK OK | /=10MB;80;90\\nline two\\nline three | /var=5MB\\nextra=1\\n'"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(o.message, "DISK OK");
        let perf = o.details["perfdata"].as_array().unwrap();
        let labels: Vec<&str> = perf.iter().map(|p| p["label"].as_str().unwrap()).collect();
        assert_eq!(labels, ["/", "/var", "extra"]);
        assert_eq!(o.details["long_output"], "line two\nline three");
    }

    #[tokio::test]
    async fn hung_plugin_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-survived");
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let t = std::time::Instant::now();
        let o = check(&sh(&script), Duration::from_millis(400)).await;
        assert!(t.elapsed() < Duration::from_millis(400), "{:?}", t.elapsed());
        assert_eq!(o.status, Status::Unknown);
        assert!(o.message.contains("timed out"), "{}", o.message);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the plugin's child outlived the timeout");
    }

    #[tokio::test]
    async fn missing_program_is_unknown_with_its_name() {
        let o = check(&["/nonexistent/check_x".to_string()], Duration::from_secs(1)).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.message.contains("/nonexistent/check_x"), "{}", o.message);
    }

    #[tokio::test]
    async fn silent_plugin_gets_a_message() {
        let o = check(&sh("exit 2"), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.message, "(no output, exit code 2)");
    }
}
