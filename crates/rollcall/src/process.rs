//! What every Rollcall process does around its work: logging to stderr (`ROLLCALL_LOG`),
//! the runtime, and stopping cleanly on SIGINT or SIGTERM. Shared by the `rollcall` binary
//! and the attendant-only `rollcall-attendant`.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Sets up logging and the runtime, runs `work` and turns its outcome into the exit code.
pub fn main(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROLLCALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM, for a clean stop. The handlers are
/// installed before this returns: a signal arriving during start-up must not take the
/// default action (killing the process without writing its state).
pub fn stop_on_signal() -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = CancellationToken::new();
    let streams: Vec<_> = [SignalKind::interrupt(), SignalKind::terminate()]
        .into_iter()
        .filter_map(|kind| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for a stop signal");
                None
            }
        })
        .collect();
    let s = stop.clone();
    tokio::spawn(async move {
        let waits = streams.into_iter().map(|mut st| Box::pin(async move { st.recv().await }));
        first_of(waits).await;
        tracing::info!("stopping");
        s.cancel();
    });
    stop
}

/// Waits for the first of several signal streams.
async fn first_of<F: std::future::Future + Unpin>(futs: impl Iterator<Item = F>) {
    let futs: Vec<F> = futs.collect();
    if futs.is_empty() {
        return std::future::pending().await;
    }
    let _ = futures::future::select_all(futs).await;
}

/// The poller has no config reload yet; an operator's `kill -HUP` (or logrotate's) must
/// not kill it, so SIGHUP is caught and answered with a log line.
pub fn ignore_hangup(what: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::warn!("SIGHUP ignored: the {what} does not reload its config yet; restart it to apply changes");
        }
    });
}
