//! `rollcall store copy` as an operator moving to PostgreSQL runs it: a poller on SQLite
//! keeps history, is stopped, its store is copied into a real PostgreSQL, and a poller on
//! PostgreSQL shows the same levels and history and goes on from there.

mod common;

use std::time::Duration;

use common::*;
use rollcall_testkit::postgres::{self, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_installation_moves_to_postgres_with_its_history() {
    if postgres::skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gone = format!("http://127.0.0.1:{}", free_port());
    let cfg = PollerToml::fast(vec![ServerEntry::new("gone", gone)]);
    let mut poller = start_poller(dir.path(), &cfg).await;
    let before = poller.api.wait_history("gone", "3 polls", |h| h["polls"].as_array().unwrap().len() >= 3).await;
    poller.proc.signal("TERM");
    assert!(poller.proc.wait_exit(Duration::from_secs(10)).await.success());
    let (port, config) = (poller.port, poller.config.clone());
    drop(poller);
    let sqlite_history = {
        // What the SQLite poller had at its stop: reread by the same poller started again.
        let p = spawn_poller(dir.path(), &config, port).await.unwrap_or_else(|p| panic!("{}", p.log_text()));
        let mut p = p;
        let h = p.api.history("gone").await;
        p.proc.signal("TERM");
        assert!(p.proc.wait_exit(Duration::from_secs(10)).await.success());
        h
    };
    assert!(sqlite_history["polls"].as_array().unwrap().len() >= before["polls"].as_array().unwrap().len());

    let pg = Postgres::start(dir.path());
    let url = pg.create_database("fleet");
    let from = format!("sqlite://{}", dir.path().join("rollcall.db").display());
    let (code, out, err) = run_cli(&["store", "copy", "--from", &from, "--to", &url]).await;
    assert_eq!(code, Some(0), "store copy failed:\n{out}\n{err}");
    let polls_line = out.lines().find(|l| l.starts_with("polls")).unwrap_or_else(|| panic!("{out}"));
    let n = sqlite_history["polls"].as_array().unwrap().len();
    assert!(polls_line.contains(&format!(" {n} copied")), "{polls_line:?} for {n} polls");
    assert!(err.contains("polls:"), "progress is shown: {err}");

    // Run again: nothing more is copied.
    let (code, out, err) = run_cli(&["store", "copy", "--from", &from, "--to", &url]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.lines().any(|l| l.starts_with("polls") && l.contains(" 0 copied")), "{out}");

    // A poller on PostgreSQL: same level, same history, then more polls.
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .map(|l| if l.starts_with("database") { format!("database = \"{url}\"") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    let pg_config = write(dir.path(), "poller-pg.toml", &text);
    let p = spawn_poller(dir.path(), &pg_config, port).await.unwrap_or_else(|p| panic!("{}", p.log_text()));
    let server = p.api.server("gone").await;
    assert_eq!((server["level"].as_str(), server["state"].as_str()), (Some("critical"), Some("unreachable")));
    let h = p.api.history("gone").await;
    assert_eq!(h["transitions"], sqlite_history["transitions"]);
    let copied = &h["polls"].as_array().unwrap()[h["polls"].as_array().unwrap().len() - n..];
    assert_eq!(copied, sqlite_history["polls"].as_array().unwrap().as_slice(), "the copied polls, as they were");
    p.api.wait_history("gone", "new polls on PostgreSQL", |h| h["polls"].as_array().unwrap().len() >= n + 2).await;
}
