//! Polls over HTTP/1.1 with a client written for exactly that: one GET, one reply, one
//! request at a time per connection, idle connections kept per server within a file
//! budget, the reply read into one buffer sized from its Content-Length. `https://`
//! addresses get a rustls stream under the same client (the server verified against the
//! server's `tls_ca_file`, a client certificate presented for mutual TLS); `http://` ones
//! a bare TCP stream, at the cost of one branch per read.
//!
//! Written here rather than taken from hyper's client (through reqwest) because of the
//! performance goals: per idle connection hyper keeps a dispatch task, a channel block and
//! an 8 kB read buffer (≈ 20 kB per server in the heap profile), and its machinery was about
//! a seventh of the poller's CPU at 5,000 polls/s. Clock orders still go through reqwest;
//! header parsing is `httparse`, hyper's own parser.
//!
//! Rules on what the attendant sends: the head is at most [`MAX_HEAD`] bytes; a declared
//! Content-Length or chunk size is compared with `max` before anything is reserved or
//! added (no arithmetic on it can wrap); at most [`PREALLOCATE`] bytes are reserved on the
//! attendant's word; a body is never longer than `max`.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

// One connection to an attendant: bare TCP for `http://`, rustls over TCP for `https://`.
use rollcall_netserve::tls::ClientStream as Conn;

use super::PollError;

/// Longest status line and headers accepted before the body.
const MAX_HEAD: usize = 64 * 1024;
/// Headers looked at in a reply; an attendant sends about five.
const MAX_HEADERS: usize = 32;
/// First read buffer when the reply's size is not known yet: a compilation's headers
/// and, usually, its whole body.
const FIRST_READ: usize = 8 * 1024;

/// A reply as read, with the poller's send (T1, once connected) and receive (T4) times.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// The poll client: idle connections by server address, at most `budget` of them.
#[derive(Debug)]
pub(crate) struct PlainClient {
    idle: Mutex<HashMap<Box<str>, Conn>>,
    budget: usize,
}

/// Where an `http://` or `https://` address points: the Host header (what to connect
/// to), the path prefix, whether it is TLS.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    host: &'a str,
    prefix: &'a str,
    tls: bool,
}

impl Target<'_> {
    /// `host:port`, port 80 (443 for TLS) when the address names none.
    fn connect(&self) -> std::borrow::Cow<'_, str> {
        if self.port_given() {
            self.host.into()
        } else {
            format!("{}:{}", self.host, if self.tls { 443 } else { 80 }).into()
        }
    }

    fn port_given(&self) -> bool {
        // A port is whatever follows the last ':' after an IPv6 literal's ']'.
        let after_literal = self.host.rfind(']').map_or(self.host, |i| &self.host[i..]);
        after_literal.contains(':')
    }

    /// The name the server's certificate must carry: the host without port or brackets.
    fn server_name(&self) -> &str {
        let name =
            if self.port_given() { &self.host[..self.host.rfind(':').unwrap_or(self.host.len())] } else { self.host };
        name.trim_start_matches('[').trim_end_matches(']')
    }
}

fn target(url: &str) -> Option<Target<'_>> {
    let (rest, tls) = match url.strip_prefix("http://") {
        Some(rest) => (rest, false),
        None => (url.strip_prefix("https://")?, true),
    };
    let (host, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() {
        return None;
    }
    Some(Target { host, prefix: prefix.trim_end_matches('/'), tls })
}

/// How one attempt on one connection ended.
enum Attempt {
    /// The reply, and the connection when it can carry the next request.
    Done(Reply, Option<Conn>),
    /// A kept-alive connection the attendant had closed: nothing was read, try a new one.
    Stale,
    Failed(PollError),
}

impl PlainClient {
    pub(crate) fn new(budget: usize) -> PlainClient {
        PlainClient { idle: Mutex::new(HashMap::new()), budget }
    }

