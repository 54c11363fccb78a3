//! The storage test suite: what every backend must do, written against [`Store`] and the
//! [`Writer`] only, so another backend runs it unchanged. A backend's tests provide a
//! [`Harness`] and expand [`store_suite!`](crate::store_suite) once.

use chrono::{DateTime, Utc};
use rollcall_protocol::{Deficiency, Severity};

use super::{Batch, Retention, SharedStore, Writer};
use crate::model::{
    Ack, AckChange, ActionRow, ChangedCompilation, ClockCorrectionRow, Downtime, History, NoticeClaim, NotifyRow,
    PollRecord, PollRow, ServerFacts, ServerState, TransitionRow,
};

/// What a backend gives the suite.
#[async_trait::async_trait]
pub(crate) trait Harness: Send + Sync + Sized {
    /// A harness on a new, empty database.
    async fn new() -> Self;
    /// A store on this harness's database (a second call reopens the same database).
    async fn open(&self) -> SharedStore;
    /// Makes every write fail until [`Harness::heal`], as a full disk or a read-only
    /// database would.
    async fn break_writes(&self);
    async fn heal(&self);
    /// True (after saying why) when the backend's server is not to be started here
    /// (e.g. `ROLLCALL_SKIP_POSTGRES_TESTS=1`); each case then returns at once.
    fn skip() -> bool {
        false
    }
}

/// Expands the suite into one test per case for `$harness`.
#[macro_export]
#[doc(hidden)]
macro_rules! store_suite {
    ($harness:ty: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if <$harness as $crate::store::suite::Harness>::skip() {
                    return;
                }
                let h = <$harness as $crate::store::suite::Harness>::new().await;
                $crate::store::suite::$case(&h).await;
            }
        )*
    };
    ($harness:ty) => {
        $crate::store_suite!($harness:
            state_survives_reopening,
            history_is_newest_first_and_a_failed_poll_keeps_the_last_compilation,
            a_steady_server_reads_back_its_last_poll,
            changed_compilations_join_the_history_and_are_pruned_by_age,
            notification_memory_survives_reopening,
            writer_batches_and_flush_waits_for_everything_before_it,
            a_mark_is_committed_by_the_window_s_own_commit,
            a_failed_write_is_kept_and_stored_once_the_store_works_again,
            acks_and_operator_actions_survive_reopening_and_an_ended_ack_is_gone,
            downtimes_survive_reopening_until_closed,
            a_notice_is_claimed_once_and_its_memory_with_it,
        );
    };
}

pub(crate) fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// One poll of `name` at `at_ms` that finds it unreachable at `level`; with a transition
/// to `level` when `transition`, and a changed compilation when given.
pub(crate) fn record(name: &str, at_ms: i64, level: &str, transition: bool, compilation: Option<&str>) -> PollRecord {
    let mut facts = ServerFacts::new(name, &format!("http://{name}:7460"), level);
    facts.calm_streak = 1;
    facts.state = ServerState::Unreachable;
    facts.deficiencies =
        vec![Deficiency { source: "poll:refused".into(), severity: Severity::Critical, summary: "x".into() }];
    facts.last_poll_at = Some(at(at_ms));
    facts.last_error = Some("connection refused".into());
    facts.clock_offset_ms = Some(-1.5);
    facts.rtt_ms = Some(0.25);
    PollRecord {
        facts,
        facts_changed: true,
        poll: PollRow {
            at: at(at_ms),
            state: ServerState::Unreachable,
            level: level.into(),
            rtt_ms: None,
            clock_offset_ms: None,
            error: Some("connection refused".into()),
            deficiencies: 1,
        },
        transition: transition.then(|| TransitionRow {
            at: at(at_ms),
            from: "normal".into(),
            to: level.into(),
            reason: "poll:refused".into(),
        }),
        compilation: compilation.map(|c| ChangedCompilation {
            hash: c.bytes().fold(7i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b))),
            body: bytes::Bytes::from(c.to_string()),
        }),
        clock_corrections: vec![],
    }
}

/// The records as one batch.
pub(crate) fn batch(records: impl IntoIterator<Item = PollRecord>) -> Batch {
    let mut b = Batch::default();
    for r in records {
        b.push(r);
    }
    b
}

