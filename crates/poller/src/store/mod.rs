//! The storage API: what the poller keeps (servers' facts, their latest compilation, poll,
//! transition and clock-correction history, what notifications told, acknowledgements,
//! downtimes, the operator actions of the audit trail and the claims of notices) behind one trait,
//! [`Store`], with one module per backend, each with its own migrations
//! (`crates/poller/migrations/<backend>`): SQLite ([`sqlite`], the default for one poller)
//! and PostgreSQL ([`postgres`], for sites that run it and for several pollers).
//!
//! Rules it keeps:
//! - Callers (the writer, API, dashboard, notifier, pruner) see [`Store`] and the plain row
//!   types of [`crate::model`], never a backend's types.
//! - Poll results, acknowledgements and operator actions reach a backend only through the
//!   [`Writer`], which owns what is stored:
//!   it batches records into one transaction per burst, keeps a failed batch and retries
//!   it, and sheds only poll rows and compilation history under a long fault (see
//!   [`batch::Batch`]).
//! - Downtimes are written by the API directly (an operator waits for the id), and read
//!   back whole at start-up: few rows, rarely changed.
//! - Every backend passes the same test suite (`suite`), unchanged.
//! - History stays bounded: compilations are kept when they change in substance, and
//!   rows older than `[retention]` are pruned hourly ([`spawn_pruner`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{Downtime, History, NoticeClaim, NotifyRow, StoredServer};

pub mod batch;
pub mod copy;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;
pub mod writer;

pub use crate::config::Retention;
pub use batch::Batch;
pub use writer::{Writer, WriterStats};

/// What went wrong with the store. Messages name the database and, for unreadable
/// values, the table, column and server.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database {url}: migration failed: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database {url}: no store backend for this URL (sqlite://PATH or postgres://USER@HOST/DB)")]
    Unsupported { url: String },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database holds an unreadable value in {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("this database is not one several pollers can share (only PostgreSQL is)")]
    NotShared,
    #[error("the store writer has stopped")]
    WriterGone,
    /// The writer keeps what could not be written and retries; reads may be behind.
    #[error("the store is failing, {pending} records wait to be written: {last_error}")]
    Failing { pending: usize, last_error: String },
}

