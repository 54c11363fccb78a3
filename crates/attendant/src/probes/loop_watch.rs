//! The rendezvous of the mail loop (which sends a tagged message) and the mailbox probe
//! (which finds it): tags on their way, and how a message is recognised as one of them.
//!
//! Rules: a message is the loop's only by its `X-Rollcall-Probe` header carrying a tag
//! that starts with this attendant's prefix (`rollcall-NAME-`); at most `MAX_PENDING` tags
//! are awaited at once (older ones are forgotten, their mail is still recognised and
//! deleted).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

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
    pub fn expect(&self) -> (String, oneshot::Receiver<Arrival>) {
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
    pub fn announce(&self) {
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
