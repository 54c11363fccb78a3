//! Background probes of the synthetic user (SPEC sections 2 and 14): the mailbox probes
//! (`login`, `mail_read`, `refresh`), the mail loop (`mail_loop`) and the file-access
//! probe (`file_access`), each posting its latest result to the probe board.
//!
//! Rules: probes run on their own schedules and never inside a query; they see of the
//! attendant only a [`ProbeContext`] (name, clock, board, a watch on the running config)
//! and post through [`ProbeContext::post`] (one log line, one board entry); the supervisor
//! (`follow`) is woken by each config reload and restarts the probes only when their
//! `[probe]` table changed, forgetting the results of probes that were removed. The wire
//! clients they use live in `mail`.

pub mod file_access;
pub mod loop_watch;
pub mod mail_loop;
pub mod mailbox;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rollcall_protocol::{ProbeResult, Status};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{AttendantConfig, ProbesConfig};
use crate::follow::follow;
use crate::probe_board::ProbeBoard;
use loop_watch::LoopWatch;

/// What a probe may use of the attendant.
#[derive(Clone)]
pub struct ProbeContext {
    /// The attendant's name (logs, the mail loop's tag prefix); a reload may change it.
    pub name: String,
    /// The attendant's clock: results are stamped with its `now()`.
    pub clock: Arc<Clock>,
    /// Where results go.
    pub board: ProbeBoard,
    /// The running config; changes when a reload is accepted.
    pub config: watch::Receiver<Arc<AttendantConfig>>,
}

/// One result of a probe, as every probe posts it.
pub struct Post<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub status: Status,
    pub message: String,
    pub observed_at: DateTime<Utc>,
    /// When the round started; `duration_ms` is measured from it.
    pub started: Instant,
    pub details: Map<String, Value>,
}

impl ProbeContext {
    /// Logs a result (one line with the server's name: debug when ok, warn otherwise) and
    /// puts it on the board.
    pub fn post(&self, p: Post<'_>) {
        let duration_ms = p.started.elapsed().as_secs_f64() * 1000.0;
        let (name, message, status) = (p.name, &p.message, p.status);
        match status {
            Status::Ok => tracing::debug!(server = %self.name, probe = name, duration_ms, "{message}"),
            _ => tracing::warn!(server = %self.name, probe = name, %status, duration_ms, "{message}"),
        }
        self.board.report(ProbeResult {
            name: p.name.to_string(),
            kind: p.kind.to_string(),
            status,
            message: p.message,
            observed_at: p.observed_at,
            duration_ms,
            details: p.details,
        });
    }
}

/// Starts the probes the running config lists and keeps them in line with reloads, until
/// `stop` is cancelled.
pub fn spawn(cx: ProbeContext, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(cx, stop))
}

async fn supervise(cx: ProbeContext, stop: CancellationToken) {
    let config = cx.config.clone();
    follow(
        config,
        stop,
        |c| c.probes.clone(),
        |old, new, config, generation, tasks| {
            if *old != ProbesConfig::default() {
                tracing::info!(server = %config.name, "probe config changed; restarting probes");
            }
            forget_removed(&cx.board, old, new);
            let cx = ProbeContext { name: config.name.clone(), ..cx.clone() };
            start(&cx, new, generation, tasks);
        },
    )
    .await
}

fn start(cx: &ProbeContext, probes: &ProbesConfig, stop: &CancellationToken, tasks: &mut JoinSet<()>) {
    let watch = LoopWatch::new(&cx.name);
    if let Some(m) = &probes.mailbox {
        tracing::info!(server = %cx.name, imap = %m.endpoint.address, interval_a = %m.interval_a, interval_b = %m.interval_b, "mailbox probes started");
        tasks.spawn(mailbox::run(cx.clone(), m.clone(), watch.clone(), stop.clone()));
    }
    if let Some(l) = &probes.mail_loop {
        tracing::info!(server = %cx.name, smtp = %l.endpoint.address, interval = %l.interval, "mail loop probe started");
        tasks.spawn(mail_loop::run(cx.clone(), l.clone(), watch, stop.clone()));
    }
    if let Some(f) = &probes.file_access {
        tracing::info!(server = %cx.name, path = %f.path.display(), interval = %f.interval, timeout = %f.timeout, "file access probe started");
        tasks.spawn(file_access::run(cx.clone(), f.clone(), stop.clone()));
    }
}

fn forget_removed(board: &ProbeBoard, old: &ProbesConfig, new: &ProbesConfig) {
    if old.mailbox.is_some() && new.mailbox.is_none() {
        for n in [mailbox::LOGIN, mailbox::MAIL_READ, mailbox::REFRESH] {
            board.remove(n);
        }
    }
    if old.mail_loop.is_some() && new.mail_loop.is_none() {
        board.remove(mail_loop::MAIL_LOOP);
    }
    if old.file_access.is_some() && new.file_access.is_none() {
        board.remove(file_access::FILE_ACCESS);
    }
}
