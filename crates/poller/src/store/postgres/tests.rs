use super::*;
use crate::store::suite::{batch, record, Harness};
use crate::store::SharedStore;
use rollcall_testkit::postgres::Postgres;

/// The PostgreSQL backend on a real cluster of the test's own, one fresh database.
struct PostgresHarness {
    // Dropped first: the cluster stops before its directory goes.
    pg: Postgres,
    url: String,
    _dir: tempfile::TempDir,
}

impl PostgresHarness {
    async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.unwrap()
    }
}

#[async_trait::async_trait]
impl Harness for PostgresHarness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pg = Postgres::start(dir.path());
        let url = pg.create_database("suite");
        PostgresHarness { pg, url, _dir: dir }
    }

    async fn open(&self) -> SharedStore {
        std::sync::Arc::new(PostgresStore::open(&self.url, None).await.unwrap())
    }

    /// A trigger that refuses every poll row, as a database that cannot be written does.
    async fn break_writes(&self) {
        let pool = self.pool().await;
        sqlx::query(
            "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'injected fault: could not extend file: No space left on device'; END $$",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("CREATE TRIGGER injected_fault BEFORE INSERT ON polls EXECUTE FUNCTION injected_fault()")
            .execute(&pool)
            .await
            .unwrap();
    }

    fn skip() -> bool {
        rollcall_testkit::postgres::skip()
    }

    async fn heal(&self) {
        self.pg.psql("suite", "DROP TRIGGER injected_fault ON polls; DROP FUNCTION injected_fault()");
    }
}

mod suite {
    crate::store_suite!(super::PostgresHarness);
}

#[tokio::test]
async fn a_password_in_the_url_never_reaches_a_message() {
    // Nothing listens on port 1: the connection fails, and the error names the database.
    let err = PostgresStore::open("postgres://rollcall:hunter2@127.0.0.1:1/fleet", None).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(text.contains("postgres://rollcall:***@127.0.0.1:1/fleet"), "{text}");
}

#[tokio::test]
async fn a_batch_of_thousands_is_written_whole_in_one_transaction() {
    if PostgresHarness::skip() {
        return;
    }
    let h = PostgresHarness::new().await;
    let store = h.open().await;
    let records: Vec<_> =
        (0..5_000).map(|i| record(&format!("s{}", i % 1_000), 1_000 + i, "normal", i < 3, None)).collect();
    store.write(&batch(records)).await.unwrap();
    assert_eq!(h.pg.psql("suite", "SELECT count(*) FROM polls"), "5000");
    assert_eq!(h.pg.psql("suite", "SELECT count(*) FROM servers"), "1000");
    assert_eq!(h.pg.psql("suite", "SELECT count(*) FROM transitions"), "3");
    let history = store.history("s7", 10).await.unwrap();
    assert_eq!(history.polls.len(), 5, "s7 was polled at 1007, 2007, ... 5007");
    assert_eq!(history.polls[0].at.timestamp_millis(), 5_007, "newest first");
}
