//! A client for the poller's JSON API (`/api/v1/...`), with waits on what it answers, as
//! an anonymous client (a poller without `[[api.user]]`) or as a user (Bearer token or HTTP
//! basic auth).

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::wait::{wait_until, DEADLINE};

/// A client for the poller's JSON API at `base` (`http://127.0.0.1:PORT`). Every request
/// fails the test on a transport error, a non-2xx status (showing the body) or a body that
/// is not JSON; every wait is bounded by [`Api::deadline`] and fails with the last answer.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    /// How long [`Api::wait_server`] and [`Api::wait_history`] wait.
    pub deadline: Duration,
}

impl Api {
    /// A client with a 10 s timeout a request and waits of [`DEADLINE`].
    pub fn new(base: &str) -> Api {
        Api { base: base.to_string(), http: client(None), deadline: DEADLINE }
    }

    /// The same client presenting `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(self, token: &str) -> Api {
        Api { http: client(Some(format!("Bearer {token}"))), ..self }
    }

    /// The same client logging in by HTTP basic auth with every request.
    pub fn with_basic(self, user: &str, password: &str) -> Api {
        Api { http: client(Some(basic(user, password))), ..self }
    }

    /// The same client with waits of `deadline`.
    pub fn with_deadline(self, deadline: Duration) -> Api {
        Api { deadline, ..self }
    }

    /// `GET {path}` (`/api/v1/...`): the JSON body.
    pub async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        let r = self.http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        json_of("GET", &url, r).await
    }

    /// `GET /api/v1/servers`.
    pub async fn servers(&self) -> Vec<Value> {
        match self.get("/api/v1/servers").await {
            Value::Array(a) => a,
            other => panic!("GET /api/v1/servers is not an array: {other}"),
        }
    }

    /// `GET /api/v1/servers/{name}`.
    pub async fn server(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/servers/{name}")).await
    }

    /// `GET /api/v1/servers/{name}/history?limit=1000`.
    pub async fn history(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/servers/{name}/history?limit=1000")).await
    }

    /// `POST /api/v1/servers/{name}/poll`: the server after the poll it asked for. The
    /// poller answers `429` to a poll asked for within a second of the last: this waits the
    /// `Retry-After` it gives and asks again, as a good client does (within the deadline).
    pub async fn poll_now(&self, name: &str) -> Value {
        let url = format!("{}/api/v1/servers/{name}/poll", self.base);
        let end = std::time::Instant::now() + self.deadline;
        loop {
            let r = self.http.post(&url).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
            if r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || std::time::Instant::now() >= end {
                return json_of("POST", &url, r).await;
            }
            let wait = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let wait = wait.unwrap_or_else(|| panic!("POST {url}: 429 without a Retry-After in seconds"));
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    /// `METHOD {path}` with `body` as JSON, whatever the answer's status: `(status, body)`
    /// (the body as JSON; every answer under `/api/v1` is). For tests of refusals.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url} answered {status} with no JSON ({e}): {text}"));
        (status, v)
    }

    /// Asks for `name`'s server until `ok(server)`; fails naming `what`, with the last answer.
    pub async fn wait_server(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_answer(&format!("{name}: {what}"), || self.server(name), ok).await
    }

    /// Asks for `name`'s history until `ok(history)`; fails naming `what`, with the last answer.
    pub async fn wait_history(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_answer(&format!("{name}'s history: {what}"), || self.history(name), ok).await
    }

    async fn wait_answer<Fut: Future<Output = Value>>(
        &self,
        what: &str,
        mut ask: impl FnMut() -> Fut,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(what, self.deadline, || {
            let answer = ask();
            let ok = &ok;
            async move {
                let v = answer.await;
                if ok(&v) {
                    Ok(v)
                } else {
                    Err(format!("{v:#}"))
                }
            }
        })
        .await
    }
}

/// A client with a 10 s timeout that sends `authorization` (if any) with every request.
fn client(authorization: Option<String>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(a) = authorization {
        let mut value = reqwest::header::HeaderValue::from_str(&a).expect("an Authorization header value");
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().timeout(Duration::from_secs(10)).default_headers(headers).build().expect("http client")
}

/// `Basic BASE64(user:password)` (RFC 7617).
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn json_of(method: &str, url: &str, r: reqwest::Response) -> Value {
    let status = r.status();
    let body = r.text().await.unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
    assert!(status.is_success(), "{method} {url}: HTTP {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {body}"))
}
