//! `check = "command"`: any Nagios / Monitoring-Plugins compatible plugin, run as NRPE and
//! Icinga 2 run them (see `crate::subprocess` for how the process is run and read).
//!
//! Rules (Nagios plugin API, "Plugin Return Codes" and "Plugin Output"):
//! - exit code 0/1/2/3 is ok/warning/critical/unknown; any other code, and death by a
//!   signal, is unknown with the cause in the message; 126 is "not executable" and 127
//!   "not found" (a shell's or `env`'s words for a missing plugin), with the `PATH` used;
//! - the first line of stdout is the message, later lines are the long output
//!   (`details.long_output`); performance data after `|` goes to `details.perfdata`
//!   (parsed by `checks::perfdata`, the one parser);
//! - a plugin that writes only to stderr has its first stderr line as the message, and
//!   stderr is kept in `details.stderr` whenever it is not empty;
//! - output beyond [`MAX_OUTPUT`] is read and dropped, and `details.output_truncated` says so;
//! - plugins run with `LC_ALL=C` (numbers with a decimal point, English messages), unless
//!   the service's `environment` sets a locale variable itself (`LANG`, `LC_*`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;
use serde_json::json;

use crate::checks::{DEFAULT_TIMEOUT, Kind, Outcome, ServiceCheck, parse_perfdata};
use crate::config::fields::{usable_argv, TableCx};
use crate::subprocess::{self, RunError, Spec};

/// Plugins' stdout beyond this is dropped (Nagios 4 keeps 8 KiB of a plugin's output, NRPE
/// 64 KiB; a plugin's long output is for a human to read).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Stderr kept: enough for a stack trace's head.
const MAX_STDERR: usize = 4 * 1024;

/// `check = "command"`: `command = ["/path/to/plugin", "ARG", ...]`, optionally
/// `environment = { NAME = "VALUE", ... }`.
pub const KIND: Kind = Kind { name: "command", keys: &["command", "environment"], default_timeout: DEFAULT_TIMEOUT, parse };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    command: Option<Vec<String>>,
    environment: Option<BTreeMap<String, String>>,
}

#[derive(Debug)]
struct Command {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    let env = s.environment.unwrap_or_default();
    let mut env_ok = true;
    for (k, v) in &env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            cx.push("environment", format!("{k:?} = {v:?} cannot be set (a name needs no \"=\", neither may hold NUL)"));
            env_ok = false;
        }
    }
    match s.command {
        Some(argv) if usable_argv(&argv) => {
            env_ok.then(|| Arc::new(Command { argv, env: plugin_env(env) }) as Arc<dyn ServiceCheck>)
        }
        _ => {
            cx.push(
                "command",
                "missing or empty: check = \"command\" needs command = [\"/path/to/plugin\", \"ARG\", ...]",
            );
            None
        }
    }
}

/// The variables a plugin gets on top of the attendant's: `LC_ALL=C` unless `own` sets a
/// locale, then `own`.
fn plugin_env(own: BTreeMap<String, String>) -> Vec<(String, String)> {
    let sets_locale = own.keys().any(|k| k == "LANG" || k == "LANGUAGE" || k.starts_with("LC_"));
    let mut env = Vec::new();
    if !sets_locale {
        env.push(("LC_ALL".to_string(), "C".to_string()));
    }
    env.extend(own);
    env
}

impl ServiceCheck for Command {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check_with(&self.argv, &self.env, timeout))
    }
}

