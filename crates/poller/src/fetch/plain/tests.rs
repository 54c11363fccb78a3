//! The plain client against tiny in-process servers (fault injection: framings and
//! connection behaviour a real attendant does not produce on demand). The real attendant
//! is polled through it by every end-to-end test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Answers every request with `reply`; `close` ends each connection after one reply
/// (without saying so, as an attendant's idle timeout would). Counts connections.
async fn serve(reply: Vec<u8>, close: bool) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    if s.write_all(&reply).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

fn with_length(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

#[test]
fn addresses_split_into_connect_host_and_prefix() {
    let t = target("http://127.0.0.1:7460").unwrap();
    assert_eq!((&*t.connect(), t.host, t.prefix), ("127.0.0.1:7460", "127.0.0.1:7460", ""));
    let t = target("http://mail.example.org/s/3/").unwrap();
    assert_eq!((&*t.connect(), t.host, t.prefix), ("mail.example.org:80", "mail.example.org", "/s/3"));
    let t = target("http://[::1]:8080/x").unwrap();
    assert_eq!((&*t.connect(), t.prefix), ("[::1]:8080", "/x"));
    assert_eq!(target("http://[::1]").unwrap().connect(), "[::1]:80");
    assert!(target("ftp://a:1").is_none());
    assert!(target("http:///v1").is_none());
}

#[test]
fn chunks_are_decoded_across_reads_with_extensions_and_trailers() {
    let whole = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT".to_vec();
    // Fed a byte at a time, the decoder waits for more until the trailers end.
    let mut buf = BytesMut::new();
    let mut body = BytesMut::new();
    let mut done_at = None;
    for (i, b) in whole.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        if let Chunks::Done = decode_chunks(&mut buf, &mut body, 1 << 20).unwrap() {
            done_at = Some(i);
            break;
        }
    }
    assert_eq!(&body[..], b"Wikipedia");
    assert_eq!(done_at, Some(whole.len() - 5), "done at the empty line after the trailer");
    let mut buf = BytesMut::from(&b"zz\r\nabc\r\n"[..]);
    assert!(
        matches!(decode_chunks(&mut buf, &mut BytesMut::new(), 1 << 20), Err(PollError::Malformed(m)) if m.contains("\"zz\""))
    );
    let mut buf = BytesMut::from(&b"2\r\nabc\r\n"[..]);
    assert!(decode_chunks(&mut buf, &mut BytesMut::new(), 1 << 20).is_err(), "a chunk longer than its size");
}

#[tokio::test]
async fn a_kept_alive_connection_carries_the_next_poll() {
    let (url, accepted) = serve(with_length("{\"a\":1}"), false).await;
    let c = PlainClient::new(10);
    for _ in 0..3 {
        let r = c.get(&url, "/v1/compilation", Some("t"), 1 << 20, None).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"{\"a\":1}"[..]));
        assert!(r.received_at >= r.sent_at);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "three polls, one connection");
}

