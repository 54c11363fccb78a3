//! Background work that follows config reloads: the probes and the usage reports each keep
//! their part of the running config and restart only when a reload changed that part.
//!
//! Rules: woken by the config's `watch` channel, never polling; the work of the old part
//! is stopped and awaited before the new part starts, so two generations never run at
//! once; when the attendant is gone (no more reloads) the work runs as configured until
//! `stop`.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::AttendantConfig;

/// Runs `restart(old, new, config, generation, tasks)` for the part `select` picks of the
/// running config at start and after every reload that changes it, until `stop`; the
/// tasks it spawns into `tasks` are stopped (`generation` cancelled) and awaited first.
pub async fn follow<T: PartialEq + Default>(
    mut config: watch::Receiver<Arc<AttendantConfig>>,
    stop: CancellationToken,
    select: impl Fn(&AttendantConfig) -> T,
    mut restart: impl FnMut(&T, &T, &AttendantConfig, &CancellationToken, &mut JoinSet<()>),
) {
    let mut running = T::default();
    let mut tasks = JoinSet::new();
    let mut generation = CancellationToken::new();
    let mut first = true;
    loop {
        let current = config.borrow_and_update().clone();
        let part = select(&current);
        if first || part != running {
            first = false;
            generation.cancel();
            while tasks.join_next().await.is_some() {}
            generation = stop.child_token();
            restart(&running, &part, &current, &generation, &mut tasks);
            running = part;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = config.changed() => if changed.is_err() {
                // The attendant is gone: no more reloads; run as configured until stop.
                stop.cancelled().await;
                break;
            },
        }
    }
    generation.cancel();
    while tasks.join_next().await.is_some() {}
}
