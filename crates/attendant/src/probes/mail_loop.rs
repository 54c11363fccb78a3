//! The mail loop probe: submits a uniquely tagged message over SMTP to the probe mailbox
//! and measures the time until interval A reads it (directory + MTA + store end to end).
//!
//! Rules: a message is recognised only by its `X-Rollcall-Probe` header carrying a tag
//! that starts with this attendant's prefix (`rollcall-NAME-`) and is one it sent, so
//! other mail is never mistaken for it; latency above `max_latency` is a warning, a message
//! not seen within `max_latency` (or not accepted by the MTA) is critical; while a message
//! is on its way, interval A looks every second so the latency is not rounded up to
//! interval A.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use parking_lot::Mutex;
use rollcall_protocol::{ProbeResult, Status};
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::credentials;
use super::settings::MailLoopProbe;
use super::smtp::Smtp;
use crate::compile::Attendant;

/// Probe name as the compilation shows it.
pub const MAIL_LOOP: &str = "mail_loop";
/// The header that carries the tag.
pub const HEADER: &str = "X-Rollcall-Probe";
/// Tags remembered at once (older ones are forgotten; their mail is still deleted).
const MAX_PENDING: usize = 16;

/// What interval A saw of a loop message.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub seen: Instant,
    pub internaldate: Option<String>,
}

struct Pending {
    tag: String,
    tx: Option<oneshot::Sender<Arrival>>,
}

#[derive(Default)]
struct Inner {
    prefix: String,
    pending: VecDeque<Pending>,
}

/// Shared by the mail loop (which sends) and the mailbox probe (which finds).
#[derive(Clone, Default)]
pub struct LoopWatch {
    inner: Arc<Mutex<Inner>>,
    sent: Arc<Notify>,
}

impl LoopWatch {
    /// A watch for tags starting `rollcall-NAME-`.
    pub fn new(attendant_name: &str) -> LoopWatch {
        let clean: String = attendant_name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let w = LoopWatch::default();
        w.inner.lock().prefix = format!("rollcall-{clean}-");
        w
    }

    /// A new unique tag, registered as on its way; the receiver hears when it is seen.
    fn expect(&self) -> (String, oneshot::Receiver<Arrival>) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut g = self.inner.lock();
        let tag = format!("{}{}-{}-{n}", g.prefix, Utc::now().timestamp_micros(), std::process::id());
        let (tx, rx) = oneshot::channel();
        g.pending.push_back(Pending { tag: tag.clone(), tx: Some(tx) });
        while g.pending.len() > MAX_PENDING {
            g.pending.pop_front();
        }
        (tag, rx)
    }

    /// Wakes the mailbox probe: a message is on its way.
    fn announce(&self) {
        self.sent.notify_one();
    }

    /// Resolves when a loop message was sent.
    pub async fn sent(&self) {
        self.sent.notified().await
    }

    /// Whether a sent message is still awaited.
    pub fn has_pending(&self) -> bool {
        self.inner.lock().pending.iter().any(|p| p.tx.as_ref().is_some_and(|t| !t.is_closed()))
    }

    /// Whether `tag` is this attendant's loop mail (sent by it, now or before a restart).
    pub fn is_ours(&self, tag: &str) -> bool {
        let g = self.inner.lock();
        !g.prefix.is_empty() && tag.starts_with(&g.prefix)
    }

    /// Interval A read the message tagged `tag`.
    pub fn arrived(&self, tag: &str, seen: Instant, internaldate: Option<String>) {
        let mut g = self.inner.lock();
        if let Some(p) = g.pending.iter_mut().find(|p| p.tag == tag) {
            if let Some(tx) = p.tx.take() {
                let _ = tx.send(Arrival { seen, internaldate });
            }
        }
    }
}

/// The tag in a message's `X-Rollcall-Probe` header, if it has one.
pub fn probe_tag(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break; // end of the header
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case(HEADER) {
                let v = value.trim();
                return (!v.is_empty()).then(|| v.to_string());
            }
        }
    }
    None
}

