//! `check = "tcp"`: can we connect, and (with `expect`) does the server say what it should;
//! the `send` / `expect` / `quit` strings of `check_tcp`.
//!
//! Rules: connect; send `send` if set; with `expect`, read the server's first line (up to
//! [`MAX_BANNER`] bytes) and look for the text there; then send `quit` if set and read the
//! server's answer to it, so the server sees a client that said goodbye (Postfix logs
//! "lost connection after CONNECT" for a client that just hangs up); then close. A `send`
//! or `quit` without a line end gets CRLF (text protocols: SMTP, IMAP, POP3, FTP). For a
//! server that speaks first (greeting), set `expect` so `quit` follows the greeting: a
//! client that talks before its turn is what spam bots do, and postscreen bans them.
//!
//! With `security = "tls"` (check_tcp's `--ssl`: an SMTPS, IMAPS, LDAPS or any TLS port)
//! the session runs over TLS, verified like every other check's: against `ca_file` when
//! set, else the system's CAs; a failed handshake is critical with the cause.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::checks::{Kind, Outcome, ServiceCheck, DEFAULT_TIMEOUT};
use crate::config::fields::{host_port, TableCx};
use crate::config::login::{ca_file, Endpoint, Security};
use crate::mail::tls::client_config;

/// Most bytes read while looking for `expect`; a greeting is one short line.
const MAX_BANNER: usize = 1024;

/// Longest wait for the server's answer to `quit` (it usually closes at once).
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// `check = "tcp"`: `address = "HOST:PORT"`, optionally `send`, `expect`, `quit`,
/// `security` (`none` or `tls`) and `ca_file`.
pub const KIND: Kind = Kind {
    name: "tcp",
    keys: &["address", "send", "expect", "quit", "security", "ca_file"],
    default_timeout: DEFAULT_TIMEOUT,
    parse,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    address: Option<String>,
    security: Option<Security>,
    ca_file: Option<std::path::PathBuf>,
    send: Option<String>,
    expect: Option<String>,
    quit: Option<String>,
}

/// A validated tcp check.
#[derive(Debug, Clone)]
pub struct Tcp {
    /// Where to connect; `security` is `None` or `Tls`.
    pub endpoint: Endpoint,
    /// Sent right after connecting.
    pub send: Option<String>,
    /// Text the server's first answer must contain.
    pub expect: Option<String>,
    /// Sent before closing (after `expect` matched).
    pub quit: Option<String>,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    let address = host_port(cx, "address", s.address.as_deref(), "check = \"tcp\" needs address = \"HOST:PORT\"");
    let mut ok = true;
    for (key, v) in [("send", &s.send), ("expect", &s.expect), ("quit", &s.quit)] {
        if v.as_deref() == Some("") {
            cx.push(key, "must not be empty (leave the key out instead)");
            ok = false;
        }
    }
    let security = s.security.unwrap_or_default();
    if security == Security::Starttls {
        cx.push("security", "\"starttls\" needs a protocol (use check = \"smtp\", \"imap\" or \"ldap\"); tcp takes none or tls");
        ok = false;
    }
    let ca_file = ca_file(cx, "ca_file", s.ca_file.as_deref());
    let endpoint = Endpoint { address: address?, security, ca_file: ca_file? };
    let tcp = Tcp { endpoint, send: s.send.map(line), expect: s.expect, quit: s.quit.map(line) };
    ok.then(|| Arc::new(tcp) as Arc<dyn ServiceCheck>)
}

/// `s`, ended by CRLF unless it already ends a line.
fn line(s: String) -> String {
    if s.ends_with('\n') {
        s
    } else {
        s + "\r\n"
    }
}

impl ServiceCheck for Tcp {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(self, timeout))
    }
}

/// Runs the check (see the module rules).
pub async fn check(t: &Tcp, timeout: Duration) -> Outcome {
    let address = &t.endpoint.address;
    // Leave the caller's timeout a margin so our own message wins over the generic one.
    let step = timeout.mul_f32(0.9);
    let stream = match tokio::time::timeout(step, TcpStream::connect(address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::new(Status::Critical, format!("cannot connect to {address}: {e}")),
        Err(_) => return Outcome::new(Status::Critical, format!("cannot connect to {address} within {step:?}")),
    };
    if t.endpoint.security != Security::Tls {
        return session(stream, t, step).await;
    }
    match tokio::time::timeout(step, handshake(&t.endpoint, stream)).await {
        Ok(Ok(tls)) => session(tls, t, step).await.with("tls", true),
        Ok(Err(e)) => Outcome::new(Status::Critical, format!("TLS with {address}: {e}")),
        Err(_) => Outcome::new(Status::Critical, format!("TLS with {address}: no handshake within {step:?}")),
    }
}

/// TLS over `tcp`, the certificate checked for the address's host.
async fn handshake(
    endpoint: &Endpoint,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = client_config(endpoint.ca_file.as_deref())?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(endpoint.host().to_string())
        .map_err(|e| format!("{:?} is not a server name: {e}", endpoint.host()))?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())
}

