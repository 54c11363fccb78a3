//! `check = "ldap"`: the directory service binds (anonymously, or as `bind_dn` with its
//! password: a probe identity) and answers a base search of `base`.
//!
//! Rules: bounded by the service's timeout (connect and each operation); an LDAP error
//! is critical with the server's result code and text; the password never appears in the
//! outcome; TLS (ldaps or StartTLS) is rustls, verified like the mail probes'.

use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rollcall_protocol::Status;

use super::Outcome;
use crate::probes::credentials::{self, LoginSecret};
use crate::probes::wire::client_config;
use crate::probes::{Credentials, Endpoint, Security};

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
