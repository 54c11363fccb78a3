//! Where each server's chain of poll rows ends, and the id the next row gets.
//!
//! Rules it keeps: ids are assigned here, above every id a head ever named, so a pruned id
//! is never reused; the heads change only when the transaction that wrote the links has
//! committed ([`Chains::commit`]), so a failed batch is linked again over the same heads.

use std::collections::HashMap;

use sqlx::{Row, SqlitePool};

use crate::store::StoreError;

/// The committed heads of every server's chain.
#[derive(Debug, Clone, Default)]
pub(super) struct Chains {
    heads: HashMap<String, i64>,
    next_id: i64,
}

/// One batch's links, over the committed heads.
pub(super) struct Links<'a> {
    /// `(id, previous id of the same server)` for each poll row, in order.
    pub rows: Vec<(i64, Option<i64>)>,
    /// Each server's newest id in this batch.
    pub heads: HashMap<&'a str, i64>,
    next_id: i64,
}

impl Chains {
    pub(super) async fn load(pool: &SqlitePool) -> Result<Chains, StoreError> {
        let rows = sqlx::query("SELECT server, last_id FROM poll_heads").fetch_all(pool).await?;
        let mut heads = HashMap::with_capacity(rows.len());
        for r in &rows {
            heads.insert(r.try_get::<String, _>("server")?, r.try_get::<i64, _>("last_id")?);
        }
        let max_row: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM polls").fetch_one(pool).await?;
        let max_head = heads.values().copied().max();
        let next_id = max_row.max(max_head).unwrap_or(0) + 1;
        Ok(Chains { heads, next_id })
    }

    /// Links poll rows of `servers` (in order) to each server's previous row. The map of
    /// heads is never copied: it holds the whole fleet.
    pub(super) fn link<'a>(&self, servers: impl Iterator<Item = &'a str>) -> Links<'a> {
        let mut heads: HashMap<&str, i64> = HashMap::new();
        let mut id = self.next_id;
        let rows = servers
            .map(|name| {
                let prev = heads.insert(name, id).or_else(|| self.heads.get(name).copied());
                id += 1;
                (id - 1, prev)
            })
            .collect();
        Links { rows, heads, next_id: id }
    }

    /// Links rows that come with their ids (a copy from another store, in id order) to
    /// each server's previous row; the next id the writer gives is above all of them.
    pub(super) fn adopt<'a>(&self, rows: impl Iterator<Item = (&'a str, i64)>) -> Links<'a> {
        let mut heads: HashMap<&str, i64> = HashMap::new();
        let mut next_id = self.next_id;
        let rows = rows
            .map(|(name, id)| {
                let prev = heads.insert(name, id).or_else(|| self.heads.get(name).copied());
                next_id = next_id.max(id.saturating_add(1));
                (id, prev)
            })
            .collect();
        Links { rows, heads, next_id }
    }

    /// The links' transaction committed: they become the heads.
    pub(super) fn commit(&mut self, links: Links<'_>) {
        self.next_id = links.next_id;
        for (name, id) in links.heads {
            match self.heads.get_mut(name) {
                Some(head) => *head = id,
                None => {
                    self.heads.insert(name.to_string(), id);
                }
            }
        }
    }
}
