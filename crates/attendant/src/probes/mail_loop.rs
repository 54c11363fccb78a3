//! The mail loop probe: submits a uniquely tagged message over SMTP to the probe mailbox
//! and measures the time until interval A reads it (directory + MTA + store end to end).
//!
//! Rules: a message is recognised only by its `X-Rollcall-Probe` header carrying a tag
//! that starts with this attendant's prefix (`rollcall-NAME-`) and is one it sent, so
//! other mail is never mistaken for it; latency above `max_latency` is a warning, a message
//! not seen within `max_latency` (or not accepted by the MTA) is critical; while a message
//! is on its way, interval A looks every second so the latency is not rounded up to
//! interval A.

use std::time::Instant;

use chrono::Utc;
use rollcall_protocol::Status;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::loop_watch::{LoopWatch, HEADER};
use super::{Post, ProbeContext};
use crate::config::MailLoopProbe;
use crate::mail::credentials;
use crate::mail::smtp::Smtp;

/// Probe name as the compilation shows it.
pub const MAIL_LOOP: &str = "mail_loop";

/// Runs the mail loop until `stop`: one message per `interval`.
pub async fn run(cx: ProbeContext, cfg: MailLoopProbe, watch: LoopWatch, stop: CancellationToken) {
    let helo = crate::host::hostname();
    let mut tick = tokio::time::interval(cfg.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let observed_at = cx.clock.now();
        let started = Instant::now();
        let (tag, mut rx) = watch.expect();
        let mut details = Map::new();
        details.insert("smtp".into(), json!(cfg.endpoint.address));
        details.insert("security".into(), json!(cfg.endpoint.security.as_str()));
        details.insert("to".into(), json!(cfg.to));
        details.insert("tag".into(), json!(tag));
        details.insert("max_latency_ms".into(), json!(cfg.max_latency.get().as_millis()));
        let report = |status: Status, message: String, details: Map<String, Value>| {
            cx.post(Post { name: MAIL_LOOP, kind: MAIL_LOOP, status, message, observed_at, started, details });
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
