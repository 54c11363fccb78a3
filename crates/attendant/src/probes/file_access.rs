//! The file-access probe (SPEC section 14, the seed's "shared file access"): every round
//! writes a uniquely named file in a directory on a share, reads it back, compares and
//! deletes it, and reports probe `file_access` with the latency of each step.
//!
//! Rules it keeps:
//! - File I/O blocks in the kernel, and on a dead NFS server or a hung FUSE daemon it
//!   blocks for good; no timeout can cancel it. So each round runs on a dedicated thread
//!   of its own (never tokio's blocking pool, whose threads a stopping runtime waits for),
//!   and the probe waits for its answer at most `timeout`: a round without an answer is
//!   `critical` ("no answer from the share within 5s"), naming the step it hangs in.
//! - Stuck rounds are not stacked up: while a round's thread has not come back, no new
//!   round starts; each tick reports "previous round still stuck since ..." instead. So
//!   a hung share costs one thread, however long it hangs.
//! - A round slower than `max_latency` is a `warning`; a failed step is `critical` with
//!   the operating system's words; a file left behind by a failed step is removed when it
//!   can be.
//! - The file's name carries the attendant's name, the process and a round number, so
//!   attendants sharing one share never touch each other's files.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use rollcall_protocol::Status;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Post, ProbeContext};
use crate::config::FileAccessProbe;

/// The probe's name (and kind) in the compilation.
pub const FILE_ACCESS: &str = "file_access";

/// Size of the probe's file: one page, enough to cross the share's write path.
const FILE_BYTES: usize = 4096;

/// The steps of a round, in order; a stuck round names the one it hangs in.
const STEPS: [&str; 4] = ["write", "read", "compare", "delete"];

/// Runs the probe until `stop`.
pub async fn run(cx: ProbeContext, cfg: FileAccessProbe, stop: CancellationToken) {
    let mut probe = Probe { cx, cfg, rounds: 0, stuck: None };
    let mut tick = tokio::time::interval(probe.cfg.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => probe.round().await,
        }
    }
}

struct Probe {
    cx: ProbeContext,
    cfg: FileAccessProbe,
    rounds: u64,
    /// The round whose thread has not come back yet.
    stuck: Option<Stuck>,
}

/// A round that did not answer within the timeout; its thread may still come back.
struct Stuck {
    since: DateTime<Utc>,
    started: Instant,
    file: PathBuf,
    step: Arc<AtomicUsize>,
    answer: oneshot::Receiver<Outcome>,
}

