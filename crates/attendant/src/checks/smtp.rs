//! `check = "smtp"`: the message transfer agent answers like an SMTP server should:
//! 220 greeting, EHLO, STARTTLS when configured, and (with `user`) AUTH, then QUIT.
//!
//! Rules: bounded by the service's timeout; a refusal is critical with the server's own
//! reply; the secret never appears in the outcome. No message is sent.

use std::time::Duration;

use rollcall_protocol::Status;

use super::Outcome;
use crate::probes::credentials;
use crate::probes::smtp::Smtp;
use crate::probes::{Credentials, Endpoint};

pub async fn check(endpoint: &Endpoint, login: Option<&Credentials>, timeout: Duration) -> Outcome {
    let step = timeout.mul_f32(0.9);
    let helo = crate::config::hostname();
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
