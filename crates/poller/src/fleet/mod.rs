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

pub mod ack;
pub mod clock_keeping;
pub mod inventory;
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

use crate::cluster::Holdings;
use crate::config::ServerConfig;
use crate::fetch::{Fetch, Fetched, PollError};
use crate::levels::{LevelState, Rules, Transition};
use crate::model::{
    Ack, AckChange, ChangedCompilation, ClockCorrectionRow, NotifyRow, PollRecord, PollRow, ServerFacts, ServerState,
    ServerSummary, StoredServer, TransitionRow,
};
use crate::schedule::{next_slot, Timebase};
use crate::store::Writer;
pub use ack::AckError;
use clock_keeping::{ClockKeeper, ClockState};
pub use clock_keeping::{ClockPolicy, ORDER_BACKOFF};
pub use inventory::{Inventory, ReloadReport};
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
    /// This node took the server over from another (cluster): what notifications had told
    /// about it, as that node stored it (`None`: nothing yet).
    Adopted { server: String, notify: Option<NotifyRow> },
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("this poller was not started from a config file: nothing to reload")]
    NoFile,
    /// The new configuration is invalid: the running one is kept.
    #[error("the new configuration is invalid; the running one is kept:\n{0}")]
    Invalid(String),
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
    /// Which servers this node may poll, when several pollers share the fleet; `None`:
    /// all of them.
    pub holdings: Option<Arc<Holdings>>,
    /// The config file a reload reads again (`None`: the fleet cannot be reloaded).
    pub source: Option<std::path::PathBuf>,
}

/// The whole fleet and what it needs to poll.
pub struct Fleet {
    /// The servers; a reload swaps in a new inventory ([`inventory`]).
    inventory: parking_lot::RwLock<Arc<Inventory>>,
    /// Where the loops run, once started: a reload starts new servers' loops there.
    running: parking_lot::Mutex<Option<(CancellationToken, TaskTracker)>>,
    first_poll_within: std::time::Duration,
    source: Option<std::path::PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    rules: Rules,
    fetcher: Arc<dyn Fetch>,
    writer: Writer,
    timebase: Timebase,
    in_flight: Semaphore,
    events: broadcast::Sender<FleetEvent>,
    clock: ClockKeeper,
    stats: PollStats,
    holdings: Option<Arc<Holdings>>,
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

/// What the poll path decided, for `apply`.
struct Decided {
    level: LevelState,
    change: Option<Transition>,
    /// When the server is polled next.
    next: DateTime<Utc>,
    /// The parents it is unreachable behind.
    behind: Option<String>,
}

/// What applying a poll changed, for the record and the announcements.
struct Applied {
    facts: ServerFacts,
    facts_changed: bool,
    transition: Option<TransitionRow>,
    compilation: Option<ChangedCompilation>,
    /// The acknowledgement this poll ended: when it was given, and why it ended.
    ack_ended: Option<(DateTime<Utc>, &'static str)>,
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
            servers.push(Arc::new(Server::new(config, phase, status)));
        }
        let (events, _) = broadcast::channel(1024);
        Fleet {
            inventory: parking_lot::RwLock::new(Arc::new(Inventory::new(servers))),
            running: parking_lot::Mutex::new(None),
            first_poll_within: window,
            source: options.source,
            reloading: tokio::sync::Mutex::new(()),
            rules,
            fetcher,
            writer,
            timebase: options.timebase,
            in_flight: Semaphore::new(options.max_in_flight.max(1)),
            events,
            clock: ClockKeeper::new(options.clock, options.timebase),
            stats: PollStats::default(),
            holdings: options.holdings,
        }
    }

