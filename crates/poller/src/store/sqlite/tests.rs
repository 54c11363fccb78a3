use super::*;
use crate::store::suite::{batch, record, Harness};
use crate::store::{SharedStore, Store as _};

/// The SQLite backend on a database file in a temp dir.
struct SqliteHarness {
    dir: tempfile::TempDir,
    /// The store last opened, for injecting faults under the API.
    last: std::sync::Mutex<Option<SqliteStore>>,
}

impl SqliteHarness {
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("suite.db").display())
    }

    async fn pool(&self) -> SqlitePool {
        let last = self.last.lock().unwrap().clone().expect("a store was opened");
        last.pool().clone()
    }
}

#[async_trait::async_trait]
impl Harness for SqliteHarness {
    async fn new() -> Self {
        SqliteHarness { dir: tempfile::tempdir().unwrap(), last: Default::default() }
    }

    async fn open(&self) -> SharedStore {
        let store = SqliteStore::open(&self.url()).await.unwrap();
        *self.last.lock().unwrap() = Some(store.clone());
        std::sync::Arc::new(store)
    }

    /// A trigger that refuses every history row, as a database that cannot be written does.
    async fn break_writes(&self) {
        sqlx::query("CREATE TRIGGER injected_fault BEFORE INSERT ON polls BEGIN SELECT RAISE(ABORT, 'injected fault: disk I/O error'); END")
            .execute(&self.pool().await)
            .await
            .unwrap();
    }

    async fn heal(&self) {
        sqlx::query("DROP TRIGGER injected_fault").execute(&self.pool().await).await.unwrap();
    }
}

mod suite {
    crate::store_suite!(super::SqliteHarness);
}

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    (dir, SqliteStore::open(&url).await.unwrap())
}

#[test]
fn chunks_cover_every_row_with_few_sizes() {
    for n in [0usize, 1, 63, 64, 65, 200, 2048] {
        let c = chunks(n);
        assert_eq!(c.iter().map(|x| x.1).sum::<usize>(), n);
        assert!(c.iter().all(|x| x.1.is_power_of_two() && x.1 <= 64));
        assert!(c.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
    }
}

#[tokio::test]
async fn a_steady_server_s_row_is_not_rewritten() {
    let (_d, store) = open().await;
    store.write(&batch([record("a", 1_000, "normal", false, None)])).await.unwrap();
    let mut later = record("a", 5_000, "normal", false, None);
    later.facts_changed = false;
    store.write(&batch([later])).await.unwrap();
    let raw: i64 = sqlx::query_scalar("SELECT last_poll_at FROM servers").fetch_one(&store.pool).await.unwrap();
    assert_eq!(raw, 1_000, "the row was not rewritten");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not.db");
    std::fs::write(&p, "this is not sqlite, just text that is long enough to be read as a header").unwrap();
    let err = SqliteStore::open(&format!("sqlite://{}", p.display())).await.unwrap_err().to_string();
    assert!(err.contains(&p.display().to_string()), "{err}");
}

#[tokio::test]
async fn corrupt_rows_are_named_not_panicked_on() {
    let (_d, store) = open().await;
    store.write(&batch([record("a", 1_000, "normal", false, None)])).await.unwrap();
    sqlx::query("UPDATE servers SET deficiencies = 'garbage'").execute(&store.pool).await.unwrap();
    let err = store.load_servers().await.unwrap_err().to_string();
    assert!(err.contains("servers.deficiencies of a"), "{err}");
}

async fn page_size(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("PRAGMA page_size").fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_new_database_has_1_kib_pages_and_an_older_one_keeps_its_own() {
    let (_d, store) = open().await;
    assert_eq!(page_size(&store.pool).await, 1024);
    let checkpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&store.pool).await.unwrap();
    assert_eq!(checkpoint * 1024, 40 << 20, "the WAL is checkpointed every 40 MiB whatever the page size");

    // A file an older release made: SQLite's 4 KiB pages, WAL journal, rows in it.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let pool = database_at_version(&url, 9).await;
        sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await.unwrap();
        assert_eq!(page_size(&pool).await, 4096);
        pool.close().await;
    }
    let old = SqliteStore::open(&url).await.unwrap();
    old.write(&batch([record("a", 1_000, "normal", false, None)])).await.unwrap();
    assert_eq!(page_size(&old.pool).await, 4096, "an existing file keeps its page size");
    let checkpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&old.pool).await.unwrap();
    assert_eq!(checkpoint * 4096, 40 << 20);
    assert_eq!(old.history("a", 10).await.unwrap().polls.len(), 1);
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
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some("{\"n\":1}"));
    assert_eq!(store.compilation("b").await.unwrap(), None);
    assert_eq!(store.load_servers().await.unwrap().len(), 2);
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
    let store = SqliteStore::open(&url).await.unwrap();
    let at = |h: &History| h.polls.iter().map(|p| p.at.timestamp_millis()).collect::<Vec<_>>();
    assert_eq!(at(&store.history("a", 10).await.unwrap()), [4_000, 3_000, 1_000]);
    assert_eq!(at(&store.history("b", 10).await.unwrap()), [5_000, 2_000]);
    assert_eq!(at(&store.history("a", 2).await.unwrap()), [4_000, 3_000], "the limit holds");
    store
        .write(&batch([record("a", 6_000, "normal", false, None), record("b", 7_000, "normal", false, None)]))
        .await
        .unwrap();
    store.write(&batch([record("a", 8_000, "normal", false, None)])).await.unwrap();
    assert_eq!(at(&store.history("a", 10).await.unwrap()), [8_000, 6_000, 4_000, 3_000, 1_000]);
    assert_eq!(at(&store.history("b", 10).await.unwrap()), [7_000, 5_000, 2_000]);
    assert_eq!(store.history("nobody", 10).await.unwrap().polls, vec![]);
}

