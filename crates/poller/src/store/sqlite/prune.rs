//! Pruning the SQLite history: deletes in small steps from the oldest rows (ids grow with
//! time, so the newest old row is found by bisection), so it never holds the database for
//! long and needs no extra index on the write path.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};

use crate::store::{Pruned, Retention, StoreError};

/// Rows deleted per statement; each step is a short transaction.
const PRUNE_STEP: i64 = 5_000;

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
pub(super) async fn prune(pool: &SqlitePool, retention: &Retention, now: DateTime<Utc>) -> Result<Pruned, StoreError> {
    let cutoff = |d: Duration| now.timestamp_millis() - d.as_millis().min(i64::MAX as u128) as i64;
    Ok(Pruned {
        polls: prune_table(pool, "polls", cutoff(retention.polls), false, PRUNE_STEP).await?,
        compilations: prune_table(pool, "compilations", cutoff(retention.compilations), true, PRUNE_STEP).await?,
        transitions: prune_table(pool, "transitions", cutoff(retention.transitions), false, PRUNE_STEP).await?,
        clock_corrections: prune_table(pool, "clock_corrections", cutoff(retention.transitions), false, PRUNE_STEP)
            .await?,
        operator_actions: prune_table(pool, "operator_actions", cutoff(retention.transitions), false, PRUNE_STEP)
            .await?,
        notices: prune_table(pool, "notices", cutoff(retention.transitions), false, PRUNE_STEP).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{batch, record as poll};
    use crate::store::Store as _;

    /// A poll whose compilation changed in substance.
    fn record(name: &str, at_ms: i64, body: &str) -> crate::model::PollRecord {
        poll(name, at_ms, "normal", false, Some(body))
    }

    #[tokio::test]
    async fn pruning_walks_past_old_compilations_that_are_spared() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = super::super::SqliteStore::open(&url).await.unwrap();
        let day = 86_400_000;
        // Ten servers that never change come first (low ids), then one that changes daily.
        let steady: Vec<crate::model::PollRecord> =
            (0..10).map(|i| record(&format!("s{i}"), day, r#"{"services":[]}"#)).collect();
        store.write(&batch(steady)).await.unwrap();
        for d in 2..20 {
            let body = format!(r#"{{"services":[{{"name":"v{d}","status":"ok"}}]}}"#);
            store.write(&batch([record("busy", d * day, &body)])).await.unwrap();
        }
        let cutoff = 15 * day;
        let deleted = prune_table(&store.pool, "compilations", cutoff, true, 3).await.unwrap();
        assert_eq!(deleted, 13, "busy's days 2..14, past ten spared rows in steps of 3");
        assert_eq!(store.compilations("busy", 100).await.unwrap().len(), 5);
        assert_eq!(store.compilations("s3", 100).await.unwrap().len(), 1);
        assert_eq!(prune_table(&store.pool, "compilations", cutoff, true, 3).await.unwrap(), 0);
        assert_eq!(prune_table(&store.pool, "polls", cutoff, false, 4).await.unwrap(), 23);
    }
}
