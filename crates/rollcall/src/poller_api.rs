//! The CLI's client of the poller's JSON API: one request, its answer's body on success,
//! and on failure an error that says which poller, which route and what it answered
//! (the API's `{"error": ...}` message when there is one).

use anyhow::Context;
use reqwest::Method;

/// How long the CLI waits for one answer.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `method path` (with `body` as JSON) to the poller at `poller`; answers the body
/// of a 2xx answer.
pub async fn call(
    method: Method,
    poller: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", poller.trim_end_matches('/'));
    let mut req = reqwest::Client::new().request(method.clone(), &url).timeout(TIMEOUT);
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
    anyhow::bail!("{method} {url} answered HTTP {status}: {message}")
}
