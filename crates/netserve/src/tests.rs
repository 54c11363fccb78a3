//! The listener against real sockets on loopback: slots under abuse, deadlines, TLS.

use std::sync::atomic::{AtomicUsize, Ordering};

use rollcall_testkit::pki::{Pki, Validity};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// A server answering `GET /` with "hi" (401 without `Authorization`), counting the
/// requests its handler saw.
async fn start_with(
    limits: Limits,
    tls: Option<Arc<tls::ServerConfig>>,
) -> (String, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                if headers.contains_key("authorization") {
                    (axum::http::StatusCode::OK, "hi")
                } else {
                    (axum::http::StatusCode::UNAUTHORIZED, "who?")
                }
            }
        }),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve_tls(l, router, limits, tls, stop.clone()));
    (addr, stop, task, seen)
}

async fn start(limits: Limits) -> (String, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (addr, stop, task, _) = start_with(limits, None).await;
    (addr, stop, task)
}

/// One authenticated `GET /` on `s`, keeping the connection; answers the status line.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n").await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.ends_with(b"hi") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).lines().next().unwrap_or("").to_string())
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(within, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn at_the_cap_a_newcomer_pushes_out_the_oldest_half_sent_request_at_once() {
    // The first deadline is far away: only shedding can make room in time.
    let limits = Limits { max_connections: 4, first_request_timeout: Duration::from_secs(60), ..Limits::default() };
    let (addr, stop, _t) = start(limits).await;
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        stuck.push(s);
    }
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(ask(&mut s).await.unwrap(), "HTTP/1.1 200 OK");
    assert!(started.elapsed() < Duration::from_secs(2), "answered only after {:?}", started.elapsed());
    assert!(closed_within(&mut stuck[0], Duration::from_secs(2)).await, "the oldest stuck connection was not shed");
    stop.cancel();
}

#[tokio::test]
async fn a_known_peer_keeps_its_connection_through_a_flood_of_strangers() {
    let limits = Limits { max_connections: 8, first_request_timeout: Duration::from_secs(60), ..Limits::default() };
    let (addr, stop, _t) = start(limits).await;
    let mut poller = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(ask(&mut poller).await.unwrap(), "HTTP/1.1 200 OK");
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(TcpStream::connect(&addr).await.unwrap());
    }
    assert!(closed_within(&mut flood[0], Duration::from_secs(2)).await, "the flood was never shed");
    assert_eq!(ask(&mut poller).await.unwrap(), "HTTP/1.1 200 OK", "the known peer's kept-alive connection was shed");
    stop.cancel();
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_first_request_deadline_but_answered_ones_are_kept() {
    let limits = Limits { first_request_timeout: Duration::from_millis(300), ..Limits::default() };
    let (addr, stop, _t) = start(limits).await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET / HT").await.unwrap();
    let mut fine = TcpStream::connect(&addr).await.unwrap();
    ask(&mut fine).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "an idle stranger outlived its deadline");
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await, "a slowloris outlived its deadline");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask(&mut fine).await.unwrap(), "HTTP/1.1 200 OK", "the first deadline cut a connection that asked");
    stop.cancel();
}

#[test]
fn the_cap_leaves_the_reserve_of_files_free() {
    assert_eq!(connection_cap(4096, 20_000), 4096);
    assert_eq!(connection_cap(4096, 1024), 1024 - FILE_RESERVE as usize);
    assert_eq!(connection_cap(4096, 10), 1);
}

#[test]
fn the_soft_file_limit_is_raised_to_the_hard_one() {
    let raised = raise_open_file_limit();
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    assert_eq!((raised, l.rlim_cur), (l.rlim_max, l.rlim_max));
    assert_eq!(open_file_limit(), raised);
}

#[tokio::test]
async fn stop_closes_the_listener_and_returns() {
    let (addr, stop, task) = start(Limits::default()).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(ask(&mut s).await.unwrap(), "HTTP/1.1 200 OK");
    drop(s);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
    assert!(TcpStream::connect(&addr).await.is_err());
}

/// Connects over TLS trusting `ca`, presenting `identity`; then asks once.
async fn ask_tls(addr: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<String, String> {
    let config = tls::client_config(Some(ca), identity).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    ask(&mut s).await.map_err(|e| e.to_string())
}

use std::path::Path;

#[tokio::test]
async fn mutual_tls_serves_only_clients_with_a_current_certificate_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "site");
    let other = Pki::new(dir.path(), "other");
    let server = ca.issue("attendant", Validity::Current);
    let good = ca.issue("poller", Validity::Current);
    let expired = ca.issue("old-poller", Validity::Expired);
    let stranger = other.issue("poller", Validity::Current);
    let config = tls::server_config(&server.cert_file, &server.key_file, Some(&ca.ca_file)).unwrap();
    let (addr, stop, _t, seen) = start_with(Limits::default(), Some(config)).await;

    let ok = ask_tls(&addr, &ca.ca_file, Some((&good.cert_file, &good.key_file))).await;
    assert_eq!(ok.as_deref(), Ok("HTTP/1.1 200 OK"));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    for (what, identity) in [
        ("no certificate", None),
        ("a certificate of another CA", Some((&stranger.cert_file, &stranger.key_file))),
        ("an expired certificate", Some((&expired.cert_file, &expired.key_file))),
    ] {
        let r = ask_tls(&addr, &ca.ca_file, identity.map(|(c, k)| (c.as_path(), k.as_path()))).await;
        assert!(r.is_err(), "a client with {what} was served: {r:?}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a refused client's request reached the handler");
    // And a client that does not trust the server's CA refuses it.
    let r = ask_tls(&addr, &other.ca_file, Some((&stranger.cert_file, &stranger.key_file))).await;
    assert!(r.is_err_and(|e| e.contains("certificate")), "the client accepted a server of another CA");
    stop.cancel();
}

#[test]
fn unusable_tls_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "site");
    let a = ca.issue("a", Validity::Current);
    let b = ca.issue("b", Validity::Current);
    let missing = dir.path().join("missing.pem");
    let e = tls::server_config(&missing, &a.key_file, None).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
    let e = tls::server_config(&a.key_file, &a.key_file, None).unwrap_err().to_string();
    assert!(e.contains("a.key") && e.contains("no PEM certificate"), "{e}");
    let e = tls::server_config(&a.cert_file, &a.cert_file, None).unwrap_err().to_string();
    assert!(e.contains("a.pem") && e.contains("no PEM private key"), "{e}");
    let e = tls::server_config(&a.cert_file, &b.key_file, None).unwrap_err().to_string();
    assert!(e.contains("b.key") && e.contains("does not match"), "{e}");
    let e = tls::client_config(Some(&a.key_file), None).unwrap_err().to_string();
    assert!(e.contains("a.key"), "{e}");
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_cut_at_the_first_request_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "site");
    let server = ca.issue("attendant", Validity::Current);
    let config = tls::server_config(&server.cert_file, &server.key_file, Some(&ca.ca_file)).unwrap();
    let limits = Limits { first_request_timeout: Duration::from_millis(300), ..Limits::default() };
    let (addr, stop, _t, seen) = start_with(limits, Some(config)).await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap(); // a ClientHello's first bytes
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "a silent TLS client outlived its deadline");
    assert!(closed_within(&mut half, Duration::from_secs(3)).await, "a half handshake outlived its deadline");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    stop.cancel();
}
