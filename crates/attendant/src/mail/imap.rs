//! A small IMAP4rev1 client (RFC 3501) for the mailbox probes and the `imap` check: just
//! the commands a mail client uses to log in, open a mailbox, look for and read new mail.
//!
//! Rules: written on `wire::Conn`, so every command is bounded by the timeout and every
//! line and literal by size; a failure carries the server's own words (`NO ...`, `BAD ...`,
//! `BYE ...`); credentials go out only inside SASL (`AUTHENTICATE PLAIN`/`XOAUTH2`) or a
//! quoted `LOGIN`, and are never part of an error or log line; every mailbox name goes out
//! in modified UTF-7 (`mutf7`, RFC 3501 5.1.3) and is never sent raw; a session the server
//! ended while it was idle is told apart from one ended in answer to a command
//! ([`Imap::ended_while_idle`]).

use std::time::Duration;

use base64::Engine;

use super::credentials::LoginSecret;
use super::mutf7;
use super::wire::{Conn, Ready, WireError};
use crate::config::login::{Endpoint, Security};

/// Largest literal accepted (a message body fetch is capped well below this).
const MAX_LITERAL: usize = 4 * 1024 * 1024;
/// Largest response (all untagged data of one command) accepted.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// How much of each message is fetched (headers and the start of the body).
pub const FETCH_BYTES: usize = 64 * 1024;

/// Why an IMAP step failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server refused the command; `text` is its tagged response.
    #[error("{command}: {status} {text}")]
    Refused { command: String, status: String, text: String },
    /// The server closed the session.
    #[error("{command}: * BYE {text}")]
    Bye { command: String, text: String },
    #[error("{0}")]
    Protocol(String),
}

/// One untagged response: its text (literals stand as `{N}`) and its literals in order.
#[derive(Debug, Clone, Default)]
pub struct Untagged {
    pub text: String,
    pub literals: Vec<Vec<u8>>,
}

/// A completed command: its untagged responses and the tagged `OK` text.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub untagged: Vec<Untagged>,
    pub text: String,
}

impl Response {
    /// Untagged `* NO` / `* BAD` lines: the server's warnings even when the command ended OK.
    pub fn warnings(&self) -> Vec<&str> {
        self.untagged
            .iter()
            .map(|u| u.text.as_str())
            .filter(|t| t.starts_with("NO ") || t.starts_with("BAD "))
            .collect()
    }
}

/// What `SELECT` reported about the mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxState {
    pub exists: u32,
    pub recent: u32,
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<u32>,
}

/// One fetched message.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub uid: u32,
    pub internaldate: Option<String>,
    pub size: Option<u64>,
    /// The first `FETCH_BYTES` of the message (headers first).
    pub body: Vec<u8>,
}

/// An IMAP session.
pub struct Imap {
    conn: Conn,
    tag: u32,
    /// The server's greeting line (`* OK ...`).
    pub greeting: String,
    /// Capabilities, as last announced.
    pub capabilities: Vec<String>,
}

impl Imap {
    /// Connects, reads the greeting, and with `starttls` upgrades before anything else.
    pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Imap, ImapError> {
        let mut conn = Conn::connect(endpoint, timeout).await?;
        let greeting = conn.read_line("greeting").await?;
        let body = greeting.strip_prefix("* ").unwrap_or("");
        if let Some(text) = body.strip_prefix("BYE") {
            return Err(ImapError::Bye { command: "greeting".into(), text: text.trim().to_string() });
        }
        if !(body.starts_with("OK") || body.starts_with("PREAUTH")) {
            return Err(ImapError::Protocol(format!("not an IMAP greeting: {greeting:?}")));
        }
        let mut imap = Imap { conn, tag: 0, greeting: greeting.clone(), capabilities: Vec::new() };
        imap.capability().await?;
        if endpoint.security == Security::Starttls {
            if !imap.has("STARTTLS") {
                return Err(ImapError::Protocol("server does not offer STARTTLS (security = \"starttls\")".into()));
            }
            imap.command("STARTTLS").await?;
            imap.conn = imap.conn.starttls().await?;
            imap.capability().await?;
        }
        Ok(imap)
    }

