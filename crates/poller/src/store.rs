//! Persistent state: servers' levels, their latest compilation, poll and transition history.
//!
//! SQLite through sqlx (a file, nothing to install), with migrations embedded in the binary.
//! Poll results reach the store through [`Writer`], which batches them into one transaction
//! per burst: the scheduler never waits on disk, and thousands of polls a second cost a few
//! commits. History stays bounded ([`growth`]): compilations are kept when they change in
//! substance, and polls, compilations and transitions older than `[retention]` are pruned.
//! PostgreSQL will be a second implementation of the same methods.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::model::{
    ChangedCompilation, ClockCorrectionRow, History, PollRecord, PollRow, ServerRow, ServerState, TransitionRow,
};

pub mod growth;
pub use growth::{spawn_pruner, Retention};

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
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database holds an unreadable value in {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("the store writer has stopped")]
    WriterGone,
}

/// The SQLite store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The poll chains' heads and the next poll id, loaded on the first write; only the
    /// writer task uses them.
    chains: std::sync::Arc<tokio::sync::Mutex<Option<Chains>>>,
}

/// Where each server's chain of poll rows ends, and the id the next row gets. Ids are
/// assigned here, above every id a head ever named, so a pruned id is never reused.
#[derive(Debug, Clone, Default)]
struct Chains {
    heads: std::collections::HashMap<String, i64>,
    next_id: i64,
}

impl Chains {
    async fn load(pool: &SqlitePool) -> Result<Chains, StoreError> {
        let rows = sqlx::query("SELECT server, last_id FROM poll_heads").fetch_all(pool).await?;
        let mut heads = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            heads.insert(r.try_get::<String, _>("server")?, r.try_get::<i64, _>("last_id")?);
        }
        let max_row: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM polls").fetch_one(pool).await?;
        let max_head = heads.values().copied().max();
        let next_id = max_row.max(max_head).unwrap_or(0) + 1;
        Ok(Chains { heads, next_id })
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

impl Store {
    /// Opens (creating when missing) and migrates the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Open { url: url.to_string(), source })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // A batch touches thousands of pages (poll rows and their index); with SQLite's
            // 2 MB default they spill to the WAL mid-transaction and are written twice
            // (perf: pagerStress, subjournal).
            .pragma("cache_size", "-8192")
            // Each many-row statement keeps a statement journal of the pages it changes; in
            // a file that was 6 % of the poller's CPU (perf: subjournalPageIfRequired).
            .pragma("temp_store", "memory")
            // Checkpoint every 40 MB of WAL rather than 4 MB: the poll index's pages change
            // many times between checkpoints and are copied into the database once.
            .pragma("wal_autocheckpoint", "10000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open { url: url.to_string(), source })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: url.to_string(), source })?;
        Ok(Store { pool, chains: Default::default() })
    }

    /// Every server the store knows, as last written.
    pub async fn load_servers(&self) -> Result<Vec<ServerRow>, StoreError> {
        let rows = sqlx::query(
            // The row is written when level or state change; the newest poll row has the
            // time, offset and delay of the last poll.
            "SELECT s.name, s.address, s.level, s.calm_streak, s.state, s.deficiencies, s.last_error,
               max(s.last_poll_at, COALESCE(p.at, 0)) AS last_poll_at,
               COALESCE(p.clock_offset_ms, s.clock_offset_ms) AS clock_offset_ms,
               COALESCE(p.rtt_ms, s.rtt_ms) AS rtt_ms,
               (SELECT hash FROM compilations c WHERE c.server = s.name ORDER BY id DESC LIMIT 1) AS substance
             FROM servers s
             LEFT JOIN polls p ON p.id = (SELECT last_id FROM poll_heads h WHERE h.server = s.name)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get("name")?;
                let defs: String = r.try_get("deficiencies")?;
                let deficiencies = serde_json::from_str(&defs).map_err(|e| StoreError::Corrupt {
                    what: format!("servers.deficiencies of {name}"),
                    detail: e.to_string(),
                })?;
                Ok(ServerRow {
                    address: r.try_get("address")?,
                    level: r.try_get("level")?,
                    calm_streak: r.try_get::<i64, _>("calm_streak")?.clamp(0, i64::from(u32::MAX)) as u32,
                    state: ServerState::parse(r.try_get::<&str, _>("state")?),
                    deficiencies,
                    last_poll_at: r.try_get::<Option<i64>, _>("last_poll_at")?.map(from_ms),
                    last_error: r.try_get("last_error")?,
                    clock_offset_ms: r.try_get("clock_offset_ms")?,
                    rtt_ms: r.try_get("rtt_ms")?,
                    substance: r.try_get("substance")?,
                    name,
                })
            })
            .collect()
    }

