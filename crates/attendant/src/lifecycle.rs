//! Starting, reloading and stopping an attendant: bind, build the [`Attendant`] and its
//! background work (host sampler, probes), serve until the stop token, reload on SIGHUP.
//!
//! Rules: the SIGHUP handler is installed before anything else, so an early reload cannot
//! kill the process; a reloaded file that does not validate is logged and the running
//! config kept; `listen` and the clock settings take effect only at the next start.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::attendant::Attendant;
use crate::config::AttendantConfig;
use crate::{host, probes, server, usage};

/// Runs an attendant from its config file until `stop` is cancelled; SIGHUP reloads the
/// file (an invalid new file is logged and the running config kept).
pub async fn run(config_path: PathBuf, stop: CancellationToken) -> anyhow::Result<()> {
    // Before anything else: until a handler exists, SIGHUP's default action kills us.
    let hup = hangup_signal();
    let config = AttendantConfig::load(&config_path)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run_on_with(config_path, config, listener, hup, stop).await
}

fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload is disabled");
            None
        }
    }
}

/// Like [`run`], on a listener the caller bound (tests and the demo bind port 0).
pub async fn run_on(
    config_path: PathBuf,
    config: AttendantConfig,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    run_on_with(config_path, config, listener, hangup_signal(), stop).await
}

async fn run_on_with(
    config_path: PathBuf,
    config: AttendantConfig,
    listener: tokio::net::TcpListener,
    hup: Option<tokio::signal::unix::Signal>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    // Every connection is a file; the default soft limit (1024) would cap them below
    // what the connection-abuse rules need.
    let files = rollcall_netserve::raise_open_file_limit();
    let attendant = start(config, stop.clone());
    tracing::info!(server = %name, listen = %listener.local_addr()?, scheme, open_file_limit = files, "attendant started");
    let reload = tokio::spawn(reload_on_sighup(config_path, attendant.clone(), hup, stop.clone()));
    server::serve(listener, attendant, stop).await?;
    reload.abort();
    tracing::info!(server = %name, "attendant stopped");
    Ok(())
}

/// Builds the attendant and its background samplers; serve it with [`server::serve`].
pub fn start(config: AttendantConfig, stop: CancellationToken) -> Arc<Attendant> {
    let host = host::HostCache::start(config.disks.clone(), stop.clone());
    let attendant = Arc::new(Attendant::new(config, host));
    // The mailbox and mail-loop probes; they follow SIGHUP reloads of the [probe] table.
    probes::spawn(attendant.probe_context(), stop.clone());
    // The [[usage]] reports, measured in the background; they follow reloads too.
    usage::spawn(attendant.usage_context(), stop);
    attendant
}

async fn reload_on_sighup(
    path: PathBuf,
    attendant: Arc<Attendant>,
    hup: Option<tokio::signal::unix::Signal>,
    stop: CancellationToken,
) {
    let Some(mut hup) = hup else { return };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        let old = attendant.config();
        match AttendantConfig::load(&path) {
            Ok(new) => {
                if new.listen != old.listen {
                    tracing::warn!(server = %old.name, old = %old.listen, new = %new.listen, "listen changed; it takes effect at the next restart");
                }
                if new.clock != old.clock || new.clock_offset_us != old.clock_offset_us {
                    tracing::warn!(server = %old.name, "clock settings changed; they take effect at the next restart");
                }
                tracing::info!(server = %new.name, services = new.services.len(), "config reloaded");
                attendant.replace_config(new);
            }
            Err(e) => {
                for line in e.problems() {
                    tracing::error!(server = %old.name, "config reload refused, keeping the running config: {line}");
                }
            }
        }
    }
}
