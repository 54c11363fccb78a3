//! The simulator's HTTP face, and how a request finds its virtual server.
//!
//! Addressing (the choice is the listener's): bound to an unspecified address
//! (`0.0.0.0:PORT`), server `i` is `http://127.1.0.0+i:PORT` (Linux routes all of
//! 127.0.0.0/8 to loopback), so every virtual server is its own host to a client, with its
//! own keep-alive connection exactly as in a real fleet; connections from outside loopback
//! are dropped. Bound to a specific address, server `i` is `http://ADDR/s/i` (portable,
//! used by tests). Both forms always work for `/s/i/...`.
//!
//! Paths per server: `GET /v1/compilation` (the attendant's) and `GET /metrics` (the same
//! information as Prometheus text). Control: `GET /stats[?interval_ms=N]`,
//! `GET /stats/servers` (each client's requests and shortest gap per server) and
//! `POST /stats/reset`, on any address. Rules it keeps: a hung server never holds a socket
//! longer than `hang_for`; past the process' file limit, connections are served without
//! keep-alive rather than refused, so the simulator stays reachable whatever its clients do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Kind, VirtualFleet};
use crate::stats::Asked;

/// First address of IP addressing: server `i` is this plus `i`.
pub const LOOPBACK_BASE: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 0);
/// An idle keep-alive connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How clients reach virtual server `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// `http://127.1.0.0+i:PORT`: one host per server.
    Loopback { port: u16 },
    /// `http://ADDR/s/i`: one host for all, the server in the path.
    Path { addr: SocketAddr },
}

impl Addressing {
    /// The addressing a listener bound to `addr` serves.
    pub fn for_listener(addr: SocketAddr) -> Addressing {
        if addr.ip().is_unspecified() {
            Addressing::Loopback { port: addr.port() }
        } else {
            Addressing::Path { addr }
        }
    }

    /// `HOST:PORT` a client connects to for server `i`.
    pub fn host(&self, i: usize) -> String {
        match self {
            Addressing::Loopback { port } => {
                format!("{}:{port}", Ipv4Addr::from(u32::from(LOOPBACK_BASE).wrapping_add(i as u32)))
            }
            Addressing::Path { addr } => addr.to_string(),
        }
    }

    /// The path prefix of server `i` (empty with IP addressing).
    pub fn prefix(&self, i: usize) -> String {
        match self {
            Addressing::Loopback { .. } => String::new(),
            Addressing::Path { .. } => format!("/s/{i}"),
        }
    }

    /// The attendant base URL of server `i`, as a poller's `[[server]] address`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}{}", self.host(i), self.prefix(i))
    }

    /// Where `/stats` is reached.
    pub fn control_url(&self) -> String {
        match self {
            Addressing::Loopback { port } => format!("http://127.0.0.1:{port}"),
            Addressing::Path { addr } => format!("http://{addr}"),
        }
    }

    /// The server a connection to `local` is for, under IP addressing.
    fn index_of(&self, local: IpAddr, servers: usize) -> Option<usize> {
        let (Addressing::Loopback { .. }, IpAddr::V4(v4)) = (self, local) else { return None };
        let i = u32::from(v4).checked_sub(u32::from(LOOPBACK_BASE))? as usize;
        (i < servers).then_some(i)
    }
}

use rollcall_netserve::open_file_limit as fd_limit;
pub use rollcall_netserve::raise_open_file_limit as raise_fd_limit;

/// Files kept free for the listener, logs and connections being set up: the connections
/// a client opens afresh at each poll (past its own idle budget, up to its concurrent polls)
/// must fit beside the kept ones. 256 was fewer than one poller's concurrent polls: at
/// 100,000 servers under a 20,000-file limit accept failed with "too many open files".
const FRESH_RESERVE: u64 = 2048;

/// Why a request got no answer: hyper closes the connection on a service error.
#[derive(Debug, thiserror::Error)]
#[error("left unanswered on purpose ({0})")]
struct Unanswered(&'static str);

type Reply = Result<Response<Full<Bytes>>, Unanswered>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    Ok(r)
}

