//! One server of the fleet: its config, its slot, and its live state behind a lock that
//! never poisons (a panicked holder must not take the server's state with it).
//!
//! Rules it keeps: the lock is held only to read or change the state, never across an
//! await; polls of one server never overlap ([`Server::polling`]).

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::clock_keeping::ClockState;
use super::latest::Packed;
use super::on_request::Gate;
use crate::config::ServerConfig;
use crate::model::{ServerFacts, ServerSummary};

/// A server's live state.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    /// What is known of it: the shape the store keeps and the API shows.
    pub facts: ServerFacts,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub clock: ClockState,
    /// Substance hash of the newest compilation in the history.
    pub substance: Option<i64>,
    /// The latest compilation as received. Kept here, not written at every poll: between
    /// changes of substance only times, messages and usage figures differ, and rewriting
    /// a few kilobytes per poll cost most of the poller's disk writes (22 kB per poll at
    /// 5,000 polls/s, measured). The store gets it with each change and at shutdown.
    pub latest: Option<Packed>,
    /// The writer has been given these facts (level, state, deficiencies, error): a poll
    /// that changes none of them hands over only its poll row. The writer keeps and
    /// retries what it was given, so "given" means "will be stored".
    pub facts_given: bool,
}

impl Status {
    pub(crate) fn summary(&self) -> ServerSummary {
        ServerSummary { facts: self.facts.clone(), next_poll_at: self.next_poll_at, node: None, servers_behind: 0 }
    }
}

/// One server: its config and live state.
pub struct Server {
    pub config: ServerConfig,
    /// Where in every interval this server's slot lies (see [`crate::schedule::phases`]).
    pub(crate) phase: f64,
    status: Mutex<Status>,
    /// Held while polling, so a poll on request and a scheduled one never overlap.
    pub(crate) polling: tokio::sync::Mutex<()>,
    /// Wakes the loop to recompute its next slot (after a poll on request).
    pub(crate) reschedule: Notify,
    /// Wakes the loop to poll at once (a parent this server was behind recovered).
    pub(crate) poll_soon: Notify,
    /// Stops this server's loop (a reload removed or changed it).
    pub(crate) stop: tokio_util::sync::CancellationToken,
    /// Polls on request: the one in flight and when the last started.
    pub(crate) on_request: Mutex<Gate>,
}

impl Server {
    pub(crate) fn new(config: ServerConfig, phase: f64, status: Status) -> Server {
        Server {
            config,
            phase,
            status: Mutex::new(status),
            polling: tokio::sync::Mutex::new(()),
            reschedule: Notify::new(),
            poll_soon: Notify::new(),
            stop: tokio_util::sync::CancellationToken::new(),
            on_request: Mutex::new(Gate::default()),
        }
    }

    /// Reads the live state.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Status) -> T) -> T {
        f(&self.status.lock())
    }

    /// Changes the live state.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Status) -> T) -> T {
        f(&mut self.status.lock())
    }

    /// The server as it stands (without what only the fleet knows: see
    /// [`super::Fleet::summary`]).
    pub(crate) fn summary(&self) -> ServerSummary {
        self.read(Status::summary)
    }
}
