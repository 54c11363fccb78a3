//! One text-protocol connection (IMAP, SMTP): TCP, optionally TLS from the start or after
//! STARTTLS, read a line at a time.
//!
//! Rules: every step (connect, handshake, each read and write) is bounded by the
//! connection's timeout, so a silent server costs at most that long; lines and literals
//! are bounded in size, so a misbehaving server cannot make the attendant grow; TLS is
//! rustls (see `tls`), verified against the system's CAs or the configured `ca_file`.

use std::time::Duration;

use rollcall_netserve::tls::ClientStream as Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use super::tls::client_config;
use crate::config::login::{Endpoint, Security};

/// Longest line accepted from a server.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a connection step failed; the text is what the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {after:?} ({what})")]
    Timeout { what: String, after: Duration },
    #[error("TLS with {address}: {message}")]
    Tls { address: String, message: String },
    #[error("connection closed by the server ({what})")]
    Closed { what: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
}

/// What a connection holds right now, read without waiting ([`Conn::ready`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Nothing has arrived (or only part of a line): the connection is open and quiet.
    Nothing,
    /// A whole line the server sent unasked, without its CRLF.
    Line(String),
    /// The server closed (or reset) the connection; the text says which.
    Closed(String),
}

/// A connection to one server, every step bounded by `timeout`.
pub struct Conn {
    io: BufReader<Stream>,
    endpoint: Endpoint,
    timeout: Duration,
}

impl Conn {
    /// Connects (and, for `security = "tls"`, completes the TLS handshake).
    pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Conn, WireError> {
        let tcp = bounded(timeout, "connect", TcpStream::connect(&endpoint.address))
            .await?
            .map_err(|source| WireError::Connect { address: endpoint.address.clone(), source })?;
        let _ = tcp.set_nodelay(true);
        let stream = match endpoint.security {
            Security::Tls => Stream::Tls(Box::new(handshake(endpoint, tcp, timeout).await?)),
            _ => Stream::Plain(tcp),
        };
        Ok(Conn { io: BufReader::new(stream), endpoint: endpoint.clone(), timeout })
    }

    /// Whether the connection runs over TLS (from the start, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        matches!(self.io.get_ref(), Stream::Tls(_))
    }

    /// Upgrades to TLS after the server accepted STARTTLS. Bytes the server sent before the
    /// handshake would be a command-injection attempt, so they are refused.
    pub async fn starttls(self) -> Result<Conn, WireError> {
        if !self.io.buffer().is_empty() {
            return Err(WireError::Protocol("server sent data after accepting STARTTLS, before the handshake".into()));
        }
        let tcp = match self.io.into_inner() {
            Stream::Plain(t) => t,
            Stream::Tls(_) => return Err(WireError::Protocol("already using TLS".into())),
        };
        let tls = handshake(&self.endpoint, tcp, self.timeout).await?;
        Ok(Conn { io: BufReader::new(Stream::Tls(Box::new(tls))), endpoint: self.endpoint, timeout: self.timeout })
    }

    /// One line without its CRLF; `what` names the step in errors.
    pub async fn read_line(&mut self, what: &str) -> Result<String, WireError> {
        let mut buf = Vec::new();
        let io = &mut self.io;
        let n =
            bounded(self.timeout, what, async { (&mut *io).take(MAX_LINE as u64).read_until(b'\n', &mut buf).await })
                .await?
                .map_err(|source| WireError::Io { what: what.to_string(), source })?;
        if n == 0 {
            return Err(WireError::Closed { what: what.to_string() });
        }
        if !buf.ends_with(b"\n") {
            return Err(WireError::Protocol(format!("{what}: line longer than {MAX_LINE} bytes or cut off")));
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// What the server sent unasked, without waiting: a whole line already received, the
    /// connection's end, or nothing. A partial line stays buffered for the next read.
    pub fn ready(&mut self) -> Ready {
        use futures::FutureExt;
        if let Some(line) = self.buffered_line() {
            return Ready::Line(line);
        }
        if !self.io.buffer().is_empty() {
            return Ready::Nothing;
        }
        let filled = self.io.fill_buf().now_or_never().map(|r| r.map(|b| b.is_empty()));
        match filled {
            None => Ready::Nothing,
            Some(Ok(true)) => Ready::Closed("connection closed by the server".into()),
            Some(Ok(false)) => self.buffered_line().map_or(Ready::Nothing, Ready::Line),
            Some(Err(e)) => Ready::Closed(format!("connection lost: {e}")),
        }
    }

    /// Takes one whole line out of the read buffer, if one is there (no I/O).
    fn buffered_line(&mut self) -> Option<String> {
        let end = self.io.buffer().iter().position(|b| *b == b'\n')?;
        let mut line = self.io.buffer()[..end].to_vec();
        self.io.consume(end + 1);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    /// Exactly `n` bytes (an IMAP literal).
    pub async fn read_exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, WireError> {
        let mut buf = vec![0u8; n];
        let io = &mut self.io;
        bounded(self.timeout, what, io.read_exact(&mut buf))
            .await?
            .map_err(|source| WireError::Io { what: what.to_string(), source })?;
        Ok(buf)
    }

    /// Sends `bytes` (a command line with its CRLF, or message data) and flushes.
    pub async fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), WireError> {
        let io = &mut self.io;
        bounded(self.timeout, what, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await?
        .map_err(|source| WireError::Io { what: what.to_string(), source })
    }
}

async fn bounded<T>(timeout: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> Result<T, WireError> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| WireError::Timeout { what: what.to_string(), after: timeout })
}

async fn handshake(endpoint: &Endpoint, tcp: TcpStream, timeout: Duration) -> Result<TlsStream<TcpStream>, WireError> {
    let tls_err = |message: String| WireError::Tls { address: endpoint.address.clone(), message };
    let config = client_config(endpoint.ca_file.as_deref()).map_err(tls_err)?;
    let name = rustls::pki_types::ServerName::try_from(endpoint.host().to_string())
        .map_err(|e| tls_err(format!("{:?} is not a server name: {e}", endpoint.host())))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    bounded(timeout, "TLS handshake", connector.connect(name, tcp)).await?.map_err(|e| tls_err(e.to_string()))
}
