//! `check = "http"`: a GET of a URL, judged by its status code and, optionally, its body.
//!
//! Redirects are not followed (a redirect is an answer worth seeing, and following it could
//! leave the server being checked); the body is read only when it must be matched, and
//! never beyond [`MAX_BODY`]. TLS is verified like every other check's (`mail::tls`):
//! against `ca_file` when set (a site's private CA), else the system's CAs; there is no
//! switch to turn verification off.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;

use crate::checks::{Kind, Outcome, ServiceCheck, DEFAULT_TIMEOUT};
use crate::config::fields::TableCx;
use crate::config::login::ca_file;
use crate::mail::tls::client_config;

/// Most of a body read to look for the expected string.
const MAX_BODY: usize = 1024 * 1024;

/// A client trusting `ca_file` (else the system's CAs; where the system has none, the
/// public CAs reqwest carries). Connections and TLS sessions are reused by each check.
fn build_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("rollcall-attendant/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    let builder = match (client_config(ca_file), ca_file) {
        (Ok(tls), _) => builder.use_preconfigured_tls((*tls).clone()),
        (Err(e), Some(_)) => return Err(e),
        (Err(_), None) => builder,
    };
    builder.build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `check = "http"`: `url`, optionally `expect_status` (else any 2xx/3xx), `body` and
/// `ca_file`.
pub const KIND: Kind = Kind {
    name: "http",
    keys: &["url", "expect_status", "body", "ca_file"],
    default_timeout: DEFAULT_TIMEOUT,
    parse,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: Option<String>,
    expect_status: Option<u16>,
    body: Option<String>,
    ca_file: Option<PathBuf>,
}

/// A validated http check.
#[derive(Debug, Default)]
pub struct Http {
    pub url: String,
    pub expect_status: Option<u16>,
    pub body: Option<String>,
    /// PEM file of the CAs to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    client: OnceLock<reqwest::Client>,
}

impl Http {
    fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = build_client(self.ca_file.as_deref())?;
        Ok(self.client.get_or_init(|| c))
    }
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    let ca = ca_file(cx, "ca_file", s.ca_file.as_deref());
    match s.url {
        Some(url) if (url.starts_with("http://") || url.starts_with("https://")) && url.len() > 8 => {
            if s.expect_status.is_some_and(|c| !(100..=599).contains(&c)) {
                cx.push("expect_status", "must be an HTTP status code (100 to 599)");
                return None;
            }
            Some(Arc::new(Http { url, expect_status: s.expect_status, body: s.body, ca_file: ca?, ..Default::default() }))
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
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(self, timeout))
    }
}

/// One GET of `h.url`, each of its steps within 90 % of `timeout`.
pub async fn check(h: &Http, timeout: Duration) -> Outcome {
    let (url, expect_status, body) = (h.url.as_str(), h.expect_status, h.body.as_deref());
    let client = match h.client() {
        Ok(c) => c,
        Err(e) => return Outcome::new(Status::Unknown, e),
    };
    let step = timeout.mul_f32(0.9);
    let mut resp = match client.get(url).timeout(step).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::new(Status::Critical, format!("GET {url}: no answer within {step:?}")),
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

    fn get(url: &str, expect_status: Option<u16>, body: Option<&str>) -> Http {
        Http { url: url.into(), expect_status, body: body.map(Into::into), ..Default::default() }
    }

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
        let t = Duration::from_secs(5);
        assert_eq!(check(&get(&url, None, None), t).await.status, Status::Ok);
        assert_eq!(check(&get(&url, Some(200), Some("systems go")), t).await.status, Status::Ok);
        let o = check(&get(&url, None, Some("degraded")), t).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.contains("lacks \"degraded\""), "{}", o.message);
        let o = check(&get(&url, Some(204), None), t).await;
        assert!(o.message.ends_with("answered 200, expected 204"), "{}", o.message);
    }

    #[tokio::test]
    async fn errors_and_refusals_are_critical_with_the_cause() {
        let url = server(503, "down").await;
        let t = Duration::from_secs(5);
        let o = check(&get(&url, None, None), t).await;
        assert_eq!((o.status, o.details["status_code"].as_u64()), (Status::Critical, Some(503)));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
        };
        let o = check(&get(&closed, None, None), t).await;
        assert_eq!(o.status, Status::Critical);
        assert!(o.message.to_lowercase().contains("refused"), "{}", o.message);
    }
}
