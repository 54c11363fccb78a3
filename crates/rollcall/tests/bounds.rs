//! SPEC section 6, "every input is bounded", seen from outside the attendant process:
//! oversized request headers are refused, and connections that never finish a request
//! cannot keep the poller out for good.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_request_header_is_refused_and_the_attendant_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let att =
        start_attendant(dir.path(), "mail-01", |port| attendant_toml("mail-01", port, &AttAuth::Insecure, &[])).await;
    let mut c = TcpStream::connect(att.addr()).await.unwrap();
    let head = format!("GET /v1/compilation HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1_000_000));
    let _ = c.write_all(head.as_bytes()).await;
    let mut reply = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut reply)).await.expect("no answer").unwrap_or(0);
    let status = String::from_utf8_lossy(&reply[..n]).to_string();
    assert!(status.starts_with("HTTP/1.1 431"), "a 1 MB header must be refused with 431, got {status:?}");
    let (code, _, err) = run_cli(&["query", &att.addr(), "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_request_cannot_lock_the_poller_out() {
    let dir = tempfile::tempdir().unwrap();
    let att =
        start_attendant(dir.path(), "mail-01", |port| attendant_toml("mail-01", port, &AttAuth::Insecure, &[])).await;

    // More half-sent requests than the attendant holds connections (256): a slowloris.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut c = TcpStream::connect(att.addr()).await.expect("connect");
        c.write_all(b"GET /v1/compil").await.expect("write");
        held.push(c);
    }

    // The attendant must drop connections that do not complete their request header in
    // bounded time, so its poller gets in again; it must not stay locked out while the
    // idle connections are held.
    let start = Instant::now();
    loop {
        let (code, _, err) = run_cli(&["query", &att.addr(), "--json", "--timeout", "2s"]).await;
        if code == Some(0) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "while 300 connections sat on half a request line, no query got through in {DEADLINE:?} \
             (last error: {}); the attendant has no header-read / idle timeout, so its connection cap \
             lets anyone lock the poller out",
            err.trim()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(att.proc.log_text().matches("panicked").count() == 0);
}
