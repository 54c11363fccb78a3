//! Keeping history bounded and cheap to write: compilations stored when they change in
//! substance, rows written many per statement, and old history pruned.
//!
//! Rules it keeps:
//! - A compilation enters the `compilations` history only when its *substance* differs from
//!   the server's previous one. Substance is what an operator would call a change: the
//!   attendant's identity, the zone, which services and probes there are with their check
//!   kind and status, the deficiencies (source and severity), the disks' mounts and sizes and
//!   the memory size. Not substance: times, durations, messages, details (perfdata) and
//!   usage figures (load, CPU, memory and disk used), which differ on every poll; the latest
//!   compilation on the server's row still has them, as received.
//! - Rows are written many to a statement (chunks of 64, 32, ... 1, so a handful of
//!   prepared statements serve any batch): per poll the cost is binding values, not a
//!   round trip to SQLite's thread.
//! - Pruning deletes in small steps from the oldest rows (ids grow with time, so the newest
//!   old row is found by bisection), so it never holds the database for long and needs no
//!   extra index on the write path.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
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

#[derive(Deserialize)]
struct Substance<'a> {
    #[serde(borrow, default)]
    attendant: Option<Named<'a>>,
    #[serde(borrow, default)]
    time: Option<Zone<'a>>,
    #[serde(borrow, default)]
    services: Vec<Item<'a>>,
    #[serde(borrow, default)]
    probes: Vec<Item<'a>>,
    #[serde(borrow, default)]
    deficiencies: Vec<Def<'a>>,
    #[serde(borrow, default)]
    host: Option<Host<'a>>,
}

#[derive(Deserialize, Hash)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    hostname: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Hash)]
struct Zone<'a> {
    #[serde(default)]
    utc_offset_seconds: Option<i64>,
    #[serde(borrow, default)]
    zone: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Hash)]
struct Item<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    check: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Hash)]
struct Def<'a> {
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    severity: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Host<'a> {
    #[serde(default)]
    memory: Option<Total>,
    #[serde(borrow, default)]
    disks: Vec<DiskSize<'a>>,
}

#[derive(Deserialize, Hash)]
struct Total {
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Deserialize, Hash)]
struct DiskSize<'a> {
    #[serde(borrow, default)]
    mount: Option<Cow<'a, str>>,
    #[serde(default)]
    total: Option<u64>,
}

/// FNV-1a over what the hasher is fed: fixed forever, unlike the standard library's
/// hasher, so a stored hash still compares equal after an upgrade.
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The hash of a compilation's substance (see the module rules); `None` when the bytes are
/// not a JSON object (the compilation is then always stored).
pub fn substance_hash(raw: &[u8]) -> Option<i64> {
    let s: Substance<'_> = serde_json::from_slice(raw).ok()?;
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    s.attendant.hash(&mut h);
    s.time.hash(&mut h);
    s.services.hash(&mut h);
    s.probes.hash(&mut h);
    s.deficiencies.hash(&mut h);
    if let Some(host) = &s.host {
        host.memory.hash(&mut h);
        host.disks.hash(&mut h);
    }
    Some(h.finish() as i64)
}

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

/// The latest stored substance hash of every server, from the history.
pub(super) async fn load_hashes(pool: &SqlitePool) -> Result<std::collections::HashMap<String, i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT server, hash FROM compilations WHERE id IN (SELECT max(id) FROM compilations GROUP BY server)",
    )
    .fetch_all(pool)
    .await?;
    let mut out = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        out.insert(r.try_get::<String, _>("server")?, r.try_get::<i64, _>("hash")?);
    }
    Ok(out)
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
    use crate::model::{PollRecord, PollRow, ServerRow, ServerState};

    fn record(name: &str, at_ms: i64, body: &str) -> PollRecord {
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
            },
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
            compilation: Some(bytes::Bytes::from(body.to_string())),
            clock_corrections: vec![],
        }
    }

    #[tokio::test]
    async fn compilations_are_kept_when_they_change_and_pruned_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = super::super::Store::open(&url).await.unwrap();
        let ok = |t: &str| format!(r#"{{"time":{{"utc":"{t}"}},"services":[{{"name":"mta","status":"ok"}}]}}"#);
        let bad = r#"{"services":[{"name":"mta","status":"critical"}]}"#;
        let day = 86_400_000;
        store.write(&[record("a", day, &ok("1")), record("a", 2 * day, &ok("2"))]).await.unwrap();
        store.write(&[record("a", 3 * day, &ok("3"))]).await.unwrap();
        store.write(&[record("a", 40 * day, bad), record("b", 40 * day, bad)]).await.unwrap();
        let a = store.compilations("a", 10).await.unwrap();
        assert_eq!(a.len(), 2, "the first, then the change: {a:?}");
        assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some(bad), "the latest is always stored");
        // A reopened store remembers what it stored last.
        store.close().await;
        let store = super::super::Store::open(&url).await.unwrap();
        store.write(&[record("b", 41 * day, bad)]).await.unwrap();
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
    fn substance_ignores_what_changes_every_poll() {
        let a = br#"{"schema_version":1,"attendant":{"name":"m","version":"1","hostname":"m"},
            "time":{"utc":"2026-01-01T00:00:00Z","utc_offset_seconds":0,"received_at":"x","replied_at":"y"},
            "services":[{"name":"mta","check":"smtp","status":"ok","message":"in 3 ms","duration_ms":3,"details":{"t":1}}],
            "host":{"uptime_s":5,"load":[1,1,1],"cpu_percent":3,"memory":{"total":8,"used":2},"disks":[{"mount":"/","total":9,"used":1}]},
            "deficiencies":[]}"#;
        let b = String::from_utf8_lossy(a)
            .replace("in 3 ms", "in 4 ms")
            .replace("\"uptime_s\":5", "\"uptime_s\":6")
            .replace("\"used\":2", "\"used\":3")
            .replace("2026-01-01", "2026-01-02");
        assert_eq!(substance_hash(a), substance_hash(b.as_bytes()));
        let c = String::from_utf8_lossy(a).replace("\"status\":\"ok\"", "\"status\":\"critical\"");
        assert_ne!(substance_hash(a), substance_hash(c.as_bytes()));
        let d = String::from_utf8_lossy(a).replace("\"total\":9", "\"total\":10");
        assert_ne!(substance_hash(a), substance_hash(d.as_bytes()));
        assert_eq!(substance_hash(b"not json"), None);
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
