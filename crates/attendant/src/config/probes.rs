//! The `[probe.mailbox]`, `[probe.mail_loop]` and `[probe.file_access]` tables: parsed
//! strictly, validated into [`ProbesConfig`], which the probe supervisor compares across
//! reloads.
//!
//! Rules: every problem is named by its key (and so its line); the login/endpoint keys go
//! through the one validator of `config::login`; a mail loop needs a mailbox probe, since
//! the mailbox probe is what finds the looped message.

use std::path::PathBuf;

use rollcall_config::Duration;
use serde::Deserialize;

use super::fields::{mail_address, positive, TableCx};
use super::login::{self, Credentials, Endpoint, Login, LoginKeys, LoginRules, Security};

/// `[probe.mailbox]`: the synthetic user's interval A (login / mail read) and interval B
/// (refresh) probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxProbe {
    pub endpoint: Endpoint,
    pub credentials: Credentials,
    pub mailbox: String,
    pub interval_a: Duration,
    pub interval_b: Duration,
    /// Bound of every network step (connect, TLS, each command) and of secret commands.
    pub timeout: Duration,
}

/// `[probe.mail_loop]`: a tagged message submitted over SMTP and found by interval A.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLoopProbe {
    pub endpoint: Endpoint,
    /// SMTP AUTH, when the submission server wants it.
    pub credentials: Option<Credentials>,
    pub from: String,
    pub to: String,
    pub interval: Duration,
    pub max_latency: Duration,
    pub timeout: Duration,
}

/// `[probe.file_access]` (SPEC section 14): write, read back, compare and delete a file in
/// `path` every `interval`; a round without an answer within `timeout` is critical, one
/// slower than `max_latency` a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAccessProbe {
    /// A directory on the share (NFS, SMB/CIFS or local), resolved beside the config file.
    pub path: PathBuf,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_latency: Duration,
}

/// The `[probe]` table as validated; `Default` is "no probes".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbesConfig {
    pub mailbox: Option<MailboxProbe>,
    pub mail_loop: Option<MailLoopProbe>,
    pub file_access: Option<FileAccessProbe>,
}

pub const DEFAULT_INTERVAL_A: Duration = Duration::from_secs(60);
pub const DEFAULT_INTERVAL_B: Duration = Duration::from_secs(300);
pub const DEFAULT_LOOP_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_LATENCY: Duration = Duration::from_secs(60);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_FILE_ACCESS_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_FILE_ACCESS_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_FILE_ACCESS_MAX_LATENCY: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawProbes {
    mailbox: Option<RawMailbox>,
    mail_loop: Option<RawMailLoop>,
    file_access: Option<RawFileAccess>,
}

#[derive(Debug, Deserialize)]
struct RawFileAccess {
    path: Option<PathBuf>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    max_latency: Option<Duration>,
}

