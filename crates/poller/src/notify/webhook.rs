//! The webhook channel: each notice POSTed as JSON (the [`Notice`] shape) to one URL, or
//! with `template_file` the body that template renders (a chat service's own JSON).
//!
//! Rules it keeps: any 2xx answer is delivery; anything else (other status, no answer) is
//! a failure the notifier retries; the receiver's answer body is read only to name the
//! failure, and at most a few kB of it. Every attempt at one notice carries its key as
//! the `Idempotency-Key` header (the IETF httpapi draft's name; in the JSON body too, as
//! `key`), so a receiver drops a repeat whose first answer was lost.

use crate::config::NotifyConfig;
use crate::notify::{DeliveryError, Notice};

/// Most of a failing receiver's answer quoted in the error.
const MAX_QUOTE: usize = 512;

/// A webhook receiver.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    token: Option<rollcall_config::Secret>,
    /// With `template_file`: the body is this template rendered (JSON the receiver wants,
    /// e.g. `{"text": {{ summary | tojson }}}`), instead of the notice itself.
    template: Option<Result<super::template::Template, String>>,
}

/// One HTTP client for a notification channel: no redirects, its own user agent.
pub fn client(config: &NotifyConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("rollcall-poller/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.timeout)
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Sends `body` as JSON; Ok on 2xx, else the status and the start of the answer.
pub async fn post_json<T: serde::Serialize + ?Sized>(
    client: &reqwest::Client,
    url: &str,
    token: Option<&rollcall_config::Secret>,
    body: &T,
    idempotency_key: Option<&str>,
) -> Result<(), DeliveryError> {
    let body = serde_json::to_vec(body).map_err(|e| DeliveryError(format!("cannot encode the notice: {e}")))?;
    post(client, url, token, body, idempotency_key).await
}

/// Sends `body` (JSON already) with `Content-Type: application/json`; Ok on 2xx, else
/// the status and the start of the answer.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&rollcall_config::Secret>,
    body: impl Into<reqwest::Body>,
    idempotency_key: Option<&str>,
) -> Result<(), DeliveryError> {
    let mut req = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t.expose());
    }
    if let Some(k) = idempotency_key {
        // A server name outside visible ASCII cannot travel raw in a header: percent-encoded.
        req = req.header("Idempotency-Key", header_safe(k));
    }
    let resp = req.send().await.map_err(|e| DeliveryError(format!("POST {url}: {}", innermost(&e))))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let quote: String = text.chars().take(MAX_QUOTE).collect();
    Err(DeliveryError(format!("POST {url}: HTTP {status}: {}", quote.trim())))
}

/// `key` as a header value: visible ASCII kept, every other byte (and `%`) as `%XX`.
pub fn header_safe(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_graphic() && b != b'%' || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

impl Webhook {
    pub fn new(config: &NotifyConfig) -> Webhook {
        let template = config.template.as_ref().map(|(name, text)| super::template::Template::compile(name, text));
        Webhook { client: client(config), url: config.url.clone(), token: config.token.clone(), template }
    }

    pub async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        let Some(template) = &self.template else {
            return post_json(&self.client, &self.url, self.token.as_ref(), notice, Some(&notice.key)).await;
        };
        let body = template.as_ref().map_err(|e| DeliveryError(e.clone()))?.render(notice).map_err(DeliveryError)?;
        post(&self.client, &self.url, self.token.as_ref(), body, Some(&notice.key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::header_safe;

    #[test]
    fn a_key_outside_visible_ascii_is_percent_encoded_in_its_header() {
        assert_eq!(header_safe("told:7:mail-01"), "told:7:mail-01");
        assert_eq!(header_safe("told:1:mx ü%\n"), "told:1:mx %C3%BC%25%0A");
        assert!(reqwest::header::HeaderValue::from_str(&header_safe("told:1:\r\nX-Evil: 1")).is_ok());
    }
}
