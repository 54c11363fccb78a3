//! The SQLite side of `rollcall store copy` ([`crate::store::copy`]): pages of any table out
//! as plain values, and in again. Poll rows coming in are linked into their servers' chains
//! as the writer links its own (migration 0005), their ids kept.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::chains::save_heads;
use super::{insert_rows, SqliteStore};
use crate::store::copy::{After, Kind, Row as CopyRow, Table, Value};
use crate::store::StoreError;

fn value(r: &SqliteRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Kind::Int | Kind::Bool => r.try_get::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Int),
        Kind::Real => r.try_get::<Option<f64>, _>(i)?.map_or(Value::Null, Value::Real),
        Kind::Text => r.try_get::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
    })
}

fn bind<'a>(b: &mut sqlx::query_builder::Separated<'_, 'a, Sqlite, &'static str>, v: &'a Value) {
    match v {
        Value::Null => b.push_bind(None::<i64>),
        Value::Int(i) => b.push_bind(*i),
        Value::Real(f) => b.push_bind(*f),
        Value::Text(t) => b.push_bind(t.as_str()),
    };
}

impl SqliteStore {
    pub(super) async fn count(&self, table: &Table) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", table.name)).fetch_one(&self.pool).await?;
        Ok(n.max(0) as u64)
    }

    pub(super) async fn highest_id(&self, table: &Table) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(&format!("SELECT max(id) FROM {}", table.name)).fetch_one(&self.pool).await?)
    }

    pub(super) async fn export(&self, table: &Table, after: &After, limit: u32) -> Result<Vec<CopyRow>, StoreError> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {} FROM {}", table.column_list(), table.name));
        match after {
            After::Start => {}
            After::Id(id) => {
                q.push(format!(" WHERE {} > ", table.key)).push_bind(*id);
            }
            After::Name(name) => {
                q.push(format!(" WHERE {} > ", table.key)).push_bind(name.as_str());
            }
        }
        q.push(format!(" ORDER BY {} LIMIT ", table.key)).push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| table.columns.iter().enumerate().map(|(i, (_, k))| value(r, i, *k)).collect())
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn import(&self, table: &Table, rows: &[CopyRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let cols = table.column_list();
        if table.name == "polls" {
            return self.import_polls(tx, table, rows).await;
        }
        let tail = if table.has_id() {
            "ON CONFLICT (id) DO NOTHING".to_string()
        } else {
            let set: Vec<String> = table.columns.iter().skip(1).map(|(c, _)| format!("{c} = excluded.{c}")).collect();
            format!("ON CONFLICT ({}) DO UPDATE SET {}", table.key, set.join(", "))
        };
        insert_rows(&mut tx, &format!("INSERT INTO {} ({cols})", table.name), &tail, rows, |mut b, row| {
            for v in row {
                bind(&mut b, v);
            }
        })
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Poll rows keep their ids and join their server's chain; the heads move once the
    /// transaction has committed, as the writer's do.
    async fn import_polls(
        &self,
        mut tx: sqlx::Transaction<'_, Sqlite>,
        table: &Table,
        rows: &[CopyRow],
    ) -> Result<(), StoreError> {
        let mut keyed = Vec::with_capacity(rows.len());
        for row in rows {
            match (row.first().and_then(Value::as_int), row.get(1)) {
                (Some(id), Some(Value::Text(server))) => keyed.push((server.as_str(), id)),
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "polls being copied".into(),
                        detail: "a row without an id and a server".into(),
                    })
                }
            }
        }
        let links = self.chains.lock().adopt(keyed.iter().copied());
        let linked: Vec<(&CopyRow, Option<i64>)> = rows.iter().zip(links.rows.iter().map(|(_, prev)| *prev)).collect();
        insert_rows(
            &mut tx,
            &format!("INSERT INTO polls ({}, prev_id)", table.column_list()),
            "ON CONFLICT (id) DO NOTHING",
            &linked,
            |mut b, (row, prev)| {
                for v in row.iter() {
                    bind(&mut b, v);
                }
                b.push_bind(*prev);
            },
        )
        .await?;
        let heads: Vec<(&str, i64)> = links.heads.iter().map(|(k, v)| (*k, *v)).collect();
        save_heads(&mut tx, &heads).await?;
        tx.commit().await?;
        self.chains.lock().commit(links);
        Ok(())
    }
}
