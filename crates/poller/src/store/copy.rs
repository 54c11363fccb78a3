//! Copying a whole store to another (`rollcall store copy --from URL --to URL`): a SQLite
//! installation moved to PostgreSQL, or back, history included.
//!
//! Rules it keeps:
//! - Every backend has the same tables and columns ([`TABLES`]); rows travel as plain
//!   values ([`Value`]) a page at a time, so memory stays bounded however long the history.
//! - Idempotent and resumable: rows with an id keep it, and a table is copied from above the
//!   highest id the destination already has (an interrupted copy goes on where it stopped;
//!   a finished one copies nothing again); rows keyed by server are upserted.
//! - Tables are copied in [`TABLES`]' order, history before the servers' facts and
//!   notification memory, so a destination that a poller opens mid-copy never holds facts
//!   newer than their history.
//! - The destination is not in use while copying (stop the poller first): the copy is not
//!   one transaction, and a poller writing at the same time would interleave ids.

use super::{SharedStore, StoreError};

/// The type a column holds on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Real,
    Text,
    /// `INTEGER` 0/1 on SQLite, `BOOLEAN` on PostgreSQL; travels as [`Value::Int`].
    Bool,
}

/// One table as every backend has it.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The column pages are ordered and resumed by: `id` (history, ids kept) or the
    /// server's name (one row per server, upserted).
    pub key: &'static str,
    /// Every column, the key included, with its kind.
    pub columns: &'static [(&'static str, Kind)],
}

impl Table {
    /// Rows of this table carry an `id` that is kept.
    pub fn has_id(&self) -> bool {
        self.key == "id"
    }

    /// The column names, comma-separated, for SQL.
    pub fn column_list(&self) -> String {
        self.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }
}

use Kind::{Bool, Int, Real, Text};

/// Every table a store holds, in copy order.
pub const TABLES: &[Table] = &[
    Table {
        name: "polls",
        key: "id",
        columns: &[
            ("id", Int),
            ("server", Text),
            ("at", Int),
            ("state", Text),
            ("level", Text),
            ("rtt_ms", Real),
            ("clock_offset_ms", Real),
            ("error", Text),
            ("deficiencies", Int),
        ],
    },
    Table {
        name: "transitions",
        key: "id",
        columns: &[
            ("id", Int),
            ("server", Text),
            ("at", Int),
            ("from_level", Text),
            ("to_level", Text),
            ("reason", Text),
        ],
    },
    Table {
        name: "clock_corrections",
        key: "id",
        columns: &[
            ("id", Int),
            ("server", Text),
            ("at", Int),
            ("offset_ms", Real),
            ("correction_ms", Real),
            ("outcome", Text),
            ("detail", Text),
        ],
    },
    Table {
        name: "compilations",
        key: "id",
        columns: &[("id", Int), ("server", Text), ("at", Int), ("hash", Int), ("body", Text)],
    },
    Table {
        name: "operator_actions",
        key: "id",
        columns: &[("id", Int), ("server", Text), ("at", Int), ("by_name", Text), ("action", Text), ("detail", Text)],
    },
    Table {
        name: "downtimes",
        key: "id",
        columns: &[
            ("id", Int),
            ("server", Text),
            ("starts_at", Int),
            ("ends_at", Int),
            ("comment", Text),
            ("created_by", Text),
            ("created_at", Int),
            ("closed", Bool),
        ],
    },
    Table {
        name: "notices",
        key: "id",
        columns: &[("id", Int), ("key", Text), ("server", Text), ("kind", Text), ("node", Text), ("at", Int)],
    },
    Table { name: "latest_compilations", key: "server", columns: &[("server", Text), ("body", Text)] },
    Table {
        name: "acks",
        key: "server",
        columns: &[
            ("server", Text),
            ("by_name", Text),
            ("at", Int),
            ("comment", Text),
            ("level", Text),
            ("sources", Text),
        ],
    },
    Table {
        name: "servers",
        key: "name",
        columns: &[
            ("name", Text),
            ("address", Text),
            ("level", Text),
            ("calm_streak", Int),
            ("state", Text),
            ("deficiencies", Text),
            ("last_poll_at", Int),
            ("last_error", Text),
            ("clock_offset_ms", Real),
            ("rtt_ms", Real),
            ("level_since", Int),
            ("escalated", Bool),
        ],
    },
    Table {
        name: "notify_state",
        key: "server",
        columns: &[
            ("server", Text),
            ("level", Text),
            ("state", Text),
            ("flapping", Bool),
            ("seen_state", Text),
            ("changes", Text),
            ("updated_at", Int),
            ("seq", Int),
        ],
    },
];

/// One column's value in a row being copied.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Value {
    /// The value as an integer, for the key of a page (`id`).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// A row: one value per column of its [`Table`], in order.
pub type Row = Vec<Value>;

/// Where the next page of a table starts: after this id, or after this server name.
#[derive(Debug, Clone, PartialEq)]
pub enum After {
    Start,
    Id(i64),
    Name(String),
}

/// Rows per page: a few MB of compilations at most.
pub const PAGE: u32 = 2_000;

/// What was copied of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    /// Rows in the source when the copy of this table began.
    pub source_rows: u64,
    /// Rows written now (the rest were there already).
    pub copied: u64,
}

/// Copies every table of `from` into `to`, calling `progress` after each page with the
/// table, the rows written so far and the source's row count.
///
/// # Errors
/// The first [`StoreError`] of either store; what was written before stays (a rerun goes
/// on from there).
pub async fn copy(
    from: &SharedStore,
    to: &SharedStore,
    mut progress: impl FnMut(&'static str, u64, u64),
) -> Result<Vec<Copied>, StoreError> {
    let mut out = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let source_rows = from.count_rows(table).await?;
        let mut after = if table.has_id() {
            match to.max_id(table).await? {
                Some(id) => After::Id(id),
                None => After::Start,
            }
        } else {
            After::Start
        };
        let mut copied = 0u64;
        loop {
            let rows = from.export_rows(table, &after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = match &last[0] {
                Value::Int(id) if table.has_id() => After::Id(*id),
                Value::Text(name) => After::Name(name.clone()),
                other => {
                    return Err(StoreError::Corrupt {
                        what: format!("{}.{}", table.name, table.key),
                        detail: format!("a key that is not an id or a name: {other:?}"),
                    })
                }
            };
            to.import_rows(table, &rows).await?;
            copied += rows.len() as u64;
            progress(table.name, copied, source_rows);
            if rows.len() < PAGE as usize {
                break;
            }
        }
        to.after_import().await?;
        out.push(Copied { table: table.name, source_rows, copied });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_leads_with_its_key() {
        for t in TABLES {
            assert_eq!(t.columns[0].0, t.key, "{}: the key comes first (pages resume by it)", t.name);
        }
    }
}