#[tokio::test]
async fn without_budget_every_poll_connects() {
    let (url, accepted) = serve(with_length("{}"), false).await;
    let c = PlainClient::new(0);
    for _ in 0..3 {
        c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_the_attendant_closed_is_replaced_without_a_failed_poll() {
    let (url, accepted) = serve(with_length("{}"), true).await;
    let c = PlainClient::new(10);
    for i in 0..3 {
        let r = c.get(&url, "/v1/compilation", None, 1 << 20, None).await;
        assert!(r.is_ok(), "poll {i}: {r:?}");
        // Give the close time to arrive, as it would between polls.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn chunked_replies_are_read_and_bounded() {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n".to_vec();
    let (url, accepted) = serve(chunked, false).await;
    let c = PlainClient::new(10);
    let r = c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap();
    assert_eq!(&r.body[..], b"{\"a\":1}");
    c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "a chunked reply read to its end keeps the connection");
    let big =
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n", 5000, "x".repeat(5000));
    let (url, _) = serve(big.into_bytes(), false).await;
    assert_eq!(c.get(&url, "/v1/compilation", None, 4096, None).await.unwrap_err(), PollError::Oversized(4096));
}

#[tokio::test]
async fn broken_heads_are_malformed_and_errors_are_replies() {
    let (url, _) = serve(b"SMTP ready\r\n\r\n".to_vec(), false).await;
    let c = PlainClient::new(10);
    let e = c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap_err();
    assert!(matches!(&e, PollError::Malformed(m) if m.contains("not an HTTP reply")), "{e:?}");
    let long = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n", "p".repeat(MAX_HEAD + 10));
    let (url, _) = serve(long.into_bytes(), false).await;
    let e = c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap_err();
    assert!(matches!(&e, PollError::Malformed(m) if m.contains("headers longer")), "{e:?}");
    let (url, _) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: x1\r\n\r\n".to_vec(), false).await;
    let e = c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap_err();
    assert!(matches!(&e, PollError::Malformed(m) if m.contains("Content-Length")), "{e:?}");
    let (url, _) = serve(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec(), false).await;
    assert_eq!(c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap().status, 401);
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let e = PlainClient::new(10).get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap_err();
    assert_eq!(e.kind(), "refused", "{e:?}");
}

#[test]
fn declared_chunk_sizes_past_the_bound_are_oversized_before_any_arithmetic() {
    // Sizes near the integer limit once wrapped `eol + size + 4` and panicked the poll.
    for size in ["fffffffffffffffe", "ffffffffffffffff", "100001"] {
        let mut buf = BytesMut::from(format!("{size}\r\nabc\r\n").as_bytes());
        let got = decode_chunks(&mut buf, &mut BytesMut::new(), 1 << 20);
        assert!(matches!(got, Err(PollError::Oversized(_))), "{size}: {:?}", got.map(|_| ()));
    }
    // Past u64 altogether: a malformed size, named.
    let mut buf = BytesMut::from(&b"1ffffffffffffffff\r\nabc\r\n"[..]);
    assert!(matches!(decode_chunks(&mut buf, &mut BytesMut::new(), 1 << 20), Err(PollError::Malformed(_))));
    // The bound counts what the body already holds.
    let mut body = BytesMut::from(&b"0123456789"[..]);
    let mut buf = BytesMut::from(&b"8\r\nabcdefgh\r\n"[..]);
    assert!(matches!(decode_chunks(&mut buf, &mut body, 16), Err(PollError::Oversized(16))));
}

#[tokio::test]
async fn a_hostile_declared_length_is_oversized_or_waits_for_bytes_never_allocated_up_front() {
    let c = PlainClient::new(10);
    let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000000\r\n\r\n{}".to_vec();
    let (url, _) = serve(huge, false).await;
    assert_eq!(c.get(&url, "/v1/compilation", None, 64 << 20, None).await.unwrap_err(), PollError::Oversized(64 << 20));
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\nabc\r\n".to_vec();
    let (url, _) = serve(chunked, false).await;
    assert_eq!(c.get(&url, "/v1/compilation", None, 64 << 20, None).await.unwrap_err(), PollError::Oversized(64 << 20));
    // A length within the bound that never comes: cut short, holding only what arrived.
    let short = b"HTTP/1.1 200 OK\r\nContent-Length: 60000000\r\nConnection: close\r\n\r\n{}".to_vec();
    let (url, _) = serve(short, true).await;
    assert!(matches!(c.get(&url, "/v1/compilation", None, 64 << 20, None).await, Err(PollError::Malformed(_))));
}

#[test]
fn https_addresses_default_to_443_and_name_the_host_their_certificate_must_carry() {
    let t = target("https://mail.example.org/s").unwrap();
    assert_eq!(
        (&*t.connect(), t.server_name(), t.prefix, t.tls),
        ("mail.example.org:443", "mail.example.org", "/s", true)
    );
    let t = target("https://127.0.0.1:7460").unwrap();
    assert_eq!((&*t.connect(), t.server_name()), ("127.0.0.1:7460", "127.0.0.1"));
    let t = target("https://[::1]:7460").unwrap();
    assert_eq!(t.server_name(), "::1");
    assert_eq!(target("https://[::1]").unwrap().server_name(), "::1");
    assert!(!target("http://a:1").unwrap().tls);
}

mod tls {
    use super::*;
    use rollcall_testkit::pki::{Pki, Validity};

    /// A mutual-TLS server of `ca` answering `{"a":1}`; its URL by IP address.
    async fn serve_mtls(ca: &Pki) -> (String, tokio_util::sync::CancellationToken) {
        let cert = ca.issue("attendant", Validity::Current);
        let config = rollcall_netserve::tls::server_config(&cert.cert_file, &cert.key_file, Some(&ca.ca_file)).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", l.local_addr().unwrap());
        let router = axum::Router::new().route("/v1/compilation", axum::routing::get(|| async { "{\"a\":1}" }));
        let stop = tokio_util::sync::CancellationToken::new();
        let limits = rollcall_netserve::Limits::default();
        tokio::spawn(rollcall_netserve::serve_tls(l, router, limits, Some(config), stop.clone()));
        (url, stop)
    }

    #[tokio::test]
    async fn a_poll_over_mutual_tls_is_read_and_its_connection_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Pki::new(dir.path(), "site");
        let (url, stop) = serve_mtls(&ca).await;
        let me = ca.issue("poller", Validity::Current);
        let config =
            rollcall_netserve::tls::client_config(Some(&ca.ca_file), Some((&me.cert_file, &me.key_file))).unwrap();
        let c = PlainClient::new(10);
        for _ in 0..2 {
            let r = c.get(&url, "/v1/compilation", None, 1 << 20, Some(&config)).await.unwrap();
            assert_eq!((r.status, &r.body[..]), (200, &b"{\"a\":1}"[..]));
        }
        assert_eq!(c.idle.lock().len(), 1, "the TLS connection is kept for the next poll");
        stop.cancel();
    }

    #[tokio::test]
    async fn refusals_either_way_are_tls_failures() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Pki::new(dir.path(), "site");
        let other = Pki::new(dir.path(), "other");
        let (url, stop) = serve_mtls(&ca).await;
        let c = PlainClient::new(10);
        // No client certificate: the attendant refuses us.
        let anonymous = rollcall_netserve::tls::client_config(Some(&ca.ca_file), None).unwrap();
        let e = c.get(&url, "/v1/compilation", None, 1 << 20, Some(&anonymous)).await.unwrap_err();
        assert_eq!(e.kind(), "tls", "{e:?}");
        // An attendant whose certificate our CA did not sign: we refuse it.
        let me = other.issue("poller", Validity::Current);
        let wrong_ca =
            rollcall_netserve::tls::client_config(Some(&other.ca_file), Some((&me.cert_file, &me.key_file))).unwrap();
        let e = c.get(&url, "/v1/compilation", None, 1 << 20, Some(&wrong_ca)).await.unwrap_err();
        assert!(matches!(&e, PollError::Tls(m) if m.contains("certificate")), "{e:?}");
        // An https:// address without TLS settings is a TLS failure, not a panic.
        let e = c.get(&url, "/v1/compilation", None, 1 << 20, None).await.unwrap_err();
        assert_eq!(e.kind(), "tls", "{e:?}");
        stop.cancel();
    }
}

