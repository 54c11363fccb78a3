//! The email channel: one plain-text message per notice over SMTP (lettre, rustls); its
//! body from `template_file`, or the default template ([`super::template`]).
//!
//! Rules it keeps: `security = "starttls"` (the default) requires STARTTLS and fails
//! rather than send in clear; `"tls"` is TLS from the first byte; `"none"` is for loopback
//! or a trusted relay. AUTH only when `user` and `password_file` are given. Each message
//! carries the notice's key as `X-Rollcall-Notice` and a Message-ID made of it, the same
//! for every attempt at one notice, so a mail system or reader drops a repeat.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{NotifyConfig, SmtpSecurity};
use crate::notify::{DeliveryError, Notice};

/// An SMTP relay and the addresses notices go to.
pub struct Email {
    transport: Result<AsyncSmtpTransport<Tokio1Executor>, String>,
    from: String,
    to: Vec<String>,
    /// The body's template (`template_file`); the default one when `None`.
    template: Option<Result<super::template::Template, String>>,
}

impl Email {
    pub fn new(c: &NotifyConfig) -> Email {
        let transport = (|| {
            let tls = match c.security {
                SmtpSecurity::None => Tls::None,
                SmtpSecurity::Starttls => {
                    Tls::Required(TlsParameters::new(c.smtp_host.clone()).map_err(|e| e.to_string())?)
                }
                SmtpSecurity::Tls => Tls::Wrapper(TlsParameters::new(c.smtp_host.clone()).map_err(|e| e.to_string())?),
            };
            let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.smtp_host)
                .port(c.smtp_port)
                .tls(tls)
                .timeout(Some(c.timeout));
            if let (Some(u), Some(p)) = (&c.user, &c.password) {
                b = b.credentials(Credentials::new(u.clone(), p.expose().to_string()));
            }
            Ok(b.build())
        })();
        let template = c.template.as_ref().map(|(name, text)| super::template::Template::compile(name, text));
        Email { transport, from: c.from.clone(), to: c.to.clone(), template }
    }

    pub async fn deliver(&self, n: &Notice) -> Result<(), DeliveryError> {
        let transport = self.transport.as_ref().map_err(|e| DeliveryError(format!("TLS setup: {e}")))?;
        let from: Mailbox = self.from.parse().map_err(|e| DeliveryError(format!("from {:?}: {e}", self.from)))?;
        let mut b = Message::builder()
            .from(from)
            .subject(format!("[rollcall] {}", n.summary))
            .message_id(Some(format!("<rollcall.{}@rollcall.invalid>", super::key::message_id_part(&n.key))))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Rollcall-Notice"), n.key.clone()))
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            b = b.to(t.parse().map_err(|e| DeliveryError(format!("to {t:?}: {e}")))?);
        }
        let body = match &self.template {
            None => super::describe(n),
            Some(t) => t.as_ref().map_err(|e| DeliveryError(e.clone()))?.render(n).map_err(DeliveryError)?,
        };
        let msg = b.body(body).map_err(|e| DeliveryError(format!("cannot build the message: {e}")))?;
        transport.send(msg).await.map_err(|e| DeliveryError(format!("SMTP: {e}")))?;
        Ok(())
    }
}
