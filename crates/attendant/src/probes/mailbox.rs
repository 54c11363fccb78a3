//! The synthetic user (SPEC section 2): interval A (`login`, `mail_read`) and interval B
//! (`refresh`) on one IMAP session, run by one task so the two never interleave.
//!
//! Rules it keeps: not logged in → log in and report `login`; a failed login ends the
//! round. A session the server ended while it sat idle between rounds (an unread `* BYE`,
//! a closed socket; stores close idle sessions on their own schedule) is no failure of the
//! store: the round logs in again and reports that login. A `BYE` or failure in answer to
//! the probe's own command is one, as below. Then NOOP + `UID SEARCH UNSEEN`; new mail is fetched (which marks it seen) and
//! the probe's own loop mail deleted. A store that answers badly or a failed read is
//! reported and the probe LOGS OFF, so the next round logs in afresh. Interval B runs only
//! while logged in: re-SELECT (a fresh view from the store, not a cached one) and expunge
//! the probe's old seen mail; when not logged in it reports that it did not run, and why.
//! Every network step is bounded by `timeout`; results go to the probe board, so a query
//! never waits for the mail server.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rollcall_protocol::Status;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::loop_watch::{probe_tag, LoopWatch};
use super::{Post, ProbeContext};
use crate::config::MailboxProbe;
use crate::mail::credentials;
use crate::mail::imap::{Imap, ImapError, MailboxState};

/// Most messages read in one round; the rest wait for the next.
const MAX_PER_ROUND: usize = 50;
/// Seen mail older than this is expunged by interval B, so the mailbox stays small.
const KEEP_SEEN_DAYS: i64 = 7;
/// How often interval A looks while a mail-loop message is on its way.
const LOOP_POLL: Duration = Duration::from_secs(1);

/// Probe names as the compilation shows them.
pub const LOGIN: &str = "login";
pub const MAIL_READ: &str = "mail_read";
pub const REFRESH: &str = "refresh";
const KIND: &str = "mailbox";

struct Session {
    imap: Imap,
    /// Counts logins since the probe started: a new number means a fresh session.
    number: u64,
    since: DateTime<Utc>,
    state: MailboxState,
}

/// Runs the mailbox probes until `stop`.
pub async fn run(cx: ProbeContext, cfg: MailboxProbe, watch: LoopWatch, stop: CancellationToken) {
    let mut probe = Probe { cx, cfg, watch, session: None, logins: 0, last_login_error: None, ended_idle: None };
    let mut a = tokio::time::interval(probe.cfg.interval_a.get());
    a.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut b =
        tokio::time::interval_at(tokio::time::Instant::now() + probe.cfg.interval_b.get(), probe.cfg.interval_b.get());
    b.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let fast = probe.session.is_some() && probe.watch.has_pending();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = a.tick() => probe.interval_a().await,
            _ = b.tick() => probe.interval_b().await,
            _ = tokio::time::sleep(LOOP_POLL), if fast => probe.interval_a().await,
            _ = probe.watch.sent(), if !fast => {}
        }
    }
    if let Some(s) = probe.session.take() {
        let _ = s.imap.logout().await;
    }
}

struct Probe {
    cx: ProbeContext,
    cfg: MailboxProbe,
    watch: LoopWatch,
    session: Option<Session>,
    logins: u64,
    last_login_error: Option<String>,
    /// Why the server ended the previous session while it was idle, until a login
    /// succeeds (each login attempt reports it).
    ended_idle: Option<String>,
}

impl Probe {
    fn report(
        &self,
        name: &str,
        status: Status,
        message: String,
        observed_at: DateTime<Utc>,
        started: Instant,
        details: Map<String, Value>,
    ) {
        self.cx.post(Post { name, kind: KIND, status, message, observed_at, started, details });
    }