fn poll_times(h: &History) -> Vec<i64> {
    h.polls.iter().map(|p| p.at.timestamp_millis()).collect()
}

pub(crate) async fn state_survives_reopening(h: &impl Harness) {
    let store = h.open().await;
    store.write(&batch([record("mail-01", 1_000, "critical", true, Some("{\"a\":1}"))])).await.unwrap();
    store.close().await;
    let store = h.open().await;
    let rows = store.load_servers().await.unwrap();
    assert_eq!(rows.len(), 1);
    let f = &rows[0].facts;
    assert_eq!((f.level.as_str(), f.state, f.calm_streak), ("critical", ServerState::Unreachable, 1));
    assert_eq!(f.deficiencies[0].source, "poll:refused");
    assert_eq!(f.last_poll_at, Some(at(1_000)));
    assert_eq!(f.last_error.as_deref(), Some("connection refused"));
    assert_eq!(rows[0].substance, record("x", 0, "n", false, Some("{\"a\":1}")).compilation.map(|c| c.hash));
    assert_eq!(store.compilation("mail-01").await.unwrap().as_deref(), Some("{\"a\":1}"));
}

pub(crate) async fn history_is_newest_first_and_a_failed_poll_keeps_the_last_compilation(h: &impl Harness) {
    let store = h.open().await;
    store.write(&batch([record("a", 1_000, "normal", false, Some("{\"n\":1}"))])).await.unwrap();
    store
        .write(&batch([record("a", 2_000, "critical", true, None), record("b", 2_500, "normal", false, None)]))
        .await
        .unwrap();
    let mut third = record("a", 3_000, "critical", false, None);
    third.clock_corrections.push(ClockCorrectionRow {
        at: at(3_000),
        offset_ms: 45_000.0,
        correction_ms: -45_000.0,
        outcome: "applied".into(),
        detail: "stepped".into(),
    });
    store.write(&batch([third])).await.unwrap();
    let hist = store.history("a", 10).await.unwrap();
    assert_eq!(poll_times(&hist), [3_000, 2_000, 1_000]);
    assert_eq!(hist.transitions.len(), 1);
    assert_eq!((hist.transitions[0].from.as_str(), hist.transitions[0].to.as_str()), ("normal", "critical"));
    assert_eq!(hist.clock_corrections.len(), 1);
    assert_eq!(hist.clock_corrections[0].correction_ms, -45_000.0);
    assert_eq!(poll_times(&store.history("a", 2).await.unwrap()), [3_000, 2_000], "the limit holds");
    assert_eq!(store.history("a", 0).await.unwrap(), History::default(), "a limit of 0 is none of each kind");
    assert_eq!(poll_times(&store.history("b", 10).await.unwrap()), [2_500]);
    assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some("{\"n\":1}"));
    assert_eq!(store.compilation("nobody").await.unwrap(), None);
    assert_eq!(store.history("nobody", 10).await.unwrap(), History::default());
}

pub(crate) async fn a_steady_server_reads_back_its_last_poll(h: &impl Harness) {
    let store = h.open().await;
    store.write(&batch([record("a", 1_000, "normal", false, None)])).await.unwrap();
    // Later polls that change nothing but time, offset and delay leave the facts alone.
    let mut later = record("a", 5_000, "normal", false, None);
    later.facts_changed = false;
    later.poll.clock_offset_ms = Some(7.5);
    later.poll.rtt_ms = Some(0.5);
    store.write(&batch([later])).await.unwrap();
    let rows = store.load_servers().await.unwrap();
    assert_eq!(rows[0].facts.last_poll_at, Some(at(5_000)), "the newest poll's time");
    assert_eq!((rows[0].facts.clock_offset_ms, rows[0].facts.rtt_ms), (Some(7.5), Some(0.5)));
    // A failed poll has no offset: the one in the facts last written stays.
    let mut failed = record("a", 9_000, "normal", false, None);
    failed.facts_changed = false;
    store.write(&batch([failed])).await.unwrap();
    let rows = store.load_servers().await.unwrap();
    assert_eq!(rows[0].facts.last_poll_at, Some(at(9_000)));
    assert_eq!(rows[0].facts.clock_offset_ms, Some(-1.5), "the facts' offset");
}