/// A store backend. Every method is one short transaction or read; a failed write
/// leaves the store as it was (the caller keeps the batch).
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Every server the store knows, as last written, with the time, offset and delay of
    /// its newest poll row and the substance hash of its newest stored compilation.
    async fn load_servers(&self) -> Result<Vec<StoredServer>, StoreError>;

    /// Writes a batch in one transaction: all of it or nothing.
    async fn write(&self, batch: &Batch) -> Result<(), StoreError>;

    /// Writes each server's latest compilation as received (at shutdown: between changes
    /// of substance only the poller's memory has it). `(server, body)`.
    async fn save_latest(&self, latest: &[(String, bytes::Bytes)]) -> Result<(), StoreError>;

    /// The latest compilation of `server` the store has: the last one that changed in
    /// substance, or the one in memory at the last shutdown, whichever came later.
    async fn compilation(&self, server: &str) -> Result<Option<String>, StoreError>;

    /// Compilations of `server` in the history (changes only), newest first: `(at, body)`.
    async fn compilations(&self, server: &str, limit: u32) -> Result<Vec<(DateTime<Utc>, String)>, StoreError>;

    /// Polls, transitions, clock corrections and operator actions of `server`, each newest
    /// first, at most `limit` of each.
    async fn history(&self, server: &str, limit: u32) -> Result<History, StoreError>;

    /// Deletes history older than `retention` at `now`; each server's newest compilation
    /// is kept however old.
    async fn prune(&self, retention: &Retention, now: DateTime<Utc>) -> Result<Pruned, StoreError>;

    /// What notifications last told about every server, or only about server `only` (no
    /// row when nothing was told of it): the notifier rereads one server after another
    /// node claimed its notice, where rereading the whole fleet would cost O(servers).
    async fn load_notify_memory(&self, only: Option<&str>) -> Result<Vec<NotifyRow>, StoreError>;

    /// Persists what notifications know of one server that tells nothing new (the flap
    /// counts of a poll without a notice). A row whose `seq` is below the stored one's
    /// changes nothing: it comes from a node that has since lost the server, and must not
    /// undo the claims of the node that took it.
    async fn save_notify_memory(&self, row: &NotifyRow) -> Result<(), StoreError>;

    /// Claims a notice before it is sent (SPEC sections 5 and 12), in one transaction:
    /// inserts `claim.key` into `notices` unless that key is there already, and only if it
    /// inserted it, saves `memory` (what the notice tells; `None` for notices that change
    /// no memory, e.g. clock orders). Answers `true` when this call claimed the notice,
    /// `false` when it was claimed before (by another node of the cluster, or by this
    /// poller before a restart; nothing is written): send it only on `true`. An error means
    /// the claim is not known to have happened: send nothing.
    async fn claim_notice(&self, claim: &NoticeClaim, memory: Option<&NotifyRow>) -> Result<bool, StoreError>;

    /// Rows in `table` now (for the progress of a copy).
    async fn count_rows(&self, table: &copy::Table) -> Result<u64, StoreError>;

    /// The highest id in `table` (a history table), or `None` when it is empty.
    async fn max_id(&self, table: &copy::Table) -> Result<Option<i64>, StoreError>;

    /// Up to `limit` rows of `table` after `after` in key order, every column as a
    /// [`copy::Value`] in [`copy::Table::columns`]' order.
    async fn export_rows(
        &self,
        table: &copy::Table,
        after: &copy::After,
        limit: u32,
    ) -> Result<Vec<copy::Row>, StoreError>;

    /// Writes rows exported from another store in one transaction: history rows keep
    /// their ids (one already there is left as it is), rows keyed by server are upserted.
    async fn import_rows(&self, table: &copy::Table, rows: &[copy::Row]) -> Result<(), StoreError>;

    /// Called after each table of a copy: whatever makes the imported rows and the
    /// backend's own bookkeeping agree (PostgreSQL: id sequences above the copied ids).
    async fn after_import(&self) -> Result<(), StoreError>;

    /// Cluster: records `node`'s heartbeat, renews every lease it holds to run out
    /// `lease` from now (the database's now), and reads every node and lease. Only
    /// PostgreSQL holds a cluster; other backends answer [`StoreError::NotShared`].
    async fn heartbeat(&self, node: &str, lease: Duration) -> Result<ClusterView, StoreError> {
        let _ = (node, lease);
        Err(StoreError::NotShared)
    }

    /// Cluster: takes the leases of those of `servers` that nobody holds or whose lease
    /// has run out, for `lease` from now; returns the servers taken.
    async fn claim(&self, node: &str, servers: &[String], lease: Duration) -> Result<Vec<String>, StoreError> {
        let _ = (node, servers, lease);
        Err(StoreError::NotShared)
    }

    /// Cluster: gives up `node`'s leases of `servers` (another node takes them).
    async fn release(&self, node: &str, servers: &[String]) -> Result<(), StoreError> {
        let _ = (node, servers);
        Err(StoreError::NotShared)
    }
    /// Stores a new downtime; answers it with its `id` (the `id` given is ignored).
    async fn add_downtime(&self, downtime: &Downtime) -> Result<Downtime, StoreError>;

    /// Every downtime not closed yet (current and future ones, and any whose end was not
    /// handled yet), oldest id first.
    async fn open_downtimes(&self) -> Result<Vec<Downtime>, StoreError>;

    /// Closes a downtime (removed, or its end handled); answers it, or `None` when no open
    /// downtime has this id.
    async fn close_downtime(&self, id: i64) -> Result<Option<Downtime>, StoreError>;

    /// Closes the connections; pending reads finish first.
    async fn close(&self);
}

/// The cluster as the database sees it at one heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Every node that ever joined, with the time since its last heartbeat.
    pub nodes: Vec<(String, Duration)>,
    /// Every lease: server, node, and whether it is still running.
    pub leases: Vec<(String, String, bool)>,
}

/// A store shared by the poller's parts.
pub type SharedStore = Arc<dyn Store>;

/// Opens (creating when missing) and migrates the database at `url`, choosing the backend
/// by the URL's scheme: `sqlite://PATH`, or `postgres://USER@HOST[:PORT]/DB` (also
/// `postgresql://`) with `password` when given.
pub async fn open(url: &str, password: Option<&rollcall_config::Secret>) -> Result<SharedStore, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if crate::config::is_postgres(url) {
        Ok(Arc::new(postgres::PostgresStore::open(url, password).await?))
    } else {
        Err(StoreError::Unsupported { url: crate::config::redact_url(url) })
    }
}

/// What one pruning pass deleted, in rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub polls: u64,
    pub compilations: u64,
    pub transitions: u64,
    pub clock_corrections: u64,
    pub operator_actions: u64,
    /// Notice claims (their keys are kept as long as transitions).
    pub notices: u64,
}

/// How often the pruner runs (and once at start-up).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prunes at start-up and every [`PRUNE_EVERY`] until `stop`.
pub fn spawn_pruner(store: SharedStore, retention: Retention, stop: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match store.prune(&retention, Utc::now()).await {
                Ok(p) if p == Pruned::default() => tracing::debug!("nothing to prune"),
                Ok(p) => tracing::info!(
                    polls = p.polls,
                    compilations = p.compilations,
                    transitions = p.transitions,
                    clock_corrections = p.clock_corrections,
                    operator_actions = p.operator_actions,
                    notices = p.notices,
                    "pruned history beyond its retention"
                ),
                Err(e) => tracing::error!(error = %e, "cannot prune history"),
            }
        }
    });
}
