//! Pruning the PostgreSQL history: the rows older than the cutoff are found by the BRIN
//! index on `at` (ids grow with time, so they are one id range) and deleted in steps of
//! [`PRUNE_STEP`] ids, each its own short statement, so pruning never holds locks for long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use crate::store::{Pruned, Retention, StoreError};

/// Ids deleted per statement.
const PRUNE_STEP: i64 = 5_000;

/// Deletes rows of `table` older than `cutoff` (Unix ms). `keep_latest` spares each
/// server's newest row (the compilation history's head), however old.
async fn prune_table(pool: &PgPool, table: &str, cutoff: i64, keep_latest: bool) -> Result<u64, StoreError> {
    let bounds = sqlx::query(&format!("SELECT min(id) AS lo, max(id) AS hi FROM {table} WHERE at < $1"))
        .bind(cutoff)
        .fetch_one(pool)
        .await?;
    let (Some(lo), Some(hi)) = (bounds.try_get::<Option<i64>, _>("lo")?, bounds.try_get::<Option<i64>, _>("hi")?)
    else {
        return Ok(0);
    };
    let spare = if keep_latest {
        format!(" AND EXISTS (SELECT 1 FROM {table} AS newer WHERE newer.server = {table}.server AND newer.id > {table}.id)")
    } else {
        String::new()
    };
    let sql = format!("DELETE FROM {table} WHERE id >= $1 AND id < $2 AND at < $3{spare}");
    let mut total = 0;
    let mut start = lo;
    while start <= hi {
        let end = start.saturating_add(PRUNE_STEP).min(hi.saturating_add(1));
        total += sqlx::query(&sql).bind(start).bind(end).bind(cutoff).execute(pool).await?.rows_affected();
        start = end;
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// One pruning pass at `now`.
pub(super) async fn prune(pool: &PgPool, retention: &Retention, now: DateTime<Utc>) -> Result<Pruned, StoreError> {
    let cutoff = |d: Duration| now.timestamp_millis().saturating_sub(d.as_millis().min(i64::MAX as u128) as i64);
    Ok(Pruned {
        polls: prune_table(pool, "polls", cutoff(retention.polls), false).await?,
        compilations: prune_table(pool, "compilations", cutoff(retention.compilations), true).await?,
        transitions: prune_table(pool, "transitions", cutoff(retention.transitions), false).await?,
        clock_corrections: prune_table(pool, "clock_corrections", cutoff(retention.transitions), false).await?,
        operator_actions: prune_table(pool, "operator_actions", cutoff(retention.transitions), false).await?,
        notices: prune_table(pool, "notices", cutoff(retention.transitions), false).await?,
    })
}
