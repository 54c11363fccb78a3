//! Who may use the poller (SPEC section 11) and its health (section 10), end to end against
//! the real poller in this process: users and roles by Bearer token and by HTTP basic auth,
//! the dashboard's login, same-origin checks on state changes, the open health check while
//! the store fails and recovers, polls on request under a storm, and the refusal of an
//! open API on a non-loopback address.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use rollcall_testkit::{wait_for, Api};
use serde_json::{json, Value};
use support::{Attendants, Poller, LEVELS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPS_TOKEN: &str = "ops-0123456789abcdefghij";
const NOC_TOKEN: &str = "noc-0123456789abcdefghij";

/// `[[api.user]]` tables: `ops` (operator) and `noc` (viewer) by token, `alice` (operator,
/// password `wonderland`) and `bob` (viewer, password `builder`) by bcrypt hash.
fn users(dir: &std::path::Path) -> String {
    std::fs::write(dir.join("ops.token"), OPS_TOKEN).unwrap();
    std::fs::write(dir.join("noc.token"), NOC_TOKEN).unwrap();
    let alice = bcrypt::hash("wonderland", 4).unwrap();
    let bob = bcrypt::hash("builder", 4).unwrap();
    format!(
        "[[api.user]]\nname = \"ops\"\nrole = \"operator\"\ntoken_file = \"ops.token\"\n\n\
         [[api.user]]\nname = \"noc\"\nrole = \"viewer\"\ntoken_file = \"noc.token\"\n\n\
         [[api.user]]\nname = \"alice\"\nrole = \"operator\"\npassword_hash = \"{alice}\"\n\n\
         [[api.user]]\nname = \"bob\"\nrole = \"viewer\"\npassword_hash = \"{bob}\"\n"
    )
}

/// Attendants of `names` and a poller watching them, with [`users`].
async fn with_users(dir: &std::path::Path, names: &[&str]) -> (Attendants, Poller) {
    let att = Attendants::start(dir, names).await;
    let poller = Poller::start(dir, &att, "", &users(dir)).await;
    (att, poller)
}

/// `method path` with `headers` (name, value): status, headers and body (JSON if it is).
async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let http = reqwest::Client::new();
    let url = format!("{base}{path}");
    let mut req = http.request(method.parse().unwrap(), &url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (status, h) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    (status, h, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn basic(user: &str, password: &str) -> (&'static str, String) {
    ("authorization", rollcall_testkit::api::basic(user, password))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_needs_a_user_and_a_viewer_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (_att, mut poller) = with_users(dir.path(), &["mail-01", "web-01"]).await;
    let base = poller.base.clone();

    // Nobody: only the health check answers; the rest asks for a login, as browsers expect.
    let (s, _, _) = send(&base, "GET", "/api/v1/health", &[]).await;
    assert_eq!(s, 200, "the health check is open");
    for (method, path) in [
        ("GET", "/api/v1/servers"),
        ("GET", "/api/v1/servers/mail-01/history"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/servers/mail-01"),
        ("POST", "/api/v1/servers/mail-01/poll"),
    ] {
        let (s, h, body) = send(&base, method, path, &[]).await;
        assert_eq!(s, 401, "{method} {path} without a user: {body}");
        assert_eq!(h["www-authenticate"], "Basic realm=\"rollcall\", charset=\"UTF-8\"", "{method} {path}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("log in")), "{method} {path}: {body}");
    }

    // Wrong credentials of every kind: 401, never a user.
    for (what, header) in [
        ("an unknown token", bearer("not-a-token-of-anyone-here")),
        ("a wrong password", basic("bob", "wrong")),
        ("an unknown name", basic("mallory", "builder")),
        ("a token user's wrong password", basic("ops", NOC_TOKEN)),
        ("another scheme", ("authorization", "Digest username=\"bob\"".to_string())),
        ("Basic that is not base64", ("authorization", "Basic %%%".to_string())),
    ] {
        let (s, h, body) = send(&base, "GET", "/api/v1/servers", &[header]).await;
        assert_eq!(s, 401, "{what}: {body}");
        assert!(h.contains_key("www-authenticate"), "{what}");
    }

    // Viewers read everything, by token or by password, and may not poll.
    for (who, header) in [("noc (token)", bearer(NOC_TOKEN)), ("bob (password)", basic("bob", "builder"))] {
        for path in ["/api/v1/servers", "/api/v1/servers/mail-01", "/api/v1/openapi.json", "/metrics", "/"] {
            let (s, _, body) = send(&base, "GET", path, std::slice::from_ref(&header)).await;
            assert_eq!(s, 200, "{who}: GET {path}: {body}");
        }
        let (s, _, body) = send(&base, "POST", "/api/v1/servers/mail-01/poll", std::slice::from_ref(&header)).await;
        assert_eq!(s, 403, "{who} may not poll: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("needs an operator")), "{body}");
    }

    // Operators poll, by token and by password; a token also logs in as basic auth's
    // password (a browser has no other way to send it).
    let (s, _, body) = send(&base, "POST", "/api/v1/servers/mail-01/poll", &[bearer(OPS_TOKEN)]).await;
    assert_eq!((s, body["name"].as_str()), (StatusCode::OK, Some("mail-01")), "{body}");
    let (s, _, body) = send(&base, "POST", "/api/v1/servers/web-01/poll", &[basic("alice", "wonderland")]).await;
    assert_eq!((s, body["name"].as_str()), (StatusCode::OK, Some("web-01")), "{body}");
    let (s, _, body) = send(&base, "GET", "/api/v1/servers", &[basic("ops", OPS_TOKEN)]).await;
    assert_eq!(s, 200, "{body}");

    // The testkit's client as a user, as other tests use it.
    let noc = Api::new(&base).with_token(NOC_TOKEN);
    assert_eq!(noc.servers().await.len(), 2);
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_login_and_shows_the_fleet_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_att, mut poller) = with_users(dir.path(), &["mail-01"]).await;
    let base = poller.base.clone();
    let (s, h, _) = send(&base, "GET", "/", &[]).await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic realm=\"rollcall\""), "{h:?}");
    // What a browser sends once its user typed name and password: the page, its script,
    // and the rows its script fetches live (a read by POST, from the same origin).
    let login = basic("bob", "builder");
    let (s, h, page) = send(&base, "GET", "/", std::slice::from_ref(&login)).await;
    assert_eq!(s, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"), "{h:?}");
    assert!(page.as_str().is_some_and(|p| p.contains("mail-01")), "the fleet page lists the server: {page}");
    let (s, _, _) = send(&base, "GET", "/assets/app.js", std::slice::from_ref(&login)).await;
    assert_eq!(s, 200);
    let same_origin = [
        login.clone(),
        ("origin", base.clone()),
        ("sec-fetch-site", "same-origin".to_string()),
        ("content-type", "application/json".to_string()),
    ];
    let http = reqwest::Client::new();
    let mut req = http.post(format!("{base}/fleet/rows")).body(r#"["mail-01"]"#);
    for (k, v) in &same_origin {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "a viewer's dashboard reads rows by POST: {}", r.text().await.unwrap());
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_from_another_origin_or_without_authorization_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_att, mut poller) = with_users(dir.path(), &["mail-01"]).await;
    let base = poller.base.clone();
    let ops = Api::new(&base).with_token(OPS_TOKEN);
    let polled = |s: &Value| s["last_poll_at"].clone();
    let before = polled(&ops.server("mail-01").await);
    let path = "/api/v1/servers/mail-01/poll";
    let port: u16 = base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the base URL");
    let next_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    for (what, headers) in [
        ("another Origin", vec![bearer(OPS_TOKEN), ("origin", "https://evil.example".to_string())]),
        ("another port of this host", vec![bearer(OPS_TOKEN), ("origin", next_port.clone())]),
        ("a null Origin", vec![bearer(OPS_TOKEN), ("origin", "null".to_string())]),
        ("Sec-Fetch-Site: cross-site", vec![bearer(OPS_TOKEN), ("sec-fetch-site", "cross-site".to_string())]),
        ("Sec-Fetch-Site: same-site", vec![bearer(OPS_TOKEN), ("sec-fetch-site", "same-site".to_string())]),
    ] {
        let (s, _, body) = send(&base, "POST", path, &headers).await;
        assert_eq!(s, 403, "{what}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("cross-origin")), "{what}: {body}");
    }
    // A browser's same-origin request without its login: refused for want of Authorization.
    let same = [("origin", base.clone()), ("sec-fetch-site", "same-origin".to_string())];
    let (s, _, body) = send(&base, "POST", path, &same).await;
    assert_eq!(s, 401, "no Authorization header: {body}");
    assert_eq!(polled(&ops.server("mail-01").await), before, "no refused request polled");
    // The same request with it is the operator's.
    let (s, _, body) = send(&base, "POST", path, &[same[0].clone(), same[1].clone(), bearer(OPS_TOKEN)]).await;
    assert_eq!(s, 200, "{body}");
    assert_ne!(polled(&body), before);
    poller.stop().await;
}

/// A fake attendant that answers every query with a valid compilation and counts them.
async fn counting_attendant() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let queries = Arc::new(AtomicUsize::new(0));
    let q = queries.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let q = q.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                q.fetch_add(1, Ordering::SeqCst);
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let body = json!({
                    "schema_version": 1,
                    "attendant": { "name": "fake", "version": "0", "hostname": "fake" },
                    "time": { "utc": now, "utc_offset_seconds": 0, "zone": "UTC", "received_at": now, "replied_at": now },
                    "services": [], "probes": [],
                    "host": { "uptime_s": 1, "load": [0.0, 0.0, 0.0], "cpu_percent": 0.0,
                              "memory": { "total": 1, "used": 0 }, "disks": [] },
                    "deficiencies": [],
                })
                .to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(reply.as_bytes()).await;
                let _ = c.shutdown().await;
            });
        }
    });
    (url, queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_poll_requests_makes_at_most_two_polls_and_the_rest_are_told_to_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (url, queries) = counting_attendant().await;
    // Open (no users, loopback); intervals so long that no scheduled poll comes meanwhile.
    let text = format!(
        "timeout = \"800ms\"\nfirst_poll_within = \"1h\"\n[[level]]\nname = \"normal\"\ninterval = \"7d\"\n\
         [[level]]\nname = \"critical\"\ninterval = \"7d\"\n\n[[server]]\nname = \"mail-01\"\naddress = \"{url}\"\n"
    );
    let mut poller = Poller::start_with(dir.path(), &text).await;
    let base = poller.base.clone();
    let path = "/api/v1/servers/mail-01/poll";

    // Open on loopback, it answers only requests for a loopback host: a page that rebinds
    // its own name to 127.0.0.1 cannot read it.
    let port = base.rsplit(':').next().unwrap();
    let (s, _, body) = send(&base, "GET", "/api/v1/servers", &[("host", format!("evil.example:{port}"))]).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("evil.example")), "{body}");
    let (s, _, body) = send(&base, "GET", "/api/v1/servers", &[("host", format!("localhost:{port}"))]).await;
    assert_eq!(s, 200, "{body}");

    // Open as it is, the poller refuses a state change from another origin (a web page the
    // operator visits must not poll through their browser).
    let (s, _, body) = send(&base, "POST", path, &[("origin", "https://evil.example".to_string())]).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(queries.load(Ordering::SeqCst), 0);

    // A first poll on request; the storm comes within its second. (Without it, on a fast
    // machine every request of the storm may join the one poll in flight: all 200, none
    // told to wait, which is right but shows nothing of the limit.)
    let (s, _, body) = send(&base, "POST", path, &[]).await;
    assert_eq!(s, 200, "{body}");
    let http = reqwest::Client::new();
    let answers = futures::future::join_all((0..200).map(|_| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.post(&url).send().await.expect("POST");
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (r.status(), retry_after, r.json::<Value>().await.expect("a JSON answer"))
        }
    }))
    .await;
    let polls = queries.load(Ordering::SeqCst);
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let told_to_wait: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!((1..=2).contains(&polls), "200 requests made {polls} polls");
    assert_eq!(ok + told_to_wait.len(), 200, "only 200 and 429: {answers:?}");
    assert!(!told_to_wait.is_empty(), "{ok} answered, none told to wait");
    for (_, retry_after, body) in &told_to_wait {
        assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("ask again")), "{body}");
    }
    for (_, _, body) in answers.iter().filter(|a| a.0 == 200) {
        assert_eq!(body["name"], "mail-01", "{body}");
    }
    // The history holds the polls made, not the requests.
    let hist = Api::new(&base).history("mail-01").await;
    assert_eq!(hist["polls"].as_array().map(Vec::len), Some(polls), "{hist:#}");
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_says_when_the_store_fails_and_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_att, mut poller) = with_users(dir.path(), &["mail-01"]).await;
    let base = poller.base.clone();
    let ops = Api::new(&base).with_token(OPS_TOKEN);
    let doc = ops.get("/api/v1/openapi.json").await;
    let health = || async {
        let r = reqwest::get(format!("{base}/api/v1/health")).await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let (s, h) = health().await;
    assert_eq!((s, &h["status"], &h["store"]["ok"]), (StatusCode::OK, &json!("ok"), &json!(true)), "{h:#}");
    assert_eq!((&h["store"]["failing_since"], &h["store"]["last_error"]), (&Value::Null, &Value::Null), "{h:#}");
    validate(&doc, "200", &h);

    // The disk "fails": every insert of a poll row is refused (as store/sqlite/tests.rs's
    // break_writes does), from a second connection to the same file.
    let db =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("rollcall.db").display())).await.unwrap();
    sqlx::query("CREATE TRIGGER injected_fault BEFORE INSERT ON polls BEGIN SELECT RAISE(ABORT, 'injected fault: disk I/O error'); END")
        .execute(&db)
        .await
        .unwrap();
    ops.poll_now("mail-01").await;
    let h = wait_for("health to say the store fails", || async {
        let (s, h) = health().await;
        (s == 503).then_some(h)
    })
    .await;
    assert_eq!((&h["status"], &h["store"]["ok"]), (&json!("degraded"), &json!(false)), "{h:#}");
    assert!(h["store"]["last_error"].as_str().is_some_and(|e| e.contains("injected fault")), "{h:#}");
    assert!(
        h["store"]["failing_since"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{h:#}"
    );
    assert!(h["store"]["pending_rows"].as_u64() >= Some(1), "the failed poll is kept: {h:#}");
    validate(&doc, "503", &h);
    let metrics = ops.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("rollcall_store_errors_total 0\n"), "{metrics}");

    // Space is back: the writer's retry writes what it kept, and health says so.
    sqlx::query("DROP TRIGGER injected_fault").execute(&db).await.unwrap();
    let h = wait_for("health to say the store works again", || async {
        let (s, h) = health().await;
        (s == 200).then_some(h)
    })
    .await;
    assert_eq!((&h["status"], &h["store"]["pending_rows"]), (&json!("ok"), &json!(0)), "{h:#}");
    let hist = ops.history("mail-01").await;
    assert!(!hist["polls"].as_array().unwrap().is_empty(), "the kept poll was written: {hist:#}");
    db.close().await;
    poller.stop().await;
}