pub(crate) async fn changed_compilations_join_the_history_and_are_pruned_by_age(h: &impl Harness) {
    let store = h.open().await;
    let ok = |t: &str| format!(r#"{{"time":{{"utc":"{t}"}},"services":[{{"name":"mta","status":"ok"}}]}}"#);
    let bad = r#"{"services":[{"name":"mta","status":"critical"}]}"#;
    let day = 86_400_000;
    let unchanged = |name: &str, t: i64| record(name, t, "normal", false, None);
    store.write(&batch([record("a", day, "normal", false, Some(&ok("1"))), unchanged("a", 2 * day)])).await.unwrap();
    store.write(&batch([unchanged("a", 3 * day)])).await.unwrap();
    assert_eq!(store.compilation("a").await.unwrap(), Some(ok("1")), "an unchanged poll keeps the latest");
    store
        .write(&batch([
            record("a", 40 * day, "normal", false, Some(bad)),
            record("b", 40 * day, "normal", false, Some(bad)),
        ]))
        .await
        .unwrap();
    let a = store.compilations("a", 10).await.unwrap();
    assert_eq!(a.len(), 2, "the first, then the change: {a:?}");
    assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some(bad), "a change is the latest");
    // A reopened store tells the fleet the substance it stored last.
    let hash_of_bad = record("x", 0, "normal", false, Some(bad)).compilation.unwrap().hash;
    store.close().await;
    let store = h.open().await;
    let rows = store.load_servers().await.unwrap();
    assert!(rows.iter().all(|r| r.substance == Some(hash_of_bad)), "{rows:?}");
    store.write(&batch([unchanged("b", 41 * day)])).await.unwrap();
    // What the fleet held at shutdown becomes the latest, not history.
    store.save_latest(&[("b".to_string(), bytes::Bytes::from(ok("shutdown")))]).await.unwrap();
    assert_eq!(store.compilation("b").await.unwrap(), Some(ok("shutdown")));
    assert_eq!(store.compilations("b", 10).await.unwrap().len(), 1);

    let p = store.prune(&Retention::default(), at(45 * day)).await.unwrap();
    assert_eq!((p.polls, p.compilations), (3, 1), "older than 30 days: 3 polls, a's first compilation");
    assert_eq!(store.history("a", 10).await.unwrap().polls.len(), 1);
    store.prune(&Retention::default(), at(400 * day)).await.unwrap();
    assert_eq!(store.compilations("a", 10).await.unwrap().len(), 1, "each server's newest is spared");
}

pub(crate) async fn notification_memory_survives_reopening(h: &impl Harness) {
    let store = h.open().await;
    let row = NotifyRow {
        server: "mail-01".into(),
        level: "critical".into(),
        state: ServerState::Unreachable,
        flapping: true,
        seen_state: ServerState::Deficient,
        changes: vec![at(1_000), at(2_000)],
        seq: 3,
    };
    store.save_notify_memory(&row).await.unwrap();
    let mut newer = row.clone();
    newer.flapping = false;
    store.save_notify_memory(&newer).await.unwrap();
    let other = NotifyRow { server: "mail-02".into(), flapping: false, seq: 1, ..row.clone() };
    store.save_notify_memory(&other).await.unwrap();
    store.close().await;
    let store = h.open().await;
    let mut all = store.load_notify_memory(None).await.unwrap();
    all.sort_by(|a, b| a.server.cmp(&b.server));
    assert_eq!(all, [newer.clone(), other.clone()]);
    // One server's row alone, as the notifier rereads it after another node's claim.
    assert_eq!(store.load_notify_memory(Some("mail-01")).await.unwrap(), [newer]);
    assert_eq!(store.load_notify_memory(Some("mail-02")).await.unwrap(), [other]);
    assert_eq!(store.load_notify_memory(Some("mail-03")).await.unwrap(), []);
}

