//! The poller: asks each attendant for its compilation on a schedule set by the server's
//! level, keeps state and history, and tells the administrators (SPEC section 3).
//!
//! Rooms (docs/architecture.md draws them and says which may import which):
//! `config` (poller.toml), `model` (the plain value types every room shares), pure logic
//! in `levels` (levels, rules, hysteresis), `schedule` (slots spread over the interval)
//! and `clock_estimate` (NTP-style offset), `fetch` (one bounded HTTP poll: the test
//! seam), `fleet` (live state, the poll path and per-server loops), `store` (the storage
//! API, its writer and backends), `notify` (webhook, email and Alertmanager with flap
//! damping), `web` (JSON API, events, OpenAPI, `/metrics`, dashboard). This file only
//! wires them together.

pub mod clock_estimate;
pub mod cluster;
pub mod config;
pub mod fetch;
pub mod fleet;
mod heap_trim;
pub mod levels;
pub mod model;
pub mod notify;
pub mod schedule;
pub mod store;
pub mod web;

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::PollerConfig;

/// Reloads the configuration on every SIGHUP (SPEC 13); an invalid one is logged and the
/// running one kept.
fn reload_on_hangup(fleet: Arc<fleet::Fleet>, stop: CancellationToken, tracker: &TaskTracker) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload with POST /api/v1/reload");
            return;
        }
    };
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            match fleet.reload_file().await {
                Ok(report) => fleet.audit_reload(&report, "SIGHUP").await,
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused"),
            }
        }
    });
}

/// Runs the poller until `stop` is cancelled; the listener is bound by the caller (so
/// tests and the demo can bind port 0). On stop, polls in flight are abandoned and every
/// recorded result is written before returning.
pub async fn run(
    config: PollerConfig,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let bound = listener.local_addr()?;
    config.api.check_listen(bound).map_err(|why| anyhow::anyhow!("`listen` {why}"))?;
    if config.api.is_open() && !bound.ip().is_loopback() {
        tracing::warn!(
            listen = %bound,
            "api_insecure = true: the API, dashboard and /metrics are open to anyone who can reach this address, \
             poll now included; add [[api.user]] tables to require a login"
        );
    }
    let store = store::open(&config.database, config.database_password.as_ref()).await?;
    let stored = store.load_servers().await?;
    let (writer, writer_task) = store::Writer::start(store.clone());
    let files = rollcall_netserve::raise_open_file_limit();
    let idle = fetch::idle_budget(files, config.max_concurrent_polls);
    if idle < config.servers.len() {
        tracing::warn!(
            servers = config.servers.len(),
            open_file_limit = files,
            kept_alive = idle,
            "the open-file limit leaves room for idle connections to only some servers: the others connect \
             at each poll (raise LimitNOFILE / ulimit -n to keep them all)"
        );
    }
    // Pollers sharing a PostgreSQL database share the fleet by leases (SPEC section 12).
    let holdings = config::is_postgres(&config.database)
        .then(|| Arc::new(cluster::Holdings::new(&config.node, config.failover_after)));
    let fetcher = fetch::HttpFetcher::with_idle_budget(config.timeout.get(), config.max_reply_bytes, idle)
        .context("cannot build the HTTP client")?;
    let fleet = Arc::new(fleet::Fleet::new(
        config.servers.clone(),
        stored,
        config.rules.clone(),
        Arc::new(fetcher),
        writer.clone(),
        fleet::FleetOptions {
            timebase: schedule::Timebase::now(),
            max_in_flight: config.max_concurrent_polls,
            clock: fleet::ClockPolicy { key: config.signing_key.clone(), max_skew: config.max_clock_skew.get() },
            first_poll_within: config.first_poll_within,
            holdings: holdings.clone(),
            source: config.source.clone(),
        },
    ));
    let tracker = TaskTracker::new();
    // Subscribed before the loops start, so the notifier sees every poll.
    let notifier = notify::Notifier::start(
        notify::NotifierSetup {
            channels: config.notify.clone(),
            damping: config.damping,
            first_level: config.rules.level(0).name.clone(),
            store: store.clone(),
            events: fleet.subscribe(),
            public_url: config.public_url.clone(),
            writer: Some(writer.clone()),
            node: config.node.clone(),
        },
        &stop,
        &tracker,
    )
    .await?;
    if let Some(h) = &holdings {
        let inventory = config.servers.iter().map(|s| s.name.clone()).collect();
        cluster::spawn(
            h.clone(),
            store.clone(),
            writer.clone(),
            inventory,
            config.timeout.get(),
            stop.clone(),
            &tracker,
        );
    }
    fleet.start(&stop, &tracker);
    if config.source.is_some() {
        reload_on_hangup(fleet.clone(), stop.clone(), &tracker);
    }
    store::spawn_pruner(store.clone(), config.retention, stop.clone(), &tracker);
    heap_trim::spawn(stop.clone(), &tracker);
    tracing::info!(
        listen = %listener.local_addr()?,
        scheme = if config.api_tls.is_some() { "https" } else { "http" },
        servers = config.servers.len(),
        notify = config.notify.len(),
        api_users = config.api.users.len(),
        database = %config::redact_url(&config.database),
        node = holdings.as_ref().map(|h| h.node.as_str()),
        "poller started"
    );
    let api = Arc::new(web::api::Api {
        fleet: fleet.clone(),
        store: store.clone(),
        notifier: notifier.clone(),
        stop: stop.clone(),
        max_clock_skew: config.max_clock_skew.get(),
        node: config.node.clone(),
    });
    let metrics = Arc::new(web::metrics::MetricsState { fleet: fleet.clone(), notifier: Some(notifier) });
    let app = web::router(api, metrics, Arc::new(web::auth::Auth::new(&config.api)));
    let shutdown = stop.clone();
    // Dashboards hold an event stream each; strangers are shed first (netserve's rules).
    let limits = rollcall_netserve::Limits::default();
    rollcall_netserve::serve_tls(listener, app, limits, config.api_tls.clone(), shutdown)
        .await
        .context("API server failed")?;
    tracker.close();
    tracker.wait().await;
    writer.flush().await.ok();
    let latest = fleet.latest_compilations();
    match store.save_latest(&latest).await {
        Ok(()) => tracing::debug!(servers = latest.len(), "latest compilations saved"),
        Err(e) => tracing::error!(error = %e, "cannot save the latest compilations"),
    }
    drop(fleet);
    drop(writer);
    writer_task.await.ok();
    store.close().await;
    tracing::info!("poller stopped");
    Ok(())
}
