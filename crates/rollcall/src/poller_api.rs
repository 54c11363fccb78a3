//! The CLI's client of the poller's JSON API: one request, its answer's body on success,
//! and on failure an error that says which poller, which route and what it answered
//! (the API's `{"error": ...}` message when there is one).

use std::path::PathBuf;

use anyhow::Context;
use reqwest::Method;
use rollcall_config::SecretSource;

/// Which poller, and as which user: the token file of one of its `[[api.user]]`s (sent as
/// a Bearer token), needed when the poller has users.
#[derive(Debug, Clone)]
pub struct Poller {
    pub url: String,
    pub token_file: Option<PathBuf>,
}

/// How long the CLI waits for one answer.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `method path` (with `body` as JSON) to the poller at `poller`; answers the body
/// of a 2xx answer.
pub async fn call(
    method: Method,
    poller: &Poller,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", poller.url.trim_end_matches('/'));
    let mut req = reqwest::Client::new().request(method.clone(), &url).timeout(TIMEOUT);
    if let Some(file) = &poller.token_file {
        let token = SecretSource::File(file.clone()).read().map_err(|e| anyhow::anyhow!("--token-file: {e}"))?;
        req = req.bearer_auth(token.expose());
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the poller at {url} (another one: --poller URL or ROLLCALL_POLLER)"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("reading the answer of {method} {url}"))?;
    if status.is_success() {
        return Ok(text);
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string());
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let hint = if poller.token_file.is_some() {
            "the poller does not know this token"
        } else {
            "the poller has users: give one's token with --token-file FILE or ROLLCALL_TOKEN_FILE"
        };
        anyhow::bail!("{method} {url} answered HTTP {status}: {hint} ({message})");
    }
    anyhow::bail!("{method} {url} answered HTTP {status}: {message}")
}
