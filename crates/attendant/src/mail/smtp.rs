//! A small SMTP client (RFC 5321, STARTTLS RFC 3207, AUTH RFC 4954) for the mail loop
//! probe and the `smtp` check: greeting, EHLO, STARTTLS, AUTH, one message, QUIT.
//!
//! Rules: written on `wire::Conn`, so every reply is bounded by the timeout and its size;
//! a failure carries the server's own reply (`554 5.7.1 ...`); the secret goes out only
//! base64-encoded inside AUTH and never appears in an error.

use std::time::Duration;

use base64::Engine;

use super::credentials::LoginSecret;
use super::wire::{Conn, WireError};
use crate::config::login::{Endpoint, Security};

/// Most lines one reply may have (EHLO lists a dozen).
const MAX_REPLY_LINES: usize = 200;

/// Why an SMTP step failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server answered with another code than the step needs; `reply` is its words.
    #[error("{step}: {reply}")]
    Refused { step: String, reply: Reply },
    #[error("{0}")]
    Protocol(String),
}

/// One (possibly multi-line) SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, without the code.
    pub lines: Vec<String>,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// An SMTP session after EHLO.
pub struct Smtp {
    conn: Conn,
    /// The server's 220 greeting.
    pub greeting: Reply,
    /// EHLO keywords (`STARTTLS`, `AUTH PLAIN LOGIN`, `SIZE 10240000`, ...).
    pub extensions: Vec<String>,
}

impl Smtp {
    /// Connects, reads the greeting, says EHLO, and with `starttls` upgrades and says
    /// EHLO again. A refusal along the way (a 554 greeting, no STARTTLS offered) is answered
    /// with QUIT before the error returns, as RFC 5321 (3.1, 4.1.1.10) asks of a client, so
    /// the server logs a goodbye, not a lost connection; after a timeout there is no one
    /// left to tell.
    pub async fn connect(endpoint: &Endpoint, timeout: Duration, helo_name: &str) -> Result<Smtp, SmtpError> {
        let mut conn = Conn::connect(endpoint, timeout).await?;
        let greeting = read_reply(&mut conn, "greeting").await?;
        let mut smtp = Smtp { conn, greeting, extensions: Vec::new() };
        let hello = async {
            if smtp.greeting.code != 220 {
                return Err(SmtpError::Refused { step: "greeting".into(), reply: smtp.greeting.clone() });
            }
            smtp.ehlo(helo_name).await?;
            if endpoint.security == Security::Starttls {
                if !smtp.has("STARTTLS") {
                    return Err(SmtpError::Protocol("server does not offer STARTTLS (security = \"starttls\")".into()));
                }
                smtp.expect("STARTTLS", 220).await?;
            }
            Ok(())
        };
        if let Err(e) = hello.await {
            if matches!(e, SmtpError::Refused { .. } | SmtpError::Protocol(_)) {
                smtp.quit().await;
            }
            return Err(e);
        }
        if endpoint.security == Security::Starttls {
            smtp.conn = smtp.conn.starttls().await?;
            smtp.ehlo(helo_name).await?;
        }
        Ok(smtp)
    }