/// send, expect, quit and close on an open connection.
async fn session(mut stream: impl AsyncRead + AsyncWrite + Unpin, t: &Tcp, step: Duration) -> Outcome {
    let address = &t.endpoint.address;
    if let Some(send) = &t.send {
        if let Err(e) = stream.write_all(send.as_bytes()).await {
            return Outcome::new(Status::Critical, format!("sending to {address}: {e}"));
        }
    }
    let outcome = match &t.expect {
        None => Outcome::new(Status::Ok, format!("connected to {address}")),
        Some(expect) => expect_text(&mut stream, address, expect, step).await,
    };
    if let Some(quit) = &t.quit {
        if stream.write_all(quit.as_bytes()).await.is_ok() {
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(QUIT_WAIT.min(step), stream.read(&mut sink)).await;
        }
    }
    let _ = stream.shutdown().await;
    outcome
}

/// Reads the first line (or until `expect` shows up, the server stops, or the bound).
async fn expect_text(
    stream: &mut (impl AsyncRead + Unpin),
    address: &str,
    expect: &str,
    step: Duration,
) -> Outcome {
    let mut buf = vec![0u8; MAX_BANNER];
    let mut len = 0;
    let read = tokio::time::timeout(step, async {
        while len < MAX_BANNER {
            match stream.read(&mut buf[len..]).await {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    // The first line is the server's greeting: judge on it.
                    if buf[..len].contains(&b'\n') || String::from_utf8_lossy(&buf[..len]).contains(expect) {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    let banner = text.lines().next().unwrap_or("").trim().to_string();
    match read {
        _ if text.contains(expect) => {
            let line = text.lines().find(|l| l.contains(expect)).unwrap_or(&banner).trim().to_string();
            Outcome::new(Status::Ok, line).with("banner", banner)
        }
        Err(_) if text.is_empty() => {
            Outcome::new(Status::Critical, format!("connected to {address} but no banner arrived"))
        }
        Ok(Err(e)) => Outcome::new(Status::Critical, format!("reading banner from {address}: {e}")),
        _ => Outcome::new(Status::Critical, format!("banner {banner:?} does not contain {expect:?}"))
            .with("banner", banner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server that writes `banner`, then records what the client sends until it closes.
    async fn banner_server(banner: &'static [u8]) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(banner).await;
                    let mut got = Vec::new();
                    let mut buf = [0u8; 256];
                    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if got.ends_with(b"QUIT\r\n") {
                            let _ = s.write_all(b"221 2.0.0 Bye\r\n").await;
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
                });
            }
        });
        (addr, rx)
    }

    fn tcp(address: &str, expect: Option<&str>) -> Tcp {
        let endpoint = Endpoint { address: address.into(), security: Security::None, ca_file: None };
        Tcp { endpoint, send: None, expect: expect.map(Into::into), quit: None }
    }

    #[tokio::test]
    async fn open_port_is_ok_and_closed_port_is_critical() {
        let (addr, _) = banner_server(b"").await;
        assert_eq!(check(&tcp(&addr, None), Duration::from_secs(1)).await.status, Status::Ok);
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let o = check(&tcp(&closed, None), Duration::from_secs(1)).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("cannot connect"), "{}", o.message);
    }

    #[tokio::test]
    async fn banner_must_contain_expect() {
        let (addr, _) = banner_server(b"220 mail.example.org ESMTP\r\n").await;
        let o = check(&tcp(&addr, Some("220")), Duration::from_secs(1)).await;
        assert_eq!((o.status, o.message.as_str()), (Status::Ok, "220 mail.example.org ESMTP"));
        let o = check(&tcp(&addr, Some("* OK")), Duration::from_secs(1)).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("does not contain"), "{}", o.message);
    }

    #[tokio::test]
    async fn send_and_quit_go_out_in_order_after_the_expected_text() {
        let (addr, mut said) = banner_server(b"+OK POP3 ready\r\n").await;
        let t = Tcp {
            send: Some(line("CAPA".into())),
            expect: Some("+OK".into()),
            quit: Some(line("QUIT".into())),
            ..tcp(&addr, None)
        };
        let o = check(&t, Duration::from_secs(2)).await;
        assert_eq!((o.status, o.message.as_str()), (Status::Ok, "+OK POP3 ready"));
        assert_eq!(said.recv().await.unwrap(), "CAPA\r\nQUIT\r\n");
    }

    #[tokio::test]
    async fn silent_server_is_critical_within_the_timeout() {
        let (addr, _) = banner_server(b"").await;
        let t = std::time::Instant::now();
        let o = check(&tcp(&addr, Some("220")), Duration::from_secs(1)).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("no banner"), "{}", o.message);
        // Our own bound (0.9 of the timeout) ends it, well before the caller's timeout.
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