    /// Whether the session runs over TLS (from the start, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Whether the server announced `cap` (case-insensitive).
    pub fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }

    /// `CAPABILITY`, remembered in `capabilities`.
    pub async fn capability(&mut self) -> Result<(), ImapError> {
        let r = self.command("CAPABILITY").await?;
        for u in &r.untagged {
            if let Some(rest) = u.text.strip_prefix("CAPABILITY ") {
                self.capabilities = rest.split_whitespace().map(str::to_string).collect();
            }
        }
        Ok(())
    }

    /// Logs in as `user`: SASL PLAIN (or quoted `LOGIN` where PLAIN is not offered) for a
    /// password, SASL XOAUTH2 for a token.
    pub async fn login(&mut self, user: &str, secret: &LoginSecret) -> Result<String, ImapError> {
        let (mech, payload) = match secret {
            LoginSecret::Password(p) => {
                if !self.has("AUTH=PLAIN") {
                    if self.has("LOGINDISABLED") {
                        return Err(ImapError::Protocol(
                            "server refuses plaintext login (LOGINDISABLED); use security = \"starttls\" or \"tls\""
                                .into(),
                        ));
                    }
                    let line = format!("LOGIN {} {}", quote(user)?, quote(p.expose())?);
                    return self.command_masked(&line, "LOGIN", None).await.map(|r| r.text);
                }
                ("PLAIN", format!("\0{user}\0{}", p.expose()))
            }
            LoginSecret::OAuth2Token(t) => ("XOAUTH2", format!("user={user}\x01auth=Bearer {}\x01\x01", t.expose())),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
        let name = format!("AUTHENTICATE {mech}");
        let r = if self.has("SASL-IR") {
            self.command_masked(&format!("{name} {b64}"), &name, None).await?
        } else {
            self.command_masked(&name, &name, Some(&b64)).await?
        };
        Ok(r.text)
    }

    /// `SELECT mailbox`: opens it afresh and answers what the server reports. `mailbox` is
    /// the name as the operator writes it (UTF-8); it goes out in modified UTF-7.
    pub async fn select(&mut self, mailbox: &str) -> Result<MailboxState, ImapError> {
        let r = self.command(&format!("SELECT {}", mailbox_arg(mailbox)?)).await?;
        let mut s = MailboxState::default();
        for u in &r.untagged {
            let t = u.text.as_str();
            if let Some(n) = t.strip_suffix(" EXISTS") {
                s.exists = n.trim().parse().unwrap_or(0);
            } else if let Some(n) = t.strip_suffix(" RECENT") {
                s.recent = n.trim().parse().unwrap_or(0);
            } else if let Some(v) = bracket_number(t, "UIDVALIDITY") {
                s.uidvalidity = Some(v);
            } else if let Some(v) = bracket_number(t, "UIDNEXT") {
                s.uidnext = Some(v);
            }
        }
        Ok(s)
    }

    /// `CREATE mailbox` (the name as written; it goes out in modified UTF-7).
    pub async fn create(&mut self, mailbox: &str) -> Result<(), ImapError> {
        self.command(&format!("CREATE {}", mailbox_arg(mailbox)?)).await.map(|_| ())
    }

    /// Whether the server ended this session while it was idle (between commands): an
    /// untagged `BYE` waiting unread, or the connection closed or reset. `Some(why)` means
    /// the session is gone and a client logs in again; `None` means it is still open.
    /// Reads only what is already buffered or ready on the socket: it never waits.
    pub fn ended_while_idle(&mut self) -> Option<String> {
        loop {
            match self.conn.ready() {
                Ready::Nothing => return None,
                Ready::Closed(why) => return Some(why),
                Ready::Line(line) => {
                    if let Some(text) = line.strip_prefix("* BYE") {
                        return Some(format!("* BYE{text}"));
                    }
                    // Other unsolicited data (`* 3 EXISTS`) is allowed at any time; the next
                    // command asks again, so it is dropped.
                }
            }
        }
    }

    /// `NOOP`: lets the server report what changed in the selected mailbox.
    pub async fn noop(&mut self) -> Result<Response, ImapError> {
        self.command("NOOP").await
    }

    /// `UID SEARCH criteria`: the UIDs found.
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        let r = self.command(&format!("UID SEARCH {criteria}")).await?;
        Ok(r.untagged
            .iter()
            .filter_map(|u| u.text.strip_prefix("SEARCH"))
            .flat_map(|rest| rest.split_whitespace().filter_map(|n| n.parse().ok()))
            .collect())
    }

    /// `UID FETCH uids (UID INTERNALDATE RFC822.SIZE BODY[]<0.N>)`: reads each message
    /// (which marks it `\Seen`); a UID the server sends no body for is an error.
    pub async fn fetch_bodies(&mut self, uids: &[u32]) -> Result<Vec<Fetched>, ImapError> {
        let set = uid_set(uids);
        let r =
            self.command(&format!("UID FETCH {set} (UID INTERNALDATE RFC822.SIZE BODY[]<0.{FETCH_BYTES}>)")).await?;
        let mut out = Vec::new();
        for u in &r.untagged {
            if !u.text.contains(" FETCH (") {
                continue;
            }
            let Some(uid) = item_after(&u.text, "UID ").and_then(|v| v.parse().ok()) else {
                continue;
            };
            let internaldate = u
                .text
                .split_once("INTERNALDATE \"")
                .and_then(|(_, rest)| rest.split_once('"').map(|(d, _)| d.to_string()));
            let size = item_after(&u.text, "RFC822.SIZE ").and_then(|v| v.parse().ok());
            if let Some(body) = u.literals.first() {
                out.push(Fetched { uid, internaldate, size, body: body.clone() });
            }
        }
        for uid in uids {
            if !out.iter().any(|f| f.uid == *uid) {
                let warnings = r.warnings().join("; ");
                return Err(ImapError::Protocol(format!(
                    "UID FETCH: the server sent no body for UID {uid}{}",
                    if warnings.is_empty() { String::new() } else { format!(" ({warnings})") }
                )));
            }
        }
        Ok(out)
    }

    /// Removes `uids` for good: `\Deleted`, then `UID EXPUNGE` (UIDPLUS) or `EXPUNGE`.
    pub async fn delete(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        self.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)")).await?;
        if self.has("UIDPLUS") {
            self.command(&format!("UID EXPUNGE {set}")).await?;
        } else {
            self.command("EXPUNGE").await?;
        }
        Ok(())
    }

    /// `LOGOUT`; the server's `BYE` is expected.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        match self.command("LOGOUT").await {
            Ok(_) | Err(ImapError::Bye { .. }) => Ok(()),
            Err(ImapError::Wire(WireError::Closed { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends one command and reads up to its tagged response; `NO`/`BAD` are errors.
    pub async fn command(&mut self, line: &str) -> Result<Response, ImapError> {
        let name =
            line.split_whitespace().take(if line.starts_with("UID ") { 2 } else { 1 }).collect::<Vec<_>>().join(" ");
        self.command_masked(line, &name, None).await
    }

    /// Like `command`, naming it `name` in errors (so a LOGIN line never shows), and
    /// answering the first continuation request with `continuation`.
    async fn command_masked(
        &mut self,
        line: &str,
        name: &str,
        mut continuation: Option<&str>,
    ) -> Result<Response, ImapError> {
        self.tag += 1;
        let tag = format!("R{}", self.tag);
        self.conn.send(format!("{tag} {line}\r\n").as_bytes(), name).await?;
        let mut response = Response::default();
        let mut total = 0usize;
        let mut bye = None;
        loop {
            let read = self.conn.read_line(name).await;
            let line = match (read, &bye) {
                (Ok(l), _) => l,
                (Err(_), Some(text)) => {
                    return Err(ImapError::Bye { command: name.to_string(), text: String::clone(text) })
                }
                (Err(e), None) => return Err(e.into()),
            };
            total += line.len();
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
                if status.eq_ignore_ascii_case("OK") {
                    response.text = text.to_string();
                    return Ok(response);
                }
                return Err(ImapError::Refused {
                    command: name.to_string(),
                    status: status.to_ascii_uppercase(),
                    text: text.to_string(),
                });
            }
            if line.starts_with('+') {
                let answer = continuation.take().unwrap_or("");
                self.conn.send(format!("{answer}\r\n").as_bytes(), name).await?;
                continue;
            }
            let Some(text) = line.strip_prefix("* ") else {
                return Err(ImapError::Protocol(format!("{name}: unexpected line {line:?}")));
            };
            let mut u = Untagged { text: text.to_string(), literals: Vec::new() };
            while let Some(n) = literal_len(&u.text) {
                if n > MAX_LITERAL || total + n > MAX_RESPONSE {
                    return Err(ImapError::Protocol(format!("{name}: literal of {n} bytes is too large")));
                }
                total += n;
                u.literals.push(self.conn.read_exact(n, name).await?);
                let more = self.conn.read_line(name).await?;
                total += more.len();
                u.text.push_str(&more);
            }
            if total > MAX_RESPONSE {
                return Err(ImapError::Protocol(format!("{name}: response larger than {MAX_RESPONSE} bytes")));
            }
            if let Some(t) = u.text.strip_prefix("BYE") {
                bye = Some(t.trim().to_string());
            }
            response.untagged.push(u);
        }
    }
}

/// `{123}` (or `{123+}`) at the end of a line: a literal of that many bytes follows.
fn literal_len(text: &str) -> Option<usize> {
    let open = text.rfind('{')?;
    let inner = text[open + 1..].strip_suffix('}')?;
    inner.trim_end_matches('+').parse().ok()
}

/// `[NAME 123]` inside an untagged `OK` line.
fn bracket_number(text: &str, name: &str) -> Option<u32> {
    let rest = text.split_once(&format!("[{name} "))?.1;
    rest.split(']').next()?.trim().parse().ok()
}

/// The token after `key` in a FETCH response's text.
fn item_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(key)?;
    rest.split([' ', ')']).next()
}

