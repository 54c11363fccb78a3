//! The SQLite backend: a file, nothing to install; migrations in
//! `crates/poller/migrations/sqlite`, embedded in the binary.
//!
//! Rules it keeps:
//! - WAL journal, `synchronous = NORMAL`: a commit survives a crash of the poller; a power
//!   cut may lose the last commits, never the database.
//! - Rows are written many to a statement (`insert_rows`: chunks of 64, 32, ... 1, so a
//!   handful of prepared statements serve any batch).
//! - Each server's poll rows form a chain (migration 0005): a row names the previous row
//!   of its server, and the server's head names the newest, so a server's history is read
//!   by following links instead of keeping an index on every poll row. Ids are assigned
//!   here (`chains`), above every id a head ever named, so a pruned id is never reused.
//!   The heads are held in memory and saved in arrears (`chains`, migration 0007): every
//!   read of the whole store saves them first.
//! - Times are stored as Unix milliseconds (UTC).
//! - A new database has 1 KiB pages (`open`): a commit rewrites each page it touches, and
//!   small pages keep the rewrites of a small batch small. An older file keeps its pages.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{Batch, Pruned, Retention, StoreError};
use crate::model::{
    Ack, AckChange, ActionRow, ClockCorrectionRow, Downtime, History, NoticeClaim, NotifyRow, PollRow, ServerFacts,
    ServerState, StoredServer, TransitionRow,
};

mod chains;
mod copy;
mod prune;

use chains::Chains;

/// WAL size at which a commit checkpoints it into the database file (bytes).
const WAL_CHECKPOINT_BYTES: i64 = 40 << 20;

/// The SQLite store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The poll chains' heads and the next poll id, loaded at open. Locked only between
    /// awaits: the writer links a batch, writes it, then commits the links.
    chains: std::sync::Arc<parking_lot::Mutex<Chains>>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// Most rows in one statement.
const CHUNK: usize = 64;

/// Splits `n` rows into chunks of 64, 32, ... 1 rows: `(start, len)`. Few distinct
/// statement texts, so sqlx's statement cache serves every batch.
fn chunks(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut size = CHUNK;
    while at < n {
        while size > n - at {
            size /= 2;
        }
        out.push((at, size));
        at += size;
    }
    out
}