/// Runs the mail loop until `stop`: one message per `interval`.
pub async fn run(attendant: Arc<Attendant>, cfg: MailLoopProbe, watch: LoopWatch, stop: CancellationToken) {
    let server = attendant.config().name.clone();
    let helo = crate::config::hostname();
    let mut tick = tokio::time::interval(cfg.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let observed_at = attendant.clock.now();
        let started = Instant::now();
        let (tag, mut rx) = watch.expect();
        let mut details = Map::new();
        details.insert("smtp".into(), json!(cfg.endpoint.address));
        details.insert("security".into(), json!(cfg.endpoint.security.as_str()));
        details.insert("to".into(), json!(cfg.to));
        details.insert("tag".into(), json!(tag));
        details.insert("max_latency_ms".into(), json!(cfg.max_latency.get().as_millis()));
        let report = |status: Status, message: String, details: Map<String, Value>| {
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            if status == Status::Ok {
                tracing::debug!(server = %server, probe = MAIL_LOOP, duration_ms, "{message}");
            } else {
                tracing::warn!(server = %server, probe = MAIL_LOOP, %status, duration_ms, "{message}");
            }
            attendant.probes.report(ProbeResult {
                name: MAIL_LOOP.to_string(),
                kind: MAIL_LOOP.to_string(),
                status,
                message,
                observed_at,
                duration_ms,
                details,
            });
        };
        match submit(&cfg, &helo, &tag).await {
            Ok((greeting, queued)) => {
                details.insert("greeting".into(), json!(greeting));
                details.insert("queued".into(), json!(queued));
            }
            Err(e) => {
                report(Status::Critical, format!("cannot submit the loop message: {e}"), details);
                continue;
            }
        }
        let submitted = Instant::now();
        details.insert("submit_ms".into(), json!((submitted - started).as_secs_f64() * 1000.0));
        watch.announce();
        let max = cfg.max_latency.get();
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            got = tokio::time::timeout(max, &mut rx) => got,
        };
        match outcome {
            Ok(Ok(a)) => {
                let latency = a.seen.saturating_duration_since(submitted);
                details.insert("latency_ms".into(), json!(latency.as_secs_f64() * 1000.0));
                details.insert("internaldate".into(), json!(a.internaldate));
                let (status, message) = if latency > max {
                    (Status::Warning, format!("delivered in {latency:.1?}, more than max_latency {}", cfg.max_latency))
                } else {
                    (Status::Ok, format!("delivered and read in {latency:.1?}"))
                };
                report(status, message, details);
            }
            Ok(Err(_)) => {
                report(Status::Unknown, "the mailbox probe stopped before the loop message was seen".into(), details);
            }
            Err(_) => {
                report(
                    Status::Critical,
                    format!("accepted by the MTA but not seen in the mailbox within max_latency {}", cfg.max_latency),
                    details.clone(),
                );
                // A late arrival before the next message still tells how late it was.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        tick.reset_immediately();
                    }
                    got = &mut rx => if let Ok(a) = got {
                        let latency = a.seen.saturating_duration_since(submitted);
                        details.insert("latency_ms".into(), json!(latency.as_secs_f64() * 1000.0));
                        details.insert("internaldate".into(), json!(a.internaldate));
                        report(
                            Status::Warning,
                            format!("arrived late: {latency:.1?}, more than max_latency {}", cfg.max_latency),
                            details,
                        );
                    }
                }
            }
        }
    }
}

/// One SMTP transaction; answers the greeting and the server's final reply.
async fn submit(cfg: &MailLoopProbe, helo: &str, tag: &str) -> Result<(String, String), String> {
    let timeout = cfg.timeout.get();
    let mut smtp = Smtp::connect(&cfg.endpoint, timeout, helo).await.map_err(|e| e.to_string())?;
    let greeting = smtp.greeting.to_string();
    if let Some(c) = &cfg.credentials {
        let secret = credentials::fetch(&c.secret, timeout).await?;
        smtp.auth(&c.user, &secret).await.map_err(|e| e.to_string())?;
    }
    let now = Utc::now();
    let message = format!(
        "From: Rollcall probe <{from}>\r\nTo: <{to}>\r\nSubject: Rollcall mail loop {tag}\r\nDate: {date}\r\nMessage-ID: <{tag}@rollcall.invalid>\r\n{HEADER}: {tag}\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThis message tests mail delivery end to end; the Rollcall attendant reads and\r\ndeletes it. Tag: {tag}\r\n",
        from = cfg.from,
        to = cfg.to,
        date = now.to_rfc2822(),
    );
    let reply = smtp.send(&cfg.from, &cfg.to, &message).await.map_err(|e| e.to_string())?;
    smtp.quit().await;
    Ok((greeting, reply.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_recognised_only_from_the_header_and_our_prefix() {
        let w = LoopWatch::new("mail-01");
        let (tag, _rx) = w.expect();
        assert!(tag.starts_with("rollcall-mail_01-"), "{tag}");
        let msg = format!("Subject: x\r\n{HEADER}: {tag}\r\n\r\nbody\r\n");
        assert_eq!(probe_tag(msg.as_bytes()).as_deref(), Some(tag.as_str()));
        assert!(w.is_ours(&tag));
        assert!(!w.is_ours("rollcall-mail_02-1-2-3"));
        // A tag in the body is not a header.
        let body_only = format!("Subject: x\r\n\r\n{HEADER}: {tag}\r\n");
        assert_eq!(probe_tag(body_only.as_bytes()), None);
        assert!(w.has_pending());
        w.arrived(&tag, Instant::now(), None);
        assert!(!w.has_pending());
    }
}
