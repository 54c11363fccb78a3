//! Heartbeats and leases on PostgreSQL (SPEC section 12; the protocol is in
//! `docs/cluster.md`). Every time is the database's `now()`, so nodes whose clocks differ
//! agree; each call is one short transaction.

use std::time::Duration;

use sqlx::{PgPool, Row};

use crate::store::{ClusterView, StoreError};

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Heartbeat, renewal of `node`'s leases, and the whole view, in one transaction.
pub(super) async fn heartbeat(pool: &PgPool, node: &str, lease: Duration) -> Result<ClusterView, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO nodes (name, heartbeat_at, started_at) VALUES ($1, now(), now())
         ON CONFLICT (name) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(node)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE leases SET expires_at = now() + $2 * interval '1 millisecond' WHERE node = $1")
        .bind(node)
        .bind(millis(lease))
        .execute(&mut *tx)
        .await?;
    let nodes =
        sqlx::query("SELECT name, extract(epoch FROM now() - heartbeat_at)::float8 AS age FROM nodes ORDER BY name")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok((r.try_get::<String, _>("name")?, Duration::from_secs_f64(r.try_get::<f64, _>("age")?.max(0.0))))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let leases = sqlx::query("SELECT server, node, expires_at > now() AS running FROM leases")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("server")?, r.try_get("node")?, r.try_get("running")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    tx.commit().await?;
    Ok(ClusterView { nodes, leases })
}

/// Takes the free or run-out leases among `servers`; a lease another node still holds is
/// left alone (the database decides, so two nodes never both win one).
pub(super) async fn claim(
    pool: &PgPool,
    node: &str,
    servers: &[String],
    lease: Duration,
) -> Result<Vec<String>, StoreError> {
    if servers.is_empty() {
        return Ok(Vec::new());
    }
    let taken = sqlx::query_scalar(
        "INSERT INTO leases (server, node, expires_at)
         SELECT s, $1, now() + $3 * interval '1 millisecond' FROM UNNEST($2::text[]) AS s
         ON CONFLICT (server) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
           WHERE leases.expires_at <= now() OR leases.node = excluded.node
         RETURNING server",
    )
    .bind(node)
    .bind(servers)
    .bind(millis(lease))
    .fetch_all(pool)
    .await?;
    Ok(taken)
}

/// Gives up `node`'s leases of `servers`.
pub(super) async fn release(pool: &PgPool, node: &str, servers: &[String]) -> Result<(), StoreError> {
    if servers.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM leases WHERE node = $1 AND server = ANY($2)")
        .bind(node)
        .bind(servers)
        .execute(pool)
        .await?;
    Ok(())
}