/// A mailbox name as a command argument: modified UTF-7, quoted.
fn mailbox_arg(name: &str) -> Result<String, ImapError> {
    quote(&mutf7::encode(name))
}

/// A quoted string; CR, LF and NUL cannot be quoted, so they are refused.
fn quote(s: &str) -> Result<String, ImapError> {
    if s.contains(['\r', '\n', '\0']) {
        return Err(ImapError::Protocol("a value contains CR, LF or NUL and cannot be sent".into()));
    }
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// `1,2,5`: a UID set.
fn uid_set(uids: &[u32]) -> String {
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pieces_of_responses() {
        assert_eq!(literal_len("1 FETCH (UID 5 BODY[]<0> {259}"), Some(259));
        assert_eq!(literal_len("1 FETCH (UID 5 BODY[]<0> {12+}"), Some(12));
        assert_eq!(literal_len("OK [UIDNEXT 2] done"), None);
        assert_eq!(bracket_number("OK [UIDVALIDITY 1795714682] UIDs valid", "UIDVALIDITY"), Some(1_795_714_682));
        assert_eq!(item_after("1 FETCH (UID 17 RFC822.SIZE 259 BODY[]<0> {3}", "UID "), Some("17"));
        assert_eq!(quote("a\"b\\c").ok().as_deref(), Some("\"a\\\"b\\\\c\""));
        assert!(quote("a\r\nb").is_err());
        assert_eq!(uid_set(&[1, 5, 9]), "1,5,9");
        assert_eq!(mailbox_arg("R&D").ok().as_deref(), Some("\"R&-D\""));
        assert_eq!(mailbox_arg("Überwachung").ok().as_deref(), Some("\"&ANw-berwachung\""));
    }
}
