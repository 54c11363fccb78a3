//! Reliability suite, hostile attendants (SPEC section 10; issue 12, faults 1–3): fake
//! attendants answer the real poller with trickled, endless, lying and poisoned replies.
//! Each is its named `poll:KIND` deficiency, never a panic, never an `ok` the API cannot
//! show; the one honest attendant among them is shown whole.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

type Behaviour = Arc<dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A fake attendant on a loopback port: reads each request head, then does `b`.
async fn fake(b: Behaviour) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let b = b.clone();
            tokio::spawn(async move {
                if read_request_head(&mut c).await {
                    b(c).await;
                }
            });
        }
    });
    url
}

/// Writes `bytes` and closes.
fn raw(bytes: Vec<u8>) -> Behaviour {
    Arc::new(move |mut c| {
        let bytes = bytes.clone();
        Box::pin(async move {
            let _ = c.write_all(&bytes).await;
            let _ = c.shutdown().await;
        })
    })
}

/// A valid compilation sent one byte every 100 ms.
fn trickle() -> Behaviour {
    Arc::new(|mut c| {
        Box::pin(async move {
            let reply = http_response("200 OK", &compilation_json(1).to_string());
            for b in reply.as_bytes() {
                if c.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    })
}

/// A chunked reply that never ends: 16 kB chunks as fast as the poller reads them.
fn endless_chunks() -> Behaviour {
    Arc::new(|mut c| {
        Box::pin(async move {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            while c.write_all(chunk.as_bytes()).await.is_ok() {}
        })
    })
}

/// Declares 2000 bytes, sends 10, and holds the connection.
fn lying_and_holding() -> Behaviour {
    Arc::new(|mut c| {
        Box::pin(async move {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n{\"schema\":").await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
    })
}

/// A compilation whose first service's `message` is `message` (raw bytes) and `details`
/// is `details` (raw JSON text).
fn poisoned(message: &[u8], details: &str) -> Vec<u8> {
    let mut doc = compilation_json(1);
    doc["services"] = serde_json::json!([{
        "name": "mta", "check": "tcp", "status": "ok", "message": "MESSAGE",
        "observed_at": doc["time"]["utc"].clone(), "duration_ms": 1.0, "details": {"d": "DETAILS"}
    }]);
    let text = doc.to_string().into_bytes();
    let body =
        replace(&replace(&text, b"\"MESSAGE\"", &[b"\"", message, b"\""].concat()), b"\"DETAILS\"", details.as_bytes());
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    reply
}

fn replace(hay: &[u8], what: &[u8], with: &[u8]) -> Vec<u8> {
    let i = hay.windows(what.len()).position(|w| w == what).expect("placeholder");
    [&hay[..i], with, &hay[i + what.len()..]].concat()
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_replies_are_named_deficiencies_and_what_is_accepted_is_shown_whole() {
    let dir = tempfile::tempdir().unwrap();
    let huge_length = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000000\r\n\r\n{}".to_vec();
    let wrapping_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\nabc\r\n".to_vec();
    let cases: Vec<(&str, Behaviour, &str)> = vec![
        ("trickling", trickle(), "poll:timeout"),
        ("endless-chunks", endless_chunks(), "poll:oversized"),
        ("lying-length-huge", raw(huge_length), "poll:oversized"),
        ("lying-length-holding", lying_and_holding(), "poll:timeout"),
        ("wrapping-chunk-size", raw(wrapping_chunk), "poll:oversized"),
        ("non-utf8-message", raw(poisoned(b"caf\xe9 \xff\xfe", "{}")), "poll:malformed"),
        ("lone-surrogate", raw(poisoned(b"\\ud800", "{}")), "poll:malformed"),
        ("deep-details", raw(poisoned(b"fine", &nested(100_000))), "poll:malformed"),
        ("number-beyond-f64", raw(poisoned(b"fine", "1e400")), "poll:malformed"),
        ("honest-unicode", raw(poisoned("caf\u{e9} \u{1F600} \\u00e9".as_bytes(), &nested(40))), ""),
    ];
    let mut servers = Vec::new();
    for (name, b, _) in &cases {
        servers.push(ServerEntry::new(name, fake(b.clone()).await));
    }
    let poller = start_poller(dir.path(), &PollerToml::fast(servers)).await;
    let api = &poller.api;
    for (name, _, source) in &cases {
        let s = api.wait_server(name, "polled", |s| s["last_poll_at"].is_string()).await;
        if source.is_empty() {
            assert_eq!((s["state"].as_str(), sources(&s)), (Some("ok"), vec![]), "{name}: {s:#}");
            let message = &s["compilation"]["services"][0]["message"];
            assert_eq!(message, "caf\u{e9} \u{1F600} \u{e9}", "{name}: accepted, so shown whole: {s:#}");
            let mut depth = 0;
            let mut d = &s["compilation"]["services"][0]["details"]["d"];
            while let Value::Array(a) = d {
                depth += 1;
                d = &a[0];
            }
            assert_eq!(depth, 40, "{name}: the details are shown as received");
            continue;
        }
        assert_eq!(s["state"], "unreachable", "{name}: {s:#}");
        assert_eq!(sources(&s), [source.to_string()], "{name}: {s:#}");
        assert!(s["compilation"].is_null(), "{name}: a refused reply is not shown: {s:#}");
        println!("figure: {name}: {source}: {}", s["last_error"].as_str().unwrap_or(""));
    }
    let s = api.server("deep-details").await;
    assert!(s["last_error"].as_str().unwrap().contains("nested deeper than 64"), "{s:#}");
    let s = api.server("non-utf8-message").await;
    assert!(s["last_error"].as_str().unwrap().contains("line 1"), "the error says where: {s:#}");
    // Every server is polled again on schedule: none is stuck.
    let at = time(&api.server("wrapping-chunk-size").await, "last_poll_at");
    api.wait_server("wrapping-chunk-size", "polled again", |s| time(s, "last_poll_at") > at).await;
    let log = poller.proc.log_text();
    assert!(!log.contains("panicked") && !log.contains("cannot show"), "{log}");
}