    /// Whether the connection runs over TLS (from the start, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Whether EHLO announced the keyword `ext`.
    pub fn has(&self, ext: &str) -> bool {
        self.extensions.iter().any(|e| e.split_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case(ext)))
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), SmtpError> {
        let r = self.expect(&format!("EHLO {name}"), 250).await?;
        self.extensions = r.lines.iter().skip(1).cloned().collect();
        Ok(())
    }

    /// AUTH with the mechanism the server offers: XOAUTH2 for a token, PLAIN or LOGIN for
    /// a password.
    pub async fn auth(&mut self, user: &str, secret: &LoginSecret) -> Result<Reply, SmtpError> {
        let mechs: Vec<String> = self
            .extensions
            .iter()
            .filter_map(|e| e.strip_prefix("AUTH ").or_else(|| e.strip_prefix("AUTH=")))
            .flat_map(|m| m.split_whitespace().map(str::to_ascii_uppercase))
            .collect();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let offered = |m: &str| mechs.iter().any(|x| x == m);
        let reply = match secret {
            LoginSecret::OAuth2Token(t) => {
                let ir = b64(&format!("user={user}\x01auth=Bearer {}\x01\x01", t.expose()));
                let r = self.send_masked(&format!("AUTH XOAUTH2 {ir}"), "AUTH XOAUTH2").await?;
                if r.code == 334 {
                    // The server's error details; an empty line ends the exchange.
                    self.send_masked("", "AUTH XOAUTH2").await?
                } else {
                    r
                }
            }
            LoginSecret::Password(p) if offered("PLAIN") || !offered("LOGIN") => {
                let ir = b64(&format!("\0{user}\0{}", p.expose()));
                self.send_masked(&format!("AUTH PLAIN {ir}"), "AUTH PLAIN").await?
            }
            LoginSecret::Password(p) => {
                let r = self.send_masked("AUTH LOGIN", "AUTH LOGIN").await?;
                if r.code != 334 {
                    r
                } else {
                    let r = self.send_masked(&b64(user), "AUTH LOGIN").await?;
                    if r.code != 334 {
                        r
                    } else {
                        self.send_masked(&b64(p.expose()), "AUTH LOGIN").await?
                    }
                }
            }
        };
        if reply.code != 235 {
            return Err(SmtpError::Refused { step: "AUTH".into(), reply });
        }
        Ok(reply)
    }

    /// MAIL FROM, RCPT TO, DATA: submits `message` (CRLF lines, dot-stuffed here) and
    /// answers the server's final reply (which names the queue id).
    pub async fn send(&mut self, from: &str, to: &str, message: &str) -> Result<Reply, SmtpError> {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await?;
        let r = self.send_masked(&format!("RCPT TO:<{to}>"), "RCPT TO").await?;
        if r.code != 250 && r.code != 251 {
            return Err(SmtpError::Refused { step: "RCPT TO".into(), reply: r });
        }
        self.expect("DATA", 354).await?;
        let mut data = String::with_capacity(message.len() + 8);
        for line in message.lines() {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.conn.send(data.as_bytes(), "message data").await?;
        let r = read_reply(&mut self.conn, "end of data").await?;
        if r.code != 250 {
            return Err(SmtpError::Refused { step: "end of data".into(), reply: r });
        }
        Ok(r)
    }

    /// QUIT; errors are ignored, the session is over either way.
    pub async fn quit(mut self) {
        let _ = self.send_masked("QUIT", "QUIT").await;
    }

    /// Sends `line` and requires reply `code`.
    async fn expect(&mut self, line: &str, code: u16) -> Result<Reply, SmtpError> {
        let step = line.split([' ', ':']).next().unwrap_or(line).to_string();
        let r = self.send_masked(line, &step).await?;
        if r.code != code {
            return Err(SmtpError::Refused { step, reply: r });
        }
        Ok(r)
    }

    /// Sends `line` (named `step` in errors, so secrets never show) and reads the reply.
    async fn send_masked(&mut self, line: &str, step: &str) -> Result<Reply, SmtpError> {
        self.conn.send(format!("{line}\r\n").as_bytes(), step).await?;
        Ok(read_reply(&mut self.conn, step).await?)
    }
}

/// Reads one reply: lines `250-...` until `250 ...`.
async fn read_reply(conn: &mut Conn, step: &str) -> Result<Reply, WireError> {
    let mut lines = Vec::new();
    loop {
        let line = conn.read_line(step).await?;
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| WireError::Protocol(format!("{step}: not an SMTP reply: {line:?}")))?;
        let sep = line.as_bytes().get(3).copied();
        lines.push(line.get(4..).unwrap_or("").to_string());
        if sep != Some(b'-') {
            return Ok(Reply { code, lines });
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(WireError::Protocol(format!("{step}: reply of more than {MAX_REPLY_LINES} lines")));
        }
    }
}