/// Serves the fleet on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, fleet: Arc<VirtualFleet>, stop: CancellationToken) -> std::io::Result<()> {
    let addressing = Arc::new(Addressing::for_listener(listener.local_addr()?));
    let cap = fd_limit().saturating_sub(FRESH_RESERVE).max(64) as usize;
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of files or similar: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if matches!(*addressing, Addressing::Loopback { .. }) && !peer.ip().is_loopback() {
            continue;
        }
        let by_ip = match stream.local_addr() {
            Ok(local) => addressing.index_of(local.ip(), fleet.len()),
            Err(_) => continue,
        };
        if by_ip.is_some_and(|i| fleet.kind(i) == Kind::Unreachable) {
            fleet.stats.refused.fetch_add(1, Ordering::Relaxed);
            // SO_LINGER 0: the close sends a reset, as a host without the service would.
            if let Ok(std) = stream.into_std() {
                let l = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: setsockopt reads `l` for its size; the fd is owned by `std`.
                unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&std),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &l as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        let keep_alive = open.fetch_add(1, Ordering::Relaxed) < cap;
        let (fleet, stop, open) = (fleet.clone(), stop.clone(), open.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let fleet = fleet.clone();
                async move { handle(&fleet, by_ip, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(keep_alive)
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r { tracing::trace!(error = %e, "connection ended") },
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// `(server index, rest of the path)` from a `/s/i/...` path.
fn split_path(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix("/s/")?;
    let (i, rest) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Some((i.parse().ok()?, rest))
}

async fn handle(fleet: &VirtualFleet, by_ip: Option<usize>, req: Request<Incoming>) -> Reply {
    let received_at = Utc::now();
    let (server, path) = match split_path(req.uri().path()) {
        Some((i, rest)) => (Some(i), rest),
        None => (by_ip, req.uri().path()),
    };
    let asked = match (req.method(), path) {
        (&Method::GET, "/stats") => {
            let interval_ms = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("interval_ms=")))
                .and_then(|v| v.parse().ok());
            return reply(StatusCode::OK, "application/json", fleet.stats.report(interval_ms).to_string());
        }
        (&Method::GET, "/stats/servers") => {
            return reply(StatusCode::OK, "application/json", fleet.stats.per_server().to_string());
        }
        (&Method::POST, "/stats/reset") => {
            fleet.stats.reset();
            return reply(StatusCode::OK, "text/plain", "reset\n");
        }
        (&Method::GET, rollcall_protocol::COMPILATION_PATH) => Asked::Compilation,
        (&Method::GET, "/metrics") => Asked::Metrics,
        _ => return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    let Some(i) = server.filter(|&i| i < fleet.len()) else {
        return reply(StatusCode::NOT_FOUND, "text/plain", "no such virtual server\n");
    };
    let agent = req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let client = fleet.stats.client(agent);
    fleet.stats.record(&client, i, asked);
    match fleet.kind(i) {
        Kind::Hung => {
            fleet.stats.unanswered(&client);
            tokio::time::sleep(fleet.knobs().hang_for).await;
            return Err(Unanswered("hung"));
        }
        Kind::Unreachable => {
            fleet.stats.unanswered(&client);
            return Err(Unanswered("unreachable"));
        }
        Kind::Slow => tokio::time::sleep(fleet.knobs().slow_delay).await,
        _ => {}
    }
    match asked {
        Asked::Compilation => match serde_json::to_vec(&fleet.compilation(i, received_at, Utc::now())) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        Asked::Metrics => reply(StatusCode::OK, "text/plain; version=0.0.4", fleet.exposition(i, Utc::now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let a = Addressing::for_listener("0.0.0.0:7460".parse().unwrap());
        assert_eq!(a.url(0), "http://127.1.0.0:7460");
        assert_eq!(a.url(300), "http://127.1.1.44:7460");
        assert_eq!(a.index_of("127.1.1.44".parse().unwrap(), 301), Some(300));
        assert_eq!(a.index_of("127.1.1.44".parse().unwrap(), 300), None);
        assert_eq!(a.index_of("127.0.0.1".parse().unwrap(), 300), None);
        let p = Addressing::for_listener("127.0.0.1:9".parse().unwrap());
        assert_eq!(p.url(7), "http://127.0.0.1:9/s/7");
        assert_eq!(split_path("/s/7/v1/compilation"), Some((7, "/v1/compilation")));
        assert_eq!(split_path("/s/x/metrics"), None);
    }
}
