//! Where each server's chain of poll rows ends, and the id the next row gets.
//!
//! Rules it keeps:
//! - Ids are assigned here, above every id a head ever named, so a pruned id is never
//!   reused; the heads change only when the transaction that wrote the links has
//!   committed ([`Chains::commit`]), so a failed batch is linked again over the same heads.
//! - The heads in memory are the truth; `poll_heads` is written in arrears (migration
//!   0007): every [`SAVE_HEADS_EVERY`] a save starts, spread over [`SAVE_SLICES`] batches
//!   in the order of the table's key (each slice a few neighbouring pages, in the batch's
//!   own transaction: saved at once, 50,000 heads held the writer for a moment long
//!   enough to make polls late), and whenever the store is read whole (at once). `poll_heads_mark.covered` is the highest poll id the saved heads
//!   account for, so a crash loses nothing: [`Chains::load`] takes each server's newest
//!   poll above the mark (the rows of the last half minute, found by id) over its saved
//!   head. Measured at 50,000 servers @ 10 s: see `docs/performance.md`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::{Row, Sqlite, SqlitePool};

use super::insert_rows;
use crate::store::StoreError;

/// How often the writer starts saving the heads that moved since the last save.
pub(super) const SAVE_HEADS_EVERY: Duration = Duration::from_secs(30);
/// How many batches one save is spread over.
pub(super) const SAVE_SLICES: usize = 20;

/// The committed heads of every server's chain.
#[derive(Debug, Clone)]
pub(super) struct Chains {
    heads: HashMap<String, i64>,
    next_id: i64,
    /// Every poll id up to this one is accounted for in `poll_heads`.
    saved: i64,
    saved_at: Instant,
    /// A save in progress: the servers to save in key order, how many are saved, and the
    /// mark once all are.
    saving: Option<Saving>,
}

#[derive(Debug, Clone)]
struct Saving {
    names: Vec<String>,
    done: usize,
    mark: i64,
}

/// Heads to save, and the mark they bring `poll_heads` up to once a save is complete.
pub(super) struct Unsaved {
    heads: Vec<(String, i64)>,
    /// `None` for a slice that does not complete its save.
    mark: Option<i64>,
    /// How far into the save in progress this slice reaches.
    upto: usize,
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
    /// The heads as saved, brought up to date from the poll rows above the saved mark.
    pub(super) async fn load(pool: &SqlitePool) -> Result<Chains, StoreError> {
        let rows = sqlx::query("SELECT server, last_id FROM poll_heads").fetch_all(pool).await?;
        let mut heads = HashMap::with_capacity(rows.len());
        for r in &rows {
            heads.insert(r.try_get::<String, _>("server")?, r.try_get::<i64, _>("last_id")?);
        }
        let saved: i64 = sqlx::query_scalar("SELECT covered FROM poll_heads_mark").fetch_one(pool).await?;
        let newer = sqlx::query("SELECT server, max(id) AS last_id FROM polls WHERE id > ? GROUP BY server")
            .bind(saved)
            .fetch_all(pool)
            .await?;
        for r in &newer {
            let (server, id) = (r.try_get::<String, _>("server")?, r.try_get::<i64, _>("last_id")?);
            let head = heads.entry(server).or_insert(id);
            *head = (*head).max(id);
        }
        let max_row: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM polls").fetch_one(pool).await?;
        let max_head = heads.values().copied().max();
        let next_id = max_row.max(max_head).unwrap_or(0) + 1;
        Ok(Chains { heads, next_id, saved, saved_at: Instant::now(), saving: None })
    }

    /// The newest poll id of `server`, as committed.
    pub(super) fn head(&self, server: &str) -> Option<i64> {
        self.heads.get(server).copied()
    }