#[derive(Debug, Deserialize)]
struct RawMailbox {
    server: Option<String>,
    security: Option<Security>,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<Vec<String>>,
    oauth2_token_command: Option<Vec<String>>,
    mailbox: Option<String>,
    interval_a: Option<Duration>,
    interval_b: Option<Duration>,
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
struct RawMailLoop {
    smtp: Option<String>,
    security: Option<Security>,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<Vec<String>>,
    oauth2_token_command: Option<Vec<String>>,
    from: Option<String>,
    to: Option<String>,
    interval: Option<Duration>,
    max_latency: Option<Duration>,
    timeout: Option<Duration>,
}

impl RawProbes {
    /// Validates the `[probe]` table; problems go to `cx` (whose prefix is `probe`).
    pub(crate) fn validate(&self, cx: &mut TableCx<'_, '_>) -> ProbesConfig {
        ProbesConfig {
            mailbox: self.mailbox.as_ref().and_then(|m| m.validate(&mut cx.sub("mailbox"))),
            mail_loop: self.mail_loop.as_ref().and_then(|l| {
                if self.mailbox.is_none() {
                    cx.push("mail_loop", "needs [probe.mailbox]: the mailbox probe is what finds the looped message");
                }
                l.validate(&mut cx.sub("mail_loop"))
            }),
            file_access: self.file_access.as_ref().and_then(|f| f.validate(&mut cx.sub("file_access"))),
        }
    }
}

impl RawFileAccess {
    fn validate(&self, cx: &mut TableCx<'_, '_>) -> Option<FileAccessProbe> {
        let path = match &self.path {
            Some(p) if p.as_os_str().is_empty() => {
                cx.push("path", "must not be empty");
                None
            }
            Some(p) => Some(cx.resolve(p)),
            None => {
                cx.push("path", "missing: the directory on the share to write the probe's file in");
                None
            }
        };
        let interval = self.interval.unwrap_or(DEFAULT_FILE_ACCESS_INTERVAL);
        let timeout = self.timeout.unwrap_or(DEFAULT_FILE_ACCESS_TIMEOUT);
        let max_latency = self.max_latency.unwrap_or(DEFAULT_FILE_ACCESS_MAX_LATENCY);
        positive(cx, "interval", interval);
        positive(cx, "timeout", timeout);
        positive(cx, "max_latency", max_latency);
        if max_latency > timeout {
            cx.push(
                "max_latency",
                format!("{max_latency} is longer than timeout ({timeout}): a round is cut off before it could be slow"),
            );
        }
        Some(FileAccessProbe { path: path?, interval, timeout, max_latency })
    }
}

impl RawMailbox {
    fn validate(&self, cx: &mut TableCx<'_, '_>) -> Option<MailboxProbe> {
        let keys = LoginKeys {
            address: ("server", self.server.as_deref()),
            security: self.security,
            ca_file: self.ca_file.as_deref(),
            user: ("user", self.user.as_deref()),
            password_file: self.password_file.as_deref(),
            password_command: self.password_command.as_deref(),
            oauth2_token_command: self.oauth2_token_command.as_deref(),
        };
        let login = login::login(cx, &keys, LoginRules { required: true, oauth2: true });
        let mailbox = self.mailbox.clone().unwrap_or_else(|| "INBOX".to_string());
        // Any other name works: it goes out in modified UTF-7, quoted (RFC 3501 5.1.3).
        if mailbox.is_empty() || mailbox.contains(['\r', '\n', '\0']) {
            cx.push("mailbox", format!("{mailbox:?} is not a usable name (empty, or CR, LF or NUL in it)"));
        }
        let interval_a = self.interval_a.unwrap_or(DEFAULT_INTERVAL_A);
        let interval_b = self.interval_b.unwrap_or(DEFAULT_INTERVAL_B);
        let timeout = self.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
        positive(cx, "interval_a", interval_a);
        positive(cx, "interval_b", interval_b);
        positive(cx, "timeout", timeout);
        // `required` guarantees credentials in a valid login.
        let Some(Login { endpoint, credentials: Some(credentials) }) = login else { return None };
        Some(MailboxProbe { endpoint, credentials, mailbox, interval_a, interval_b, timeout })
    }
}

impl RawMailLoop {
    fn validate(&self, cx: &mut TableCx<'_, '_>) -> Option<MailLoopProbe> {
        let keys = LoginKeys {
            address: ("smtp", self.smtp.as_deref()),
            security: self.security,
            ca_file: self.ca_file.as_deref(),
            user: ("user", self.user.as_deref()),
            password_file: self.password_file.as_deref(),
            password_command: self.password_command.as_deref(),
            oauth2_token_command: self.oauth2_token_command.as_deref(),
        };
        let login = login::login(cx, &keys, LoginRules { required: false, oauth2: true });
        let from = mail_address(cx, "from", self.from.as_deref());
        let to = mail_address(cx, "to", self.to.as_deref());
        let interval = self.interval.unwrap_or(DEFAULT_LOOP_INTERVAL);
        let max_latency = self.max_latency.unwrap_or(DEFAULT_MAX_LATENCY);
        let timeout = self.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
        positive(cx, "interval", interval);
        positive(cx, "max_latency", max_latency);
        positive(cx, "timeout", timeout);
        if max_latency > interval {
            cx.push(
                "max_latency",
                format!("{max_latency} is longer than interval ({interval}): a message must be judged before the next is sent"),
            );
        }
        let Login { endpoint, credentials } = login?;
        Some(MailLoopProbe { endpoint, credentials, from: from?, to: to?, interval, max_latency, timeout })
    }
}