async fn check_with(argv: &[String], env: &[(String, String)], timeout: Duration) -> Outcome {
    let program = argv.first().map_or("", String::as_str);
    // A margin under the caller's timeout, so the plugin is killed and named by us.
    let spec = Spec { argv, env, max_stdout: MAX_OUTPUT, max_stderr: MAX_STDERR, timeout: timeout.mul_f32(0.95) };
    let f = match subprocess::run(&spec).await {
        Ok(f) => f,
        Err(e @ RunError::TimedOut { .. }) => {
            return Outcome::new(Status::Unknown, format!("{program} timed out after {timeout:?} and was killed"))
                .with("cause", e.to_string())
        }
        Err(e) => return Outcome::new(Status::Unknown, e.to_string()),
    };
    let stdout = f.stdout.text();
    let stderr = f.stderr.text();
    let code = f.status.code();
    let mut o = parse_output(&stdout, code.unwrap_or(3));
    if stdout.trim().is_empty() && !stderr.trim().is_empty() {
        o.message = f.stderr.first_line();
    }
    match code {
        Some(0..=3) => {}
        Some(126) => o.message = format!("not executable (exit 126): {}", o.message),
        Some(127) => {
            let path = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
            let path = path.or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
            o.message = format!("not found (exit 127; PATH={path}): {}", o.message);
        }
        Some(c) => o.message = format!("{} (exit code {c}: plugins exit 0 to 3)", o.message),
        None => {
            let signal = subprocess::signal_name(&f.status).unwrap_or_else(|| "a signal".into());
            o.message = format!("{program} was killed by {signal}: {}", o.message);
        }
    }
    if !stderr.trim().is_empty() {
        o = o.with("stderr", stderr.trim_end());
    }
    if f.stdout.truncated {
        o = o.with("output_truncated", true);
    }
    o.with("exit_code", code.unwrap_or(3))
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

    /// Runs the plugin `argv` as a service without `environment` would.
    async fn check(argv: &[String], timeout: Duration) -> Outcome {
        check_with(argv, &plugin_env(BTreeMap::new()), timeout).await
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_map_to_statuses() {
        for (code, status) in [(0, Status::Ok), (1, Status::Warning), (2, Status::Critical), (3, Status::Unknown)] {
            let o = check(&sh(&format!("echo 'SMTP said hi'; exit {code}")), Duration::from_secs(5)).await;
            assert_eq!(o.status, status, "exit {code}");
            assert_eq!(o.message, "SMTP said hi");
            assert_eq!(o.details["exit_code"], code);
        }
    }

    #[tokio::test]
    async fn exit_codes_outside_the_plugin_api_and_signals_are_unknown_with_the_cause() {
        let o = check(&sh("echo 'SMTP said hi'; exit 7"), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(o.message, "SMTP said hi (exit code 7: plugins exit 0 to 3)");
        let o = check(&sh("echo 'about to crash'; kill -SEGV $$"), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(o.message, "/bin/sh was killed by signal 11 (SIGSEGV): about to crash");
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
    async fn output_beyond_the_bound_is_drained_and_marked_truncated() {
        // 140 KB, more than two pipe buffers: the plugin must not block on a full pipe.
        let script = "echo 'BIG OK - many lines'; i=0; while [ $i -lt 2000 ]; do \
                      echo \"line $i ........................................................................\"; \
                      i=$((i+1)); done; exit 0";
        let o = check(&sh(script), Duration::from_secs(10)).await;
        assert_eq!((o.status, o.message.as_str()), (Status::Ok, "BIG OK - many lines"), "{o:?}");
        assert_eq!(o.details["output_truncated"], true);
        assert!(o.details["long_output"].as_str().unwrap().starts_with("line 0 ..."));
    }

    #[tokio::test]
    async fn a_plugin_that_leaves_a_background_child_is_done_when_it_exits() {
        let t = std::time::Instant::now();
        let o = check(&sh("echo 'OK - forked a helper'; sleep 30 & exit 0"), Duration::from_secs(5)).await;
        assert_eq!((o.status, o.message.as_str()), (Status::Ok, "OK - forked a helper"));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
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
    async fn missing_and_unexecutable_plugins_are_named() {
        let o = check(&["/nonexistent/check_x".to_string()], Duration::from_secs(1)).await;
        assert_eq!((o.status, o.message.as_str()), (Status::Unknown, "not found: /nonexistent/check_x"));
        // Through a shell (as `command = ["/bin/sh", "-c", ...]` writes it): exit 127 and 126.
        let o = check(&sh("check_nothing_like_this -H 127.0.0.1"), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.message.starts_with("not found (exit 127; PATH="), "{}", o.message);
        assert!(o.message.contains("check_nothing_like_this: not found"), "{}", o.message);
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("check_plain");
        std::fs::write(&plugin, "#!/bin/sh\necho hi\n").unwrap();
        let o = check(&sh(&plugin.display().to_string()), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.message.starts_with("not executable (exit 126): "), "{}", o.message);
        assert!(o.message.contains("Permission denied"), "{}", o.message);
    }

    #[tokio::test]
    async fn stderr_is_the_message_when_stdout_is_empty() {
        let o = check(&sh("echo 'check_foo: cannot resolve mx.example' >&2; exit 3"), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(o.message, "check_foo: cannot resolve mx.example");
        assert_eq!(o.details["stderr"], "check_foo: cannot resolve mx.example");
        // With stdout present, stdout speaks and stderr is kept beside it.
        let o = check(&sh("echo 'OK - fine'; echo 'deprecated option' >&2"), Duration::from_secs(5)).await;
        assert_eq!((o.message.as_str(), o.details["stderr"].as_str()), ("OK - fine", Some("deprecated option")));
    }

    #[tokio::test]
    async fn silent_plugin_gets_a_message() {
        let o = check(&sh("exit 2"), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.message, "(no output, exit code 2)");
    }

    #[tokio::test]
    async fn plugins_run_in_the_c_locale_unless_the_service_sets_one() {
        let argv = sh("echo \"locale LC_ALL=$LC_ALL LANG=$LANG\"");
        let o = check(&argv, Duration::from_secs(5)).await;
        assert!(o.message.starts_with("locale LC_ALL=C "), "{}", o.message);
        let own = BTreeMap::from([("LANG".to_string(), "de_DE.UTF-8".to_string())]);
        let o = check_with(&argv, &plugin_env(own), Duration::from_secs(5)).await;
        // LC_ALL is then what the attendant itself was given (often nothing), not "C".
        let inherited = std::env::var("LC_ALL").unwrap_or_default();
        assert_eq!(o.message, format!("locale LC_ALL={inherited} LANG=de_DE.UTF-8"));
    }
}