    /// The heads to save with the next batch: the next slice of a save in progress (one
    /// starts when due), or with `now` every head that moved since the last save, at once.
    pub(super) fn unsaved(&mut self, now: bool) -> Option<Unsaved> {
        let mark = self.next_id - 1;
        if now {
            if mark <= self.saved {
                return None;
            }
            let heads = self.moved().map(|(s, id)| (s.clone(), id)).collect();
            return Some(Unsaved { heads, mark: Some(mark), upto: 0 });
        }
        if self.saving.is_none() {
            if mark <= self.saved || self.saved_at.elapsed() < SAVE_HEADS_EVERY {
                return None;
            }
            let mut names: Vec<String> = self.moved().map(|(s, _)| s.clone()).collect();
            names.sort_unstable();
            self.saving = Some(Saving { names, done: 0, mark });
        }
        let saving = self.saving.as_ref()?;
        let upto = (saving.done + saving.names.len().div_ceil(SAVE_SLICES).max(64)).min(saving.names.len());
        let heads =
            saving.names[saving.done..upto].iter().filter_map(|n| Some((n.clone(), *self.heads.get(n)?))).collect();
        Some(Unsaved { heads, mark: (upto == saving.names.len()).then_some(saving.mark), upto })
    }

    /// The heads that moved since the last complete save.
    fn moved(&self) -> impl Iterator<Item = (&String, i64)> {
        self.heads.iter().filter(|(_, &id)| id > self.saved).map(|(s, &id)| (s, id))
    }

    /// `unsaved` is in the database: the save goes on, or is complete and the mark moves up.
    pub(super) fn saved(&mut self, unsaved: &Unsaved) {
        match unsaved.mark {
            Some(mark) => {
                self.saved = self.saved.max(mark);
                self.saved_at = Instant::now();
                self.saving = None;
            }
            None => {
                if let Some(s) = &mut self.saving {
                    s.done = s.done.max(unsaved.upto);
                }
            }
        }
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

impl Unsaved {
    /// Writes the heads and the mark in `tx` (the caller commits, then calls
    /// [`Chains::saved`]).
    pub(super) async fn write(&self, tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), StoreError> {
        let heads: Vec<(&str, i64)> = self.heads.iter().map(|(s, id)| (s.as_str(), *id)).collect();
        save_heads(tx, &heads).await?;
        if let Some(mark) = self.mark {
            sqlx::query("UPDATE poll_heads_mark SET covered = max(covered, ?)").bind(mark).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Upserts `(server, newest poll id)` into `poll_heads`; a head never moves back.
pub(super) async fn save_heads(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    heads: &[(&str, i64)],
) -> Result<(), StoreError> {
    insert_rows(
        tx,
        "INSERT INTO poll_heads (server, last_id)",
        "ON CONFLICT (server) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
        heads,
        |mut b, (server, id)| {
            b.push_bind(*server).push_bind(*id);
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 servers polled since the last save: a due save goes out in slices in key
    /// order, the mark moves only with the last one, and a save `now` takes the rest.
    #[test]
    fn a_due_save_is_spread_over_slices_in_key_order_and_marks_at_its_end() {
        let heads: HashMap<String, i64> = (0..1000).map(|i| (format!("s{i:04}"), i64::from(i) + 1)).collect();
        let long_ago = Instant::now().checked_sub(SAVE_HEADS_EVERY * 2).unwrap();
        let mut c = Chains { heads, next_id: 1001, saved: 0, saved_at: long_ago, saving: None };
        let mut slices = Vec::new();
        while let Some(u) = c.unsaved(false) {
            let names: Vec<&str> = u.heads.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "a slice is in key order");
            slices.push((u.heads.len(), u.mark));
            c.saved(&u);
        }
        assert_eq!(slices.len(), 1000usize.div_ceil(64), "{slices:?}");
        assert!(slices[..slices.len() - 1].iter().all(|(_, m)| m.is_none()), "no mark before the end");
        assert_eq!(slices.last().unwrap().1, Some(1000));
        assert_eq!(slices.iter().map(|(n, _)| n).sum::<usize>(), 1000);
        assert_eq!(c.saved, 1000);
        assert!(c.unsaved(false).is_none(), "nothing due right after a save");
        // A poll later, a save now takes what moved since, whole, with its mark.
        c.heads.insert("s0007".into(), 1001);
        c.next_id = 1002;
        let now = c.unsaved(true).unwrap();
        assert_eq!((now.heads.len(), now.mark), (1, Some(1001)));
    }
}
