//! One poll: `GET /v1/compilation` on an attendant, bounded in time and size.
//!
//! A failed poll is data, not an error to bubble up: every way it can fail maps to one
//! [`PollError`] kind, which becomes the deficiency `poll:KIND`. The timeout covers connect
//! to last byte; `max_reply_bytes` is enforced while reading, so a huge reply is never held.
//! Polls of `http://` and `https://` addresses both go through `plain::PlainClient`
//! (TLS from the server's [`ClientTls`], mutual when it names a client certificate);
//! clock orders through reqwest, given the same TLS config.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rollcall_protocol::clock_order::{ClockReply, SignedOrder, CLOCK_PATH};
use rollcall_protocol::{DecodeError, Digest, COMPILATION_PATH};

use crate::config::{ClientTls, ServerConfig};

mod plain;

/// A reply as received, with the poller's send (T1) and receive (T4) times; the fleet
/// reads it with [`decode`] (the `parse` phase of `/metrics`).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The reply body exactly as received, kept as the latest compilation.
    pub raw: Bytes,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// Reads a reply body as a compilation's [`Digest`]; a body that is not one is a failed
/// poll, `incompatible` (another schema version) or `malformed` (anything else).
pub fn decode(raw: &[u8]) -> Result<Digest, PollError> {
    Digest::from_slice(raw).map_err(|e| match e {
        DecodeError::Incompatible { .. } => PollError::Incompatible(e.to_string()),
        DecodeError::Malformed(_) => PollError::Malformed(e.to_string()),
    })
}

/// Why a poll produced no compilation. `kind()` names the deficiency source `poll:KIND`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("no complete reply within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Refused(String),
    #[error("TLS failure: {0}")]
    Tls(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Malformed(String),
    #[error("reply larger than max_reply_bytes = {0}")]
    Oversized(u64),
    #[error("{0}")]
    Incompatible(String),
}

impl PollError {
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::Timeout(_) => "timeout",
            PollError::Refused(_) => "refused",
            PollError::Tls(_) => "tls",
            PollError::Auth(_) => "auth",
            PollError::Malformed(_) => "malformed",
            PollError::Oversized(_) => "oversized",
            PollError::Incompatible(_) => "incompatible",
        }
    }
}

/// Gets one compilation from one server: the fleet's test seam. The fleet holds one as
/// `Arc<dyn Fetch>`, so its timing can be tested with a paused clock and scripted replies
/// while nothing past the fleet (API, dashboard, metrics) knows of the seam. The boxed
/// future costs one allocation per poll.
#[async_trait::async_trait]
pub trait Fetch: Send + Sync + 'static {
    async fn fetch(&self, server: &ServerConfig) -> Result<Fetched, PollError>;

    /// Sends a signed clock order; a rejection or refusal is an `Ok` reply saying so.
    async fn order_clock(&self, server: &ServerConfig, order: &SignedOrder) -> Result<ClockReply, PollError>;
}

/// Largest clock-order reply read (a few hundred bytes in practice).
const MAX_ORDER_REPLY: usize = 64 * 1024;

/// The real fetcher: polls with `plain::PlainClient` (one idle connection per server
/// within a file budget), clock orders with reqwest (one client per TLS config).
#[derive(Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    plain: Arc<plain::PlainClient>,
    /// reqwest clients for `https://` clock orders, by the TLS config they present.
    /// Each entry holds its config, so no other config can take its address.
    tls_clients: Arc<Mutex<HashMap<usize, OrderClient>>>,
    /// For `https://` servers without TLS settings of their own: the system's CAs.
    default_tls: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
    timeout: Duration,
    max_reply_bytes: u64,
}

impl HttpFetcher {
    /// Keeps idle connections within what the current open-file limit allows.
    pub fn new(timeout: Duration, max_reply_bytes: u64) -> Result<HttpFetcher, reqwest::Error> {
        HttpFetcher::with_idle_budget(timeout, max_reply_bytes, idle_budget(rollcall_netserve::open_file_limit(), 0))
    }

    /// Like [`HttpFetcher::new`], keeping at most `idle` connections open between polls;
    /// servers beyond it connect at each poll. An idle plain connection costs a file and a
    /// few hundred bytes.
    pub fn with_idle_budget(
        timeout: Duration,
        max_reply_bytes: u64,
        idle: usize,
    ) -> Result<HttpFetcher, reqwest::Error> {
        let client = reqwest_client(timeout, idle > 0).build()?;
        Ok(HttpFetcher {
            client,
            plain: Arc::new(plain::PlainClient::new(idle)),
            tls_clients: Arc::default(),
            default_tls: Arc::default(),
            timeout,
            max_reply_bytes,
        })
    }

    async fn fetch_unbounded(&self, server: &ServerConfig) -> Result<Fetched, PollError> {
        let token = server.token.as_ref().map(|t| t.expose());
        let tls = self.tls_for(server)?;
        let reply =
            self.plain.get(&server.address, COMPILATION_PATH, token, self.max_reply_bytes, tls.as_ref()).await?;
        judge_status(reply.status)?;
        Ok(Fetched { raw: reply.body, sent_at: reply.sent_at, received_at: reply.received_at })
    }

    /// The TLS config for an `https://` server: its own, else the system's CAs; `None`
    /// for `http://`.
    fn tls_for(&self, server: &ServerConfig) -> Result<Option<Arc<rustls::ClientConfig>>, PollError> {
        if let Some(ClientTls { config, .. }) = &server.tls {
            return Ok(Some(config.clone()));
        }
        if !server.address.starts_with("https://") {
            return Ok(None);
        }
        let default = self
            .default_tls
            .get_or_init(|| rollcall_netserve::tls::client_config(None, None).map_err(|e| e.to_string()));
        default.clone().map(Some).map_err(PollError::Tls)
    }

