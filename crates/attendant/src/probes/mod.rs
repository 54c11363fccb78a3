//! Background probes of the synthetic user (SPEC sections 2 and 14): the mailbox probes
//! (`login`, `mail_read`, `refresh`), the mail loop (`mail_loop`) and the file-access
//! probe (`file_access`), each posting its latest result to the probe board.
//!
//! Rules: probes run on their own schedules and never inside a query; they see of the
//! attendant only a [`ProbeContext`] (name, clock, board, a watch on the running config);
//! the supervisor is woken by each config reload and restarts the probes only when their
//! `[probe]` table changed, forgetting the results of probes that were removed. The wire
//! clients they use live in `mail`.

pub mod file_access;
pub mod loop_watch;
pub mod mail_loop;
pub mod mailbox;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{AttendantConfig, ProbesConfig};
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

/// Starts the probes the running config lists and keeps them in line with reloads, until
/// `stop` is cancelled.
pub fn spawn(cx: ProbeContext, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(cx, stop))
}

async fn supervise(mut cx: ProbeContext, stop: CancellationToken) {
    let mut running = ProbesConfig::default();
    let mut tasks = JoinSet::new();
    let mut generation = CancellationToken::new();
    loop {
        let config = cx.config.borrow_and_update().clone();
        if config.probes != running {
            generation.cancel();
            while tasks.join_next().await.is_some() {}
            if running != ProbesConfig::default() {
                tracing::info!(server = %config.name, "probe config changed; restarting probes");
            }
            forget_removed(&cx.board, &running, &config.probes);
            running = config.probes.clone();
            generation = stop.child_token();
            cx.name = config.name.clone();
            start(&cx, &running, &generation, &mut tasks);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = cx.config.changed() => if changed.is_err() {
                // The attendant is gone: no more reloads; run as configured until stop.
                stop.cancelled().await;
                break;
            },
        }
    }
    generation.cancel();
    while tasks.join_next().await.is_some() {}
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
