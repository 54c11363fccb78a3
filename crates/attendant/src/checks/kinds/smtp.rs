//! `check = "smtp"`: the message transfer agent answers like an SMTP server should:
//! 220 greeting, EHLO, STARTTLS when configured, and (with `user`) AUTH, then QUIT.
//!
//! Rules: bounded by the service's timeout; a refusal is critical with the server's own
//! reply; the secret never appears in the outcome. No message is sent. The session ends
//! with QUIT, as a well-behaved client's does (no "lost connection" in the MTA's log).
//!
//! Patience: MTAs delay their greeting on purpose. Postfix's `postscreen` sends `220-`,
//! then holds the final `220 ` for `postscreen_greet_wait` (6 s by default) to catch
//! clients that talk first; sendmail's `greet_pause` and Exim's `smtp_connect_delay` do the
//! same. So the check waits for the whole multi-line greeting, and its default timeout
//! ([`POSTSCREEN_PATIENT_TIMEOUT`]) leaves each step (90 % of it) more than those 6 s.

use std::time::Duration;

use rollcall_protocol::Status;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::checks::{Kind, Outcome, ServiceCheck};
use crate::config::fields::TableCx;
use crate::config::login::{self, Credentials, Endpoint, Login, LoginRules, RawLogin};
use crate::mail::credentials;
use crate::mail::smtp::Smtp;

/// The smtp check's default `timeout`: each step may take 90 % of it, 8.1 s, more than
/// postscreen's default 6 s greeting delay, and the whole stays under the poller's default
/// 10 s poll timeout.
pub const POSTSCREEN_PATIENT_TIMEOUT: rollcall_config::Duration = rollcall_config::Duration::from_secs(9);

/// `check = "smtp"`: `address`, `security`, `ca_file`, and for AUTH `user` with one of
/// `password_file`, `password_command`, `oauth2_token_command`.
pub const KIND: Kind = Kind { name: "smtp", keys: RawLogin::KEYS, default_timeout: POSTSCREEN_PATIENT_TIMEOUT, parse };

#[derive(Debug)]
struct SmtpCheck {
    login: Login,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let raw: RawLogin = cx.settings(table)?;
    let login = login::login(cx, &raw.keys(), LoginRules { required: false, oauth2: true })?;
    Some(Arc::new(SmtpCheck { login }))
}

impl ServiceCheck for SmtpCheck {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(&self.login.endpoint, self.login.credentials.as_ref(), timeout))
    }
}

pub async fn check(endpoint: &Endpoint, login: Option<&Credentials>, timeout: Duration) -> Outcome {
    let step = timeout.mul_f32(0.9);
    let helo = crate::host::hostname();
    let mut smtp = match Smtp::connect(endpoint, step, &helo).await {
        Ok(s) => s,
        Err(e) => return Outcome::new(Status::Critical, e.to_string()),
    };
    let greeting = smtp.greeting.to_string();
    let base = |status, message: String, smtp: &Smtp| {
        Outcome::new(status, message)
            .with("greeting", greeting.clone())
            .with("extensions", smtp.extensions.join(", "))
            .with("tls", smtp.is_tls())
    };
    let outcome = match login {
        None => base(Status::Ok, greeting.clone(), &smtp),
        Some(c) => match credentials::fetch(&c.secret, step).await {
            Err(e) => base(Status::Unknown, format!("cannot get the password: {e}"), &smtp),
            Ok(secret) => match smtp.auth(&c.user, &secret).await {
                Ok(r) => base(Status::Ok, format!("authenticated as {}: {r}", c.user), &smtp).with("login", true),
                Err(e) => base(Status::Critical, format!("AUTH as {} failed: {e}", c.user), &smtp).with("login", false),
            },
        },
    };
    smtp.quit().await;
    outcome
}
