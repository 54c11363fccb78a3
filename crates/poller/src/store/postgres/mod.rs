//! The PostgreSQL backend: for sites that run PostgreSQL already, and for several pollers
//! sharing one fleet (SPEC section 12). Migrations in `crates/poller/migrations/postgres`,
//! embedded in the binary; the tables are the SQLite backend's, so rows move between them
//! as they are.
//!
//! Rules it keeps:
//! - One pool of connections; every statement is prepared once per connection (sqlx's
//!   statement cache) and each batch table is written by ONE statement whatever the batch
//!   size: the rows travel as arrays and `UNNEST` turns them back into rows, so a batch of
//!   5,000 polls is one round trip per table, not 5,000 (nor 80 chunks).
//! - A batch is one transaction: all of it or nothing (the writer keeps and retries it).
//! - Poll rows are found per server by the `(server, id)` index (PostgreSQL's B-tree
//!   appends cheaply; SQLite's chains are not needed) and for pruning by a BRIN index on
//!   `at`, a few pages for the whole table.
//! - The password never reaches a log, an error or `Debug`: it comes from
//!   `database_password_file` (or the URL, which is shown with the password masked).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rollcall_config::Secret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::{Batch, Pruned, Retention, StoreError};
use crate::model::{
    Ack, AckChange, ActionRow, ClockCorrectionRow, Downtime, History, NoticeClaim, NotifyRow, PollRow, ServerFacts,
    ServerState, StoredServer, TransitionRow,
};

mod cluster;
mod copy;
mod prune;

/// The PostgreSQL store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// Connections in the pool: the writer, the notifier, and API reads.
const MAX_CONNECTIONS: u32 = 8;

impl PostgresStore {
    /// Connects to and migrates the database at `url` (`postgres://USER@HOST[:PORT]/DB`),
    /// with `password` when given (else the URL's, or libpq's usual `PGPASSWORD`).
    pub async fn open(url: &str, password: Option<&Secret>) -> Result<PostgresStore, StoreError> {
        let shown = crate::config::redact_url(url);
        let mut opts =
            PgConnectOptions::from_str(url).map_err(|source| StoreError::Open { url: shown.clone(), source })?;
        if let Some(p) = password {
            opts = opts.password(p.expose());
        }
        opts = opts.application_name("rollcall-poller");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open { url: shown.clone(), source })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: shown, source })?;
        Ok(PostgresStore { pool })
    }

    /// The newest `limit` rows of one server from a history table (`select` names the
    /// columns and table; every history table has `server` and a growing `id`).
    async fn newest<T>(
        &self,
        select: &str,
        server: &str,
        limit: u32,
        row: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!("{select} WHERE server = $1 ORDER BY id DESC LIMIT $2");
        let rows = sqlx::query(&sql).bind(server).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row).collect::<Result<Vec<_>, sqlx::Error>>()?)
    }
}

/// The upsert of one server's notification memory; a row older than the stored one (a
/// lower `seq`: written by a node that has since lost the server) changes nothing.
fn save_memory(
    m: &NotifyRow,
) -> Result<sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let changes: Vec<i64> = m.changes.iter().map(|t| ms(*t)).collect();
    let changes = serde_json::to_string(&changes)
        .map_err(|e| StoreError::Corrupt { what: format!("notify changes of {}", m.server), detail: e.to_string() })?;
    Ok(sqlx::query(
        "INSERT INTO notify_state (server, level, state, flapping, seen_state, changes, updated_at, seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (server) DO UPDATE SET level = excluded.level, state = excluded.state,
           flapping = excluded.flapping, seen_state = excluded.seen_state, changes = excluded.changes,
           updated_at = excluded.updated_at, seq = excluded.seq
         WHERE notify_state.seq <= excluded.seq",
    )
    .bind(&m.server)
    .bind(&m.level)
    .bind(m.state.as_str())
    .bind(m.flapping)
    .bind(m.seen_state.as_str())
    .bind(changes)
    .bind(ms(Utc::now()))
    .bind(m.seq))
}