    fn base_details(&self) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("server".into(), json!(self.cfg.endpoint.address));
        d.insert("security".into(), json!(self.cfg.endpoint.security.as_str()));
        d.insert("mailbox".into(), json!(self.cfg.mailbox));
        if let Some(s) = &self.session {
            d.insert("session".into(), json!(s.number));
            d.insert("logged_in_at".into(), json!(s.since.to_rfc3339()));
        }
        d
    }

    /// Interval A: log in if needed, then look for and read new mail.
    async fn interval_a(&mut self) {
        self.forget_if_ended_while_idle();
        if self.session.is_none() && !self.login().await {
            return;
        }
        let observed_at = self.cx.clock.now();
        let started = Instant::now();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        match read_new(session, &self.watch).await {
            Ok(read) => {
                let message = if read.new == 0 {
                    "no new mail".to_string()
                } else {
                    format!("read {} new message(s), {} of them mail-loop probes", read.fetched, read.probe_mail)
                };
                let mut d = self.base_details();
                d.insert("new".into(), json!(read.new));
                d.insert("read".into(), json!(read.fetched));
                d.insert("bytes".into(), json!(read.bytes));
                d.insert("probe_mail".into(), json!(read.probe_mail));
                d.insert("deleted".into(), json!(read.deleted));
                d.insert("exists".into(), json!(read.exists));
                self.report(MAIL_READ, Status::Ok, message, observed_at, started, d);
            }
            Err(e) => {
                let mut d = self.base_details();
                d.insert("logged_off".into(), json!(true));
                self.logoff().await;
                self.report(
                    MAIL_READ,
                    Status::Critical,
                    format!("{e}; logged off, the next round logs in again"),
                    observed_at,
                    started,
                    d,
                );
            }
        }
    }

    /// Interval B: re-open the mailbox for a fresh view, then drop old seen mail.
    async fn interval_b(&mut self) {
        if self.forget_if_ended_while_idle() {
            self.login().await;
        }
        let observed_at = self.cx.clock.now();
        let started = Instant::now();
        let Some(session) = self.session.as_mut() else {
            let reason = match &self.last_login_error {
                Some(e) => format!("not logged in (last login failed: {e})"),
                None => "not logged in yet".to_string(),
            };
            let mut d = self.base_details();
            d.insert("ran".into(), json!(false));
            d.insert("reason".into(), json!(reason));
            self.report(REFRESH, Status::Unknown, format!("did not run: {reason}"), observed_at, started, d);
            return;
        };
        let before = session.state.clone();
        let result = async {
            let state = session.imap.select(&self.cfg.mailbox).await?;
            let cutoff = (Utc::now() - chrono::Duration::days(KEEP_SEEN_DAYS)).format("%-d-%b-%Y").to_string();
            let old = session.imap.uid_search(&format!("SEEN BEFORE {cutoff}")).await?;
            session.imap.delete(&old).await?;
            Ok::<_, ImapError>((state, old.len()))
        }
        .await;
        match result {
            Ok((state, expunged)) => {
                session.state = state.clone();
                let mut d = self.base_details();
                d.insert("ran".into(), json!(true));
                d.insert("exists".into(), json!(state.exists));
                d.insert("recent".into(), json!(state.recent));
                d.insert("uidvalidity".into(), json!(state.uidvalidity));
                d.insert("uidnext".into(), json!(state.uidnext));
                d.insert("uidvalidity_changed".into(), json!(before.uidvalidity != state.uidvalidity));
                d.insert("expunged_old_seen".into(), json!(expunged));
                let message = format!(
                    "resynchronised {}: {} message(s), UIDNEXT {}",
                    self.cfg.mailbox,
                    state.exists,
                    state.uidnext.map_or("?".to_string(), |u| u.to_string())
                );
                self.report(REFRESH, Status::Ok, message, observed_at, started, d);
            }
            Err(e) => {
                let mut d = self.base_details();
                d.insert("ran".into(), json!(true));
                d.insert("logged_off".into(), json!(true));
                self.logoff().await;
                self.report(
                    REFRESH,
                    Status::Critical,
                    format!("{e}; logged off, the next round logs in again"),
                    observed_at,
                    started,
                    d,
                );
            }
        }
    }

    /// Drops a session the server ended while it was idle (logged, not reported: the login
    /// that follows is). True when it did.
    fn forget_if_ended_while_idle(&mut self) -> bool {
        let Some(s) = self.session.as_mut() else { return false };
        let Some(why) = s.imap.ended_while_idle() else { return false };
        tracing::info!(server = %self.cx.name, probe = LOGIN, session = s.number, "the server ended the idle session ({why}); logging in again");
        self.session = None;
        self.ended_idle = Some(why);
        true
    }

    /// Logs in and opens the mailbox; reports `login` either way. True when logged in.
    async fn login(&mut self) -> bool {
        let observed_at = self.cx.clock.now();
        let started = Instant::now();
        let timeout = self.cfg.timeout.get();
        let result = async {
            let secret = credentials::fetch(&self.cfg.credentials.secret, timeout).await?;
            let mut imap = Imap::connect(&self.cfg.endpoint, timeout).await.map_err(|e| e.to_string())?;
            imap.login(&self.cfg.credentials.user, &secret).await.map_err(|e| e.to_string())?;
            // Post-login capabilities differ (Dovecot announces more once logged in).
            imap.capability().await.map_err(|e| e.to_string())?;
            let state = imap.select(&self.cfg.mailbox).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((imap, state))
        }
        .await;
        self.logins += 1;
        let ended_idle = self.ended_idle.take();
        match result {
            Ok((imap, state)) => {
                let mut d = Map::new();
                d.insert("greeting".into(), json!(imap.greeting));
                d.insert("capability".into(), json!(imap.capabilities.join(" ")));
                d.insert("tls".into(), json!(imap.is_tls()));
                d.insert("exists".into(), json!(state.exists));
                d.insert("uidvalidity".into(), json!(state.uidvalidity));
                d.insert("uidnext".into(), json!(state.uidnext));
                self.session = Some(Session { imap, number: self.logins, since: observed_at, state });
                self.last_login_error = None;
                let mut details = self.base_details();
                details.extend(d);
                let mut message = format!("logged in as {} and opened {}", self.cfg.credentials.user, self.cfg.mailbox);
                if let Some(why) = ended_idle {
                    message.push_str(&format!(" (again: the server had ended the idle session: {why})"));
                    details.insert("previous_session_ended".into(), json!(why));
                }
                tracing::info!(server = %self.cx.name, probe = LOGIN, session = self.logins, "{message}");
                self.report(LOGIN, Status::Ok, message, observed_at, started, details);
                true
            }
            Err(e) => {
                let mut d = self.base_details();
                d.insert("attempt".into(), json!(self.logins));
                if let Some(why) = ended_idle {
                    d.insert("previous_session_ended".into(), json!(why));
                    // Kept until a login succeeds, so every failed attempt says why.
                    self.ended_idle = Some(why);
                }
                self.last_login_error = Some(e.clone());
                self.report(
                    LOGIN,
                    Status::Critical,
                    format!("login as {} failed: {e}", self.cfg.credentials.user),
                    observed_at,
                    started,
                    d,
                );
                false
            }
        }
    }

    /// Ends the session (LOGOUT, bounded); the next interval A logs in again.
    async fn logoff(&mut self) {
        if let Some(s) = self.session.take() {
            tracing::info!(server = %self.cx.name, probe = MAIL_READ, session = s.number, "logging off");
            let _ = s.imap.logout().await;
        }
    }
}

