//! The `[[usage]]` entries (SPEC section 14): parsed strictly, validated into
//! [`UsageConfig`]s, which the usage supervisor compares across reloads.
//!
//! Rules: every problem is named by its key (and so its line); names are unique and
//! non-empty; `command` is required for `kind = "command"` and replaces the default
//! program of the other command-based kinds (a second Postfix instance, a Dovecot with
//! its own config); `mta` and `utmp` belong to their kinds only; thresholds are Nagios
//! ranges, read by the one range parser (`nagios_range`).

use std::path::PathBuf;

use rollcall_config::{Duration, Located, Problems};
use serde::Deserialize;

use super::fields::{positive, usable_argv, TableCx};
use crate::nagios_range::Range;

pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_USAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where glibc keeps the current logins.
pub const DEFAULT_UTMP: &str = "/var/run/utmp";

/// One validated `[[usage]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageConfig {
    pub name: String,
    pub kind: UsageKind,
    /// How often it is measured (in the background; a query serves the last figure).
    pub interval: Duration,
    /// Bound of one measurement; the command is killed after it.
    pub timeout: Duration,
    pub warning: Option<Range>,
    pub critical: Option<Range>,
}

/// What is measured, and how.
#[derive(Debug, Clone, PartialEq)]
pub enum UsageKind {
    /// A command printing Nagios performance data; each label is a figure.
    Command { argv: Vec<String> },
    /// Logged-in IMAP sessions, from Dovecot's `doveadm who` (or `argv` given).
    ImapSessions { argv: Option<Vec<String>> },
    /// Messages in the MTA's queue; `mta` `None` means detected when measured.
    MailQueue { mta: Option<Mta>, argv: Option<Vec<String>> },
    /// Login sessions in the utmp file (`who`'s source).
    LoggedInUsers { utmp: PathBuf },
}

impl UsageKind {
    /// The config spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            UsageKind::Command { .. } => "command",
            UsageKind::ImapSessions { .. } => "imap_sessions",
            UsageKind::MailQueue { .. } => "mail_queue",
            UsageKind::LoggedInUsers { .. } => "logged_in_users",
        }
    }
}

/// The mail transfer agents whose queue `mail_queue` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mta {
    /// `postqueue -j` (one JSON object per message).
    Postfix,
    /// `smtpctl show queue` (one line per envelope).
    Opensmtpd,
    /// `exim -bpc` (the count).
    Exim,
}

impl Mta {
    pub fn as_str(self) -> &'static str {
        match self {
            Mta::Postfix => "postfix",
            Mta::Opensmtpd => "opensmtpd",
            Mta::Exim => "exim",
        }
    }
}

const KINDS: &str = "command, imap_sessions, mail_queue, logged_in_users";

#[derive(Debug, Deserialize)]
pub(crate) struct RawUsage {
    name: Option<String>,
    kind: Option<String>,
    command: Option<Vec<String>>,
    mta: Option<Mta>,
    utmp: Option<PathBuf>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    warning: Option<String>,
    critical: Option<String>,
}

/// Validates every `[[usage]]`; problems are named `usage[i].KEY`.
pub(crate) fn validate<'f>(raw: &[RawUsage], loc: &'f Located, problems: &mut Problems<'f>) -> Vec<UsageConfig> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let mut cx = TableCx::new(loc, problems, format!("usage[{i}]"));
        if let Some(name) = &u.name {
            if !seen.insert(name.clone()) {
                cx.push("name", format!("duplicate usage name {name:?}"));
                continue;
            }
        }
        if let Some(c) = u.validate(&mut cx) {
            out.push(c);
        }
    }
    out
}

impl RawUsage {
    fn validate(&self, cx: &mut TableCx<'_, '_>) -> Option<UsageConfig> {
        let name = match self.name.as_deref().map(str::trim) {
            Some("") => {
                cx.push("name", "must not be empty");
                None
            }
            Some(n) => Some(n.to_string()),
            None => {
                cx.push("name", "missing: the name the compilation and deficiency usage:NAME show");
                None
            }
        };
        let argv = self.command.as_ref().and_then(|c| {
            if usable_argv(c) {
                Some(c.clone())
            } else {
                cx.push("command", "must name a program: [\"/path/to/program\", \"ARG\", ...]");
                None
            }
        });
        let kind = match self.kind.as_deref() {
            Some("command") => match argv {
                Some(argv) => Some(UsageKind::Command { argv }),
                None => {
                    if self.command.is_none() {
                        cx.push("command", "missing: kind = \"command\" runs this command");
                    }
                    None
                }
            },
            Some("imap_sessions") => Some(UsageKind::ImapSessions { argv }),
            Some("mail_queue") => Some(UsageKind::MailQueue { mta: self.mta, argv }),
            Some("logged_in_users") => {
                let utmp = self.utmp.as_deref().map_or_else(|| PathBuf::from(DEFAULT_UTMP), |p| cx.resolve(p));
                Some(UsageKind::LoggedInUsers { utmp })
            }
            Some(other) => {
                cx.push("kind", format!("unknown usage kind {other:?} (expected one of: {KINDS})"));
                None
            }
            None => {
                cx.push("kind", format!("missing: one of {KINDS}"));
                None
            }
        };
        let kind_name = kind.as_ref().map(UsageKind::as_str);
        if self.mta.is_some() && kind_name.is_some_and(|k| k != "mail_queue") {
            cx.push("mta", "only for kind = \"mail_queue\"");
        }
        if self.utmp.is_some() && kind_name.is_some_and(|k| k != "logged_in_users") {
            cx.push("utmp", "only for kind = \"logged_in_users\"");
        }
        if self.command.is_some() && kind_name == Some("logged_in_users") {
            cx.push("command", "not for kind = \"logged_in_users\" (it reads the utmp file)");
        }
        let interval = self.interval.unwrap_or(DEFAULT_USAGE_INTERVAL);
        let timeout = self.timeout.unwrap_or(DEFAULT_USAGE_TIMEOUT);
        positive(cx, "interval", interval);
        positive(cx, "timeout", timeout);
        let warning = range(cx, "warning", self.warning.as_deref());
        let critical = range(cx, "critical", self.critical.as_deref());
        Some(UsageConfig { name: name?, kind: kind?, interval, timeout, warning: warning?, critical: critical? })
    }
}

/// `Some(None)` when absent, `None` (after a problem) when it does not parse.
fn range(cx: &mut TableCx<'_, '_>, key: &str, text: Option<&str>) -> Option<Option<Range>> {
    match text.map(str::parse::<Range>) {
        None => Some(None),
        Some(Ok(r)) => Some(Some(r)),
        Some(Err(e)) => {
            cx.push(key, e);
            None
        }
    }
}
