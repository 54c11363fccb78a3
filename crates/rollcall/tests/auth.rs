//! Who may use the poller, seen from outside its process (SPEC section 11): `rollcall
//! status` as a user of a poller that has users, and a poller that would serve an open
//! API on a non-loopback address refusing to start unless told `api_insecure = true`.

mod common;

use std::time::Duration;

use common::*;

const OPS_TOKEN: &str = "ops-0123456789abcdefghij";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_a_users_token_when_the_poller_has_users() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeAttendant::start(Fake::Healthy).await;
    let ops = write(dir.path(), "ops.token", &format!("{OPS_TOKEN}\n"));
    let wrong = write(dir.path(), "wrong.token", "not-the-token-of-anyone\n");
    let mut cfg = PollerToml::fast(vec![ServerEntry::new("mail-01", fake.url())]);
    cfg.extra = "\n[[api.user]]\nname = \"ops\"\nrole = \"viewer\"\ntoken_file = \"ops.token\"\n".into();
    let poller = start_poller(dir.path(), &cfg).await;
    let base = poller.api.base.clone();

    let (code, _, err) = run_cli(&["status", "--poller", &base]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401") && err.contains("--token-file"), "says what is missing: {err}");
    let (code, _, err) = run_cli(&["status", "--poller", &base, "--token-file", wrong.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not know this token"), "{err}");

    let (code, out, err) = run_cli(&["status", "--poller", &base, "--token-file", ops.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("mail-01"), "{out}");
    // The same from the environment, as a service unit would set it.
    let out = tokio::process::Command::new(bin())
        .args(["status", "--poller", &base, "--json"])
        .env("ROLLCALL_TOKEN_FILE", &ops)
        .env("ROLLCALL_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "mail-01", "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_poller_on_a_non_loopback_address_does_not_start_unless_api_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text =
        format!("listen = \"0.0.0.0:{port}\"\ndatabase = \"sqlite://{}\"\n", dir.path().join("rollcall.db").display());
    let config = write(dir.path(), "poller.toml", &text);
    let file = config.to_str().unwrap();

    // check-config names it, with its line and what to do.
    let (code, _, err) = run_cli(&["check-config", file]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{file}:1: listen: refused: 0.0.0.0:{port} is not a loopback address")), "{err}");
    assert!(err.contains("api_insecure = true"), "{err}");

    // The poller does not start, and says why.
    let mut p = Proc::spawn("poller", &["poller", "--config", file], dir.path().join("refused.log"));
    let status = p.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "it must not start; log:\n{}", p.log_text());
    assert!(p.log_text().contains("is not a loopback address"), "{}", p.log_text());
    assert!(!dir.path().join("rollcall.db").exists(), "refused before the database is made");

    // Told it is meant, it starts and warns.
    write(dir.path(), "poller.toml", &format!("api_insecure = true\n{text}"));
    let mut p = Proc::spawn("poller", &["poller", "--config", file], dir.path().join("insecure.log"));
    assert!(
        p.wait_http(&format!("http://127.0.0.1:{port}/api/v1/servers"), |s| s.is_success()).await,
        "{}",
        p.log_text()
    );
    p.wait_log("api_insecure = true: the API, dashboard and /metrics are open").await;
}
