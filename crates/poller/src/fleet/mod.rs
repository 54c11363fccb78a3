//! The fleet: every server's live state, the poll that updates it, and one loop per server.
//!
//! Like Prometheus' scrape loops, each server has its own loop and timer, so one hung or
//! slow attendant only ever delays itself; a semaphore caps polls in flight. The fetcher
//! is the fleet's test seam (`Arc<dyn Fetch>`); nothing past the fleet knows of it.
//!
//! A poll reads as its steps, each in a room of its own:
//! ask ([`crate::fetch`]) → judge ([`verdict`], pure) → keep the clock ([`clock_keeping`]:
//! its `clock:skew` deficiency joins the verdict) → decide ([`crate::levels`], pure; the
//! next slot planned) → apply (the live state, `server`) → record (the store's
//! [`Writer`]) → announce (broadcast [`FleetEvent`]s for live views and the notifier, with
//! the next poll already planned). Poll statistics are in [`stats`], the packed latest
//! compilations in `latest`, the coalescing and spacing of polls on request in
//! [`on_request`].
//!
//! A loop can run and be stopped again; it must not be reused after it was stopped.

pub mod clock_keeping;
mod latest;
pub mod on_request;
mod server;
pub mod stats;
pub mod verdict;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::fetch::{Fetch, Fetched, PollError};
use crate::levels::{LevelState, Rules, Transition};
use crate::model::{
    ChangedCompilation, ClockCorrectionRow, PollRecord, PollRow, ServerFacts, ServerSummary, StoredServer,
    TransitionRow,
};
use crate::schedule::{next_slot, Timebase};
use crate::store::Writer;
use clock_keeping::{ClockKeeper, ClockState};
pub use clock_keeping::{ClockPolicy, ORDER_BACKOFF};
use latest::Packed;
pub use on_request::PollNowError;
use on_request::Ticket;
pub use server::Server;
use server::Status;
use stats::PollStats;
pub use verdict::poll_deficiency;
use verdict::Verdict;

/// Something that happened in the fleet, for live views and notifications.
#[derive(Debug, Clone)]
pub enum FleetEvent {
    /// A poll finished; the server as it now stands.
    Polled(ServerSummary),
    /// A server changed level.
    Transition { server: String, transition: TransitionRow },
    /// A clock order was sent or verified.
    ClockCorrection { server: String, correction: ClockCorrectionRow },
}

/// Everything about running the fleet that is not the servers themselves.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub timebase: Timebase,
    pub max_in_flight: usize,
    pub clock: ClockPolicy,
    /// A server never polled is first polled within this of the fleet's start, spread
    /// evenly over it by its phase (or at its normal slot, if that is sooner).
    pub first_poll_within: std::time::Duration,
}

/// The whole fleet and what it needs to poll.
pub struct Fleet {
    servers: Vec<Arc<Server>>,
    by_name: HashMap<String, usize>,
    rules: Rules,
    fetcher: Arc<dyn Fetch>,
    writer: Writer,
    timebase: Timebase,
    in_flight: Semaphore,
    events: broadcast::Sender<FleetEvent>,
    clock: ClockKeeper,
    stats: PollStats,
}

/// When a server never polled is first polled: at its normal slot if that comes within
/// `window` of `start`, else at its phase's slot in a `window`-long interval (the same
/// slot arithmetic, so first polls spread as evenly as later ones). The normal slot that
/// follows may then come soon after; that happens once per new server.
fn first_poll(phase: f64, rules: &Rules, window: std::time::Duration, start: DateTime<Utc>) -> DateTime<Utc> {
    let normal = next_slot(phase, rules.level(0).interval, start);
    match chrono::Duration::from_std(window) {
        Ok(w) if normal > start + w => next_slot(phase, window, start),
        _ => normal,
    }
}

/// What applying a poll changed, for the record and the announcements.
struct Applied {
    facts: ServerFacts,
    facts_changed: bool,
    transition: Option<TransitionRow>,
    compilation: Option<ChangedCompilation>,
}