    /// The latest compilation of `server` the store has: the last one that changed in
    /// substance, or the one in memory at the last shutdown, whichever came later.
    pub async fn compilation(&self, server: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT body FROM latest_compilations WHERE server = ?")
            .bind(server)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("body")?),
            None => None,
        })
    }

    /// Newest first, at most `limit` of each kind.
    pub async fn history(&self, server: &str, limit: u32) -> Result<History, StoreError> {
        // The server's chain of poll rows, from its head back (see migration 0005).
        let rows = sqlx::query(
            "WITH RECURSIVE chain(id, n) AS (
                 SELECT last_id, 1 FROM poll_heads WHERE server = ?1
                 UNION ALL
                 SELECT p.prev_id, c.n + 1 FROM polls p JOIN chain c ON p.id = c.id
                 WHERE p.prev_id IS NOT NULL AND c.n < ?2)
             SELECT p.at, p.state, p.level, p.rtt_ms, p.clock_offset_ms, p.error, p.deficiencies
             FROM chain JOIN polls p ON p.id = chain.id ORDER BY p.id DESC",
        )
        .bind(server)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let polls = rows
            .iter()
            .map(|r| {
                Ok(PollRow {
                    at: from_ms(r.try_get("at")?),
                    state: ServerState::parse(r.try_get::<&str, _>("state")?),
                    level: r.try_get("level")?,
                    rtt_ms: r.try_get("rtt_ms")?,
                    clock_offset_ms: r.try_get("clock_offset_ms")?,
                    error: r.try_get("error")?,
                    deficiencies: r.try_get::<i64, _>("deficiencies")?.max(0) as u32,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let transitions = self
            .newest("SELECT at, from_level, to_level, reason FROM transitions", server, limit, |r| {
                Ok(TransitionRow {
                    at: from_ms(r.try_get("at")?),
                    from: r.try_get("from_level")?,
                    to: r.try_get("to_level")?,
                    reason: r.try_get("reason")?,
                })
            })
            .await?;
        let clock_corrections = self
            .newest("SELECT at, offset_ms, correction_ms, outcome, detail FROM clock_corrections", server, limit, |r| {
                Ok(ClockCorrectionRow {
                    at: from_ms(r.try_get("at")?),
                    offset_ms: r.try_get("offset_ms")?,
                    correction_ms: r.try_get("correction_ms")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                })
            })
            .await?;
        Ok(History { polls, transitions, clock_corrections })
    }

    /// The newest `limit` rows of one server from a history table (`select` names the
    /// columns and table; every history table has `server` and a growing `id`).
    async fn newest<T>(
        &self,
        select: &str,
        server: &str,
        limit: u32,
        row: impl Fn(&sqlx::sqlite::SqliteRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!("{select} WHERE server = ? ORDER BY id DESC LIMIT ?");
        let rows = sqlx::query(&sql).bind(server).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row).collect::<Result<Vec<_>, sqlx::Error>>()?)
    }

    /// Writes a batch of poll results in one transaction, many rows to a statement.
    pub async fn write(&self, batch: &[PollRecord]) -> Result<(), StoreError> {
        let rows: Vec<&ServerRow> = batch.iter().filter(|r| r.row_changed).map(|r| &r.server).collect();
        let mut tx = self.pool.begin().await?;
        for (at, n) in growth::chunks(rows.len()) {
            let sql = growth::values_sql(
                "INSERT INTO servers (name, address, level, calm_streak, state, deficiencies, last_poll_at, last_error, clock_offset_ms, rtt_ms)",
                10,
                n,
                "ON CONFLICT (name) DO UPDATE SET address = excluded.address, level = excluded.level,
                   calm_streak = excluded.calm_streak, state = excluded.state, deficiencies = excluded.deficiencies,
                   last_poll_at = excluded.last_poll_at, last_error = excluded.last_error,
                   clock_offset_ms = excluded.clock_offset_ms, rtt_ms = excluded.rtt_ms",
            );
            let mut q = sqlx::query(&sql);
            for s in &rows[at..at + n] {
                let defs = serde_json::to_string(&s.deficiencies).unwrap_or_else(|_| "[]".into());
                q = q
                    .bind(&s.name)
                    .bind(&s.address)
                    .bind(&s.level)
                    .bind(i64::from(s.calm_streak))
                    .bind(s.state.as_str())
                    .bind(defs)
                    .bind(s.last_poll_at.map(ms))
                    .bind(&s.last_error)
                    .bind(s.clock_offset_ms)
                    .bind(s.rtt_ms);
            }
            q.execute(&mut *tx).await?;
        }
        // Chain each poll row to the server's previous one; the in-memory chains change only
        // once the transaction has committed.
        let mut chains_guard = self.chains.lock().await;
        if chains_guard.is_none() {
            *chains_guard = Some(Chains::load(&self.pool).await?);
        }
        let chains = chains_guard.get_or_insert_with(Chains::default);
        // This batch's links, over the committed heads: the map itself changes only once
        // the transaction has committed (and is never copied: it holds the whole fleet).
        let mut batch_heads: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        let first_id = chains.next_id;
        let links: Vec<(i64, Option<i64>)> = batch
            .iter()
            .enumerate()
            .map(|(i, rec)| {
                let id = first_id + i as i64;
                let name = rec.server.name.as_str();
                let prev = batch_heads.insert(name, id).or_else(|| chains.heads.get(name).copied());
                (id, prev)
            })
            .collect();
        for (at, n) in growth::chunks(batch.len()) {
            let sql = growth::values_sql(
                "INSERT INTO polls (id, prev_id, server, at, state, level, rtt_ms, clock_offset_ms, error, deficiencies)",
                10,
                n,
                "",
            );
            let mut q = sqlx::query(&sql);
            for (rec, (id, prev)) in batch[at..at + n].iter().zip(&links[at..at + n]) {
                let p = &rec.poll;
                q = q
                    .bind(id)
                    .bind(prev)
                    .bind(&rec.server.name)
                    .bind(ms(p.at))
                    .bind(p.state.as_str())
                    .bind(&p.level)
                    .bind(p.rtt_ms)
                    .bind(p.clock_offset_ms)
                    .bind(&p.error)
                    .bind(i64::from(p.deficiencies));
            }
            q.execute(&mut *tx).await?;
        }
        let heads: Vec<(&str, i64)> = batch_heads.iter().map(|(k, v)| (*k, *v)).collect();
        for (at, n) in growth::chunks(heads.len()) {
            let sql = growth::values_sql(
                "INSERT INTO poll_heads (server, last_id)",
                2,
                n,
                "ON CONFLICT (server) DO UPDATE SET last_id = excluded.last_id",
            );
            let mut q = sqlx::query(&sql);
            for (server, id) in &heads[at..at + n] {
                q = q.bind(*server).bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        let changed: Vec<(&PollRecord, &ChangedCompilation)> =
            batch.iter().filter_map(|r| Some((r, r.compilation.as_ref()?))).collect();
        for (at, n) in growth::chunks(changed.len()) {
            let sql = growth::values_sql("INSERT INTO compilations (server, at, hash, body)", 4, n, "");
            let mut q = sqlx::query(&sql);
            for (rec, c) in &changed[at..at + n] {
                q = q.bind(&rec.server.name).bind(ms(rec.poll.at)).bind(c.hash).bind(body_text(&c.body));
            }
            q.execute(&mut *tx).await?;
        }
        let latest: Vec<(&str, &bytes::Bytes)> =
            changed.iter().map(|(r, c)| (r.server.name.as_str(), &c.body)).collect();
        save_latest(&mut tx, &latest).await?;
        for rec in batch {
            let name = &rec.server.name;
            for c in &rec.clock_corrections {
                sqlx::query(
                    "INSERT INTO clock_corrections (server, at, offset_ms, correction_ms, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(name)
                .bind(ms(c.at))
                .bind(c.offset_ms)
                .bind(c.correction_ms)
                .bind(&c.outcome)
                .bind(&c.detail)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(t) = &rec.transition {
                sqlx::query(
                    "INSERT INTO transitions (server, at, from_level, to_level, reason) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(name)
                .bind(ms(t.at))
                .bind(&t.from)
                .bind(&t.to)
                .bind(&t.reason)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        chains.next_id = first_id + batch.len() as i64;
        for (name, id) in batch_heads {
            match chains.heads.get_mut(name) {
                Some(head) => *head = id,
                None => {
                    chains.heads.insert(name.to_string(), id);
                }
            }
        }
        Ok(())
    }

    /// Writes each server's latest compilation as received (at shutdown: between changes
    /// of substance only the poller's memory has it).
    pub async fn save_latest(&self, latest: &[(String, bytes::Bytes)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let latest: Vec<(&str, &bytes::Bytes)> = latest.iter().map(|(n, b)| (n.as_str(), b)).collect();
        save_latest(&mut tx, &latest).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Compilations of `server` in the history (changes only), newest first: `(at, body)`.
    pub async fn compilations(&self, server: &str, limit: u32) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
        let rows = sqlx::query("SELECT at, body FROM compilations WHERE server = ? ORDER BY id DESC LIMIT ?")
            .bind(server)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((from_ms(r.try_get("at")?), r.try_get("body")?))).collect()
    }

    /// Deletes history beyond `retention` now (the pruner does this hourly).
    pub async fn prune(&self, retention: &Retention) -> Result<growth::Pruned, StoreError> {
        growth::prune(&self.pool, retention, Utc::now()).await
    }

    /// What notifications last told about every server (see [`crate::notify::damping`]).
    pub async fn load_notify_memory(
        &self,
    ) -> Result<std::collections::HashMap<String, crate::notify::Memory>, StoreError> {
        let rows = sqlx::query("SELECT server, level, state, flapping, seen_state, changes FROM notify_state")
            .fetch_all(&self.pool)
            .await?;
        let mut out = std::collections::HashMap::new();
        for r in &rows {
            let server: String = r.try_get("server")?;
            let changes: Vec<i64> = serde_json::from_str(r.try_get::<&str, _>("changes")?).map_err(|e| {
                StoreError::Corrupt { what: format!("notify_state.changes of {server}"), detail: e.to_string() }
            })?;
            let memory = crate::notify::Memory {
                told: crate::notify::Condition {
                    level: r.try_get("level")?,
                    state: ServerState::parse(r.try_get::<&str, _>("state")?),
                    flapping: r.try_get::<i64, _>("flapping")? != 0,
                },
                seen: ServerState::parse(r.try_get::<&str, _>("seen_state")?),
                changes: changes.into_iter().map(from_ms).collect(),
            };
            out.insert(server, memory);
        }
        Ok(out)
    }

    /// Persists what notifications told about `server`, before the notice is sent.
    pub async fn save_notify_memory(&self, server: &str, m: &crate::notify::Memory) -> Result<(), StoreError> {
        let changes: Vec<i64> = m.changes.iter().map(|t| ms(*t)).collect();
        sqlx::query(
            "INSERT INTO notify_state (server, level, state, flapping, seen_state, changes, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (server) DO UPDATE SET level = excluded.level, state = excluded.state,
               flapping = excluded.flapping, seen_state = excluded.seen_state, changes = excluded.changes,
               updated_at = excluded.updated_at",
        )
        .bind(server)
        .bind(&m.told.level)
        .bind(m.told.state.as_str())
        .bind(i64::from(m.told.flapping))
        .bind(m.seen.as_str())
        .bind(serde_json::to_string(&changes).unwrap_or_else(|_| "[]".into()))
        .bind(ms(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A reply as stored text. It was parsed as JSON, so it is UTF-8 but for the contents of
/// fields the poller skips; those are replaced rather than the reply refused.
fn body_text(b: &bytes::Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Upserts servers' latest compilations, many rows to a statement.
async fn save_latest(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    latest: &[(&str, &bytes::Bytes)],
) -> Result<(), StoreError> {
    for (at, n) in growth::chunks(latest.len()) {
        let sql = growth::values_sql(
            "INSERT INTO latest_compilations (server, body)",
            2,
            n,
            "ON CONFLICT (server) DO UPDATE SET body = excluded.body",
        );
        let mut q = sqlx::query(&sql);
        for (name, body) in &latest[at..at + n] {
            q = q.bind(*name).bind(body_text(body));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

enum Msg {
    Record(Box<PollRecord>),
    Flush(oneshot::Sender<()>),
}

/// The single task that writes poll results, batching whatever has queued up.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
}

/// Most records written in one transaction.
const MAX_BATCH: usize = 8192;
/// Longest a record waits for others to share its transaction (see [`Writer::start`]).
const COMMIT_WINDOW: Duration = Duration::from_millis(500);
/// Records queued before the scheduler has to wait (backpressure, never unbounded memory).
const QUEUE: usize = 65_536;

impl Writer {
    /// Starts the writer task; it ends when every `Writer` clone is dropped, after
    /// writing everything queued.
    pub fn start(store: Store) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let task = tokio::spawn(async move {
            let mut batch: Vec<PollRecord> = Vec::new();
            let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
            while let Some(first) = rx.recv().await {
                // Gather for up to COMMIT_WINDOW after the first record: a transaction per
                // poll would cost a commit (and a round trip to SQLite's thread) per poll.
                // A flush ends the window at once, so readers never wait for it.
                let deadline = tokio::time::Instant::now() + COMMIT_WINDOW;
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Record(r) => batch.push(*r),
                        Msg::Flush(w) => waiters.push(w),
                    }
                    if batch.len() >= MAX_BATCH || !waiters.is_empty() {
                        break;
                    }
                    next = match rx.try_recv() {
                        Ok(m) => Some(m),
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
                        }
                    };
                }
                if !batch.is_empty() {
                    if let Err(e) = store.write(&batch).await {
                        // Keep polling; the in-memory state is still right and the next
                        // poll of each server writes its whole row again.
                        tracing::error!(error = %e, records = batch.len(), "cannot write poll results");
                    }
                    batch.clear();
                }
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        (Writer { tx }, task)
    }

    pub async fn record(&self, rec: PollRecord) -> Result<(), StoreError> {
        self.tx.send(Msg::Record(Box::new(rec))).await.map_err(|_| StoreError::WriterGone)
    }

    /// Waits until everything recorded before this call is written.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Flush(tx)).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }
}

#[cfg(test)]
mod tests;
