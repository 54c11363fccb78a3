use super::*;
use crate::model::ChangedCompilation;
use rollcall_protocol::{Deficiency, Severity};

fn row(name: &str, level: &str, state: ServerState) -> ServerRow {
    ServerRow {
        name: name.into(),
        address: format!("http://{name}:7460"),
        level: level.into(),
        calm_streak: 1,
        state,
        deficiencies: vec![Deficiency {
            source: "poll:refused".into(),
            severity: Severity::Critical,
            summary: "x".into(),
        }],
        last_poll_at: DateTime::from_timestamp_millis(1_800_000_000_123),
        last_error: Some("connection refused".into()),
        clock_offset_ms: Some(-1.5),
        rtt_ms: Some(0.25),
        substance: None,
    }
}

fn record(name: &str, at_ms: i64, level: &str, transition: bool, compilation: Option<&str>) -> PollRecord {
    let at = from_ms(at_ms);
    let mut server = row(name, level, ServerState::Unreachable);
    server.last_poll_at = Some(at);
    PollRecord {
        server,
        row_changed: true,
        poll: PollRow {
            at,
            state: ServerState::Unreachable,
            level: level.into(),
            rtt_ms: None,
            clock_offset_ms: None,
            error: Some("connection refused".into()),
            deficiencies: 1,
        },
        transition: transition.then(|| TransitionRow {
            at,
            from: "normal".into(),
            to: level.into(),
            reason: "poll:refused".into(),
        }),
        compilation: compilation
            .map(|c| ChangedCompilation { hash: c.len() as i64, body: bytes::Bytes::from(c.to_string()) }),
        clock_corrections: vec![],
    }
}

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    (dir, Store::open(&url).await.unwrap())
}

#[tokio::test]
async fn state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sub-dir-is-not-needed.db").display());
    let store = Store::open(&url).await.unwrap();
    store.write(&[record("mail-01", 1_000, "critical", true, Some("{\"a\":1}"))]).await.unwrap();
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    let rows = store.load_servers().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].level, "critical");
    assert_eq!(rows[0].state, ServerState::Unreachable);
    assert_eq!(rows[0].deficiencies[0].source, "poll:refused");
    assert_eq!(rows[0].last_poll_at, Some(from_ms(1_000)));
    assert_eq!(store.compilation("mail-01").await.unwrap().as_deref(), Some("{\"a\":1}"));
}

#[tokio::test]
async fn history_is_newest_first_and_a_failed_poll_keeps_the_last_compilation() {
    let (_d, store) = open().await;
    store.write(&[record("a", 1_000, "normal", false, Some("{\"n\":1}"))]).await.unwrap();
    store
        .write(&[record("a", 2_000, "critical", true, None), record("b", 2_500, "normal", false, None)])
        .await
        .unwrap();
    store.write(&[record("a", 3_000, "critical", false, None)]).await.unwrap();
    let h = store.history("a", 10).await.unwrap();
    let times: Vec<i64> = h.polls.iter().map(|p| p.at.timestamp_millis()).collect();
    assert_eq!(times, [3_000, 2_000, 1_000]);
    assert_eq!(h.transitions.len(), 1);
    assert_eq!((h.transitions[0].from.as_str(), h.transitions[0].to.as_str()), ("normal", "critical"));
    assert_eq!(store.history("a", 2).await.unwrap().polls.len(), 2);
    assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some("{\"n\":1}"));
    assert_eq!(store.compilation("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn writer_batches_and_flush_waits_for_everything_before_it() {
    let (_d, store) = open().await;
    let (writer, task) = Writer::start(store.clone());
    for i in 0..500 {
        writer.record(record("a", 1_000 + i, "normal", false, None)).await.unwrap();
    }
    writer.flush().await.unwrap();
    assert_eq!(store.history("a", 1000).await.unwrap().polls.len(), 500);
    drop(writer);
    task.await.unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not.db");
    std::fs::write(&p, "this is not sqlite, just text that is long enough to be read as a header").unwrap();
    let err = Store::open(&format!("sqlite://{}", p.display())).await.unwrap_err().to_string();
    assert!(err.contains(&p.display().to_string()), "{err}");
}

#[tokio::test]
async fn corrupt_rows_are_named_not_panicked_on() {
    let (_d, store) = open().await;
    store.write(&[record("a", 1_000, "normal", false, None)]).await.unwrap();
    sqlx::query("UPDATE servers SET deficiencies = 'garbage'").execute(&store.pool).await.unwrap();
    let err = store.load_servers().await.unwrap_err().to_string();
    assert!(err.contains("servers.deficiencies of a"), "{err}");
}

/// A database migrated only up to `version`, as an older release left it.
async fn database_at_version(url: &str, version: i64) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(url).unwrap().create_if_missing(true);
    let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
    let mut old = sqlx::migrate!("./migrations/sqlite");
    old.migrations = old.migrations.iter().filter(|m| m.version <= version).cloned().collect::<Vec<_>>().into();
    old.run(&pool).await.unwrap();
    pool
}

