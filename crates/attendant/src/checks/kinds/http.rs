//! `check = "http"`: a GET of a URL, judged by its status code and, optionally, its body.
//!
//! Redirects are not followed (a redirect is an answer worth seeing, and following it could
//! leave the server being checked); the body is read only when it must be matched, and
//! never beyond [`MAX_BODY`].

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;

use crate::checks::{Kind, Outcome, ServiceCheck};
use crate::config::fields::TableCx;

/// Most of a body read to look for the expected string.
const MAX_BODY: usize = 1024 * 1024;

/// One client for every http check: connections and TLS sessions are reused.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = reqwest::Client::builder()
        .user_agent(concat!("rollcall-attendant/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(CLIENT.get_or_init(|| c))
}

/// `check = "http"`: `url`, optionally `expect_status` (else any 2xx/3xx) and `body`.
pub const KIND: Kind = Kind { name: "http", keys: &["url", "expect_status", "body"], parse };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: Option<String>,
    expect_status: Option<u16>,
    body: Option<String>,
}

#[derive(Debug)]
struct Http {
    url: String,
    expect_status: Option<u16>,
    body: Option<String>,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    match s.url {
        Some(url) if (url.starts_with("http://") || url.starts_with("https://")) && url.len() > 8 => {
            if s.expect_status.is_some_and(|c| !(100..=599).contains(&c)) {
                cx.push("expect_status", "must be an HTTP status code (100 to 599)");
                return None;
            }
            Some(Arc::new(Http { url, expect_status: s.expect_status, body: s.body }))
        }
        Some(u) => {
            cx.push("url", format!("{u:?} is not an http:// or https:// URL"));
            None
        }
        None => {
            cx.push("url", "missing: check = \"http\" needs url = \"http://HOST/PATH\"");
            None
        }
    }
}

impl ServiceCheck for Http {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, _timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(&self.url, self.expect_status, self.body.as_deref()))
    }
}

pub async fn check(url: &str, expect_status: Option<u16>, body: Option<&str>) -> Outcome {
    let client = match client() {
        Ok(c) => c,
        Err(e) => return Outcome::new(Status::Unknown, e),
    };
    let mut resp = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::new(Status::Critical, format!("GET {url}: {}", innermost(&e))),
    };
    let code = resp.status().as_u16();
    let status_ok = match expect_status {
        Some(want) => code == want,
        None => (200..400).contains(&code),
    };
    if !status_ok {
        let want = expect_status.map_or("2xx or 3xx".to_string(), |w| w.to_string());
        return Outcome::new(Status::Critical, format!("GET {url} answered {code}, expected {want}"))
            .with("status_code", code);
    }
    let Some(needle) = body else {
        return Outcome::new(Status::Ok, format!("GET {url} answered {code}")).with("status_code", code);
    };
    let mut seen = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                seen.extend_from_slice(&chunk);
                if seen.len() >= MAX_BODY || String::from_utf8_lossy(&seen).contains(needle) {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Outcome::new(Status::Critical, format!("GET {url}: reading the body: {}", innermost(&e)))
                    .with("status_code", code)
            }
        }
    }
    if String::from_utf8_lossy(&seen).contains(needle) {
        Outcome::new(Status::Ok, format!("GET {url} answered {code} with {needle:?}")).with("status_code", code)
    } else {
        Outcome::new(Status::Critical, format!("GET {url} answered {code} but the body lacks {needle:?}"))
            .with("status_code", code)
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route server answering `status` with `body` to every request.
    async fn server(status: u16, body: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn status_and_body_decide() {
        let url = server(200, "all systems go").await;
        assert_eq!(check(&url, None, None).await.status, Status::Ok);
        assert_eq!(check(&url, Some(200), Some("systems go")).await.status, Status::Ok);
        let o = check(&url, None, Some("degraded")).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("lacks \"degraded\""), "{}", o.message);
        let o = check(&url, Some(204), None).await;
        assert!(o.message.ends_with("answered 200, expected 204"), "{}", o.message);
    }

    #[tokio::test]
    async fn errors_and_refusals_are_critical_with_the_cause() {
        let url = server(503, "down").await;
        let o = check(&url, None, None).await;
        assert_eq!((o.status, o.details["status_code"].as_u64()), (Status::Critical, Some(503)));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
        };
        let o = check(&closed, None, None).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.to_lowercase().contains("refused"), "{}", o.message);
    }
}
