//! Keeping history bounded and cheap to write: compilations stored when they change in
//! substance, rows written many per statement, and old history pruned.
//!
//! Rules it keeps:
//! - A compilation enters the `compilations` history only when its substance
//!   ([`rollcall_protocol::Compilation::substance_hash`]) differs from the server's previous
//!   one; the fleet judges that and hands the store only the changes. The latest compilation
//!   as received lives in the poller's memory and is written to the server's row with each
//!   change and at shutdown (see [`crate::fleet`]).
//! - Rows are written many to a statement (chunks of 64, 32, ... 1, so a handful of
//!   prepared statements serve any batch): per poll the cost is binding values, not a
//!   round trip to SQLite's thread.
//! - Pruning deletes in small steps from the oldest rows (ids grow with time, so the newest
//!   old row is found by bisection), so it never holds the database for long and needs no
//!   extra index on the write path.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::StoreError;

/// How long history is kept (`[retention]` in poller.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Per-poll rows.
    pub polls: Duration,
    /// Compilations in the history (the latest of each server is always kept).
    pub compilations: Duration,
    /// Level transitions and clock corrections: rare, so kept much longer.
    pub transitions: Duration,
}

const DAY: u64 = 24 * 3600;

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            polls: Duration::from_secs(30 * DAY),
            compilations: Duration::from_secs(30 * DAY),
            transitions: Duration::from_secs(400 * DAY),
        }
    }
}

/// How often the pruner runs (and once at start-up).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per statement; each step is a short transaction.
const PRUNE_STEP: i64 = 5_000;

/// Splits `n` rows into chunks of 64, 32, ... 1 rows: `(start, len)`.
pub(super) fn chunks(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut size = 64;
    while at < n {
        while size > n - at {
            size /= 2;
        }
        out.push((at, size));
        at += size;
    }
    out
}

/// `HEAD VALUES (?, ...), (?, ...) TAIL` for `rows` rows of `cols` columns.
pub(super) fn values_sql(head: &str, cols: usize, rows: usize, tail: &str) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    format!("{head} VALUES {} {tail}", vec![one; rows].join(", "))
}

/// What one pruning pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub polls: u64,
    pub compilations: u64,
    pub transitions: u64,
    pub clock_corrections: u64,
}

