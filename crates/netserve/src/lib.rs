//! The HTTP serving both Rollcall daemons share (SPEC section 6: every input is bounded).
//!
//! Rules it keeps: at most `max_connections` connections are held at once (further ones
//! wait in the kernel's backlog, not in memory); a client must deliver each request's
//! headers within `header_read_timeout`, so half-sent requests cannot hold slots forever
//! (axum's own `serve` sets no such timeout); headers are bounded in size; on stop, the
//! listener closes at once and requests in flight get `drain_timeout` to finish.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Bounds for one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Time a client has to send a request's headers, idle keep-alive waits included.
    pub header_read_timeout: Duration,
    /// Largest read buffer per connection, which bounds the request head.
    pub max_header_bytes: usize,
    /// Time requests in flight get to finish after stop.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(15),
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends are transient; back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are clients going away or timing out: routine, not worth a line.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("requests still running after {:?}; stopping anyway", limits.drain_timeout);
        }
    }
    Ok(())
}

/// Raises this process' soft open-file limit to its hard limit, as Go programs such as
/// Prometheus do at start: no privilege is needed, and every connection (polled, served,
/// kept alive) is a file; distributions still start services with a soft limit of 1024.
/// Answers the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        if l.rlim_cur < l.rlim_max {
            let want = libc::rlimit { rlim_cur: l.rlim_max, rlim_max: l.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                l = want;
            }
        }
    }
    l.rlim_cur
}

/// The soft open-file limit in force.
pub fn open_file_limit() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return 1024;
    }
    l.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> (String, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(l, router, limits, stop.clone()));
        (addr, stop, task)
    }

    #[tokio::test]
    async fn half_sent_requests_cannot_hold_every_slot() {
        let limits =
            Limits { max_connections: 4, header_read_timeout: Duration::from_millis(500), ..Limits::default() };
        let (addr, stop, _t) = start(limits).await;
        let mut stuck = Vec::new();
        for _ in 0..4 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            stuck.push(s);
        }
        // Every slot is held; once the header timeout strikes, a real request gets through.
        let body = tokio::time::timeout(Duration::from_secs(5), async {
            reqwest::get(format!("http://{addr}/")).await.unwrap().text().await.unwrap()
        })
        .await
        .expect("slots were never freed");
        assert_eq!(body, "hi");
        for mut s in stuck {
            let mut buf = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
            assert!(n.is_ok(), "a stuck connection stayed open");
        }
        stop.cancel();
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
        assert_eq!(reqwest::get(format!("http://{addr}/")).await.unwrap().text().await.unwrap(), "hi");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    }
}