    /// `GET url+path`; a 4xx or 5xx is a [`Reply`] like any other, the caller judges it.
    /// `tls` is the client config for an `https://` url (ignored for `http://`).
    pub(crate) async fn get(
        &self,
        url: &str,
        path: &str,
        token: Option<&str>,
        max: u64,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Reply, PollError> {
        let t =
            target(url).ok_or_else(|| PollError::Refused(format!("{url} is not an http:// or https:// address")))?;
        let mut request = Vec::with_capacity(160);
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(t.prefix.as_bytes());
        request.extend_from_slice(path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(t.host.as_bytes());
        request.extend_from_slice(concat!("\r\nUser-Agent: rollcall-poller/", env!("CARGO_PKG_VERSION")).as_bytes());
        request.extend_from_slice(b"\r\nAccept: application/json\r\n");
        if let Some(token) = token {
            request.extend_from_slice(b"Authorization: Bearer ");
            request.extend_from_slice(token.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");

        // A TLS connection carries the identities of its handshake: it is kept for the
        // same address with the same TLS config only (one allocation per TLS poll).
        let tls_key;
        let url_key = match tls {
            Some(config) if t.tls => {
                tls_key = format!("{url} {:p}", Arc::as_ptr(config));
                tls_key.as_str()
            }
            _ => url,
        };
        // The map's key is reused when the connection goes back: no allocation per poll.
        let mut key = None;
        if let Some((k, stream)) = self.take(url_key) {
            key = Some(k);
            match exchange(stream, &request, max, true).await {
                Attempt::Done(reply, keep) => return Ok(self.finish(url_key, key, reply, keep)),
                Attempt::Failed(e) => return Err(e),
                Attempt::Stale => {}
            }
        }
        let stream = TcpStream::connect(&*t.connect()).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                PollError::Refused(format!("connection refused by {url}"))
            } else {
                PollError::Refused(format!("cannot connect to {url}: {e}"))
            }
        })?;
        let _ = stream.set_nodelay(true);
        let stream = if t.tls {
            let config = tls.ok_or_else(|| PollError::Tls(format!("no TLS settings for {url}")))?;
            Conn::Tls(Box::new(handshake(&t, stream, config).await?))
        } else {
            Conn::Plain(stream)
        };
        match exchange(stream, &request, max, false).await {
            Attempt::Done(reply, keep) => Ok(self.finish(url_key, key, reply, keep)),
            Attempt::Failed(e) => Err(e),
            Attempt::Stale => Err(PollError::Malformed("the attendant closed the connection without a reply".into())),
        }
    }

    fn finish(&self, url: &str, key: Option<Box<str>>, reply: Reply, keep: Option<Conn>) -> Reply {
        if let Some(stream) = keep {
            let mut idle = self.idle.lock();
            if idle.len() < self.budget {
                idle.insert(key.unwrap_or_else(|| url.into()), stream);
            }
        }
        reply
    }

    /// The server's idle connection (with its key), unless the attendant has closed it.
    fn take(&self, url: &str) -> Option<(Box<str>, Conn)> {
        let (key, stream) = self.idle.lock().remove_entry(url)?;
        // Readable while idle means closed (or stray bytes, or a TLS close_notify): either
        // way not reusable, so reading past TLS does no harm. Tokio answers from its
        // readiness cache, so a live connection costs no system call.
        match stream.tcp().try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some((key, stream)),
            _ => None,
        }
    }
}