/// Deletes rows of `table` older than `cutoff` (Unix ms), oldest first, `step` ids at a
/// time. Ids grow with time, so the newest old row is found by bisection over ids (a few
/// point lookups, no index on `at`); rows out of order are still guarded by `at < cutoff`.
/// `keep_latest` spares each server's newest row (the compilation history's head), however
/// old: a server whose compilation never changes keeps it, and pruning walks past it.
async fn prune_table(
    pool: &SqlitePool,
    table: &str,
    cutoff: i64,
    keep_latest: bool,
    step: i64,
) -> Result<u64, StoreError> {
    let bounds = sqlx::query(&format!("SELECT min(id) AS lo, max(id) AS hi FROM {table}")).fetch_one(pool).await?;
    let (Some(first), Some(mut hi)) =
        (bounds.try_get::<Option<i64>, _>("lo")?, bounds.try_get::<Option<i64>, _>("hi")?)
    else {
        return Ok(0);
    };
    let at_sql = format!("SELECT id, at FROM {table} WHERE id >= ? ORDER BY id LIMIT 1");
    let at_of = |x: i64| {
        let sql = at_sql.clone();
        async move {
            let r = sqlx::query(&sql).bind(x).fetch_optional(pool).await?;
            Ok::<_, StoreError>(match r {
                Some(r) => Some((r.try_get::<i64, _>("id")?, r.try_get::<i64, _>("at")?)),
                None => None,
            })
        }
    };
    match at_of(first).await? {
        Some((_, at)) if at < cutoff => {}
        _ => return Ok(0),
    }
    let mut lo = first;
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        match at_of(mid).await? {
            Some((id, at)) if at < cutoff => lo = id.max(mid),
            _ => hi = mid - 1,
        }
    }
    let spare = if keep_latest {
        format!(" AND EXISTS (SELECT 1 FROM {table} AS newer WHERE newer.server = {table}.server AND newer.id > {table}.id)")
    } else {
        String::new()
    };
    let sql = format!("DELETE FROM {table} WHERE id >= ? AND id < ? AND at < ?{spare}");
    let mut total = 0;
    let mut start = first;
    while start <= lo {
        let end = start.saturating_add(step).min(lo + 1);
        total += sqlx::query(&sql).bind(start).bind(end).bind(cutoff).execute(pool).await?.rows_affected();
        start = end;
        // Let the writer in between steps.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// One pruning pass at `now`.
pub async fn prune(pool: &SqlitePool, retention: &Retention, now: DateTime<Utc>) -> Result<Pruned, StoreError> {
    let cutoff = |d: Duration| now.timestamp_millis() - d.as_millis().min(i64::MAX as u128) as i64;
    Ok(Pruned {
        polls: prune_table(pool, "polls", cutoff(retention.polls), false, PRUNE_STEP).await?,
        compilations: prune_table(pool, "compilations", cutoff(retention.compilations), true, PRUNE_STEP).await?,
        transitions: prune_table(pool, "transitions", cutoff(retention.transitions), false, PRUNE_STEP).await?,
        clock_corrections: prune_table(pool, "clock_corrections", cutoff(retention.transitions), false, PRUNE_STEP)
            .await?,
    })
}

/// Prunes at start-up and every [`PRUNE_EVERY`] until `stop`.
pub fn spawn_pruner(store: super::Store, retention: Retention, stop: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match prune(&store.pool, &retention, Utc::now()).await {
                Ok(p) if p == Pruned::default() => tracing::debug!("nothing to prune"),
                Ok(p) => tracing::info!(
                    polls = p.polls,
                    compilations = p.compilations,
                    transitions = p.transitions,
                    clock_corrections = p.clock_corrections,
                    "pruned history beyond its retention"
                ),
                Err(e) => tracing::error!(error = %e, "cannot prune history"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangedCompilation, PollRecord, PollRow, ServerRow, ServerState};

    /// A poll whose compilation changed in substance (the fleet judges that; any distinct
    /// hash per body does here).
    fn record(name: &str, at_ms: i64, body: &str) -> PollRecord {
        let mut r = unchanged(name, at_ms);
        let hash = body.bytes().fold(7i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
        r.compilation = Some(ChangedCompilation { hash, body: bytes::Bytes::from(body.to_string()) });
        r
    }

    /// A poll whose compilation is the same in substance as the last stored.
    fn unchanged(name: &str, at_ms: i64) -> PollRecord {
        let at = DateTime::from_timestamp_millis(at_ms).unwrap();
        PollRecord {
            server: ServerRow {
                name: name.into(),
                address: "http://x".into(),
                level: "normal".into(),
                calm_streak: 0,
                state: ServerState::Ok,
                deficiencies: vec![],
                last_poll_at: Some(at),
                last_error: None,
                clock_offset_ms: None,
                rtt_ms: None,
                substance: None,
            },
            row_changed: true,
            poll: PollRow {
                at,
                state: ServerState::Ok,
                level: "normal".into(),
                rtt_ms: None,
                clock_offset_ms: None,
                error: None,
                deficiencies: 0,
            },
            transition: None,
            compilation: None,
            clock_corrections: vec![],
        }
    }

    #[tokio::test]
    async fn changed_compilations_join_the_history_and_are_pruned_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = super::super::Store::open(&url).await.unwrap();
        let ok = |t: &str| format!(r#"{{"time":{{"utc":"{t}"}},"services":[{{"name":"mta","status":"ok"}}]}}"#);
        let bad = r#"{"services":[{"name":"mta","status":"critical"}]}"#;
        let day = 86_400_000;
        store.write(&[record("a", day, &ok("1")), unchanged("a", 2 * day)]).await.unwrap();
        store.write(&[unchanged("a", 3 * day)]).await.unwrap();
        assert_eq!(store.compilation("a").await.unwrap(), Some(ok("1")), "an unchanged poll keeps the row's");
        store.write(&[record("a", 40 * day, bad), record("b", 40 * day, bad)]).await.unwrap();
        let a = store.compilations("a", 10).await.unwrap();
        assert_eq!(a.len(), 2, "the first, then the change: {a:?}");
        assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some(bad), "a change is the row's latest");
        // A reopened store tells the fleet the substance it stored last.
        let hash_of_bad = record("x", 0, bad).compilation.unwrap().hash;
        store.close().await;
        let store = super::super::Store::open(&url).await.unwrap();
        let rows = store.load_servers().await.unwrap();
        assert!(rows.iter().all(|r| r.substance == Some(hash_of_bad)), "{rows:?}");
        store.write(&[unchanged("b", 41 * day)]).await.unwrap();
        // What the fleet held at shutdown becomes the row's latest, not the history's.
        store.save_latest(&[("b".to_string(), bytes::Bytes::from(ok("shutdown")))]).await.unwrap();
        assert_eq!(store.compilation("b").await.unwrap(), Some(ok("shutdown")));
        assert_eq!(store.compilations("b", 10).await.unwrap().len(), 1);

        let now = DateTime::from_timestamp_millis(45 * day).unwrap();
        let p = prune(&store.pool, &Retention::default(), now).await.unwrap();
        assert_eq!((p.polls, p.compilations), (3, 1), "older than 30 days: 3 polls, a's first compilation");
        assert_eq!(store.history("a", 10).await.unwrap().polls.len(), 1);
        let far = DateTime::from_timestamp_millis(400 * day).unwrap();
        prune(&store.pool, &Retention::default(), far).await.unwrap();
        assert_eq!(store.compilations("a", 10).await.unwrap().len(), 1, "each server's newest is spared");
    }

    #[tokio::test]
    async fn pruning_walks_past_old_compilations_that_are_spared() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = super::super::Store::open(&url).await.unwrap();
        let day = 86_400_000;
        // Ten servers that never change come first (low ids), then one that changes daily.
        let steady: Vec<PollRecord> = (0..10).map(|i| record(&format!("s{i}"), day, r#"{"services":[]}"#)).collect();
        store.write(&steady).await.unwrap();
        for d in 2..20 {
            let body = format!(r#"{{"services":[{{"name":"v{d}","status":"ok"}}]}}"#);
            store.write(&[record("busy", d * day, &body)]).await.unwrap();
        }
        let cutoff = 15 * day;
        let deleted = prune_table(&store.pool, "compilations", cutoff, true, 3).await.unwrap();
        assert_eq!(deleted, 13, "busy's days 2..14, past ten spared rows in steps of 3");
        assert_eq!(store.compilations("busy", 100).await.unwrap().len(), 5);
        assert_eq!(store.compilations("s3", 100).await.unwrap().len(), 1);
        assert_eq!(prune_table(&store.pool, "compilations", cutoff, true, 3).await.unwrap(), 0);
        assert_eq!(prune_table(&store.pool, "polls", cutoff, false, 4).await.unwrap(), 23);
    }

    #[test]
    fn chunks_cover_every_row_with_few_sizes() {
        for n in [0usize, 1, 63, 64, 65, 200, 2048] {
            let c = chunks(n);
            assert_eq!(c.iter().map(|x| x.1).sum::<usize>(), n);
            assert!(c.iter().all(|x| x.1.is_power_of_two() && x.1 <= 64));
            assert!(c.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        }
        assert_eq!(values_sql("INSERT INTO t (a, b)", 2, 2, ""), "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ");
    }
}