/// `head VALUES (...), (...) tail` for each chunk of `rows`, each row's values bound by
/// `bind`, executed on `tx`.
async fn insert_rows<'r, T>(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    head: &str,
    tail: &str,
    rows: &'r [T],
    mut bind: impl FnMut(sqlx::query_builder::Separated<'_, 'r, Sqlite, &'static str>, &'r T),
) -> Result<(), StoreError> {
    for (at, n) in chunks(rows.len()) {
        let mut q: QueryBuilder<'r, Sqlite> = QueryBuilder::new(head);
        q.push(" ");
        q.push_values(&rows[at..at + n], &mut bind);
        q.push(" ");
        q.push(tail);
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Open { url: url.to_string(), source })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // 1 KiB pages for a new database (SQLite's default is 4 KiB; an existing file keeps
            // its own). A commit rewrites every page it touches whole: at 100 polls/s a 500 ms
            // batch is 50 poll rows (3 kB), and with 4 KiB pages its commit wrote the poll
            // table's last leaf, the new leaf, their interior page and page 1, plus 4 KiB for
            // each changed server row: 484 bytes of write calls per poll against 248 with
            // 1 KiB pages (`bench/peers/run.sh poller 100 1`, docs/performance.md).
            .page_size(1024)
            // A batch touches thousands of pages (poll rows and their index); with SQLite's
            // 2 MB default they spill to the WAL mid-transaction and are written twice
            // (perf: pagerStress, subjournal).
            .pragma("cache_size", "-8192")
            // Each many-row statement keeps a statement journal of the pages it changes; in
            // a file that was 6 % of the poller's CPU (perf: subjournalPageIfRequired).
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // Checkpoint every 40 MiB of WAL rather than SQLite's 1,000 pages: the poll
            // table's newest pages change at every commit and are copied into the database
            // once per checkpoint. The pragma counts pages, so it follows the file's page size.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let page: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&mut *conn).await?;
                    let pages = WAL_CHECKPOINT_BYTES / page.max(512);
                    sqlx::query(&format!("PRAGMA wal_autocheckpoint = {pages}")).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open { url: url.to_string(), source })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: url.to_string(), source })?;
        let chains = Chains::load(&pool).await?;
        Ok(SqliteStore { pool, chains: std::sync::Arc::new(parking_lot::Mutex::new(chains)) })
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

    /// Saves the heads that moved since the last save, now.
    async fn save_heads_now(&self) -> Result<(), StoreError> {
        let Some(unsaved) = self.chains.lock().unsaved(true) else { return Ok(()) };
        let mut tx = self.pool.begin().await?;
        unsaved.write(&mut tx).await?;
        tx.commit().await?;
        self.chains.lock().saved(&unsaved);
        Ok(())
    }

    /// The pool, for tests that reach under the API (corrupting a row, injecting a fault).
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl super::Store for SqliteStore {
    async fn load_servers(&self) -> Result<Vec<StoredServer>, StoreError> {
        self.save_heads_now().await?;
        let rows = sqlx::query(
            // The row is written when level or state change; the newest poll row has the
            // time, offset and delay of the last poll.
            "SELECT s.name, s.address, s.level, s.calm_streak, s.level_since, s.escalated, s.state, s.deficiencies, s.last_error,
               max(s.last_poll_at, COALESCE(p.at, 0)) AS last_poll_at,
               COALESCE(p.clock_offset_ms, s.clock_offset_ms) AS clock_offset_ms,
               COALESCE(p.rtt_ms, s.rtt_ms) AS rtt_ms,
               (SELECT hash FROM compilations c WHERE c.server = s.name ORDER BY id DESC LIMIT 1) AS substance,
               a.by_name AS ack_by, a.at AS ack_at, a.comment AS ack_comment, a.level AS ack_level,
               a.sources AS ack_sources
             FROM servers s
             LEFT JOIN polls p ON p.id = (SELECT last_id FROM poll_heads h WHERE h.server = s.name)
             LEFT JOIN acks a ON a.server = s.name",
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
                let ack = match r.try_get::<Option<String>, _>("ack_by")? {
                    None => None,
                    Some(by) => {
                        let sources: &str = r.try_get("ack_sources")?;
                        let sources = serde_json::from_str(sources).map_err(|e| StoreError::Corrupt {
                            what: format!("acks.sources of {name}"),
                            detail: e.to_string(),
                        })?;
                        Some(Box::new(Ack {
                            by,
                            at: from_ms(r.try_get("ack_at")?),
                            comment: r.try_get("ack_comment")?,
                            level: r.try_get("ack_level")?,
                            sources,
                        }))
                    }
                };
                Ok(StoredServer {
                    facts: ServerFacts {
                        ack,
                        behind: None,
                        address: r.try_get("address")?,
                        level: r.try_get("level")?,
                        calm_streak: r.try_get::<i64, _>("calm_streak")?.clamp(0, i64::from(u32::MAX)) as u32,
                        level_since: r.try_get::<Option<i64>, _>("level_since")?.map(from_ms),
                        escalated: r.try_get::<i64, _>("escalated")? != 0,
                        state: ServerState::parse(r.try_get::<&str, _>("state")?),
                        deficiencies,
                        last_poll_at: r.try_get::<Option<i64>, _>("last_poll_at")?.map(from_ms),
                        last_error: r.try_get("last_error")?,
                        clock_offset_ms: r.try_get("clock_offset_ms")?,
                        rtt_ms: r.try_get("rtt_ms")?,
                        name,
                    },
                    substance: r.try_get("substance")?,
                })
            })
            .collect()
    }

    async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut defs = Vec::with_capacity(batch.facts.len());
        for f in &batch.facts {
            defs.push(serde_json::to_string(&f.deficiencies).map_err(|e| StoreError::Corrupt {
                what: format!("the deficiencies of {}", f.name),
                detail: e.to_string(),
            })?);
        }
        let facts: Vec<(&ServerFacts, &String)> = batch.facts.iter().zip(&defs).collect();
        insert_rows(
            &mut tx,
            "INSERT INTO servers (name, address, level, calm_streak, level_since, escalated, state, deficiencies, last_poll_at, last_error, clock_offset_ms, rtt_ms)",
            "ON CONFLICT (name) DO UPDATE SET address = excluded.address, level = excluded.level,
               calm_streak = excluded.calm_streak, level_since = excluded.level_since, escalated = excluded.escalated,
               state = excluded.state, deficiencies = excluded.deficiencies,
               last_poll_at = excluded.last_poll_at, last_error = excluded.last_error,
               clock_offset_ms = excluded.clock_offset_ms, rtt_ms = excluded.rtt_ms",
            &facts,
            |mut b, (f, defs)| {
                b.push_bind(&f.name)
                    .push_bind(&f.address)
                    .push_bind(&f.level)
                    .push_bind(i64::from(f.calm_streak))
                    .push_bind(f.level_since.map(ms))
                    .push_bind(i64::from(f.escalated))
                    .push_bind(f.state.as_str())
                    .push_bind(defs.as_str())
                    .push_bind(f.last_poll_at.map(ms))
                    .push_bind(&f.last_error)
                    .push_bind(f.clock_offset_ms)
                    .push_bind(f.rtt_ms);
            },
        )
        .await?;

        // Chain each poll row to the server's previous one; the in-memory chains change only
        // once the transaction has committed, so a failed batch is retried over the same heads.
        let (links, unsaved) = {
            let mut chains = self.chains.lock();
            (chains.link(batch.polls.iter().map(|(server, _)| server.as_str())), chains.unsaved(false))
        };
        let polls: Vec<(&(String, PollRow), &(i64, Option<i64>))> = batch.polls.iter().zip(&links.rows).collect();
        insert_rows(
            &mut tx,
            "INSERT INTO polls (id, prev_id, server, at, state, level, rtt_ms, clock_offset_ms, error, deficiencies)",
            "",
            &polls,
            |mut b, ((server, p), (id, prev))| {
                b.push_bind(*id)
                    .push_bind(*prev)
                    .push_bind(server)
                    .push_bind(ms(p.at))
                    .push_bind(p.state.as_str())
                    .push_bind(&p.level)
                    .push_bind(p.rtt_ms)
                    .push_bind(p.clock_offset_ms)
                    .push_bind(&p.error)
                    .push_bind(i64::from(p.deficiencies));
            },
        )
        .await?;
        if let Some(unsaved) = &unsaved {
            unsaved.write(&mut tx).await?;
        }
        let bodies: Vec<String> = batch.compilations.iter().map(|(_, _, c)| body_text(&c.body)).collect();
        let compilations: Vec<_> = batch.compilations.iter().zip(&bodies).collect();
        insert_rows(
            &mut tx,
            "INSERT INTO compilations (server, at, hash, body)",
            "",
            &compilations,
            |mut b, ((server, at, c), body)| {
                b.push_bind(server).push_bind(ms(*at)).push_bind(c.hash).push_bind(body.as_str());
            },
        )
        .await?;
        insert_rows(
            &mut tx,
            "INSERT INTO clock_corrections (server, at, offset_ms, correction_ms, outcome, detail)",
            "",
            &batch.clock_corrections,
            |mut b, (server, c)| {
                b.push_bind(server)
                    .push_bind(ms(c.at))
                    .push_bind(c.offset_ms)
                    .push_bind(c.correction_ms)
                    .push_bind(&c.outcome)
                    .push_bind(&c.detail);
            },
        )
        .await?;
        insert_rows(
            &mut tx,
            "INSERT INTO transitions (server, at, from_level, to_level, reason)",
            "",
            &batch.transitions,
            |mut b, (server, t)| {
                b.push_bind(server).push_bind(ms(t.at)).push_bind(&t.from).push_bind(&t.to).push_bind(&t.reason);
            },
        )
        .await?;
        write_acks(&mut tx, &batch.acks).await?;
        insert_rows(
            &mut tx,
            "INSERT INTO operator_actions (server, at, by_name, action, detail)",
            "",
            &batch.actions,
            |mut b, (server, a)| {
                b.push_bind(server).push_bind(ms(a.at)).push_bind(&a.by).push_bind(&a.action).push_bind(&a.detail);
            },
        )
        .await?;
        tx.commit().await?;
        let mut chains = self.chains.lock();
        chains.commit(links);
        if let Some(unsaved) = &unsaved {
            chains.saved(unsaved);
        }
        Ok(())
    }

    async fn save_latest(&self, latest: &[(String, bytes::Bytes)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let latest: Vec<(&str, &bytes::Bytes)> = latest.iter().map(|(n, b)| (n.as_str(), b)).collect();
        save_latest(&mut tx, &latest).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn compilation(&self, server: &str) -> Result<Option<String>, StoreError> {
        // The latest saved at the last clean stop, or the newest history row when newer
        // (after a crash, or a change since): see migration 0009.
        let row = sqlx::query(
            "SELECT body FROM (
                 SELECT body, at FROM latest_compilations WHERE server = ?1
                 UNION ALL
                 SELECT body, at FROM compilations
                 WHERE id = (SELECT max(id) FROM compilations WHERE server = ?1))
             ORDER BY at DESC LIMIT 1",
        )
        .bind(server)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("body")?),
            None => None,
        })
    }

    async fn compilations(&self, server: &str, limit: u32) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
        let rows = sqlx::query("SELECT at, body FROM compilations WHERE server = ? ORDER BY id DESC LIMIT ?")
            .bind(server)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((from_ms(r.try_get("at")?), r.try_get("body")?))).collect()
    }

    async fn history(&self, server: &str, limit: u32) -> Result<History, StoreError> {
        if limit == 0 {
            // The chain's recursion starts with one row; none of each kind is none.
            return Ok(History::default());
        }
        // The server's chain of poll rows, from its head back (see migration 0005).
        let head = self.chains.lock().head(server);
        let rows = sqlx::query(
            "WITH RECURSIVE chain(id, n) AS (
                 SELECT ?3, 1 WHERE ?3 IS NOT NULL
                 UNION ALL
                 SELECT p.prev_id, c.n + 1 FROM polls p JOIN chain c ON p.id = c.id
                 WHERE p.prev_id IS NOT NULL AND c.n < ?2)
             SELECT p.at, p.state, p.level, p.rtt_ms, p.clock_offset_ms, p.error, p.deficiencies
             FROM chain JOIN polls p ON p.id = chain.id ORDER BY p.id DESC",
        )
        .bind(server)
        .bind(i64::from(limit))
        .bind(head)
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
        let actions = self
            .newest("SELECT at, by_name, action, detail FROM operator_actions", server, limit, |r| {
                Ok(ActionRow {
                    at: from_ms(r.try_get("at")?),
                    by: r.try_get("by_name")?,
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                })
            })
            .await?;
        Ok(History { polls, transitions, clock_corrections, actions })
    }

    async fn prune(&self, retention: &Retention, now: DateTime<Utc>) -> Result<Pruned, StoreError> {
        prune::prune(&self.pool, retention, now).await
    }

    async fn load_notify_memory(&self, only: Option<&str>) -> Result<Vec<NotifyRow>, StoreError> {
        const ALL: &str = "SELECT server, level, state, flapping, seen_state, changes, seq FROM notify_state";
        let rows = match only {
            None => sqlx::query(ALL).fetch_all(&self.pool).await?,
            Some(server) => {
                let one = format!("{ALL} WHERE server = ?");
                sqlx::query(&one).bind(server).fetch_all(&self.pool).await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let server: String = r.try_get("server")?;
            let changes: Vec<i64> = serde_json::from_str(r.try_get::<&str, _>("changes")?).map_err(|e| {
                StoreError::Corrupt { what: format!("notify_state.changes of {server}"), detail: e.to_string() }
            })?;
            out.push(NotifyRow {
                level: r.try_get("level")?,
                state: ServerState::parse(r.try_get::<&str, _>("state")?),
                flapping: r.try_get::<i64, _>("flapping")? != 0,
                seen_state: ServerState::parse(r.try_get::<&str, _>("seen_state")?),
                changes: changes.into_iter().map(from_ms).collect(),
                seq: r.try_get("seq")?,
                server,
            });
        }
        Ok(out)
    }

    async fn save_notify_memory(&self, m: &NotifyRow) -> Result<(), StoreError> {
        save_memory(m)?.execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_notice(&self, claim: &NoticeClaim, memory: Option<&NotifyRow>) -> Result<bool, StoreError> {
        let save = memory.map(save_memory).transpose()?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO notices (key, server, kind, node, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&claim.key)
        .bind(&claim.server)
        .bind(&claim.kind)
        .bind(&claim.node)
        .bind(ms(claim.at))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false); // rolled back: nothing written
        }
        if let Some(save) = save {
            save.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn count_rows(&self, table: &crate::store::copy::Table) -> Result<u64, StoreError> {
        self.count(table).await
    }

    async fn max_id(&self, table: &crate::store::copy::Table) -> Result<Option<i64>, StoreError> {
        self.highest_id(table).await
    }

    async fn export_rows(
        &self,
        table: &crate::store::copy::Table,
        after: &crate::store::copy::After,
        limit: u32,
    ) -> Result<Vec<crate::store::copy::Row>, StoreError> {
        self.export(table, after, limit).await
    }

    async fn import_rows(
        &self,
        table: &crate::store::copy::Table,
        rows: &[crate::store::copy::Row],
    ) -> Result<(), StoreError> {
        self.import(table, rows).await
    }

    async fn after_import(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn add_downtime(&self, d: &Downtime) -> Result<Downtime, StoreError> {
        let id = sqlx::query(
            "INSERT INTO downtimes (server, starts_at, ends_at, comment, created_by, created_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&d.server)
        .bind(ms(d.starts_at))
        .bind(ms(d.ends_at))
        .bind(&d.comment)
        .bind(&d.by)
        .bind(ms(d.created_at))
        .fetch_one(&self.pool)
        .await?
        .try_get("id")?;
        Ok(Downtime { id, ..d.clone() })
    }

    async fn open_downtimes(&self) -> Result<Vec<Downtime>, StoreError> {
        let rows =
            sqlx::query(&format!("{DOWNTIME_COLUMNS} WHERE closed = 0 ORDER BY id")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(downtime).collect::<Result<Vec<_>, sqlx::Error>>()?)
    }

    async fn close_downtime(&self, id: i64) -> Result<Option<Downtime>, StoreError> {
        let row = sqlx::query(
            "UPDATE downtimes SET closed = 1 WHERE id = ? AND closed = 0
             RETURNING id, server, starts_at, ends_at, comment, created_by, created_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(downtime).transpose()?)
    }

    async fn close(&self) {
        if let Err(e) = self.save_heads_now().await {
            // Nothing is lost: the next start reads the heads back from the poll rows.
            tracing::warn!(error = %e, "poll heads not saved at close; the next start finds them again");
        }
        self.pool.close().await;
    }
}

const DOWNTIME_COLUMNS: &str = "SELECT id, server, starts_at, ends_at, comment, created_by, created_at FROM downtimes";

fn downtime(r: &sqlx::sqlite::SqliteRow) -> Result<Downtime, sqlx::Error> {
    Ok(Downtime {
        id: r.try_get("id")?,
        server: r.try_get("server")?,
        starts_at: from_ms(r.try_get("starts_at")?),
        ends_at: from_ms(r.try_get("ends_at")?),
        comment: r.try_get("comment")?,
        by: r.try_get("created_by")?,
        created_at: from_ms(r.try_get("created_at")?),
    })
}

/// Applies acknowledgement changes in order: a set replaces the server's ack; an end
/// removes it only if it is still the one given at that time (a newer ack stays).
async fn write_acks(tx: &mut sqlx::Transaction<'_, Sqlite>, acks: &[(String, AckChange)]) -> Result<(), StoreError> {
    for (server, change) in acks {
        match change {
            AckChange::Set(a) => {
                let sources = serde_json::to_string(&a.sources).map_err(|e| StoreError::Corrupt {
                    what: format!("the acknowledged sources of {server}"),
                    detail: e.to_string(),
                })?;
                sqlx::query(
                    "INSERT INTO acks (server, by_name, at, comment, level, sources) VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (server) DO UPDATE SET by_name = excluded.by_name, at = excluded.at,
                       comment = excluded.comment, level = excluded.level, sources = excluded.sources",
                )
                .bind(server)
                .bind(&a.by)
                .bind(ms(a.at))
                .bind(&a.comment)
                .bind(&a.level)
                .bind(sources)
                .execute(&mut **tx)
                .await?;
            }
            AckChange::Ended { at } => {
                sqlx::query("DELETE FROM acks WHERE server = ? AND at = ?")
                    .bind(server)
                    .bind(ms(*at))
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// A reply as stored text. It was parsed as JSON, so it is UTF-8 but for the contents of
/// fields the poller skips; those are replaced rather than the reply refused.
fn body_text(b: &bytes::Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The upsert of one server's notification memory; a row older than the stored one (a
/// lower `seq`: written by a node that has since lost the server) changes nothing.
fn save_memory(m: &NotifyRow) -> Result<sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>>, StoreError> {
    let changes: Vec<i64> = m.changes.iter().map(|t| ms(*t)).collect();
    let changes = serde_json::to_string(&changes)
        .map_err(|e| StoreError::Corrupt { what: format!("notify changes of {}", m.server), detail: e.to_string() })?;
    Ok(sqlx::query(
        "INSERT INTO notify_state (server, level, state, flapping, seen_state, changes, updated_at, seq)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (server) DO UPDATE SET level = excluded.level, state = excluded.state,
           flapping = excluded.flapping, seen_state = excluded.seen_state, changes = excluded.changes,
           updated_at = excluded.updated_at, seq = excluded.seq
         WHERE notify_state.seq <= excluded.seq",
    )
    .bind(&m.server)
    .bind(&m.level)
    .bind(m.state.as_str())
    .bind(i64::from(m.flapping))
    .bind(m.seen_state.as_str())
    .bind(changes)
    .bind(ms(Utc::now()))
    .bind(m.seq))
}

/// Upserts servers' latest compilations, many rows to a statement; `latest` names each
/// server once.
async fn save_latest(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    latest: &[(&str, &bytes::Bytes)],
) -> Result<(), StoreError> {
    let bodies: Vec<String> = latest.iter().map(|(_, b)| body_text(b)).collect();
    let rows: Vec<(&str, &String)> = latest.iter().map(|(n, _)| *n).zip(&bodies).collect();
    let at = ms(Utc::now());
    insert_rows(
        tx,
        "INSERT INTO latest_compilations (server, body, at)",
        "ON CONFLICT (server) DO UPDATE SET body = excluded.body, at = excluded.at",
        &rows,
        |mut b, (name, body)| {
            b.push_bind(*name).push_bind(body.as_str()).push_bind(at);
        },
    )
    .await
}

#[cfg(test)]
mod tests;
