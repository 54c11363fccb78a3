//! The PostgreSQL side of `rollcall store copy` ([`crate::store::copy`]): pages of any table
//! out as plain values, and in again as one `UNNEST` statement per page, ids kept; after
//! each table the id sequences move above the copied ids.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::PostgresStore;
use crate::store::copy::{After, Kind, Row as CopyRow, Table, Value, TABLES};
use crate::store::StoreError;

/// The column as selected: every integer as `bigint`, every real as `float8`, so one Rust
/// type reads each kind whatever the column's own width.
fn select(column: &str, kind: Kind) -> String {
    match kind {
        Kind::Int => format!("{column}::bigint"),
        Kind::Real => format!("{column}::float8"),
        Kind::Text | Kind::Bool => column.to_string(),
    }
}

fn value(r: &PgRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Kind::Int => r.try_get::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Int),
        Kind::Bool => r.try_get::<Option<bool>, _>(i)?.map_or(Value::Null, |b| Value::Int(i64::from(b))),
        Kind::Real => r.try_get::<Option<f64>, _>(i)?.map_or(Value::Null, Value::Real),
        Kind::Text => r.try_get::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
    })
}

/// A value that does not fit its column's kind.
fn mistyped(table: &Table, column: &str, v: &Value) -> StoreError {
    StoreError::Corrupt { what: format!("{}.{column} being copied", table.name), detail: format!("{v:?}") }
}

impl PostgresStore {
    pub(super) async fn count(&self, table: &Table) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", table.name)).fetch_one(&self.pool).await?;
        Ok(n.max(0) as u64)
    }

    pub(super) async fn highest_id(&self, table: &Table) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(&format!("SELECT max(id) FROM {}", table.name)).fetch_one(&self.pool).await?)
    }

    pub(super) async fn export(&self, table: &Table, after: &After, limit: u32) -> Result<Vec<CopyRow>, StoreError> {
        let cols: Vec<String> = table.columns.iter().map(|(c, k)| select(c, *k)).collect();
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {} FROM {}", cols.join(", "), table.name));
        // Names compare byte-wise, as SQLite's do, in the page's bound and its order alike
        // (the database's own collation could order them otherwise and skip rows).
        let key = if table.has_id() { table.key.to_string() } else { format!("{} COLLATE \"C\"", table.key) };
        match after {
            After::Start => {}
            After::Id(id) => {
                q.push(format!(" WHERE {key} > ")).push_bind(*id);
            }
            After::Name(name) => {
                q.push(format!(" WHERE {key} > ")).push_bind(name.as_str());
            }
        }
        q.push(format!(" ORDER BY {key} LIMIT ")).push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| table.columns.iter().enumerate().map(|(i, (_, k))| value(r, i, *k)).collect())
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn import(&self, table: &Table, rows: &[CopyRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut params = Vec::with_capacity(table.columns.len());
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("INSERT INTO {} ({}) SELECT * FROM UNNEST(", table.name, table.column_list()));
        for (i, (column, kind)) in table.columns.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            let cells = rows.iter().map(|r| r.get(i).unwrap_or(&Value::Null));
            match kind {
                Kind::Int => {
                    let v: Vec<Option<i64>> = cells
                        .map(|c| match c {
                            Value::Null => Ok(None),
                            Value::Int(n) => Ok(Some(*n)),
                            other => Err(mistyped(table, column, other)),
                        })
                        .collect::<Result<_, _>>()?;
                    q.push_bind(v).push("::bigint[]");
                }
                Kind::Bool => {
                    let v: Vec<Option<bool>> = cells
                        .map(|c| match c {
                            Value::Null => Ok(None),
                            Value::Int(n) => Ok(Some(*n != 0)),
                            other => Err(mistyped(table, column, other)),
                        })
                        .collect::<Result<_, _>>()?;
                    q.push_bind(v).push("::boolean[]");
                }
                Kind::Real => {
                    let v: Vec<Option<f64>> = cells
                        .map(|c| match c {
                            Value::Null => Ok(None),
                            Value::Real(f) => Ok(Some(*f)),
                            Value::Int(n) => Ok(Some(*n as f64)),
                            other => Err(mistyped(table, column, other)),
                        })
                        .collect::<Result<_, _>>()?;
                    q.push_bind(v).push("::float8[]");
                }
                Kind::Text => {
                    let v: Vec<Option<String>> = cells
                        .map(|c| match c {
                            Value::Null => Ok(None),
                            Value::Text(t) => Ok(Some(t.replace('\0', "\u{FFFD}"))),
                            other => Err(mistyped(table, column, other)),
                        })
                        .collect::<Result<_, _>>()?;
                    q.push_bind(v).push("::text[]");
                }
            }
            params.push(*column);
        }
        q.push(")");
        if table.has_id() {
            q.push(" ON CONFLICT (id) DO NOTHING");
        } else {
            let set: Vec<String> = params.iter().skip(1).map(|c| format!("{c} = excluded.{c}")).collect();
            q.push(format!(" ON CONFLICT ({}) DO UPDATE SET {}", table.key, set.join(", ")));
        }
        q.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Each id sequence above the highest id its table holds, so the writer's next rows
    /// never collide with copied ones.
    pub(super) async fn advance_sequences(&self) -> Result<(), StoreError> {
        for t in TABLES.iter().filter(|t| t.has_id()) {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'), max(id)) FROM {0} HAVING max(id) IS NOT NULL",
                t.name
            ))
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}