pub(crate) async fn writer_batches_and_flush_waits_for_everything_before_it(h: &impl Harness) {
    let store = h.open().await;
    let (writer, task) = Writer::start(store.clone());
    for i in 0..500 {
        writer.record(record("a", 1_000 + i, "normal", false, None)).await.unwrap();
    }
    writer.flush().await.unwrap();
    assert_eq!(store.history("a", 1000).await.unwrap().polls.len(), 500);
    assert!(writer.stats().batches.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    drop(writer);
    task.await.unwrap();
}

pub(crate) async fn a_mark_is_committed_by_the_window_s_own_commit(h: &impl Harness) {
    use std::sync::atomic::Ordering::Relaxed;
    let store = h.open().await;
    let (writer, task) = Writer::start(store.clone());
    let mut committed = writer.committed();
    let mut marks = Vec::new();
    for i in 0..3 {
        writer.record(record("a", 1_000 + i, "normal", false, None)).await.unwrap();
        marks.push(writer.mark());
    }
    assert_eq!(marks, [1, 2, 3], "each record counted once queued");
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), committed.wait_for(|&c| c >= 3)).await;
    assert!(waited.expect("the writer never committed the three records").is_ok());
    assert_eq!(store.history("a", 10).await.unwrap().polls.len(), 3, "committed means stored");
    assert_eq!(writer.stats().batches.load(Relaxed), 1, "waiting for a mark forces no commit of its own");
    drop(writer);
    task.await.unwrap();
}

pub(crate) async fn a_failed_write_is_kept_and_stored_once_the_store_works_again(h: &impl Harness) {
    use std::sync::atomic::Ordering::Relaxed;
    let store = h.open().await;
    let (writer, task) = Writer::start(store.clone());
    writer.record(record("a", 1_000, "normal", false, Some("{\"n\":1}"))).await.unwrap();
    writer.flush().await.unwrap();
    h.break_writes().await;
    writer.record(record("a", 2_000, "critical", true, Some("{\"n\":2}"))).await.unwrap();
    writer.record(record("b", 2_100, "critical", true, None)).await.unwrap();
    let err = writer.flush().await.expect_err("the store is failing");
    assert!(err.to_string().contains("records wait to be written"), "{err}");
    assert!(writer.stats().failures.load(Relaxed) >= 1);
    assert!(writer.stats().pending.load(Relaxed) > 0);
    // More polls while it fails join the kept batch.
    writer.record(record("a", 3_000, "critical", false, None)).await.unwrap();
    h.heal().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while writer.flush().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote the kept batch");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let a = store.history("a", 10).await.unwrap();
    assert_eq!(poll_times(&a), [3_000, 2_000, 1_000], "every poll, once");
    assert_eq!(a.transitions.len(), 1, "the transition, once");
    assert_eq!(store.history("b", 10).await.unwrap().transitions.len(), 1);
    assert_eq!(store.compilation("a").await.unwrap().as_deref(), Some("{\"n\":2}"));
    assert_eq!(store.compilations("a", 10).await.unwrap().len(), 2);
    let rows = store.load_servers().await.unwrap();
    let a_row = rows.iter().find(|r| r.facts.name == "a").unwrap();
    assert_eq!(a_row.facts.level, "critical", "the facts of the failed batch");
    assert_eq!(writer.stats().pending.load(Relaxed), 0);
    drop(writer);
    task.await.unwrap();
}

fn ack(at_ms: i64, comment: &str) -> Ack {
    Ack {
        by: "ops".into(),
        at: at(at_ms),
        comment: comment.into(),
        level: "critical".into(),
        sources: vec!["poll:refused".into()],
    }
}

pub(crate) async fn acks_and_operator_actions_survive_reopening_and_an_ended_ack_is_gone(h: &impl Harness) {
    let store = h.open().await;
    let mut b = batch([record("a", 1_000, "critical", true, None), record("b", 1_000, "critical", true, None)]);
    b.push_ack("a".into(), AckChange::Set(ack(1_500, "on it")));
    b.push_ack("b".into(), AckChange::Set(ack(1_500, "first")));
    // An end of an older ack leaves the newer one alone; the end of the current one removes it.
    b.push_ack("b".into(), AckChange::Set(ack(1_600, "second")));
    b.push_ack("b".into(), AckChange::Ended { at: at(1_500) });
    let action = ActionRow { at: at(1_500), by: "ops".into(), action: "ack".into(), detail: "on it".into() };
    b.push_action("a".into(), action.clone());
    store.write(&b).await.unwrap();
    store.close().await;
    let store = h.open().await;
    let rows = store.load_servers().await.unwrap();
    let acked = |n: &str| rows.iter().find(|r| r.facts.name == n).unwrap().facts.ack.clone().map(|a| *a);
    assert_eq!(acked("a"), Some(ack(1_500, "on it")), "with what was acknowledged");
    assert_eq!(acked("b"), Some(ack(1_600, "second")));
    assert_eq!(store.history("a", 10).await.unwrap().actions, [action]);
    assert!(store.history("b", 10).await.unwrap().actions.is_empty());

    let mut b = Batch::default();
    b.push_ack("a".into(), AckChange::Ended { at: at(1_500) });
    store.write(&b).await.unwrap();
    let rows = store.load_servers().await.unwrap();
    assert_eq!(rows.iter().find(|r| r.facts.name == "a").unwrap().facts.ack, None);
}