/// What a round's thread found.
#[derive(Debug, Default)]
struct Outcome {
    /// Milliseconds of each step done, in order.
    steps: Vec<(&'static str, f64)>,
    /// The step that failed and why.
    failed: Option<(&'static str, String)>,
}

impl Probe {
    async fn round(&mut self) {
        let observed_at = self.cx.clock.now();
        let started = Instant::now();
        if let Some(stuck) = self.stuck.as_mut() {
            match stuck.answer.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    let message = format!(
                        "previous round still stuck since {} ({:.0} s) in {} of {}; no new round started",
                        stuck.since.to_rfc3339_opts(SecondsFormat::Secs, true),
                        stuck.started.elapsed().as_secs_f64(),
                        STEPS[stuck.step.load(Ordering::Relaxed).min(STEPS.len() - 1)],
                        stuck.file.display()
                    );
                    let (since, file) = (stuck.since.to_rfc3339(), stuck.file.display().to_string());
                    let mut d = self.base_details();
                    d.insert("stuck_since".into(), json!(since));
                    d.insert("file".into(), json!(file));
                    self.report(Status::Critical, message, observed_at, started, d);
                    return;
                }
                Ok(late) => tracing::info!(
                    server = %self.cx.name,
                    probe = FILE_ACCESS,
                    after_s = stuck.started.elapsed().as_secs_f64(),
                    failed = ?late.failed,
                    "the stuck round came back; starting new rounds again"
                ),
                Err(oneshot::error::TryRecvError::Closed) => {}
            }
            self.stuck = None;
        }
        self.rounds += 1;
        let file = self.cfg.path.join(file_name(&self.cx.name, self.rounds));
        let step = Arc::new(AtomicUsize::new(0));
        let (tx, mut answer) = oneshot::channel();
        let spawned = {
            let (file, step) = (file.clone(), step.clone());
            let content = content(&self.cx.name, self.rounds);
            std::thread::Builder::new().name("rollcall-share".into()).spawn(move || {
                let _ = tx.send(exercise(&file, &content, &step));
            })
        };
        if let Err(e) = spawned {
            let d = self.base_details();
            self.report(Status::Unknown, format!("cannot start the round's thread: {e}"), observed_at, started, d);
            return;
        }
        let timeout = self.cfg.timeout.get();
        match tokio::time::timeout(timeout, &mut answer).await {
            Ok(Ok(outcome)) => self.report_outcome(&file, outcome, observed_at, started),
            Ok(Err(_)) => {
                let d = self.base_details();
                self.report(
                    Status::Unknown,
                    "the round's thread ended without an answer".into(),
                    observed_at,
                    started,
                    d,
                );
            }
            Err(_) => {
                let at = STEPS[step.load(Ordering::Relaxed).min(STEPS.len() - 1)];
                let message = format!(
                    "no answer from the share within {} (stuck in {at} of {})",
                    self.cfg.timeout,
                    file.display()
                );
                let mut d = self.base_details();
                d.insert("file".into(), json!(file.display().to_string()));
                d.insert("stuck_in".into(), json!(at));
                self.report(Status::Critical, message, observed_at, started, d);
                self.stuck = Some(Stuck { since: observed_at, started, file, step, answer });
            }
        }
    }

    fn report_outcome(&self, file: &Path, outcome: Outcome, observed_at: DateTime<Utc>, started: Instant) {
        let mut d = self.base_details();
        d.insert("file".into(), json!(file.display().to_string()));
        d.insert("bytes".into(), json!(FILE_BYTES));
        for (name, ms) in &outcome.steps {
            d.insert(format!("{name}_ms"), json!(round_ms(*ms)));
        }
        let total: f64 = outcome.steps.iter().map(|(_, ms)| ms).sum();
        let steps = outcome.steps.iter().map(|(n, ms)| format!("{n} {:.1}", ms)).collect::<Vec<_>>().join(", ");
        let (status, message) = match outcome.failed {
            Some((step, why)) => {
                d.insert("failed_step".into(), json!(step));
                (Status::Critical, format!("cannot {step} {}: {why}", file.display()))
            }
            None if total > self.cfg.max_latency.get().as_secs_f64() * 1000.0 => (
                Status::Warning,
                format!(
                    "slow share: a round took {total:.1} ms ({steps} ms), more than max_latency {}",
                    self.cfg.max_latency
                ),
            ),
            None => {
                (Status::Ok, format!("wrote, read back and deleted {FILE_BYTES} bytes in {total:.1} ms ({steps} ms)"))
            }
        };
        self.report(status, message, observed_at, started, d);
    }

    fn base_details(&self) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("path".into(), json!(self.cfg.path.display().to_string()));
        d.insert("timeout_ms".into(), json!(self.cfg.timeout.get().as_millis() as u64));
        d.insert("max_latency_ms".into(), json!(self.cfg.max_latency.get().as_millis() as u64));
        d
    }

    fn report(
        &self,
        status: Status,
        message: String,
        observed_at: DateTime<Utc>,
        started: Instant,
        details: Map<String, Value>,
    ) {
        self.cx.post(Post { name: FILE_ACCESS, kind: FILE_ACCESS, status, message, observed_at, started, details });
    }
}

/// Milliseconds to a tenth of a microsecond, for the details.
fn round_ms(ms: f64) -> f64 {
    (ms * 10_000.0).round() / 10_000.0
}