#[tokio::test]
async fn chains_continue_after_a_crash_that_left_the_heads_unsaved() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let at = |h: &History| h.polls.iter().map(|p| p.at.timestamp_millis()).collect::<Vec<_>>();
    {
        let store = SqliteStore::open(&url).await.unwrap();
        store.write(&batch([record("a", 1_000, "normal", false, None)])).await.unwrap();
        store
            .write(&batch([record("b", 2_000, "normal", false, None), record("a", 3_000, "normal", false, None)]))
            .await
            .unwrap();
        assert_eq!(at(&store.history("a", 10).await.unwrap()), [3_000, 1_000], "read from the heads in memory");
        // Killed: no close, so the heads of these polls were never saved.
    }
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(at(&store.history("a", 10).await.unwrap()), [3_000, 1_000]);
    store.write(&batch([record("a", 4_000, "normal", false, None)])).await.unwrap();
    assert_eq!(at(&store.history("a", 10).await.unwrap()), [4_000, 3_000, 1_000], "the chain goes on unbroken");
    assert_eq!(at(&store.history("b", 10).await.unwrap()), [2_000]);
    let a = store.load_servers().await.unwrap().into_iter().find(|s| s.facts.name == "a").unwrap();
    assert_eq!(a.facts.last_poll_at.map(|t| t.timestamp_millis()), Some(4_000));
}

#[tokio::test]
async fn ids_of_pruned_polls_are_never_given_to_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ids.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    // a's head names id 1; once its row is pruned, the table is empty.
    store.write(&batch([record("a", 1_000, "normal", false, None)])).await.unwrap();
    sqlx::query("DELETE FROM polls").execute(&store.pool).await.unwrap();
    store.close().await;
    let store = SqliteStore::open(&url).await.unwrap();
    store.write(&batch([record("b", 3_000, "normal", false, None)])).await.unwrap();
    assert_eq!(store.history("a", 10).await.unwrap().polls, vec![], "a's pruned history stays empty");
    assert_eq!(store.history("b", 10).await.unwrap().polls.len(), 1);
}

/// A small filesystem mounted for one test, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    /// `None` when this process may not mount (not root).
    fn mount(at: &std::path::Path, size: &str) -> Option<SmallFs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(at.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` to the last byte; the file is the filler.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let mut byte = [0u8; 1];
    while f.write_all(&byte).is_ok() {
        byte[0] = byte[0].wrapping_add(1);
    }
    path
}

/// A full disk, for real: the database on a 4 MB tmpfs that a file fills up. Every poll,
/// transition and compilation the writer was given during the fault is stored once the
/// space is back. Mounting needs root (CI runs as root); elsewhere the test says so and
/// the trigger-based fault of the suite still runs.
#[tokio::test]
async fn a_full_disk_loses_nothing_the_writer_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(&dir.path().join("fs"), "4m") else {
        eprintln!("cannot mount a tmpfs (not root?): skipping the full-disk test");
        return;
    };
    let url = format!("sqlite://{}", fs.0.join("full.db").display());
    let store: SharedStore = std::sync::Arc::new(SqliteStore::open(&url).await.unwrap());
    let (writer, task) = crate::store::Writer::start(store.clone());
    writer.record(record("a", 1_000, "normal", false, Some("{\"n\":1}"))).await.unwrap();
    writer.flush().await.unwrap();
    let filler = fill(&fs.0);
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(3_000));
    for i in 0..2_000 {
        let name = format!("s{}", i % 50);
        let transition = i < 50;
        writer
            .record(record(&name, 2_000 + i, "critical", transition, (i < 50).then_some(body.as_str())))
            .await
            .unwrap();
    }
    let err = writer.flush().await.expect_err("a full disk fails the write");
    assert!(err.to_string().contains("full"), "the cause is named: {err}");
    std::fs::remove_file(filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while writer.flush().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never written after the space came back");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for i in 0..50 {
        let h = store.history(&format!("s{i}"), 100).await.unwrap();
        assert_eq!(h.polls.len(), 40, "s{i}: every poll");
        assert_eq!(h.transitions.len(), 1, "s{i}: the transition, once");
    }
    assert_eq!(store.compilations("s7", 10).await.unwrap().len(), 1);
    drop(writer);
    task.await.unwrap();
    store.close().await;
}