pub(crate) async fn downtimes_survive_reopening_until_closed(h: &impl Harness) {
    let store = h.open().await;
    let new = |glob: &str| Downtime {
        id: 0,
        server: glob.into(),
        starts_at: at(1_000),
        ends_at: at(9_000),
        comment: "kernel upgrade".into(),
        by: "ops".into(),
        created_at: at(500),
    };
    let web = store.add_downtime(&new("web-*")).await.unwrap();
    let mail = store.add_downtime(&new("mail-0?")).await.unwrap();
    assert_ne!(web.id, mail.id);
    assert_eq!(Downtime { id: 0, ..web.clone() }, new("web-*"));
    store.close().await;
    let store = h.open().await;
    assert_eq!(store.open_downtimes().await.unwrap(), [web.clone(), mail.clone()]);
    assert_eq!(store.close_downtime(web.id).await.unwrap(), Some(web.clone()));
    assert_eq!(store.close_downtime(web.id).await.unwrap(), None, "closed once");
    assert_eq!(store.close_downtime(12_345).await.unwrap(), None);
    assert_eq!(store.open_downtimes().await.unwrap(), [mail]);
}

/// The notice key is UNIQUE: a second claim (another node, a restart) is refused and
/// writes nothing; the memory is saved only with the claim that won; an older memory row
/// (a lower `seq`, from a node that lost the server) never overwrites a newer one; and
/// claims are pruned with the transitions.
pub(crate) async fn a_notice_is_claimed_once_and_its_memory_with_it(h: &impl Harness) {
    let store = h.open().await;
    let told = |state: ServerState, seq: i64| NotifyRow {
        server: "mail-01".into(),
        level: "critical".into(),
        state,
        flapping: false,
        seen_state: state,
        changes: vec![at(1_000)],
        seq,
    };
    let claim = NoticeClaim {
        key: "told:1:mail-01".into(),
        server: "mail-01".into(),
        kind: "problem".into(),
        node: "poller-a".into(),
        at: at(1_000),
    };
    assert!(store.claim_notice(&claim, Some(&told(ServerState::Unreachable, 1))).await.unwrap());
    // Another node deciding from the same stored memory names the same notice: refused,
    // and its memory is not written.
    let second = h.open().await;
    assert!(!second.claim_notice(&claim, Some(&told(ServerState::Deficient, 1))).await.unwrap());
    assert_eq!(store.load_notify_memory(None).await.unwrap(), [told(ServerState::Unreachable, 1)]);
    // A stale node's memory (seq 0) does not undo the claim's.
    second.save_notify_memory(&told(ServerState::Ok, 0)).await.unwrap();
    assert_eq!(store.load_notify_memory(None).await.unwrap(), [told(ServerState::Unreachable, 1)]);
    // A notice that changes no memory (a clock order) is claimed once too.
    let clock = NoticeClaim { key: "clock:5000:mail-01".into(), kind: "clock".into(), at: at(5_000), ..claim.clone() };
    assert!(store.claim_notice(&clock, None).await.unwrap());
    assert!(!store.claim_notice(&clock, None).await.unwrap());
    // Kept as long as transitions, then pruned: 400 days after the first, only it goes.
    let day = 86_400_000;
    let p = store.prune(&Retention::default(), at(1_000 + 400 * day + 2_000)).await.unwrap();
    assert_eq!(p.notices, 1);
    store.close().await;
    let store = h.open().await;
    assert!(!store.claim_notice(&clock, None).await.unwrap(), "a restart remembers the claim");
}