#[tokio::test]
async fn an_older_database_keeps_its_latest_compilations_when_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    // A database as the release before 0004 left it: the latest compilation on the server row.
    {
        let pool = database_at_version(&url, 3).await;
        sqlx::query(
            "INSERT INTO servers (name, address, level, state, compilation) VALUES ('a', 'http://a', 'normal', 'ok', '{\"n\":1}'), ('b', 'http://b', 'normal', 'unknown', NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some("{\"n\":1}"));
    assert_eq!(store.compilation("b").await.unwrap(), None);
    assert_eq!(store.load_servers().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_steady_server_keeps_its_row_and_reads_back_its_last_poll() {
    let (_d, store) = open().await;
    store.write(&[record("a", 1_000, "normal", false, None)]).await.unwrap();
    // Later polls that change nothing but time, offset and delay leave the row alone.
    let mut later = record("a", 5_000, "normal", false, None);
    later.row_changed = false;
    later.poll.clock_offset_ms = Some(7.5);
    later.poll.rtt_ms = Some(0.5);
    later.server.last_poll_at = Some(from_ms(5_000));
    store.write(&[later]).await.unwrap();
    let raw: i64 = sqlx::query_scalar("SELECT last_poll_at FROM servers").fetch_one(&store.pool).await.unwrap();
    assert_eq!(raw, 1_000, "the row was not rewritten");
    let rows = store.load_servers().await.unwrap();
    assert_eq!(rows[0].last_poll_at, Some(from_ms(5_000)), "the newest poll's time");
    assert_eq!((rows[0].clock_offset_ms, rows[0].rtt_ms), (Some(7.5), Some(0.5)));
    // A failed poll has no offset: the last known one stays.
    let mut failed = record("a", 9_000, "normal", false, None);
    failed.row_changed = false;
    store.write(&[failed]).await.unwrap();
    let rows = store.load_servers().await.unwrap();
    assert_eq!(rows[0].last_poll_at, Some(from_ms(9_000)));
    assert_eq!(rows[0].clock_offset_ms, Some(-1.5), "the row's last known offset");
}

#[tokio::test]
async fn poll_history_survives_the_move_to_chains_and_continues_them() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("chains.db").display());
    // A database as release 0004 left it: poll rows found through the per-server index.
    {
        let pool = database_at_version(&url, 4).await;
        for (i, server) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            sqlx::query("INSERT INTO polls (server, at, state, level, deficiencies) VALUES (?, ?, 'ok', 'normal', 0)")
                .bind(server)
                .bind(1_000 * (i as i64 + 1))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = Store::open(&url).await.unwrap();
    let at = |h: &History| h.polls.iter().map(|p| p.at.timestamp_millis()).collect::<Vec<_>>();
    assert_eq!(at(&store.history("a", 10).await.unwrap()), [4_000, 3_000, 1_000]);
    assert_eq!(at(&store.history("b", 10).await.unwrap()), [5_000, 2_000]);
    assert_eq!(at(&store.history("a", 2).await.unwrap()), [4_000, 3_000], "the limit holds");
    store.write(&[record("a", 6_000, "normal", false, None), record("b", 7_000, "normal", false, None)]).await.unwrap();
    store.write(&[record("a", 8_000, "normal", false, None)]).await.unwrap();
    assert_eq!(at(&store.history("a", 10).await.unwrap()), [8_000, 6_000, 4_000, 3_000, 1_000]);
    assert_eq!(at(&store.history("b", 10).await.unwrap()), [7_000, 5_000, 2_000]);
    assert_eq!(store.history("nobody", 10).await.unwrap().polls, vec![]);
}

#[tokio::test]
async fn ids_of_pruned_polls_are_never_given_to_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ids.db").display());
    let store = Store::open(&url).await.unwrap();
    // a's head names id 1; once its row is pruned, the table is empty.
    store.write(&[record("a", 1_000, "normal", false, None)]).await.unwrap();
    sqlx::query("DELETE FROM polls").execute(&store.pool).await.unwrap();
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    store.write(&[record("b", 3_000, "normal", false, None)]).await.unwrap();
    assert_eq!(store.history("a", 10).await.unwrap().polls, vec![], "a's pruned history stays empty");
    assert_eq!(store.history("b", 10).await.unwrap().polls.len(), 1);
}