impl Fleet {
    /// Builds the fleet from config, resuming each server from what the store kept.
    pub fn new(
        configs: Vec<ServerConfig>,
        stored: Vec<StoredServer>,
        rules: Rules,
        fetcher: Arc<dyn Fetch>,
        writer: Writer,
        options: FleetOptions,
    ) -> Fleet {
        let mut stored: HashMap<String, StoredServer> = stored.into_iter().map(|r| (r.facts.name.clone(), r)).collect();
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        let phases = crate::schedule::phases(&names);
        let first = rules.level(0).name.clone();
        let start = options.timebase.wall_now();
        let window = options.first_poll_within;
        let mut servers = Vec::with_capacity(configs.len());
        let mut by_name = HashMap::with_capacity(configs.len());
        for (config, phase) in configs.into_iter().zip(phases) {
            let status = match stored.remove(&config.name) {
                Some(StoredServer { mut facts, substance }) => {
                    if rules.index_of(&facts.level).is_none() {
                        tracing::warn!(server = %config.name, level = %facts.level, "stored level no longer exists; starting at the first level");
                        facts.level = first.clone();
                        facts.calm_streak = 0;
                    }
                    // A moved server's row is rewritten with its new address at the first poll.
                    let facts_given = facts.address == config.address;
                    facts.address = config.address.clone();
                    Status {
                        facts,
                        next_poll_at: None,
                        clock: ClockState::default(),
                        substance,
                        latest: None,
                        facts_given,
                    }
                }
                None => Status {
                    facts: ServerFacts::new(&config.name, &config.address, &first),
                    next_poll_at: Some(first_poll(phase, &rules, window, start)),
                    clock: ClockState::default(),
                    substance: None,
                    latest: None,
                    facts_given: false,
                },
            };
            by_name.insert(config.name.clone(), servers.len());
            servers.push(Arc::new(Server::new(config, phase, status)));
        }
        let (events, _) = broadcast::channel(1024);
        Fleet {
            servers,
            by_name,
            rules,
            fetcher,
            writer,
            timebase: options.timebase,
            in_flight: Semaphore::new(options.max_in_flight.max(1)),
            events,
            clock: ClockKeeper::new(options.clock, options.timebase),
            stats: PollStats::default(),
        }
    }

    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Server>> {
        self.by_name.get(name).map(|&i| &self.servers[i])
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    /// Poll counts, durations, lateness and polls in flight (for `/metrics`).
    pub fn stats(&self) -> &PollStats {
        &self.stats
    }

    /// The server as the API shows it.
    pub fn summary(&self, server: &Server) -> ServerSummary {
        server.summary()
    }

    /// The server as the API shows it with its latest compilation as received this run
    /// (`None` before its first answer), both from the same poll.
    pub fn detail(&self, server: &Server) -> (ServerSummary, Option<bytes::Bytes>) {
        let (summary, latest) = server.read(|s| (s.summary(), s.latest.clone()));
        (summary, latest.and_then(|p| p.unpack(&server.config.name)))
    }

    /// Every server's latest compilation received this run, for the store at shutdown.
    pub fn latest_compilations(&self) -> Vec<(String, bytes::Bytes)> {
        self.servers
            .iter()
            .filter_map(|s| Some((s.config.name.clone(), s.read(|st| st.latest.clone())?.unpack(&s.config.name)?)))
            .collect()
    }

    /// Polls `server` now, applies the result and records it; answers the server as it
    /// now stands.
    pub async fn poll(&self, server: &Server) -> ServerSummary {
        let _one_at_a_time = server.polling.lock().await;
        let (result, took) = self.ask(server).await;
        let at = self.timebase.wall_now();
        let mut verdict = verdict::judge(result);
        let kept = self.keep_clock(server, &verdict, at).await;
        if let Some(d) = kept.deficiency {
            verdict.add(d);
        }
        self.stats.polled(verdict.state, took);
        let before = server.read(|s| self.level_state(&s.facts));
        let (level, change) = self.rules.decide(before, &verdict.deficiencies);
        let next = self.next_poll(server, level, at, kept.verify_soon);
        let poll = self.poll_row(at, &verdict, level);
        let Applied { facts, facts_changed, transition, compilation } =
            self.apply(server, at, verdict, level, change, next);
        let record = PollRecord {
            facts,
            facts_changed,
            poll,
            transition: transition.clone(),
            compilation,
            clock_corrections: kept.rows.clone(),
        };
        self.record(server, record).await;
        self.announce(server, transition, kept.rows)
    }

    /// When the server is polled next: its next slot at its (new) level, or sooner to
    /// verify a stepped clock correction.
    fn next_poll(&self, server: &Server, level: LevelState, at: DateTime<Utc>, verify_soon: bool) -> DateTime<Utc> {
        let slot = next_slot(server.phase, self.rules.level(level.level).interval, at);
        if verify_soon {
            slot.min(at + clock_keeping::VERIFY_AFTER)
        } else {
            slot
        }
    }

    /// Fetches the server's compilation within the cap on polls in flight.
    async fn ask(&self, server: &Server) -> (Result<Fetched, PollError>, std::time::Duration) {
        let started = std::time::Instant::now();
        let _slot = self.in_flight.acquire().await;
        let _counted = self.stats.in_flight();
        let result = self.fetcher.fetch(&server.config).await;
        (result, started.elapsed())
    }

    /// Clock keeping after an answered poll (nothing after a failed one); the server's
    /// clock state is read and written around the order (polls of one server never
    /// overlap, so nothing else changes it meanwhile).
    async fn keep_clock(&self, server: &Server, verdict: &Verdict, at: DateTime<Utc>) -> clock_keeping::Kept {
        let (Some(estimate), Some(reply)) = (verdict.estimate, &verdict.reply) else {
            return clock_keeping::Kept::default();
        };
        let state = server.read(|s| s.clock.clone());
        let kept = self.clock.keep(self.fetcher.as_ref(), &server.config, &reply.attendant, estimate, at, state).await;
        server.update(|s| s.clock = kept.state.clone());
        kept
    }

    /// Hands the poll's results to the store's writer, which keeps what it is given.
    async fn record(&self, server: &Server, record: PollRecord) {
        if let Err(e) = self.writer.record(record).await {
            tracing::error!(server = %server.config.name, error = %e, "poll result not stored");
        }
    }

    /// The level and calm streak of `facts` as [`Rules::decide`] takes them.
    fn level_state(&self, facts: &ServerFacts) -> LevelState {
        LevelState { level: self.rules.index_of(&facts.level).unwrap_or(0), calm_streak: facts.calm_streak }
    }

    fn poll_row(&self, at: DateTime<Utc>, v: &Verdict, level: LevelState) -> PollRow {
        PollRow {
            at,
            state: v.state,
            level: self.rules.level(level.level).name.clone(),
            rtt_ms: v.estimate.map(|e| e.delay_ms),
            clock_offset_ms: v.estimate.map(|e| e.offset_ms),
            error: v.error.as_ref().map(ToString::to_string),
            deficiencies: v.deficiencies.len() as u32,
        }
    }

    /// Applies a verdict and level decision to the server's live state; logs what changed.
    fn apply(
        &self,
        server: &Server,
        at: DateTime<Utc>,
        v: Verdict,
        level: LevelState,
        change: Option<Transition>,
        next: DateTime<Utc>,
    ) -> Applied {
        let name = &server.config.name;
        let level_name = &self.rules.level(level.level).name;
        let transition = change.map(|t| TransitionRow {
            at,
            from: self.rules.level(t.from).name.clone(),
            to: self.rules.level(t.to).name.clone(),
            reason: t.reason,
        });
        let error = v.error.as_ref().map(ToString::to_string);
        let packed = v.reply.as_ref().map(|r| Packed::pack(&r.raw));
        let (before_state, before_error, applied) = server.update(|s| {
            let f = &mut s.facts;
            let facts_changed = !s.facts_given
                || f.level != *level_name
                || f.calm_streak != level.calm_streak
                || f.state != v.state
                || f.deficiencies != v.deficiencies
                || f.last_error != error;
            let before = (f.state, f.last_error.take());
            if f.level != *level_name {
                f.level.clone_from(level_name);
            }
            f.calm_streak = level.calm_streak;
            f.state = v.state;
            f.deficiencies = v.deficiencies;
            f.last_poll_at = Some(at);
            f.last_error = error;
            if let Some(e) = v.estimate {
                f.clock_offset_ms = Some(e.offset_ms);
                f.rtt_ms = Some(e.delay_ms);
            }
            s.facts_given = true;
            s.next_poll_at = Some(next);
            let mut compilation = None;
            if let Some(reply) = v.reply {
                if s.substance != Some(reply.substance) {
                    s.substance = Some(reply.substance);
                    compilation = Some(ChangedCompilation { hash: reply.substance, body: reply.raw });
                }
                s.latest = packed;
            }
            (before.0, before.1, Applied { facts: s.facts.clone(), facts_changed, transition: None, compilation })
        });
        if let Some(e) = &v.error {
            if before_error.as_deref() != applied.facts.last_error.as_deref() {
                tracing::warn!(server = %name, kind = e.kind(), error = %e, "poll failed");
            }
        }
        match &transition {
            Some(t) => tracing::info!(server = %name, from = %t.from, to = %t.to, reason = %t.reason, "level changed"),
            None if before_state != applied.facts.state => {
                tracing::info!(server = %name, from = before_state.as_str(), to = applied.facts.state.as_str(), "state changed")
            }
            None => {}
        }
        Applied { transition, ..applied }
    }

    /// Tells live views and the notifier; answers the server as it now stands.
    fn announce(
        &self,
        server: &Server,
        transition: Option<TransitionRow>,
        clock_corrections: Vec<ClockCorrectionRow>,
    ) -> ServerSummary {
        let name = &server.config.name;
        if let Some(t) = transition {
            let _ = self.events.send(FleetEvent::Transition { server: name.clone(), transition: t });
        }
        for c in clock_corrections {
            let _ = self.events.send(FleetEvent::ClockCorrection { server: name.clone(), correction: c });
        }
        let summary = server.summary();
        let _ = self.events.send(FleetEvent::Polled(summary.clone()));
        summary
    }

    /// Polls `server` now on request ([`on_request`]: joins the poll on request in flight,
    /// or starts one unless one started less than [`on_request::MIN_SPACING`] ago) and lets
    /// its loop pick its next slot again. It does not lift the clock-order back-off: a
    /// storm of requests must not become a storm of signed orders.
    pub async fn poll_now(self: &Arc<Self>, server: &Arc<Server>) -> Result<ServerSummary, PollNowError> {
        let ticket = server.on_request.lock().ticket(tokio::time::Instant::now());
        let answer = match ticket {
            Ticket::TooSoon(retry_after) => return Err(PollNowError::TooSoon { retry_after }),
            Ticket::Join(answer) => answer,
            Ticket::Lead(tx, answer) => {
                // Its own task: a requester hanging up must not cut the poll half-way.
                let (fleet, server) = (self.clone(), server.clone());
                tokio::spawn(async move {
                    let summary = fleet.poll(&server).await;
                    server.reschedule.notify_one();
                    server.on_request.lock().finished();
                    let _ = tx.send(Some(summary));
                });
                answer
            }
        };
        on_request::wait(answer).await
    }

    /// Starts one loop per server; they stop when `stop` is cancelled.
    pub fn start(self: &Arc<Self>, stop: &CancellationToken, tracker: &TaskTracker) {
        for server in &self.servers {
            tracker.spawn(self.clone().run_loop(server.clone(), stop.clone()));
        }
    }

    async fn run_loop(self: Arc<Self>, server: Arc<Server>, stop: CancellationToken) {
        // The slot of the last scheduled poll: a plan is never that slot again, so the
        // loop cannot poll twice in one slot whatever a poll left in the state.
        let mut polled: Option<DateTime<Utc>> = None;
        loop {
            // The time the last poll planned (or the first-poll window's), unless it has
            // passed: then the next slot from now.
            let now = self.timebase.wall_now();
            let due = server.update(|s| {
                let due = match s.next_poll_at {
                    Some(planned) if planned >= now && polled.is_none_or(|p| planned > p) => planned,
                    _ => next_slot(server.phase, self.rules.level(self.level_state(&s.facts).level).interval, now),
                };
                s.next_poll_at = Some(due);
                due
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = server.reschedule.notified() => continue,
                _ = tokio::time::sleep_until(self.timebase.instant(due)) => {}
            }
            self.stats.started_late(self.timebase.wall_now() - due);
            polled = Some(due);
            tokio::select! {
                _ = stop.cancelled() => return,
                // Boxed: the poll's state (HTTP client, JSON, store) is kilobytes, and an
                // idle loop would otherwise carry it between polls, once per server.
                _ = Box::pin(self.poll(&server)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
