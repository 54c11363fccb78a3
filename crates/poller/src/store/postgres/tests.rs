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

/// What a user checks after a copy: every server's facts, history, compilations and
/// notification memory read back the same from both stores.
async fn assert_same(a: &SharedStore, b: &SharedStore, servers: &[&str]) {
    let sorted = |mut v: Vec<crate::model::StoredServer>| {
        v.sort_by(|x, y| x.facts.name.cmp(&y.facts.name));
        v
    };
    assert_eq!(sorted(a.load_servers().await.unwrap()), sorted(b.load_servers().await.unwrap()));
    for s in servers {
        assert_eq!(a.history(s, 1_000).await.unwrap(), b.history(s, 1_000).await.unwrap(), "history of {s}");
        assert_eq!(a.compilations(s, 1_000).await.unwrap(), b.compilations(s, 1_000).await.unwrap(), "{s}");
        assert_eq!(a.compilation(s).await.unwrap(), b.compilation(s).await.unwrap(), "latest of {s}");
    }
    let notify = |mut v: Vec<crate::model::NotifyRow>| {
        v.sort_by(|x, y| x.server.cmp(&y.server));
        v
    };
    assert_eq!(notify(a.load_notify_memory(None).await.unwrap()), notify(b.load_notify_memory(None).await.unwrap()));
    assert_eq!(a.open_downtimes().await.unwrap(), b.open_downtimes().await.unwrap());
}

#[tokio::test]
async fn sqlite_to_postgres_and_back_keeps_everything_and_a_second_copy_adds_nothing() {
    if PostgresHarness::skip() {
        return;
    }
    use crate::model::{ClockCorrectionRow, NotifyRow, ServerState};
    use crate::store::copy::{copy, PAGE};
    let dir = tempfile::tempdir().unwrap();
    let sqlite = |f: &str| format!("sqlite://{}", dir.path().join(f).display());
    let a = crate::store::open(&sqlite("a.db"), None).await.unwrap();
    // More poll rows than a page, over servers whose names sort differently by byte and by
    // locale, with every kind of row.
    let names = ["mail-01", "Mail-02", "ünïcode", "web 03"];
    let mut records = Vec::new();
    for i in 0..(PAGE as i64 + 300) {
        let name = names[(i % 4) as usize];
        let compilation = (i % 500 == 0).then(|| format!(r#"{{"services":[{{"name":"v{i}","status":"ok"}}]}}"#));
        let mut r = record(name, 1_000 + i, "normal", i % 700 == 0, compilation.as_deref());
        if i % 900 == 0 {
            r.clock_corrections.push(ClockCorrectionRow {
                at: r.poll.at,
                offset_ms: 1_500.25,
                correction_ms: -1_500.25,
                outcome: "applied".into(),
                detail: String::new(),
            });
        }
        records.push(r);
    }
    let mut b = batch(records);
    // Alert hygiene's rows too: an ack, an operator action and a downtime.
    b.push_ack(
        "mail-01".into(),
        crate::model::AckChange::Set(crate::model::Ack {
            by: "ops".into(),
            at: crate::store::suite::at(1_500),
            comment: "on it".into(),
            level: "critical".into(),
            sources: vec!["poll:refused".into()],
        }),
    );
    b.push_action(
        "mail-01".into(),
        crate::model::ActionRow {
            at: crate::store::suite::at(1_500),
            by: "ops".into(),
            action: "ack".into(),
            detail: "on it".into(),
        },
    );
    a.write(&b).await.unwrap();
    let downtime = crate::model::Downtime {
        id: 0,
        server: "web*".into(),
        starts_at: crate::store::suite::at(1_000),
        ends_at: crate::store::suite::at(9_000_000_000_000),
        comment: "kernel".into(),
        by: "ops".into(),
        created_at: crate::store::suite::at(1_000),
    };
    a.add_downtime(&downtime).await.unwrap();
    a.save_latest(&[("web 03".to_string(), bytes::Bytes::from_static(br#"{"newest":true}"#))]).await.unwrap();
    a.save_notify_memory(&NotifyRow {
        server: "mail-01".into(),
        level: "critical".into(),
        state: ServerState::Unreachable,
        flapping: true,
        seen_state: ServerState::Unreachable,
        changes: vec![crate::store::suite::at(1_000), crate::store::suite::at(2_000)],
        seq: 3,
    })
    .await
    .unwrap();

    let h = PostgresHarness::new().await;
    let p = h.open().await;
    let mut pages = 0;
    let first = copy(&a, &p, |_, _, _| pages += 1).await.unwrap();
    assert!(pages >= 2, "the polls took more than one page");
    let polls = first.iter().find(|c| c.table == "polls").unwrap();
    assert_eq!((polls.source_rows, polls.copied), (PAGE as u64 + 300, PAGE as u64 + 300));
    assert_same(&a, &p, &names).await;

    let again = copy(&a, &p, |_, _, _| {}).await.unwrap();
    for c in again.iter().filter(|c| ["polls", "transitions", "clock_corrections", "compilations"].contains(&c.table)) {
        assert_eq!(c.copied, 0, "{} copied twice", c.table);
    }
    assert_same(&a, &p, &names).await;

    // The poller goes on writing on PostgreSQL: new rows get ids above the copied ones.
    p.write(&batch([record("mail-01", 99_000, "critical", true, Some("{\"later\":1}"))])).await.unwrap();
    let hist = p.history("mail-01", 3).await.unwrap();
    assert_eq!(hist.polls[0].at.timestamp_millis(), 99_000);
    assert_eq!(hist.transitions[0].at.timestamp_millis(), 99_000);

    // And back to a new SQLite file, whose chains go on from the copied rows.
    let b = crate::store::open(&sqlite("b.db"), None).await.unwrap();
    copy(&p, &b, |_, _, _| {}).await.unwrap();
    assert_same(&p, &b, &names).await;
    b.write(&batch([record("mail-01", 100_000, "critical", false, None)])).await.unwrap();
    let times: Vec<i64> =
        b.history("mail-01", 3).await.unwrap().polls.iter().map(|p| p.at.timestamp_millis()).collect();
    assert_eq!(times[..2], [100_000, 99_000]);
}