    /// The servers now (a reload may replace them; this set stays as it is).
    pub fn servers(&self) -> Arc<Inventory> {
        self.inventory.read().clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Server>> {
        self.inventory.read().get(name).cloned()
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
        let mut summary = self.with_node(server.summary());
        summary.servers_behind = self.servers_behind(server, summary.facts.state);
        summary
    }

    /// Every server as the API shows it, in config order: a copy of the whole fleet's
    /// state (tens of megabytes at 50,000 servers), so answers build it beside the polls
    /// (`web::whole_fleet`).
    pub fn summaries(&self) -> Vec<ServerSummary> {
        self.servers().iter().map(|s| self.summary(s)).collect()
    }

    /// The cluster this node belongs to, when the fleet is shared.
    pub fn holdings(&self) -> Option<&Arc<Holdings>> {
        self.holdings.as_ref()
    }

    /// The node polling `server` when it is not this one (shared fleet only).
    pub fn polled_elsewhere(&self, server: &Server) -> Option<String> {
        let h = self.holdings.as_ref()?;
        if h.holds(&server.config.name) {
            return None;
        }
        Some(h.owner(&server.config.name).unwrap_or_else(|| "no node yet".to_string()))
    }

    fn with_node(&self, mut summary: ServerSummary) -> ServerSummary {
        if let Some(h) = &self.holdings {
            summary.node = h.owner(&summary.facts.name);
        }
        summary
    }

    /// The server as the API shows it with its latest compilation as received this run
    /// (`None` before its first answer), both from the same poll.
    pub fn detail(&self, server: &Server) -> (ServerSummary, Option<bytes::Bytes>) {
        let (summary, latest) = server.read(|s| (s.summary(), s.latest.clone()));
        let mut summary = self.with_node(summary);
        summary.servers_behind = self.servers_behind(server, summary.facts.state);
        (summary, latest.and_then(|p| p.unpack(&server.config.name)))
    }

    /// How many servers are behind `server` (in `state`): while it is unreachable, its
    /// children whose every parent is unreachable, and theirs in turn (SPEC 13).
    fn servers_behind(&self, server: &Server, state: ServerState) -> u32 {
        if state != ServerState::Unreachable || !self.has_children(server) {
            return 0;
        }
        let inv = self.servers();
        let Some(start) = inv.index(&server.config.name) else { return 0 };
        if !inv.has_children(start) {
            return 0;
        }
        let unreachable = |i: usize| inv[i].read(|s| s.facts.state == ServerState::Unreachable);
        let mut behind = std::collections::HashSet::new();
        let mut todo = vec![start];
        while let Some(p) = todo.pop() {
            for &c in inv.children(p) {
                let all_parents_down =
                    inv[c].config.parents.iter().all(|name| {
                        inv.index(name).is_some_and(|i| i == start || behind.contains(&i) || unreachable(i))
                    });
                if all_parents_down && behind.insert(c) {
                    todo.push(c);
                }
            }
        }
        behind.len() as u32
    }

    /// The parents `server` is behind, judged at its failed poll that started at
    /// `started`: when every parent is unreachable, their names. A parent not polled since
    /// is polled first (once, however many of its children ask: polls of a server never
    /// overlap, and the next child finds it fresh).
    fn parents_down<'a>(
        &'a self,
        server: &'a Server,
        started: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async move {
            let parents = &server.config.parents;
            if parents.is_empty() {
                return None;
            }
            for name in parents {
                let parent = self.get(name)?;
                let parent = parent.as_ref();
                let stale = parent.read(|s| s.facts.last_poll_at.is_none_or(|at| at < started));
                if stale {
                    self.poll(parent).await;
                }
                if parent.read(|s| s.facts.state) != ServerState::Unreachable {
                    return None;
                }
            }
            Some(parents.join(", "))
        })
    }

    /// Every server's latest compilation received this run, for the store at shutdown.
    pub fn latest_compilations(&self) -> Vec<(String, bytes::Bytes)> {
        self.servers()
            .iter()
            .filter_map(|s| Some((s.config.name.clone(), s.read(|st| st.latest.clone())?.unpack(&s.config.name)?)))
            .collect()
    }

    /// Polls `server` now, applies the result and records it; answers the server as it
    /// now stands.
    pub async fn poll(&self, server: &Server) -> ServerSummary {
        // Boxed: the poll's state (HTTP client, JSON, store) is kilobytes, and an idle
        // server's loop would otherwise carry it between polls.
        stats::Busy::new(Box::pin(self.poll_once(server)), &self.stats.phases.poll).await
    }

    async fn poll_once(&self, server: &Server) -> ServerSummary {
        let _one_at_a_time = server.polling.lock().await;
        let started = self.timebase.wall_now();
        let (result, took) = self.ask(server).await;
        let at = self.timebase.wall_now();
        let parsing = std::time::Instant::now();
        let mut verdict = verdict::judge(result);
        stats::add_since(&self.stats.phases.parse, parsing);
        let kept = self.keep_clock(server, &verdict, at).await;
        if let Some(d) = kept.deficiency {
            verdict.add(d);
        }
        self.stats.polled(verdict.state, took);
        // Reachability is judged at the poll: a failed poll asks whether every parent is
        // unreachable too; then the server is behind them and its level stays.
        let behind = match verdict.state {
            ServerState::Unreachable => self.parents_down(server, started).await,
            _ => None,
        };
        let (before, was_unreachable) =
            server.read(|s| (self.level_state(&s.facts), s.facts.state == ServerState::Unreachable));
        let (level, change) = match behind {
            Some(_) => (before, None),
            None => match self.rules.decide(before, &verdict.deficiencies) {
                (level, None) => {
                    let since = server.read(|s| s.facts.level_since).unwrap_or(at);
                    match self.rules.escalate(level, !verdict.deficiencies.is_empty(), since, at) {
                        Some((up, t)) => (up, Some(t)),
                        None => (level, None),
                    }
                }
                moved => moved,
            },
        };
        let next = self.next_poll(server, level, at, kept.verify_soon);
        let poll = self.poll_row(at, &verdict, level);
        let Applied { facts, facts_changed, transition, compilation, ack_ended } =
            self.apply(server, at, verdict, Decided { level, change, next, behind });
        if was_unreachable && facts.state != ServerState::Unreachable {
            self.wake_children_behind(server);
        }
        let record = PollRecord {
            facts,
            facts_changed,
            poll,
            transition: transition.clone(),
            compilation,
            clock_corrections: kept.rows.clone(),
        };
        self.record(server, record).await;
        if let Some((given, why)) = ack_ended {
            tracing::info!(server = %server.config.name, why, "acknowledgement ended");
            if let Err(e) = self.writer.record_ack(&server.config.name, AckChange::Ended { at: given }).await {
                tracing::error!(server = %server.config.name, error = %e, "the end of an acknowledgement not stored");
            }
        }
        self.announce(server, transition, kept.rows)
    }

    /// A parent answers again: the children behind it are polled at once, not at their
    /// next slot, so they leave `behind` (or show their own problem) within seconds.
    fn wake_children_behind(&self, server: &Server) {
        let inv = self.servers();
        let Some(i) = inv.index(&server.config.name) else { return };
        for &c in inv.children(i) {
            let child = &inv[c];
            if child.read(|s| s.facts.behind.is_some()) {
                tracing::info!(server = %child.config.name, parent = %server.config.name, "parent answers again: polling now");
                child.poll_soon.notify_one();
            }
        }
    }

    /// Acknowledges the server's current problem for `by` (SPEC 13): notifications about
    /// it stop until a poll finds it recovered or worse ([`ack`]). Taken between polls, so
    /// the acknowledgement is judged against the problem the operator saw.
    pub async fn acknowledge(&self, server: &Server, by: &str, comment: &str) -> Result<Ack, AckError> {
        let _between_polls = server.polling.lock().await;
        let at = self.timebase.wall_now();
        let name = &server.config.name;
        let ack = server.update(|s| {
            let f = &s.facts;
            let ack = ack::acknowledge(name, f.state.as_str(), &f.level, &f.deficiencies, by, at, comment)?;
            s.facts.ack = Some(Box::new(ack.clone()));
            Ok::<_, AckError>(ack)
        })?;
        tracing::info!(server = %name, by, comment, "problem acknowledged");
        if let Err(e) = self.writer.record_ack(name, AckChange::Set(ack.clone())).await {
            tracing::error!(server = %name, error = %e, "acknowledgement not stored");
        }
        let _ = self.events.send(FleetEvent::Polled(self.summary(server)));
        Ok(ack)
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
        let result = stats::Busy::new(self.fetcher.fetch(&server.config), &self.stats.phases.fetch).await;
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
        LevelState {
            level: self.rules.index_of(&facts.level).unwrap_or(0),
            calm_streak: facts.calm_streak,
            escalated: facts.escalated,
        }
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
    fn apply(&self, server: &Server, at: DateTime<Utc>, v: Verdict, decided: Decided) -> Applied {
        let Decided { level, change, next, behind } = decided;
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
                || f.last_error != error
                || f.behind != behind
                || f.escalated != level.escalated
                || f.level_since.is_none();
            let before = (f.state, f.last_error.take());
            if f.level != *level_name || f.level_since.is_none() {
                f.level.clone_from(level_name);
                f.level_since = Some(at);
            }
            f.calm_streak = level.calm_streak;
            f.escalated = level.escalated;
            f.state = v.state;
            f.deficiencies = v.deficiencies;
            f.behind = behind;
            let ack_ended =
                f.ack.as_ref().and_then(|a| Some((a.at, ack::ends(a, &f.deficiencies, level.level, &self.rules)?)));
            if ack_ended.is_some() {
                f.ack = None;
            }
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
            let applied = Applied { facts: s.facts.clone(), facts_changed, transition: None, compilation, ack_ended };
            (before.0, before.1, applied)
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
        let summary = self.summary(server);
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

    /// Shows `server` as the node polling it last stored it (shared fleet).
    fn follow(&self, server: &Server, h: &Holdings) {
        let Some(stored) = h.stored(&server.config.name) else { return };
        server.update(|s| {
            if s.facts != stored.facts {
                s.facts = stored.facts;
                s.facts.address = server.config.address.clone();
                s.substance = stored.substance;
            }
            s.next_poll_at = None;
        });
    }

    /// Takes `server` over: its stored facts and the notification memory for the notifier.
    /// A server whose node is gone is polled at once (SPEC section 12); one handed over by
    /// a live node keeps its slot; one never polled keeps its first-poll plan.
    fn adopt(&self, server: &Server, h: &Holdings) {
        let name = &server.config.name;
        let stored = h.stored(name);
        let now = self.timebase.wall_now();
        let orphaned = h.take_orphaned(name);
        server.update(|s| {
            if orphaned {
                s.next_poll_at = Some(now);
            }
            if let Some(stored) = stored {
                s.facts_given = stored.facts.address == server.config.address;
                s.facts = stored.facts;
                s.facts.address = server.config.address.clone();
                s.substance = stored.substance;
            }
            s.clock = ClockState::default();
        });
        tracing::info!(server = %name, node = %h.node, "taking over polling");
        let _ = self.events.send(FleetEvent::Adopted { server: name.clone(), notify: h.take_notify(name) });
    }

    /// Starts one loop per server; they stop when `stop` is cancelled (and each when its
    /// server is removed or changed by a reload).
    pub fn start(self: &Arc<Self>, stop: &CancellationToken, tracker: &TaskTracker) {
        *self.running.lock() = Some((stop.clone(), tracker.clone()));
        for server in self.servers().iter() {
            tracker.spawn(self.clone().run_loop(server.clone(), stop.clone()));
        }
    }

    /// Whether any server names `server` among its parents (cheap: no inventory walk).
    fn has_children(&self, server: &Server) -> bool {
        let inv = self.inventory.read();
        inv.index(&server.config.name).is_some_and(|i| inv.has_children(i))
    }

    /// Reads the config file again and applies its servers (SPEC 13): diffed by name, see
    /// [`inventory`]. An invalid file changes nothing and answers why. Settings other than
    /// the servers take effect at the next restart; the report names those that changed.
    pub async fn reload_file(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let Some(path) = &self.source else { return Err(ReloadError::NoFile) };
        let config = crate::config::PollerConfig::load(path).map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let mut report = self.reload(config.servers);
        if config.rules != self.rules {
            report.restart_needed.push("level, rule, recover_after".into());
        }
        tracing::info!(
            added = report.added.len(),
            removed = report.removed.len(),
            changed = report.changed.len(),
            unchanged = report.unchanged,
            restart_needed = %report.restart_needed.join("; "),
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Records a reload in the history of each server it added, changed or removed, as
    /// done by `by` (the API user, or `SIGHUP`).
    pub async fn audit_reload(&self, report: &ReloadReport, by: &str) {
        let at = self.timebase.wall_now();
        for (names, what) in [(&report.added, "added"), (&report.changed, "changed"), (&report.removed, "removed")] {
            for name in names {
                let row = crate::model::ActionRow {
                    at,
                    by: by.to_string(),
                    action: "reload".into(),
                    detail: format!("{what} by a reload of the configuration"),
                };
                if let Err(e) = self.writer.record_action(name, row).await {
                    tracing::error!(server = %name, error = %e, "operator action not stored");
                }
            }
        }
    }

    /// Applies a new list of servers: diffed by name (see [`inventory`]).
    pub fn reload(self: &Arc<Self>, configs: Vec<ServerConfig>) -> ReloadReport {
        let old = self.servers();
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        let phases = crate::schedule::phases(&names);
        let now = self.timebase.wall_now();
        let first = self.rules.level(0).name.clone();
        let mut report = ReloadReport::default();
        let mut servers = Vec::with_capacity(configs.len());
        let mut start = Vec::new();
        for (config, phase) in configs.into_iter().zip(phases) {
            let first_at = first_poll(phase, &self.rules, self.first_poll_within, now);
            match old.get(&config.name) {
                Some(s) if s.config == config => {
                    servers.push(s.clone());
                    report.unchanged += 1;
                }
                Some(s) => {
                    s.stop.cancel();
                    let mut status = s.read(|st| st.clone());
                    status.facts.address.clone_from(&config.address);
                    status.facts_given = false;
                    status.next_poll_at = Some(first_at);
                    tracing::info!(server = %config.name, "server changed: its loop restarts");
                    report.changed.push(config.name.clone());
                    let server = Arc::new(Server::new(config, s.phase, status));
                    start.push(server.clone());
                    servers.push(server);
                }
                None => {
                    let status = Status {
                        facts: ServerFacts::new(&config.name, &config.address, &first),
                        next_poll_at: Some(first_at),
                        clock: ClockState::default(),
                        substance: None,
                        latest: None,
                        facts_given: false,
                    };
                    tracing::info!(server = %config.name, first_poll_at = %first_at, "server added");
                    report.added.push(config.name.clone());
                    let server = Arc::new(Server::new(config, phase, status));
                    start.push(server.clone());
                    servers.push(server);
                }
            }
        }
        let kept: std::collections::HashSet<&str> = servers.iter().map(|s| s.config.name.as_str()).collect();
        for s in old.iter().filter(|s| !kept.contains(s.config.name.as_str())) {
            s.stop.cancel();
            tracing::info!(server = %s.config.name, "server removed: no longer polled (its history is kept)");
            report.removed.push(s.config.name.clone());
        }
        if let Some(h) = &self.holdings {
            h.set_inventory(servers.iter().map(|s| s.config.name.clone()).collect());
        }
        *self.inventory.write() = Arc::new(Inventory::new(servers));
        if let Some((stop, tracker)) = self.running.lock().clone() {
            for server in start {
                tracker.spawn(self.clone().run_loop(server, stop.clone()));
            }
        }
        report
    }

    async fn run_loop(self: Arc<Self>, server: Arc<Server>, stop: CancellationToken) {
        // The slot of the last scheduled poll: a plan is never that slot again, so the
        // loop cannot poll twice in one slot whatever a poll left in the state.
        let mut polled: Option<DateTime<Utc>> = None;
        let mut changes = self.holdings.as_ref().map(|h| h.subscribe());
        let mut held = self.holdings.is_none();
        loop {
            if let (Some(h), Some(changes)) = (&self.holdings, changes.as_mut()) {
                if !h.holds(&server.config.name) {
                    held = false;
                    // Another node polls it (or nobody may yet): show what it stored.
                    self.follow(&server, h);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = changes.changed() => continue,
                    }
                }
                if !held {
                    // Just taken over: start from what the last node stored, poll at once.
                    held = true;
                    polled = None;
                    self.adopt(&server, h);
                }
            }
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
                _ = server.stop.cancelled() => return,
                _ = server.reschedule.notified() => continue,
                _ = server.poll_soon.notified() => {}
                _ = tokio::time::sleep_until(self.timebase.instant(due)) => {
                    self.stats.started_late(self.timebase.wall_now() - due);
                    polled = Some(due);
                }
            }
            if self.holdings.as_ref().is_some_and(|h| !h.holds(&server.config.name)) {
                continue; // given up (or the database lost) while waiting
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = server.stop.cancelled() => return,
                _ = self.poll(&server) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