    /// The reqwest client for a clock order to `server`: the shared one for `http://`, one
    /// per TLS config (kept) for `https://`.
    fn order_client(&self, server: &ServerConfig) -> Result<reqwest::Client, PollError> {
        let Some(config) = self.tls_for(server)? else { return Ok(self.client.clone()) };
        let key = Arc::as_ptr(&config) as usize;
        let mut clients = self.tls_clients.lock();
        if let Some((_, c)) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = reqwest_client(self.timeout, true)
            .use_preconfigured_tls((*config).clone())
            .build()
            .map_err(|e| PollError::Tls(format!("cannot build a TLS client: {e}")))?;
        clients.insert(key, (config, client.clone()));
        Ok(client)
    }
}

/// A reqwest client for clock orders and the TLS config it was built with.
type OrderClient = (Arc<rustls::ClientConfig>, reqwest::Client);

fn reqwest_client(timeout: Duration, keep_idle: bool) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("rollcall-poller/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout)
        .pool_max_idle_per_host(usize::from(keep_idle))
        .pool_idle_timeout(Duration::from_secs(20 * 60))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
}

/// A reply's status as a poll outcome: credentials refused, or anything else not a success.
fn judge_status(status: u16) -> Result<(), PollError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(PollError::Auth(format!("attendant refused our credentials (HTTP {})", status_text(status)))),
        _ => Err(PollError::Malformed(format!("attendant answered HTTP {}", status_text(status)))),
    }
}

/// `401 Unauthorized`, as reqwest's status codes print.
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status) {
        Ok(s) => s.to_string(),
        Err(_) => status.to_string(),
    }
}

#[async_trait::async_trait]
impl Fetch for HttpFetcher {
    async fn fetch(&self, server: &ServerConfig) -> Result<Fetched, PollError> {
        match tokio::time::timeout(self.timeout, self.fetch_unbounded(server)).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Timeout(self.timeout)),
        }
    }

    async fn order_clock(&self, server: &ServerConfig, order: &SignedOrder) -> Result<ClockReply, PollError> {
        let url = format!("{}{CLOCK_PATH}", server.address);
        let client = self.order_client(server)?;
        let send = async {
            let mut req = client.post(&url).json(order);
            if let Some(t) = &server.token {
                req = req.bearer_auth(t.expose());
            }
            let mut resp = req.send().await.map_err(|e| classify(&e, &url, self.timeout))?;
            let status = resp.status();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e, &url, self.timeout))? {
                if body.len() + chunk.len() > MAX_ORDER_REPLY {
                    return Err(PollError::Oversized(MAX_ORDER_REPLY as u64));
                }
                body.extend_from_slice(&chunk);
            }
            // The attendant answers every judged order (applied, refused, rejected) as JSON;
            // anything else is the token check or a broken attendant.
            match serde_json::from_slice::<ClockReply>(&body) {
                Ok(reply) => Ok(reply),
                Err(_) if status == reqwest::StatusCode::UNAUTHORIZED => {
                    Err(PollError::Auth(format!("attendant refused our credentials (HTTP {status})")))
                }
                Err(e) => Err(PollError::Malformed(format!("clock order answered HTTP {status}: {e}"))),
            }
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Timeout(self.timeout)),
        }
    }
}

/// Files kept free for the database, the API's clients and connections being set up.
const FILE_RESERVE: u64 = 1024;

/// How many idle connections the open-file `limit` (the soft RLIMIT_NOFILE) leaves room
/// for while `in_flight` polls (`max_concurrent_polls`) may each open a fresh one. Beyond
/// it, idle connections would exhaust the files and polls would fail with "too many open
/// files" (measured: 50,000 servers at 10 s under a 20,000-file limit; and 100,000 servers,
/// where 4,096 polls in flight on top of 18,976 idle connections failed 69,880 polls a
/// minute).
pub fn idle_budget(limit: u64, in_flight: usize) -> usize {
    limit.saturating_sub(FILE_RESERVE).saturating_sub(in_flight as u64) as usize
}

#[cfg(test)]
#[test]
fn idle_connections_leave_the_reserve_and_the_polls_in_flight_free() {
    assert_eq!(idle_budget(20_000, 0), 18_976);
    assert_eq!(idle_budget(20_000, 4096), 14_880);
    assert_eq!(idle_budget(1024, 16), 0, "the reserve alone fills a default soft limit");
    assert_eq!(idle_budget(100, 0), 0);
}

/// Maps a transport error to its kind, with the innermost cause as the message.
fn classify(e: &reqwest::Error, url: &str, timeout: Duration) -> PollError {
    let mut chain = Vec::new();
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        chain.push(s.to_string());
        source = s.source();
    }
    let cause = chain.last().cloned().unwrap_or_default();
    if e.is_timeout() {
        return PollError::Timeout(timeout);
    }
    if refused {
        return PollError::Refused(format!("connection refused by {url}"));
    }
    // reqwest does not type TLS failures; rustls' messages name them.
    let text = chain.join(": ").to_ascii_lowercase();
    if url.starts_with("https://") && ["tls", "certificate", "handshake", "alert"].iter().any(|w| text.contains(w)) {
        return PollError::Tls(cause);
    }
    if e.is_connect() {
        return PollError::Refused(format!("cannot connect to {url}: {cause}"));
    }
    PollError::Malformed(format!("reply cut short or unreadable: {cause}"))
}