/// `.rollcall-file-access.NAME.PID.ROUND`: hidden, and unique per attendant, process and round.
fn file_name(attendant: &str, round: u64) -> String {
    let name: String =
        attendant.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!(".rollcall-file-access.{name}.{}.{round}", std::process::id())
}

/// The round's file content: a header naming it, then bytes that differ per round, so a
/// stale copy (a cache serving an older file) does not compare equal.
fn content(attendant: &str, round: u64) -> Vec<u8> {
    let mut out = format!("rollcall file-access probe of {attendant}, round {round}\n").into_bytes();
    let mut x = (round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id())) | 1;
    while out.len() < FILE_BYTES {
        // xorshift64: cheap bytes that change with every round.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.truncate(FILE_BYTES);
    out
}

/// One round, on its own thread: write (and fsync, so the data reaches the server), read
/// back, compare, delete. `step` says where it is, for a round that never comes back.
fn exercise(file: &Path, content: &[u8], step: &AtomicUsize) -> Outcome {
    let mut out = Outcome::default();
    let mut timed = |i: usize, f: &mut dyn FnMut() -> Result<(), String>| {
        step.store(i, Ordering::Relaxed);
        let t = Instant::now();
        let r = f();
        out.steps.push((STEPS[i], t.elapsed().as_secs_f64() * 1000.0));
        r.map_err(|why| (STEPS[i], why))
    };
    let result = (|| {
        timed(0, &mut || {
            let mut f = fs::File::create_new(file).map_err(|e| e.to_string())?;
            f.write_all(content).and_then(|()| f.sync_all()).map_err(|e| e.to_string())
        })?;
        let mut back = Vec::with_capacity(content.len());
        timed(1, &mut || {
            let f = fs::File::open(file).map_err(|e| e.to_string())?;
            // One byte more than written: a longer file is a mismatch, never a big read.
            f.take(content.len() as u64 + 1).read_to_end(&mut back).map(|_| ()).map_err(|e| e.to_string())
        })?;
        timed(2, &mut || compare(content, &back))?;
        timed(3, &mut || fs::remove_file(file).map_err(|e| e.to_string()))
    })();
    if let Err((failed, why)) = result {
        if failed != "write" || file.exists() {
            let _ = fs::remove_file(file);
        }
        out.failed = Some((failed, why));
    }
    out
}

/// Whether the bytes read back are those written; the first difference otherwise.
fn compare(written: &[u8], read: &[u8]) -> Result<(), String> {
    if written == read {
        return Ok(());
    }
    let at = written.iter().zip(read).position(|(a, b)| a != b).unwrap_or(written.len().min(read.len()));
    Err(format!(
        "read back {} bytes that differ from the {} written (first difference at byte {at})",
        read.len(),
        written.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_contents_differ_per_round() {
        assert!(
            file_name("mail/01 ü", 7).starts_with(".rollcall-file-access.mail_01__."),
            "{}",
            file_name("mail/01 ü", 7)
        );
        assert!(file_name("a", 7).ends_with(".7"));
        let (a, b) = (content("a", 1), content("a", 2));
        assert_eq!(a.len(), FILE_BYTES);
        assert_ne!(a, b);
        assert!(compare(&a, &a).is_ok());
        let e = compare(&a, &b).expect_err("differ");
        assert!(e.contains("first difference at byte"), "{e}");
        assert!(compare(&a, &a[..100]).expect_err("short").contains("read back 100 bytes"));
    }

    #[test]
    fn a_round_in_a_local_directory_times_each_step_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(file_name("t", 1));
        let o = exercise(&file, &content("t", 1), &AtomicUsize::new(0));
        assert!(o.failed.is_none(), "{o:?}");
        assert_eq!(o.steps.iter().map(|(n, _)| *n).collect::<Vec<_>>(), STEPS);
        assert!(!file.exists());
        let missing = dir.path().join("no-such-dir").join("f");
        let o = exercise(&missing, &content("t", 1), &AtomicUsize::new(0));
        let (step, why) = o.failed.expect("fails");
        assert_eq!(step, "write");
        assert!(why.contains("No such file or directory"), "{why}");
    }
}
