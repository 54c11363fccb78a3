//! Service checks: how the attendant decides the status of each service its config lists.
//!
//! Rules: every check runs concurrently with the others and is bounded by its own
//! `timeout`, so the compilation is never later than the slowest timeout; a check never
//! fails the compilation, it reports `unknown` or `critical` with a message saying why.

mod command;
mod http;
mod imap;
mod ldap;
mod perfdata;
mod process;
mod smtp;
mod systemd;
mod tcp;

use std::time::Instant;

use rollcall_protocol::{CheckResult, Status};
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config::{Check, Service};

pub use perfdata::parse_perfdata;
pub use process::ProcessMatch;

/// What one check found: a status, a one-line message and check-specific details.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub message: String,
    pub details: Map<String, Value>,
}

impl Outcome {
    pub fn new(status: Status, message: impl Into<String>) -> Outcome {
        Outcome { status, message: message.into(), details: Map::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Outcome {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

/// Runs one service's check, bounded by its timeout.
pub async fn run(service: &Service, clock: &Clock) -> CheckResult {
    let started = Instant::now();
    let observed_at = clock.now();
    let outcome = match tokio::time::timeout(service.timeout.get(), run_check(service)).await {
        Ok(o) => o,
        Err(_) => Outcome::new(Status::Critical, format!("no answer within {} (timeout)", service.timeout)),
    };
    CheckResult {
        name: service.name.clone(),
        check: service.check.kind().to_string(),
        status: outcome.status,
        message: outcome.message,
        observed_at,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        details: outcome.details,
    }
}

async fn run_check(service: &Service) -> Outcome {
    match &service.check {
        Check::Tcp { address, expect } => tcp::check(address, expect.as_deref(), service.timeout.get()).await,
        Check::Process(m) => process::check(m).await,
        Check::Command { argv } => command::check(argv, service.timeout.get()).await,
        Check::Systemd { unit } => systemd::check(unit).await,
        Check::Http { url, expect_status, body } => http::check(url, *expect_status, body.as_deref()).await,
        Check::Imap { endpoint, login } => imap::check(endpoint, login.as_ref(), service.timeout.get()).await,
        Check::Smtp { endpoint, login } => smtp::check(endpoint, login.as_ref(), service.timeout.get()).await,
        Check::Ldap { endpoint, bind, base, filter } => {
            ldap::check(endpoint, bind.as_ref(), base, filter, service.timeout.get()).await
        }
    }
}

/// Runs every service's check at once; the result keeps the config's order.
pub async fn run_all(services: &[Service], clock: &Clock) -> Vec<CheckResult> {
    futures::future::join_all(services.iter().map(|s| run(s, clock))).await
}