mod tls_keys {
    use super::*;
    use rollcall_testkit::pki::{Pki, Validity};

    #[tokio::test]
    async fn a_kept_tls_connection_is_never_lent_to_another_tls_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Pki::new(dir.path(), "site");
        let other = Pki::new(dir.path(), "other");
        let cert = ca.issue("attendant", Validity::Current);
        let config = rollcall_netserve::tls::server_config(&cert.cert_file, &cert.key_file, None).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", l.local_addr().unwrap());
        let router = axum::Router::new().route("/v1/compilation", axum::routing::get(|| async { "{}" }));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(rollcall_netserve::serve_tls(l, router, Default::default(), Some(config), stop.clone()));
        let trusting = rollcall_netserve::tls::client_config(Some(&ca.ca_file), None).unwrap();
        let distrusting = rollcall_netserve::tls::client_config(Some(&other.ca_file), None).unwrap();
        let c = PlainClient::new(10);
        c.get(&url, "/v1/compilation", None, 1 << 20, Some(&trusting)).await.unwrap();
        // Same address, a config that does not trust the server: it must handshake itself.
        let e = c.get(&url, "/v1/compilation", None, 1 << 20, Some(&distrusting)).await.unwrap_err();
        assert_eq!(e.kind(), "tls", "{e:?}");
        stop.cancel();
    }
}
