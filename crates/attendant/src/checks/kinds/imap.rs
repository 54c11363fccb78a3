//! `check = "imap"`: the message store answers like an IMAP server should: greeting,
//! CAPABILITY, STARTTLS when configured, and (with `user`) a login, then LOGOUT (also
//! after a refused login, as a well-behaved client leaves).
//!
//! Rules: bounded by the service's timeout (each step and the whole); a refusal is
//! critical with the server's own words; the secret never appears in the outcome.

use std::time::Duration;

use rollcall_protocol::Status;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::checks::{DEFAULT_TIMEOUT, Kind, Outcome, ServiceCheck};
use crate::config::fields::TableCx;
use crate::config::login::{self, Credentials, Endpoint, Login, LoginRules, RawLogin};
use crate::mail::credentials;
use crate::mail::imap::Imap;

/// `check = "imap"`: `address`, `security`, `ca_file`, and for a login `user` with one of
/// `password_file`, `password_command`, `oauth2_token_command`.
pub const KIND: Kind = Kind { name: "imap", keys: RawLogin::KEYS, default_timeout: DEFAULT_TIMEOUT, parse };

/// A validated imap check.
#[derive(Debug)]
pub(crate) struct ImapCheck {
    pub login: Login,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let raw: RawLogin = cx.settings(table)?;
    let login = login::login(cx, &raw.keys(), LoginRules { required: false, oauth2: true })?;
    Some(Arc::new(ImapCheck { login }))
}

impl ServiceCheck for ImapCheck {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(&self.login.endpoint, self.login.credentials.as_ref(), timeout))
    }
}

pub async fn check(endpoint: &Endpoint, login: Option<&Credentials>, timeout: Duration) -> Outcome {
    // Each step gets most of the budget, so our message wins over the generic timeout.
    let step = timeout.mul_f32(0.9);
    let mut imap = match Imap::connect(endpoint, step).await {
        Ok(i) => i,
        Err(e) => return Outcome::new(Status::Critical, e.to_string()),
    };
    let greeting = imap.greeting.clone();
    let base = |status, message: String, imap: &Imap| {
        Outcome::new(status, message)
            .with("greeting", greeting.clone())
            .with("capability", imap.capabilities.join(" "))
            .with("tls", imap.is_tls())
    };
    let Some(c) = login else {
        let o = base(Status::Ok, greeting.clone(), &imap);
        let _ = imap.logout().await;
        return o;
    };
    let o = match credentials::fetch(&c.secret, step).await {
        Err(e) => base(Status::Unknown, format!("cannot get the password: {e}"), &imap),
        Ok(secret) => match imap.login(&c.user, &secret).await {
            Ok(text) => base(Status::Ok, format!("logged in as {}: {text}", c.user), &imap).with("login", true),
            Err(e) => base(Status::Critical, format!("login as {} failed: {e}", c.user), &imap).with("login", false),
        },
    };
    // Whatever happened, leave as a client should (the server logs no dropped session).
    let _ = imap.logout().await;
    o
}
