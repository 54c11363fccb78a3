//! `check = "tcp"`: can we connect, and (with `expect`) does the banner say what it should.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::checks::{Kind, Outcome, ServiceCheck};
use crate::config::fields::{host_port, TableCx};

/// Longest banner we read; a greeting is one short line.
const MAX_BANNER: usize = 1024;

/// `check = "tcp"`: `address = "HOST:PORT"`, optionally `expect = "TEXT"` in the banner.
pub const KIND: Kind = Kind { name: "tcp", keys: &["address", "expect"], parse };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    address: Option<String>,
    expect: Option<String>,
}

#[derive(Debug)]
struct Tcp {
    address: String,
    expect: Option<String>,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    let address = host_port(cx, "address", s.address.as_deref(), "check = \"tcp\" needs address = \"HOST:PORT\"")?;
    Some(Arc::new(Tcp { address, expect: s.expect }))
}

impl ServiceCheck for Tcp {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(&self.address, self.expect.as_deref(), timeout))
    }
}

/// Connects to `address`; with `expect`, reads the first line and looks for it there.
pub async fn check(address: &str, expect: Option<&str>, timeout: Duration) -> Outcome {
    let mut stream = match TcpStream::connect(address).await {
        Ok(s) => s,
        Err(e) => return Outcome::new(Status::Critical, format!("cannot connect to {address}: {e}")),
    };
    let Some(expect) = expect else {
        return Outcome::new(Status::Ok, format!("connected to {address}"));
    };
    let mut buf = vec![0u8; MAX_BANNER];
    let mut len = 0;
    // Leave the caller's timeout a margin so our own message wins over the generic one.
    let read = tokio::time::timeout(timeout.mul_f32(0.9), async {
        while len < MAX_BANNER {
            match stream.read(&mut buf[len..]).await {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if buf[..len].contains(&b'\n') {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    let banner = String::from_utf8_lossy(&buf[..len]);
    let banner = banner.lines().next().unwrap_or("").trim().to_string();
    match read {
        Err(_) if banner.is_empty() => {
            Outcome::new(Status::Critical, format!("connected to {address} but no banner arrived"))
        }
        Ok(Err(e)) => Outcome::new(Status::Critical, format!("reading banner from {address}: {e}")),
        _ if banner.contains(expect) => Outcome::new(Status::Ok, banner.clone()).with("banner", banner),
        _ => Outcome::new(Status::Critical, format!("banner {banner:?} does not contain {expect:?}"))
            .with("banner", banner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn banner_server(banner: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(banner).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn open_port_is_ok_and_closed_port_is_critical() {
        let addr = banner_server(b"").await;
        assert_eq!(check(&addr, None, Duration::from_secs(1)).await.status, Status::Ok);
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let o = check(&closed, None, Duration::from_secs(1)).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("cannot connect"), "{}", o.message);
    }

    #[tokio::test]
    async fn banner_must_contain_expect() {
        let addr = banner_server(b"220 mail.example.org ESMTP\r\n").await;
        let o = check(&addr, Some("220"), Duration::from_secs(1)).await;
        assert_eq!((o.status, o.message.as_str()), (Status::Ok, "220 mail.example.org ESMTP"));
        let o = check(&addr, Some("* OK"), Duration::from_secs(1)).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("does not contain"), "{}", o.message);
    }

    #[tokio::test]
    async fn silent_server_is_critical_within_the_timeout() {
        let addr = banner_server(b"").await;
        let t = std::time::Instant::now();
        let o = check(&addr, Some("220"), Duration::from_secs(1)).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("no banner"), "{}", o.message);
        // Our own bound (0.9 of the timeout) ends it, well before the caller's timeout.
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
