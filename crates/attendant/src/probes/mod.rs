//! Background probes of the synthetic user (SPEC section 2): the mailbox probes (`login`,
//! `mail_read`, `refresh`) and the mail loop (`mail_loop`), each posting its latest result
//! to the attendant's probe board.
//!
//! Rules: probes run on their own schedules and never inside a query; the supervisor
//! follows the running config (SIGHUP reload) and restarts the probes only when their
//! `[probe]` table changed, forgetting the results of probes that were removed. The wire
//! clients they use live in `mail`.

pub mod loop_watch;
pub mod mail_loop;
pub mod mailbox;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::compile::Attendant;
use crate::config::ProbesConfig;

/// How often the supervisor looks for a reloaded config.
const WATCH_CONFIG: Duration = Duration::from_millis(500);

/// Starts the probes the attendant's config lists and keeps them in line with reloads.
pub fn spawn(attendant: Arc<Attendant>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(attendant, stop))
}

async fn supervise(attendant: Arc<Attendant>, stop: CancellationToken) {
    let mut running = ProbesConfig::default();
    let mut tasks = JoinSet::new();
    let mut generation = CancellationToken::new();
    loop {
        let config = attendant.config();
        if config.probes != running {
            generation.cancel();
            while tasks.join_next().await.is_some() {}
            if running.mailbox.is_some() {
                tracing::info!(server = %config.name, "probe config changed; restarting probes");
            }
            forget_removed(&attendant, &running, &config.probes);
            running = config.probes.clone();
            generation = stop.child_token();
            start(&attendant, &running, &config.name, &generation, &mut tasks);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(WATCH_CONFIG) => {}
        }
    }
    generation.cancel();
    while tasks.join_next().await.is_some() {}
}

fn start(
    attendant: &Arc<Attendant>,
    probes: &ProbesConfig,
    name: &str,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let watch = loop_watch::LoopWatch::new(name);
    if let Some(m) = &probes.mailbox {
        tracing::info!(server = %name, imap = %m.endpoint.address, interval_a = %m.interval_a, interval_b = %m.interval_b, "mailbox probes started");
        tasks.spawn(mailbox::run(attendant.clone(), m.clone(), watch.clone(), stop.clone()));
    }
    if let Some(l) = &probes.mail_loop {
        tracing::info!(server = %name, smtp = %l.endpoint.address, interval = %l.interval, "mail loop probe started");
        tasks.spawn(mail_loop::run(attendant.clone(), l.clone(), watch, stop.clone()));
    }
}

fn forget_removed(attendant: &Attendant, old: &ProbesConfig, new: &ProbesConfig) {
    if old.mailbox.is_some() && new.mailbox.is_none() {
        for n in [mailbox::LOGIN, mailbox::MAIL_READ, mailbox::REFRESH] {
            attendant.probes.remove(n);
        }
    }
    if old.mail_loop.is_some() && new.mail_loop.is_none() {
        attendant.probes.remove(mail_loop::MAIL_LOOP);
    }
}