/// Validates a health answer against the OpenAPI document's schema for `status`.
fn validate(doc: &Value, status: &str, value: &Value) {
    let mut root =
        doc["paths"]["/api/v1/health"]["get"]["responses"][status]["content"]["application/json"]["schema"].clone();
    assert!(!root.is_null(), "no {status} schema for the health check");
    root["components"] = doc["components"].clone();
    let v = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = v.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "health {status} does not match the document: {errors:?}\n{value:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_on_a_non_loopback_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("database = \"sqlite://{}\"\n{LEVELS}", dir.path().join("r.db").display());
    let path = dir.path().join("poller.toml");
    std::fs::write(&path, &text).unwrap();
    // The listener the caller bound is what counts, not only the config's `listen`.
    let config = rollcall_poller::PollerConfig::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let refused =
        tokio::time::timeout(std::time::Duration::from_secs(10), rollcall_poller::run(config, listener, stop.clone()));
    let err = refused.await.expect("refused at once, not served").expect_err("an open API on 0.0.0.0");
    let err = format!("{err:#}");
    assert!(err.contains("is not a loopback address") && err.contains("api_insecure = true"), "{err}");
    assert!(!dir.path().join("r.db").exists(), "refused before anything is opened");

    // With api_insecure, the operator has said so: it serves (and warns).
    std::fs::write(&path, format!("api_insecure = true\n{text}")).unwrap();
    let config = rollcall_poller::PollerConfig::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(rollcall_poller::run(config, listener, stop.clone()));
    let url = format!("http://127.0.0.1:{port}/api/v1/servers");
    wait_for("the insecure poller to answer", || async { reqwest::get(&url).await.ok().filter(|r| r.status() == 200) })
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}
