//! `check = "smtp"`: the message transfer agent answers like an SMTP server should:
//! 220 greeting, EHLO, STARTTLS when configured, and (with `user`) AUTH, then QUIT.
//!
//! Rules: bounded by the service's timeout; a refusal is critical with the server's own
//! reply; the secret never appears in the outcome. No message is sent.

use std::time::Duration;

use rollcall_protocol::Status;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::checks::{Kind, Outcome, ServiceCheck};
use crate::config::fields::TableCx;
use crate::config::login::{self, Credentials, Endpoint, Login, LoginRules, RawLogin};
use crate::mail::credentials;
use crate::mail::smtp::Smtp;

/// `check = "smtp"`: `address`, `security`, `ca_file`, and for AUTH `user` with one of
/// `password_file`, `password_command`, `oauth2_token_command`.
pub const KIND: Kind = Kind { name: "smtp", keys: RawLogin::KEYS, parse };

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
