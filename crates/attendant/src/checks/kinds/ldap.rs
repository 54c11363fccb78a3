//! `check = "ldap"`: the directory service binds (anonymously, or as `bind_dn` with its
//! password: a probe identity) and answers a base search of `base`.
//!
//! Rules: bounded by the service's timeout (connect and each operation); an LDAP error
//! is critical with the server's result code and text; the password never appears in the
//! outcome; TLS (ldaps or StartTLS) is rustls, verified like the mail probes'.

use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rollcall_protocol::Status;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::checks::{DEFAULT_TIMEOUT, Kind, Outcome, ServiceCheck};
use crate::config::fields::TableCx;
use crate::config::login::{self, Credentials, Endpoint, Login, LoginKeys, LoginRules, Security};
use crate::mail::credentials::{self, LoginSecret};
use crate::mail::tls::client_config;

/// `check = "ldap"`: `address`, `security`, `ca_file`, `base`, optionally `filter`, and for
/// a bind `bind_dn` with `password_file` or `password_command`.
pub const KIND: Kind = Kind {
    name: "ldap",
    keys: &["address", "security", "ca_file", "bind_dn", "password_file", "password_command", "base", "filter"],
    default_timeout: DEFAULT_TIMEOUT,
    parse,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    address: Option<String>,
    security: Option<Security>,
    ca_file: Option<PathBuf>,
    bind_dn: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<Vec<String>>,
    base: Option<String>,
    filter: Option<String>,
}

#[derive(Debug)]
struct LdapCheck {
    /// `credentials` is the bind DN and its password; `None` binds anonymously.
    login: Login,
    base: String,
    filter: String,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    let keys = LoginKeys {
        address: ("address", s.address.as_deref()),
        security: s.security,
        ca_file: s.ca_file.as_deref(),
        user: ("bind_dn", s.bind_dn.as_deref()),
        password_file: s.password_file.as_deref(),
        password_command: s.password_command.as_deref(),
        oauth2_token_command: None,
    };
    let login = login::login(cx, &keys, LoginRules { required: false, oauth2: false });
    let Some(base) = s.base else {
        cx.push("base", "missing: check = \"ldap\" needs base = \"DN\" (the entry searched)");
        return None;
    };
    let filter = s.filter.unwrap_or_else(|| "(objectClass=*)".to_string());
    Some(Arc::new(LdapCheck { login: login?, base, filter }))
}

impl ServiceCheck for LdapCheck {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(&self.login.endpoint, self.login.credentials.as_ref(), &self.base, &self.filter, timeout))
    }
}

pub async fn check(
    endpoint: &Endpoint,
    bind: Option<&Credentials>,
    base: &str,
    filter: &str,
    timeout: Duration,
) -> Outcome {
    let step = timeout.mul_f32(0.9);
    match tokio::time::timeout(step, run(endpoint, bind, base, filter, step)).await {
        Ok(o) => o,
        Err(_) => Outcome::new(Status::Critical, format!("no answer from {} within {step:?}", endpoint.address)),
    }
}

async fn run(endpoint: &Endpoint, bind: Option<&Credentials>, base: &str, filter: &str, step: Duration) -> Outcome {
    let started = Instant::now();
    let scheme = if endpoint.security == Security::Tls { "ldaps" } else { "ldap" };
    let url = format!("{scheme}://{}", endpoint.address);
    let mut settings =
        LdapConnSettings::new().set_conn_timeout(step).set_starttls(endpoint.security == Security::Starttls);
    if endpoint.security != Security::None {
        match client_config(endpoint.ca_file.as_deref()) {
            Ok(c) => settings = settings.set_config(c),
            Err(e) => return Outcome::new(Status::Unknown, format!("TLS setup: {e}")),
        }
    }
    let (conn, mut ldap) = match LdapConnAsync::with_settings(settings, &url).await {
        Ok(c) => c,
        Err(e) => return Outcome::new(Status::Critical, format!("cannot connect to {url}: {e}")),
    };
    ldap3::drive!(conn);
    ldap.with_timeout(step);
    let who = match bind {
        None => "anonymous".to_string(),
        Some(c) => {
            let password = match credentials::fetch(&c.secret, step).await {
                Ok(LoginSecret::Password(p)) | Ok(LoginSecret::OAuth2Token(p)) => p,
                Err(e) => return Outcome::new(Status::Unknown, format!("cannot get the bind password: {e}")),
            };
            ldap.with_timeout(step);
            match ldap.simple_bind(&c.user, password.expose()).await.and_then(|r| r.success()) {
                Ok(_) => c.user.clone(),
                Err(e) => {
                    let _ = ldap.unbind().await;
                    return Outcome::new(Status::Critical, format!("bind as {} failed: {e}", c.user));
                }
            }
        }
    };
    let bound_ms = started.elapsed().as_secs_f64() * 1000.0;
    ldap.with_timeout(step);
    let result = ldap.search(base, Scope::Base, filter, vec!["1.1"]).await.and_then(|r| r.success());
    ldap.with_timeout(step);
    let _ = ldap.unbind().await;
    match result {
        Ok((entries, _)) => {
            let dns: Vec<String> = entries.into_iter().map(|e| SearchEntry::construct(e).dn).collect();
            if dns.is_empty() {
                Outcome::new(Status::Critical, format!("base search of {base:?} with {filter} found nothing"))
            } else {
                Outcome::new(Status::Ok, format!("bound as {who}; base search of {base:?} found it"))
                    .with("bind", who)
                    .with("bind_ms", bound_ms)
                    .with("entries", dns.len())
            }
        }
        Err(e) => Outcome::new(Status::Critical, format!("base search of {base:?} failed: {e}")).with("bind", who),
    }
}
