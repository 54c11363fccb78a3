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
    ClockCorrectionRow, History, NotifyRow, PollRow, ServerFacts, ServerState, StoredServer, TransitionRow,
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
            "SELECT s.name, s.address, s.level, s.calm_streak, s.state, s.deficiencies, s.last_error,
               GREATEST(s.last_poll_at, p.at) AS last_poll_at,
               COALESCE(p.clock_offset_ms, s.clock_offset_ms) AS clock_offset_ms,
               COALESCE(p.rtt_ms, s.rtt_ms) AS rtt_ms,
               c.hash AS substance
             FROM servers s
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
                Ok(StoredServer {
                    facts: ServerFacts {
                        address: r.try_get("address")?,
                        level: r.try_get("level")?,
                        calm_streak: r.try_get::<i32, _>("calm_streak")?.max(0) as u32,
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
                                      last_error, clock_offset_ms, rtt_ms)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                                      $7::bigint[], $8::text[], $9::float8[], $10::float8[])
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, level = excluded.level,
                   calm_streak = excluded.calm_streak, state = excluded.state,
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
            save_latest(&mut tx, &batch.latest_compilations()).await?;
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
        let row = sqlx::query("SELECT body FROM latest_compilations WHERE server = $1")
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
        Ok(History { polls, transitions, clock_corrections })
    }

    async fn prune(&self, retention: &Retention, now: DateTime<Utc>) -> Result<Pruned, StoreError> {
        prune::prune(&self.pool, retention, now).await
    }

    async fn load_notify_memory(&self) -> Result<Vec<NotifyRow>, StoreError> {
        let rows = sqlx::query("SELECT server, level, state, flapping, seen_state, changes FROM notify_state")
            .fetch_all(&self.pool)
            .await?;
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
                server,
            });
        }
        Ok(out)
    }

    async fn save_notify_memory(&self, m: &NotifyRow) -> Result<(), StoreError> {
        let changes: Vec<i64> = m.changes.iter().map(|t| ms(*t)).collect();
        let changes = serde_json::to_string(&changes).map_err(|e| StoreError::Corrupt {
            what: format!("notify changes of {}", m.server),
            detail: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO notify_state (server, level, state, flapping, seen_state, changes, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (server) DO UPDATE SET level = excluded.level, state = excluded.state,
               flapping = excluded.flapping, seen_state = excluded.seen_state, changes = excluded.changes,
               updated_at = excluded.updated_at",
        )
        .bind(&m.server)
        .bind(&m.level)
        .bind(m.state.as_str())
        .bind(m.flapping)
        .bind(m.seen_state.as_str())
        .bind(changes)
        .bind(ms(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
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
        "INSERT INTO latest_compilations (server, body) SELECT * FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (server) DO UPDATE SET body = excluded.body",
    )
    .bind(column(latest, |(n, _)| *n))
    .bind(&bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
