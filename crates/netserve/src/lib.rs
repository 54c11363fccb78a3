//! The HTTP serving both Rollcall daemons share (SPEC sections 6 and 10: every input is
//! bounded; connection abuse does not lock out the poller or the operators).
//!
//! Rules it keeps:
//! - **Accepting never blocks.** At most `max_connections` connections are held (lowered
//!   to what the open-file limit allows, [`open_file_limit`] minus [`FILE_RESERVE`]). At
//!   the cap, the oldest connection that has not yet sent a complete request is shed to
//!   make room, then the oldest whose requests were all refused (401/403); peers whose
//!   requests were answered are never shed for a newcomer (see `admission`). So 1,000
//!   idle strangers cannot keep a poller out: its new connection pushes the oldest out.
//! - **Strangers get a short first deadline.** A new connection must complete its TLS
//!   handshake and its first request head within `first_request_timeout` (a few seconds),
//!   or it is closed: idle and slowloris clients hold a slot only briefly. After the first
//!   request, each further request head (keep-alive waits included) must arrive within
//!   `header_read_timeout`.
//! - Request heads are bounded in size (`max_header_bytes`; 431 beyond).
//! - With TLS ([`tls::server_config`]), the handshake happens inside the connection's
//!   first deadline, and a client CA makes it mutual: a client without a certificate
//!   signed by it is refused in the handshake, before any request byte is read.
//! - On stop, the listener closes at once and requests in flight get `drain_timeout`.

mod admission;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use admission::{Admission, Admitted, Ticket};

/// Files kept free beside the connections: the daemon's own work (database, checks,
/// probes, polls) and the connection being accepted.
pub const FILE_RESERVE: u64 = 256;

/// Bounds for one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once (lowered to what the open-file limit leaves room for).
    pub max_connections: usize,
    /// Time a new connection has for its TLS handshake and its first request head.
    pub first_request_timeout: Duration,
    /// Time a client has for each later request head, idle keep-alive waits included.
    pub header_read_timeout: Duration,
    /// Largest read buffer per connection, which bounds the request head.
    pub max_header_bytes: usize,
    /// Time requests in flight get to finish after stop.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            first_request_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(15),
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` over plain HTTP on `listener` within `limits` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    serve_tls(listener, router, limits, None, stop).await
}

/// Like [`serve`], over TLS when `tls` is given (see [`tls::server_config`]).
pub async fn serve_tls(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    tls: Option<Arc<tls::ServerConfig>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let cap = connection_cap(limits.max_connections, open_file_limit());
    if cap < limits.max_connections {
        tracing::warn!(
            wanted = limits.max_connections,
            held = cap,
            open_file_limit = open_file_limit(),
            "the open-file limit lowers the connection cap (raise LimitNOFILE / ulimit -n)"
        );
    }
    let admission = Admission::new(cap);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
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
        let Some((ticket, how)) = admission.admit() else {
            tracing::debug!(%peer, "every connection slot is held by a known peer; closing the newcomer");
            continue;
        };
        if how == Admitted::Shed {
            tracing::debug!(%peer, "at the connection cap: shed the oldest connection without a request");
        }
        let _ = stream.set_nodelay(true);
        let conn = Conn { http: http.clone(), router: router.clone(), ticket, watcher: graceful.watcher() };
        let acceptor = acceptor.clone();
        let first = limits.first_request_timeout;
        tokio::spawn(async move {
            let ticket = conn.ticket.clone();
            let work = async move {
                match acceptor {
                    None => conn.serve(stream).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => conn.serve(s).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    },
                }
            };
            // Errors of the connection are clients going away or timing out: routine.
            tokio::select! {
                _ = work => {}
                _ = ticket.shed.cancelled() => {}
                _ = first_request_deadline(&ticket, first) => {}
            }
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

/// The connections a listener holds: `wanted`, unless the open-file `limit` (less
/// [`FILE_RESERVE`]) leaves room for fewer; at least one.
pub fn connection_cap(wanted: usize, limit: u64) -> usize {
    let room = usize::try_from(limit.saturating_sub(FILE_RESERVE)).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
}

/// Resolves when `timeout` has passed without a complete request head; never after one.
async fn first_request_deadline(ticket: &Ticket, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    if ticket.has_asked() {
        std::future::pending::<()>().await;
    }
}

/// One accepted connection, ready to serve over whatever stream it turns out to be.
struct Conn {
    http: hyper::server::conn::http1::Builder,
    router: axum::Router,
    ticket: Arc<Ticket>,
    watcher: Watcher,
}

impl Conn {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S) {
        let (asked, answered) = (self.ticket.clone(), self.ticket.clone());
        // The tiers of `admission`: a request head arrived; it was answered as allowed.
        let service = self
            .router
            .map_request(move |req: axum::http::Request<hyper::body::Incoming>| {
                asked.asked();
                req
            })
            .map_response(move |resp: axum::response::Response| {
                if !matches!(resp.status().as_u16(), 401 | 403) {
                    answered.known();
                }
                resp
            });
        let conn = self.http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let _ = self.watcher.watch(conn).await;
    }
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
mod tests;
