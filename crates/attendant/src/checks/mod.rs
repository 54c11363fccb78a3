//! Service checks: how the attendant decides the status of each `[[service]]` its config
//! lists. One file per check kind (`kinds/NAME.rs`) owns that kind's keys, their
//! validation and the check itself; `kinds` is the registry that lists them.
//!
//! Rules: every check runs concurrently with the others and is bounded by its own
//! `timeout`, so the compilation is never later than the slowest timeout; a check never
//! fails the compilation, it reports `unknown` or `critical` with a message saying why.
//! Checks import `mail` (the wire clients) and the leaf validators of `config`
//! (`config::fields`, `config::login`), never `probes` or the attendant.

pub mod kinds;
pub(crate) mod perfdata;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rollcall_protocol::{CheckResult, Status};
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config::fields::TableCx;

pub use kinds::process::ProcessMatch;
pub use perfdata::parse_perfdata;

/// What one check found: a status, a one-line message and check-specific details.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub message: String,
    pub details: Map<String, Value>,
}

impl Outcome {
    /// An outcome without details; `message` is one line for the operator.
    pub fn new(status: Status, message: impl Into<String>) -> Outcome {
        Outcome { status, message: message.into(), details: Map::new() }
    }

    /// Adds `key` to `details`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Outcome {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

/// A validated check of one kind, ready to run at each query.
pub trait ServiceCheck: Any + fmt::Debug + Send + Sync {
    /// The `check` key's value (`"tcp"`, ...), reported in the compilation.
    fn kind(&self) -> &'static str;
    /// Runs the check once. `timeout` is the service's; [`run`] also cuts the whole run at
    /// it, so a check that bounds its own steps a little shorter keeps its own message.
    fn run(&self, timeout: Duration) -> BoxFuture<'_, Outcome>;
}

/// One check kind: its `check = "..."` name, its own keys and their validation.
pub struct Kind {
    /// The value of `check` that selects this kind.
    pub name: &'static str,
    /// The keys it reads besides `name`, `check` and `timeout`, in the order the error
    /// for a foreign key lists them.
    pub keys: &'static [&'static str],
    /// Validates those keys of one table (only keys of `keys` are present); every problem
    /// goes to the context, and then the answer is `None`.
    pub parse: fn(&toml::Table, &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>>,
}

impl Kind {
    /// Whether `key` is one of this kind's own keys.
    pub fn reads(&self, key: &str) -> bool {
        self.keys.contains(&key)
    }
}

/// One entry of the services list.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub timeout: rollcall_config::Duration,
    pub check: Arc<dyn ServiceCheck>,
}

/// Runs one service's check, bounded by its timeout.
pub async fn run(service: &Service, clock: &Clock) -> CheckResult {
    let started = Instant::now();
    let observed_at = clock.now();
    let outcome = match tokio::time::timeout(service.timeout.get(), service.check.run(service.timeout.get())).await {
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

/// Runs every service's check at once; the result keeps the config's order.
pub async fn run_all(services: &[Service], clock: &Clock) -> Vec<CheckResult> {
    futures::future::join_all(services.iter().map(|s| run(s, clock))).await
}