/// The TLS handshake on a new connection; any failure is `poll:tls`.
async fn handshake(
    t: &Target<'_>,
    stream: TcpStream,
    config: &Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, PollError> {
    let name = rustls::pki_types::ServerName::try_from(t.server_name().to_owned())
        .map_err(|e| PollError::Tls(format!("{:?} cannot be checked against a certificate: {e}", t.server_name())))?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(|e| PollError::Tls(format!("handshake with {} failed: {}", t.host, tls_cause(&e))))
}

/// The rustls error inside an I/O error, else the error itself.
fn tls_cause(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// Sends `request` on `stream` and reads one reply. `reused`: a failure before the first
/// byte of the reply means the connection had gone stale, not that the attendant failed.
async fn exchange(mut stream: Conn, request: &[u8], max: u64, reused: bool) -> Attempt {
    let sent_at = Utc::now();
    if let Err(e) = write_request(&mut stream, request).await {
        return if reused { Attempt::Stale } else { Attempt::Failed(lost(&stream, &e)) };
    }
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let head = loop {
        match read_more(&mut stream, &mut buf).await {
            Ok(0) | Err(_) if reused && buf.is_empty() => return Attempt::Stale,
            // With TLS 1.3 a server that refuses our certificate says so only now.
            Ok(0) if stream.is_tls() && buf.is_empty() => return Attempt::Failed(PollError::Tls(
                "the attendant closed the TLS connection without a reply (is our client certificate one it trusts?)"
                    .into(),
            )),
            Ok(0) => return Attempt::Failed(cut_short("the connection closed")),
            Err(e) => return Attempt::Failed(lost(&stream, &e)),
            Ok(_) => {}
        }
        match parse_head(&buf) {
            Ok(Some(head)) => break head,
            Ok(None) if buf.len() > MAX_HEAD => {
                return Attempt::Failed(PollError::Malformed(format!("reply headers longer than {MAX_HEAD} bytes")))
            }
            Ok(None) => {}
            Err(e) => return Attempt::Failed(e),
        }
    };
    buf.advance(head.len);
    // Only a success is read to the end; the caller turns anything else into its error
    // without the body, so the connection is not kept.
    if !(200..300).contains(&head.status) {
        return Attempt::Done(
            Reply { status: head.status, body: Bytes::new(), sent_at, received_at: Utc::now() },
            None,
        );
    }
    let body = match head.framing {
        Framing::Length(n) if n > max => return Attempt::Failed(PollError::Oversized(max)),
        Framing::Length(n) => read_exact_body(&mut stream, buf, n as usize).await,
        Framing::Chunked => read_chunked(&mut stream, buf, max).await,
        Framing::UntilClose => read_to_close(&mut stream, buf, max).await,
    };
    let (body, clean) = match body {
        Ok(b) => b,
        Err(e) => return Attempt::Failed(e),
    };
    let received_at = Utc::now();
    let keep = (head.keep_alive && clean).then_some(stream);
    Attempt::Done(Reply { status: head.status, body, sent_at, received_at }, keep)
}

/// The most a declared Content-Length reserves before the bytes arrive (a compilation is a
/// few kB; a reply claiming more must send it to make the poller hold it).
pub(super) const PREALLOCATE: usize = 1 << 20;

async fn write_request(stream: &mut Conn, request: &[u8]) -> std::io::Result<()> {
    stream.write_all(request).await?;
    // TLS may hold the last record until flushed; a TCP stream flushes nothing.
    stream.flush().await
}

/// Reads what has arrived into `buf`, growing it by [`FIRST_READ`] when full (the reply's
/// size is not known yet); `Ok(0)` means the attendant closed the connection.
async fn read_more(stream: &mut Conn, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() == buf.len() {
        buf.reserve(FIRST_READ);
    }
    stream.read_buf(buf).await
}

/// A read or write that failed: a TLS alert (a refused client certificate) is `poll:tls`,
/// anything else a reply cut short.
fn lost(stream: &Conn, e: &std::io::Error) -> PollError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) if stream.is_tls() => PollError::Tls(tls.to_string()),
        _ => cut_short(&e.to_string()),
    }
}

fn cut_short(why: &str) -> PollError {
    PollError::Malformed(format!("reply cut short or unreadable: {why}"))
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

/// The status line and headers, once complete (`None`: read more).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, PollError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(PollError::Malformed(format!("not an HTTP reply: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut framing = Framing::UntilClose;
    // HTTP/1.1 keeps the connection unless told otherwise; 1.0 closes it.
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            match n {
                Some(n) if framing != Framing::Chunked => framing = Framing::Length(n),
                Some(_) => {}
                None => return Err(PollError::Malformed("reply with an unreadable Content-Length".into())),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if has_token(h.value, "chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") && has_token(h.value, "close") {
            keep_alive = false;
        }
    }
    Ok(Some(Head { len, status, framing, keep_alive }))
}

fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A body of `n` bytes; `buf` holds what was read after the headers. The bool says whether
/// the connection ended exactly at the body's end (so it can carry another request).
async fn read_exact_body(stream: &mut Conn, mut buf: BytesMut, n: usize) -> Result<(Bytes, bool), PollError> {
    if buf.len() < n {
        // One allocation of the body's size, so the stored reply keeps no slack; but never
        // more than PREALLOCATE on the attendant's word alone: a longer body grows as it
        // arrives.
        let mut body = BytesMut::with_capacity(n.min(PREALLOCATE));
        body.extend_from_slice(&buf);
        buf = body;
    }
    while buf.len() < n {
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err(cut_short(&format!("{} of {n} bytes before the connection closed", buf.len()))),
            Ok(_) => {}
            Err(e) => return Err(lost(stream, &e)),
        }
    }
    let clean = buf.len() == n;
    buf.truncate(n);
    Ok((buf.freeze(), clean))
}

/// A body read until the attendant closes the connection, at most `max` bytes.
async fn read_to_close(stream: &mut Conn, mut buf: BytesMut, max: u64) -> Result<(Bytes, bool), PollError> {
    loop {
        if buf.len() as u64 > max {
            return Err(PollError::Oversized(max));
        }
        match read_more(stream, &mut buf).await {
            Ok(0) => return Ok((buf.freeze(), false)),
            Ok(_) => {}
            Err(e) => return Err(lost(stream, &e)),
        }
    }
}

/// A chunked body, decoded as it arrives, at most `max` bytes of it.
async fn read_chunked(stream: &mut Conn, mut buf: BytesMut, max: u64) -> Result<(Bytes, bool), PollError> {
    let mut body = BytesMut::new();
    loop {
        let done = matches!(decode_chunks(&mut buf, &mut body, max)?, Chunks::Done);
        if body.len() as u64 > max {
            return Err(PollError::Oversized(max));
        }
        if done {
            return Ok((body.freeze(), buf.is_empty()));
        }
        if buf.len() > MAX_HEAD.saturating_add(max as usize) {
            return Err(PollError::Malformed("chunked reply without an end".into()));
        }
        match read_more(stream, &mut buf).await {
            Ok(0) => return Err(cut_short("the connection closed inside a chunked body")),
            Ok(_) => {}
            Err(e) => return Err(lost(stream, &e)),
        }
    }
}

enum Chunks {
    Done,
    More,
}

/// Moves every complete chunk from `buf` into `body`; `Done` after the last chunk and its
/// trailers, with `buf` holding what followed them. A declared chunk size that would take
/// the body past `max` is `Oversized` before any of it is read (so no arithmetic on it can
/// wrap: it is at most `max`).
fn decode_chunks(buf: &mut BytesMut, body: &mut BytesMut, max: u64) -> Result<Chunks, PollError> {
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(Chunks::More) };
        let line = std::str::from_utf8(&buf[..eol]).unwrap_or("");
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| PollError::Malformed(format!("chunked reply with a bad chunk size {size_text:?}")))?;
        if size > max.saturating_sub(body.len() as u64) {
            return Err(PollError::Oversized(max));
        }
        let size = usize::try_from(size).map_err(|_| PollError::Oversized(max))?;
        if size == 0 {
            // Trailers, then an empty line.
            let rest = &buf[eol + 2..];
            if rest.starts_with(b"\r\n") {
                buf.advance(eol + 4);
                return Ok(Chunks::Done);
            }
            let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(Chunks::More) };
            buf.advance(eol + 2 + end + 4);
            return Ok(Chunks::Done);
        }
        // Checked: `size` is bounded by `max`, which a caller may set to anything.
        let Some(need) = (eol + 4).checked_add(size) else { return Err(PollError::Oversized(max)) };
        if buf.len() < need {
            return Ok(Chunks::More);
        }
        if &buf[need - 2..need] != b"\r\n" {
            return Err(PollError::Malformed("chunked reply with a chunk longer than its size".into()));
        }
        body.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
        buf.advance(need);
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