#[derive(Debug, Default)]
struct ReadStats {
    new: usize,
    fetched: usize,
    bytes: usize,
    probe_mail: usize,
    deleted: usize,
    exists: u32,
}

/// NOOP (the store reports changes), UID SEARCH UNSEEN, fetch what is new, delete the
/// probe's own loop mail. Untagged `NO`/`BAD` from the store count as a failure.
async fn read_new(session: &mut Session, watch: &LoopWatch) -> Result<ReadStats, String> {
    let noop = session.imap.noop().await.map_err(|e| e.to_string())?;
    let warnings = noop.warnings();
    if !warnings.is_empty() {
        return Err(format!("NOOP: * {}", warnings.join("; * ")));
    }
    for u in &noop.untagged {
        if let Some(n) = u.text.strip_suffix(" EXISTS") {
            session.state.exists = n.trim().parse().unwrap_or(session.state.exists);
        }
    }
    let mut stats = ReadStats { exists: session.state.exists, ..Default::default() };
    let mut uids = session.imap.uid_search("UNSEEN").await.map_err(|e| e.to_string())?;
    stats.new = uids.len();
    if uids.is_empty() {
        return Ok(stats);
    }
    uids.sort_unstable();
    uids.truncate(MAX_PER_ROUND);
    let fetched = session.imap.fetch_bodies(&uids).await.map_err(|e| e.to_string())?;
    let seen = Instant::now();
    let mut ours = Vec::new();
    for f in &fetched {
        stats.fetched += 1;
        stats.bytes += f.body.len();
        if let Some(tag) = probe_tag(&f.body) {
            if watch.is_ours(&tag) {
                stats.probe_mail += 1;
                ours.push(f.uid);
                watch.arrived(&tag, seen, f.internaldate.clone());
            }
        }
    }
    session.imap.delete(&ours).await.map_err(|e| e.to_string())?;
    stats.deleted = ours.len();
    Ok(stats)
}