/// One column of `rows`, as an array to bind (a batch table is one `UNNEST` of such arrays).
fn column<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

#[async_trait::async_trait]
impl super::Store for PostgresStore {
    async fn load_servers(&self) -> Result<Vec<StoredServer>, StoreError> {
        let rows = sqlx::query(
            // The row is written when level or state change; the newest poll row has the
            // time, offset and delay of the last poll.
            "SELECT s.name, s.address, s.level, s.calm_streak, s.level_since, s.escalated, s.state, s.deficiencies,
               s.last_error,
               GREATEST(s.last_poll_at, p.at) AS last_poll_at,
               COALESCE(p.clock_offset_ms, s.clock_offset_ms) AS clock_offset_ms,
               COALESCE(p.rtt_ms, s.rtt_ms) AS rtt_ms,
               c.hash AS substance,
               a.by_name AS ack_by, a.at AS ack_at, a.comment AS ack_comment, a.level AS ack_level,
               a.sources AS ack_sources
             FROM servers s
             LEFT JOIN acks a ON a.server = s.name
             LEFT JOIN LATERAL (SELECT at, clock_offset_ms, rtt_ms FROM polls
                                WHERE polls.server = s.name ORDER BY id DESC LIMIT 1) p ON true
             LEFT JOIN LATERAL (SELECT hash FROM compilations
                                WHERE compilations.server = s.name ORDER BY id DESC LIMIT 1) c ON true",
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
                        calm_streak: r.try_get::<i32, _>("calm_streak")?.max(0) as u32,
                        level_since: r.try_get::<Option<i64>, _>("level_since")?.map(from_ms),
                        escalated: r.try_get("escalated")?,
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
        if !batch.facts.is_empty() {
            let f = &batch.facts;
            let mut defs = Vec::with_capacity(f.len());
            for s in f {
                defs.push(serde_json::to_string(&s.deficiencies).map_err(|e| StoreError::Corrupt {
                    what: format!("the deficiencies of {}", s.name),
                    detail: e.to_string(),
                })?);
            }
            sqlx::query(
                "INSERT INTO servers (name, address, level, calm_streak, state, deficiencies, last_poll_at,
                                      last_error, clock_offset_ms, rtt_ms, level_since, escalated)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                                      $7::bigint[], $8::text[], $9::float8[], $10::float8[], $11::bigint[],
                                      $12::boolean[])
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, level = excluded.level,
                   calm_streak = excluded.calm_streak, state = excluded.state,
                   level_since = excluded.level_since, escalated = excluded.escalated,
                   deficiencies = excluded.deficiencies, last_poll_at = excluded.last_poll_at,
                   last_error = excluded.last_error, clock_offset_ms = excluded.clock_offset_ms,
                   rtt_ms = excluded.rtt_ms",
            )
            .bind(column(f, |s| s.name.as_str()))
            .bind(column(f, |s| s.address.as_str()))
            .bind(column(f, |s| s.level.as_str()))
            .bind(column(f, |s| i32::try_from(s.calm_streak).unwrap_or(i32::MAX)))
            .bind(column(f, |s| s.state.as_str()))
            .bind(&defs)
            .bind(column(f, |s| s.last_poll_at.map(ms)))
            .bind(column(f, |s| s.last_error.as_deref()))
            .bind(column(f, |s| s.clock_offset_ms))
            .bind(column(f, |s| s.rtt_ms))
            .bind(column(f, |s| s.level_since.map(ms)))
            .bind(column(f, |s| s.escalated))
            .execute(&mut *tx)
            .await?;
        }
        if !batch.polls.is_empty() {
            let p = &batch.polls;
            sqlx::query(
                "INSERT INTO polls (server, at, state, level, rtt_ms, clock_offset_ms, error, deficiencies)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[],
                                      $6::float8[], $7::text[], $8::int[])",
            )
            .bind(column(p, |(s, _)| s.as_str()))
            .bind(column(p, |(_, r)| ms(r.at)))
            .bind(column(p, |(_, r)| r.state.as_str()))
            .bind(column(p, |(_, r)| r.level.as_str()))
            .bind(column(p, |(_, r)| r.rtt_ms))
            .bind(column(p, |(_, r)| r.clock_offset_ms))
            .bind(column(p, |(_, r)| r.error.as_deref()))
            .bind(column(p, |(_, r)| i32::try_from(r.deficiencies).unwrap_or(i32::MAX)))
            .execute(&mut *tx)
            .await?;
        }
        if !batch.compilations.is_empty() {
            let c = &batch.compilations;
            let bodies: Vec<String> = c.iter().map(|(_, _, c)| body_text(&c.body)).collect();
            sqlx::query(
                "INSERT INTO compilations (server, at, hash, body)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[])",
            )
            .bind(column(c, |(s, _, _)| s.as_str()))
            .bind(column(c, |(_, at, _)| ms(*at)))
            .bind(column(c, |(_, _, c)| c.hash))
            .bind(&bodies)
            .execute(&mut *tx)
            .await?;
        }
        if !batch.clock_corrections.is_empty() {
            let c = &batch.clock_corrections;
            sqlx::query(
                "INSERT INTO clock_corrections (server, at, offset_ms, correction_ms, outcome, detail)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::text[], $6::text[])",
            )
            .bind(column(c, |(s, _)| s.as_str()))
            .bind(column(c, |(_, r)| ms(r.at)))
            .bind(column(c, |(_, r)| r.offset_ms))
            .bind(column(c, |(_, r)| r.correction_ms))
            .bind(column(c, |(_, r)| r.outcome.as_str()))
            .bind(column(c, |(_, r)| r.detail.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        if !batch.transitions.is_empty() {
            let t = &batch.transitions;
            sqlx::query(
                "INSERT INTO transitions (server, at, from_level, to_level, reason)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])",
            )
            .bind(column(t, |(s, _)| s.as_str()))
            .bind(column(t, |(_, r)| ms(r.at)))
            .bind(column(t, |(_, r)| r.from.as_str()))
            .bind(column(t, |(_, r)| r.to.as_str()))
            .bind(column(t, |(_, r)| r.reason.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        write_acks(&mut tx, &batch.acks).await?;
        if !batch.actions.is_empty() {
            let a = &batch.actions;
            sqlx::query(
                "INSERT INTO operator_actions (server, at, by_name, action, detail)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])",
            )
            .bind(column(a, |(s, _)| s.as_str()))
            .bind(column(a, |(_, r)| ms(r.at)))
            .bind(column(a, |(_, r)| r.by.as_str()))
            .bind(column(a, |(_, r)| r.action.as_str()))
            .bind(column(a, |(_, r)| r.detail.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
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
        // (after a crash, a change since, or another node's polls): migration 0005.
        let row = sqlx::query(
            "SELECT body FROM (
                 SELECT body, at FROM latest_compilations WHERE server = $1
                 UNION ALL
                 (SELECT body, at FROM compilations WHERE server = $1 ORDER BY id DESC LIMIT 1)) latest
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
        let rows = self
            .newest("SELECT at, body FROM compilations", server, limit, |r| {
                Ok((from_ms(r.try_get("at")?), r.try_get("body")?))
            })
            .await?;
        Ok(rows)
    }

    async fn history(&self, server: &str, limit: u32) -> Result<History, StoreError> {
        let polls = self
            .newest(
                "SELECT at, state, level, rtt_ms, clock_offset_ms, error, deficiencies FROM polls",
                server,
                limit,
                |r| {
                    Ok(PollRow {
                        at: from_ms(r.try_get("at")?),
                        state: ServerState::parse(r.try_get::<&str, _>("state")?),
                        level: r.try_get("level")?,
                        rtt_ms: r.try_get("rtt_ms")?,
                        clock_offset_ms: r.try_get("clock_offset_ms")?,
                        error: r.try_get("error")?,
                        deficiencies: r.try_get::<i32, _>("deficiencies")?.max(0) as u32,
                    })
                },
            )
            .await?;
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
                let one = format!("{ALL} WHERE server = $1");
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
                flapping: r.try_get("flapping")?,
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
        // The UNIQUE key decides: of two nodes claiming the same notice at once, the second
        // waits for the first's transaction and then inserts nothing.
        let inserted = sqlx::query(
            "INSERT INTO notices (key, server, kind, node, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
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
        self.advance_sequences().await
    }

    async fn add_downtime(&self, d: &Downtime) -> Result<Downtime, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO downtimes (server, starts_at, ends_at, comment, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&d.server)
        .bind(ms(d.starts_at))
        .bind(ms(d.ends_at))
        .bind(&d.comment)
        .bind(&d.by)
        .bind(ms(d.created_at))
        .fetch_one(&self.pool)
        .await?;
        Ok(Downtime { id, ..d.clone() })
    }

    async fn open_downtimes(&self) -> Result<Vec<Downtime>, StoreError> {
        let rows =
            sqlx::query(&format!("{DOWNTIME_COLUMNS} WHERE NOT closed ORDER BY id")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(downtime).collect::<Result<Vec<_>, sqlx::Error>>()?)
    }

    async fn close_downtime(&self, id: i64) -> Result<Option<Downtime>, StoreError> {
        let row = sqlx::query(
            "UPDATE downtimes SET closed = true WHERE id = $1 AND NOT closed
             RETURNING id, server, starts_at, ends_at, comment, created_by, created_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(downtime).transpose()?)
    }

    async fn heartbeat(&self, node: &str, lease: Duration) -> Result<super::ClusterView, StoreError> {
        cluster::heartbeat(&self.pool, node, lease).await
    }

    async fn claim(&self, node: &str, servers: &[String], lease: Duration) -> Result<Vec<String>, StoreError> {
        cluster::claim(&self.pool, node, servers, lease).await
    }

    async fn release(&self, node: &str, servers: &[String]) -> Result<(), StoreError> {
        cluster::release(&self.pool, node, servers).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// A reply as stored text. It was parsed as JSON, so it is UTF-8 but for the contents of
/// fields the poller skips; those are replaced rather than the reply refused. PostgreSQL's
/// text cannot hold NUL, which JSON only carries escaped; a raw one is replaced too.
fn body_text(b: &bytes::Bytes) -> String {
    let s = String::from_utf8_lossy(b);
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.into_owned()
    }
}

const DOWNTIME_COLUMNS: &str = "SELECT id, server, starts_at, ends_at, comment, created_by, created_at FROM downtimes";

fn downtime(r: &PgRow) -> Result<Downtime, sqlx::Error> {
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
async fn write_acks(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    acks: &[(String, AckChange)],
) -> Result<(), StoreError> {
    for (server, change) in acks {
        match change {
            AckChange::Set(a) => {
                let sources = serde_json::to_string(&a.sources).map_err(|e| StoreError::Corrupt {
                    what: format!("the acknowledged sources of {server}"),
                    detail: e.to_string(),
                })?;
                sqlx::query(
                    "INSERT INTO acks (server, by_name, at, comment, level, sources) VALUES ($1, $2, $3, $4, $5, $6)
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
                sqlx::query("DELETE FROM acks WHERE server = $1 AND at = $2")
                    .bind(server)
                    .bind(ms(*at))
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Upserts servers' latest compilations in one statement; `latest` names each server once.
async fn save_latest(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    latest: &[(&str, &bytes::Bytes)],
) -> Result<(), StoreError> {
    if latest.is_empty() {
        return Ok(());
    }
    let bodies: Vec<String> = latest.iter().map(|(_, b)| body_text(b)).collect();
    sqlx::query(
        "INSERT INTO latest_compilations (server, body, at) SELECT *, $3 FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (server) DO UPDATE SET body = excluded.body, at = excluded.at",
    )
    .bind(column(latest, |(n, _)| *n))
    .bind(&bodies)
    .bind(ms(Utc::now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
