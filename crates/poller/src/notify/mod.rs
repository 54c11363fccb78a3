//! Notifications (SPEC section 5): level/state changes, recoveries and clock corrections,
//! told through webhooks, email and Prometheus Alertmanager, with flap damping.
//!
//! How it flows: the [`Notifier`] task reads the fleet's broadcast events (never blocking a
//! poll: a slow reader only loses events, and the next poll of each server brings it up to
//! date), decides with [`damping::Damping`] what to tell, *claims* the notice in the store
//! under its [`key`] (saving the decision in the same transaction), and queues it on every
//! channel only if that claim inserted the key. Each channel is its own task delivering in
//! order, each attempt bounded by its `timeout`, retried `retries` times with doubling
//! backoff, then given up and logged. Channel health (sent, failed, last error) is kept in memory for the dashboard,
//! the API and `/metrics`, and every change of it is broadcast for live views.
//!
//! Rules it keeps: a notice is sent at most once per key, cluster-wide and across restarts
//! (SPEC sections 5 and 12): the store refuses a second claim of a key, and a claim that
//! fails (the store unreachable) sends nothing and takes the decision back, so whichever
//! node polls the server next decides it again from the stored memory, under the same key.
//! A notice waits for the writer's own commit of the poll it tells of before it is
//! claimed (it never forces a commit), so a crash never leaves a notice about a change the
//! history lost. Memory that decided nothing (flap history) is saved within
//! [`MEMORY_SAVE_EVERY`] and at the stop, not at each change.
//! A notice still being retried when the poller stops is lost, never repeated; receivers
//! get the key (webhook `key` and `Idempotency-Key`, email `X-Rollcall-Notice`) to drop
//! a repeat of an attempt whose answer was lost. A full channel queue drops the notice
//! and counts it failed rather than waiting; one failing channel never delays another;
//! the log says "sent" only for a channel that delivered (with no channel configured, a
//! notice is logged as "notice (no channel configured)").

pub mod alertmanager;
pub mod damping;
pub mod downtimes;
pub mod email;
pub mod key;
pub mod template;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rollcall_protocol::Deficiency;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{NotifyConfig, NotifyKind};
use crate::fleet::FleetEvent;
use crate::model::{Ack, ClockCorrectionRow, Downtime, NoticeClaim, NotifyRow, ServerState};
use crate::store::SharedStore;
pub use damping::{Condition, Damping, Memory, NoticeKind};
pub use downtimes::Downtimes;

/// One thing to tell about one server. Webhooks receive exactly this as JSON.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Notice {
    /// The notice's key ([`key`]): the same on every poller of a cluster for the same
    /// event, and never on two notices sent. Also the webhook's `Idempotency-Key` header
    /// and the email's `X-Rollcall-Notice` header.
    pub key: String,
    pub kind: NoticeKind,
    pub server: String,
    /// The poller that claimed and sent it (its `node`; default the host name).
    pub node: String,
    pub at: DateTime<Utc>,
    /// The condition now (for `clock`: the server's condition when the order was sent).
    pub level: String,
    pub state: ServerState,
    pub flapping: bool,
    /// The condition told before this notice.
    pub previous: Condition,
    #[schema(value_type = Vec<crate::model::DeficiencyDoc>)]
    pub deficiencies: Vec<Deficiency>,
    /// Why the level last changed, when a level change led to this notice.
    pub reason: Option<String>,
    /// The clock order, for `clock` notices.
    pub clock: Option<ClockCorrectionRow>,
    /// One line for people: subject of the email, summary of the alert.
    pub summary: String,
    /// Since when the server has been other than fine, as far as this poller has seen it
    /// (`null` when fine).
    pub deficient_since: Option<DateTime<Utc>>,
    /// The acknowledgement in force, if any (a notice that ends one has none).
    pub ack: Option<Ack>,
    /// The downtime that just ended, for the one notice sent when a server is still not
    /// fine at the end of its downtime.
    pub downtime: Option<Downtime>,
    /// The server's dashboard page (`public_url` + `/servers/NAME`), when `public_url` is set.
    pub url: Option<String>,
    /// How many servers are unreachable behind this one (their own notices are not sent).
    pub servers_behind: u32,
}

impl Notice {
    /// The condition this notice tells.
    pub fn condition(&self) -> Condition {
        Condition { level: self.level.clone(), state: self.state, flapping: self.flapping }
    }
}

/// A channel's health, as the dashboard and `GET /api/v1/notifications` show it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChannelStatus {
    pub name: String,
    pub kind: String,
    /// Notices delivered.
    pub sent: u64,
    /// Notices given up after every retry (or dropped because the queue was full).
    pub failed: u64,
    /// Delivery attempts that failed, retries included.
    pub attempt_failures: u64,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// True while the last attempt failed and nothing has been delivered since.
    pub failing: bool,
}

/// Delivery failed; the message says what the receiver or the network said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Most notices waiting per channel; past this, new ones are dropped and counted failed.
const QUEUE: usize = 1024;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

enum Sender {
    Webhook(webhook::Webhook),
    Email(email::Email),
    Alertmanager(alertmanager::Alertmanager),
}

impl Sender {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        match self {
            Sender::Webhook(w) => w.deliver(notice).await,
            Sender::Email(e) => e.deliver(notice).await,
            Sender::Alertmanager(a) => a.deliver(notice).await,
        }
    }
}

struct Channel {
    config: NotifyConfig,
    sender: Sender,
    status: Mutex<ChannelStatus>,
    queue: mpsc::Sender<Arc<Notice>>,
}

/// The notifier: decides, persists and hands notices to the channels.
pub struct Notifier {
    channels: Vec<Arc<Channel>>,
    status_events: broadcast::Sender<ChannelStatus>,
    downtimes: Arc<Downtimes>,
}

/// Where a notifier gets what it needs from the rest of the poller.
pub struct NotifierSetup {
    pub channels: Vec<NotifyConfig>,
    pub damping: Damping,
    pub first_level: String,
    pub store: SharedStore,
    pub events: broadcast::Receiver<FleetEvent>,
    /// The dashboard's address as people reach it (`public_url`), for links in notices.
    pub public_url: Option<String>,
    /// The store writer the fleet records polls through: a notice waits until the poll it
    /// tells of is stored (`None`: it does not wait).
    pub writer: Option<crate::store::Writer>,
    /// This poller's `node`, named in its claims and notices.
    pub node: String,
}

impl Notifier {
    /// Builds the channels, loads what was told before and starts the tasks; they stop
    /// when `stop` is cancelled.
    pub async fn start(
        setup: NotifierSetup,
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Notifier>, crate::store::StoreError> {
        let memory: HashMap<String, Memory> =
            setup.store.load_notify_memory(None).await?.into_iter().map(Memory::from_row).collect();
        let downtimes = Arc::new(Downtimes::new(setup.store.open_downtimes().await?));
        let (status_events, _) = broadcast::channel(256);
        let mut channels = Vec::new();
        let mut queues = Vec::new();
        for config in setup.channels {
            let sender = match config.kind {
                NotifyKind::Webhook => Sender::Webhook(webhook::Webhook::new(&config)),
                NotifyKind::Email => Sender::Email(email::Email::new(&config)),
                NotifyKind::Alertmanager => {
                    Sender::Alertmanager(alertmanager::Alertmanager::new(&config, &memory, &setup.first_level))
                }
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            let status =
                ChannelStatus { name: config.name.clone(), kind: config.kind.as_str().into(), ..Default::default() };
            let ch = Arc::new(Channel { config, sender, status: Mutex::new(status), queue: tx });
            queues.push((ch.clone(), rx));
            channels.push(ch);
        }
        let notifier = Arc::new(Notifier { channels, status_events, downtimes: downtimes.clone() });
        for (ch, rx) in queues {
            tracker.spawn(notifier.clone().deliver_loop(ch, rx, stop.clone()));
        }
        let decider = Decider {
            damping: setup.damping,
            first_level: setup.first_level,
            store: setup.store,
            writer: setup.writer,
            memory,
            unsaved: HashMap::new(),
            held: std::collections::VecDeque::new(),
            saved_at: tokio::time::Instant::now(),
            reasons: HashMap::new(),
            notifier: notifier.clone(),
            downtimes,
            public_url: setup.public_url,
            node: setup.node,
            since: HashMap::new(),
            silenced: HashMap::new(),
        };
        tracker.spawn(decider.run(setup.events, stop.clone()));
        Ok(notifier)
    }

    /// Every channel's health now.
    pub fn channels(&self) -> Vec<ChannelStatus> {
        self.channels.iter().map(|c| c.status.lock().clone()).collect()
    }

    /// The downtimes in force or to come (the API adds and removes them here too).
    pub fn downtimes(&self) -> &Arc<Downtimes> {
        &self.downtimes
    }

    /// Channel health changes, for live views.
    pub fn subscribe(&self) -> broadcast::Receiver<ChannelStatus> {
        self.status_events.subscribe()
    }

    /// Hands a notice to every channel's queue. The log says what happened to it here and
    /// nothing more: "queued" for channels (each says "sent" only once delivered), "no
    /// channel configured" when there is none. Never "sent" ahead of a delivery.
    fn enqueue(&self, notice: Notice) {
        if self.channels.is_empty() {
            tracing::info!(server = %notice.server, kind = notice.kind.as_str(), summary = %notice.summary, "notice (no channel configured)");
            return;
        }
        tracing::info!(server = %notice.server, kind = notice.kind.as_str(), channels = self.channels.len(), summary = %notice.summary, "notice queued");
        let notice = Arc::new(notice);
        for ch in &self.channels {
            if let Err(e) = ch.queue.try_send(notice.clone()) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full: receiver too slow",
                    mpsc::error::TrySendError::Closed(_) => "channel stopped",
                };
                tracing::error!(server = %notice.server, channel = %ch.config.name, kind = notice.kind.as_str(), why, "notice dropped");
                self.update(ch, |s| {
                    s.failed += 1;
                    s.last_error = Some(format!("notice dropped: {why}"));
                    s.last_error_at = Some(Utc::now());
                    s.failing = true;
                });
            }
        }
    }

    fn update(&self, ch: &Channel, f: impl FnOnce(&mut ChannelStatus)) {
        let snapshot = {
            let mut s = ch.status.lock();
            f(&mut s);
            s.clone()
        };
        let _ = self.status_events.send(snapshot);
    }

    async fn deliver_loop(
        self: Arc<Self>,
        ch: Arc<Channel>,
        mut rx: mpsc::Receiver<Arc<Notice>>,
        stop: CancellationToken,
    ) {
        let mut refresh = tokio::time::interval(ch.config.resend);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let notice = tokio::select! {
                _ = stop.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
                _ = refresh.tick() => {
                    // Alertmanager forgets alerts not re-sent within its resolve_timeout.
                    if let Sender::Alertmanager(a) = &ch.sender {
                        if let Err(e) = a.refresh().await {
                            tracing::warn!(channel = %ch.config.name, error = %e, "cannot re-send firing alerts");
                        }
                    }
                    continue;
                }
            };
            self.deliver_with_retries(&ch, &notice, &stop).await;
        }
    }

    async fn deliver_with_retries(&self, ch: &Channel, notice: &Notice, stop: &CancellationToken) {
        let c = &ch.config;
        let mut wait = c.backoff;
        for attempt in 0..=c.retries {
            let result = match tokio::time::timeout(c.timeout, ch.sender.deliver(notice)).await {
                Ok(r) => r,
                Err(_) => Err(DeliveryError(format!("no answer within {:?}", c.timeout))),
            };
            match result {
                Ok(()) => {
                    tracing::info!(server = %notice.server, channel = %c.name, kind = notice.kind.as_str(), attempt, "notice sent");
                    self.update(ch, |s| {
                        s.sent += 1;
                        s.last_sent_at = Some(Utc::now());
                        s.failing = false;
                    });
                    return;
                }
                Err(e) => {
                    let last = attempt == c.retries;
                    tracing::warn!(server = %notice.server, channel = %c.name, kind = notice.kind.as_str(), attempt, error = %e, gave_up = last, "notice not delivered");
                    self.update(ch, |s| {
                        s.attempt_failures += 1;
                        s.last_error = Some(e.to_string());
                        s.last_error_at = Some(Utc::now());
                        s.failing = true;
                        if last {
                            s.failed += 1;
                        }
                    });
                    if last {
                        return;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// How long a change of memory that decided nothing (a flapping server's flap history)
/// may wait to be saved; what was told is saved before its notice goes out. A crash loses
/// at most this much flap history, never what was told. Saving each flip at once was a
/// commit per flip: most of the commits at 1,000 polls/s with 1 % of servers flapping.
pub const MEMORY_SAVE_EVERY: Duration = Duration::from_secs(5);

/// A notice decided and waiting for the writer to commit the poll it tells of.
struct Held {
    /// The [`Writer::mark`](crate::store::Writer::mark) the poll's record is under
    /// (`None`: no writer, nothing to wait for).
    mark: Option<u64>,
    notice: Notice,
    /// The memory its claim saves.
    memory: NotifyRow,
    decision: damping::Decision,
}

/// How often held notices look whether the store has started failing meanwhile.
const HOLD_CHECK: Duration = Duration::from_secs(1);

/// The task that turns fleet events into notices.
struct Decider {
    damping: Damping,
    first_level: String,
    store: SharedStore,
    writer: Option<crate::store::Writer>,
    memory: HashMap<String, Memory>,
    /// Memory the store refused, by server: retried with the next change of any server,
    /// so a store fault never loses what was told (only the newest row of a server counts).
    unsaved: HashMap<String, crate::model::NotifyRow>,
    /// Notices waiting for the writer to commit the poll they tell of, with the
    /// [`Writer::mark`](crate::store::Writer::mark) that poll's record is under, in order.
    held: std::collections::VecDeque<Held>,
    /// When memory was last saved without a decision to save (see [`MEMORY_SAVE_EVERY`]).
    saved_at: tokio::time::Instant,
    /// The reason of each server's latest level change, until its poll event tells it.
    reasons: HashMap<String, String>,
    notifier: Arc<Notifier>,
    downtimes: Arc<Downtimes>,
    public_url: Option<String>,
    /// This poller's `node`.
    node: String,
    /// Since when each server that is not fine has been so (fine servers have no entry).
    since: HashMap<String, DateTime<Utc>>,
    /// Servers last seen during a downtime: their deficiencies and whether their problem
    /// was acknowledged, for the notice at its end (none for an acknowledged problem).
    silenced: HashMap<String, (Vec<Deficiency>, bool)>,
}

impl Decider {
    async fn run(mut self, mut events: broadcast::Receiver<FleetEvent>, stop: CancellationToken) {
        // Downtimes that ended while the poller was stopped are handled at once.
        self.end_downtimes().await;
        let mut committed = self.writer.as_ref().map(|w| w.committed());
        loop {
            let next_end = self.downtimes.next_end();
            let commit = async {
                match committed.as_mut() {
                    Some(c) if !self.held.is_empty() => {
                        // A store that fails commits nothing: its notices are not held back.
                        let _ = tokio::time::timeout(HOLD_CHECK, c.changed()).await;
                    }
                    _ => std::future::pending().await,
                }
            };
            let end = async {
                match next_end {
                    Some(t) => tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                _ = stop.cancelled() => {
                    // Held notices were never told: their decisions are not saved, so the
                    // next start decides them again.
                    self.save_memory().await;
                    return;
                }
                e = events.recv() => e,
                _ = self.downtimes.changed.notified() => {
                    self.end_downtimes().await;
                    continue;
                }
                _ = end => {
                    self.end_downtimes().await;
                    continue;
                }
                _ = commit => {
                    self.release().await;
                    continue;
                }
            };
            match event {
                Ok(e) => self.handle(e).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // The next poll of each server compares with what was told: nothing is
                    // lost but the intermediate steps.
                    tracing::warn!(missed = n, "notifier fell behind the fleet's events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn handle(&mut self, event: FleetEvent) {
        match event {
            FleetEvent::Transition { server, transition } => {
                self.reasons.insert(server, transition.reason);
            }
            FleetEvent::Adopted { server, notify } => {
                // What the node that polled it last told, so nothing is told twice.
                match notify {
                    Some(row) => {
                        let (name, mem) = Memory::from_row(row);
                        self.memory.insert(name, mem);
                    }
                    None => {
                        self.memory.remove(&server);
                    }
                }
            }
            FleetEvent::ClockCorrection { server, correction } => {
                if let Some(d) = self.downtimes.covering(&server, correction.at) {
                    tracing::info!(server = %server, downtime = d.id, outcome = %correction.outcome, "clock notice silenced: downtime");
                    return;
                }
                let mem = self.memory.get(&server).cloned().unwrap_or_else(|| Memory::fresh(&self.first_level));
                let summary = format!(
                    "{server}: clock {} (offset {:.1} ms, correction {:.1} ms): {}",
                    correction.outcome, correction.offset_ms, correction.correction_ms, correction.detail
                );
                let told = mem.told;
                let deficient_since = self.since.get(&server).copied();
                let url = self.url(&server);
                let notice = Notice {
                    key: key::clock(&server, correction.at),
                    kind: NoticeKind::Clock,
                    server,
                    node: self.node.clone(),
                    at: correction.at,
                    level: told.level.clone(),
                    state: told.state,
                    flapping: told.flapping,
                    previous: told,
                    deficiencies: Vec::new(),
                    reason: None,
                    clock: Some(correction),
                    summary,
                    deficient_since,
                    ack: None,
                    downtime: None,
                    url,
                    servers_behind: 0,
                };
                self.claim(notice, None).await;
            }
            FleetEvent::Polled(s) => {
                if let Some(parents) = &s.facts.behind {
                    // Its parents' notices count it; its own failed polls tell nothing.
                    tracing::debug!(server = %s.facts.name, behind = %parents, "unreachable behind its parents: nothing told");
                    return;
                }
                let at = s.facts.last_poll_at.unwrap_or_else(Utc::now);
                // Looked up before inserting: a poll of a known server allocates nothing here.
                if !self.memory.contains_key(&s.facts.name) {
                    self.memory.insert(s.facts.name.clone(), Memory::fresh(&self.first_level));
                }
                let Some(mem) = self.memory.get_mut(&s.facts.name) else { return };
                let (decision, dirty) = self.damping.observe(mem, &s.facts.level, s.facts.state, at, &self.first_level);
                let reason = if self.reasons.is_empty() { None } else { self.reasons.remove(&s.facts.name) };
                // What is told must be in the history first: the notice waits until the
                // writer has committed this poll (and its transition), so a crash between
                // the two never leaves a notice about a change the history lost. It waits
                // for the writer's own commit, never forcing one: a commit per notice was
                // most of the commits when many servers changed at once. Its decision is
                // saved by its claim, after the hold: a crash during the hold loses
                // nothing, since the next start decides it again. Flap history alone
                // waits for the next save.
                let hold = self.writer.as_ref().map(|w| w.mark());
                let told = mem.told.clone();
                if dirty {
                    self.unsaved.insert(s.facts.name.clone(), mem.to_row(&s.facts.name));
                    if decision.is_none() && self.saved_at.elapsed() >= MEMORY_SAVE_EVERY {
                        self.save_memory().await;
                    }
                }
                let name = &s.facts.name;
                if told.is_fine(&self.first_level) {
                    self.since.remove(name);
                } else if !self.since.contains_key(name) {
                    self.since.insert(name.clone(), at);
                }
                let downtime = self.downtimes.covering(name, at);
                if downtime.is_some() {
                    self.silenced.insert(name.clone(), (s.facts.deficiencies.clone(), s.facts.ack.is_some()));
                }
                let silenced = match (&decision, downtime, &s.facts.ack) {
                    (None, _, _) => true,
                    (Some(d), Some(dt), _) => {
                        tracing::info!(server = %name, kind = d.kind.as_str(), downtime = dt.id, "notice silenced: downtime");
                        true
                    }
                    (Some(d), None, Some(ack)) => {
                        tracing::info!(server = %name, kind = d.kind.as_str(), by = %ack.by, "notice silenced: acknowledged");
                        true
                    }
                    (Some(_), None, None) => false,
                };
                let decided = decision.is_some();
                let Some(d) = decision.filter(|_| !silenced) else {
                    if decided {
                        // Nothing to send, but what was silenced is kept now: a restart
                        // never tells it again. (Flap history alone waits, above.)
                        self.save_memory().await;
                    }
                    return;
                };
                let Some(mem) = self.memory.get_mut(name) else { return };
                mem.seq += 1;
                let row = mem.to_row(name);
                let mut summary = summary(d.kind, name, &told, &s.facts.deficiencies);
                if s.servers_behind > 0 {
                    summary += &format!(" ({} behind it)", servers_count(s.servers_behind));
                }
                let name = s.facts.name;
                let notice = Notice {
                    key: key::told(&name, row.seq),
                    kind: d.kind,
                    server: name.clone(),
                    node: self.node.clone(),
                    at,
                    level: told.level,
                    state: told.state,
                    flapping: told.flapping,
                    previous: d.previous.clone(),
                    deficiencies: s.facts.deficiencies,
                    reason,
                    clock: None,
                    summary,
                    deficient_since: self.since.get(&name).copied(),
                    ack: None,
                    downtime: None,
                    url: self.url(&name),
                    servers_behind: s.servers_behind,
                };
                let held = Held { mark: hold, notice, memory: row, decision: d };
                self.held.push_back(held);
                self.release().await;
            }
        }
    }

    /// Claims and hands on the held notices whose polls are committed, in order; all of
    /// them while the store fails (a failing store does not hold notices back; their
    /// claims fail and are decided again).
    async fn release(&mut self) {
        let (committed, failing) = match &self.writer {
            Some(w) => (*w.committed().borrow(), w.stats().fault().is_some()),
            None => (u64::MAX, false),
        };
        while self.held.front().is_some_and(|h| failing || h.mark.is_none_or(|m| m <= committed)) {
            let Some(Held { notice, memory, decision, .. }) = self.held.pop_front() else { break };
            let name = notice.server.clone();
            match self.claim(notice, Some(&memory)).await {
                Claim::Queued => {
                    // The claim saved this memory; older unsaved rows of others go too.
                    if self.unsaved.get(&name).is_some_and(|r| r.seq <= memory.seq) {
                        self.unsaved.remove(&name);
                    }
                    self.save_memory().await;
                }
                Claim::Refused => {
                    self.reload_memory(&name).await;
                    // The refused key is taken, whatever row the store answered: the next
                    // notice counts on from it, never claims it again.
                    if let Some(mem) = self.memory.get_mut(&name) {
                        mem.seq = mem.seq.max(memory.seq);
                    }
                }
                Claim::Failed => {
                    // Not told: the next poll (here, or on the node that takes the server
                    // over) decides it again, under the same key. Taken back only if no
                    // later decision of the server followed it.
                    if let Some(mem) = self.memory.get_mut(&name) {
                        if mem.seq == memory.seq {
                            mem.seq -= 1;
                            mem.undo(&decision);
                            self.unsaved.insert(name.clone(), mem.to_row(&name));
                        }
                    }
                }
            }
        }
    }

    /// Saves the memory not saved yet, but for servers whose notice is held: their
    /// decision is saved by its claim.
    async fn save_memory(&mut self) {
        let held: std::collections::HashSet<&str> = self.held.iter().map(|h| h.notice.server.as_str()).collect();
        let (mut now, later): (HashMap<_, _>, HashMap<_, _>) =
            std::mem::take(&mut self.unsaved).into_iter().partition(|(server, _)| !held.contains(server.as_str()));
        save_unsaved(self.store.as_ref(), &mut now).await;
        now.extend(later);
        self.unsaved = now;
        self.saved_at = tokio::time::Instant::now();
    }

    /// Claims `notice` in the store (with `memory`, saved in the same transaction) and
    /// queues it on the channels only when this claim inserted its key.
    async fn claim(&self, notice: Notice, memory: Option<&NotifyRow>) -> Claim {
        let claim = NoticeClaim {
            key: notice.key.clone(),
            server: notice.server.clone(),
            kind: notice.kind.as_str().to_string(),
            node: notice.node.clone(),
            at: Utc::now(),
        };
        match self.store.claim_notice(&claim, memory).await {
            Ok(true) => {
                self.notifier.enqueue(notice);
                Claim::Queued
            }
            Ok(false) => {
                tracing::info!(server = %notice.server, key = %notice.key, kind = notice.kind.as_str(),
                    "notice claimed before (by another poller, or before a restart): not sent again");
                Claim::Refused
            }
            Err(e) => {
                tracing::error!(server = %notice.server, key = %notice.key, kind = notice.kind.as_str(), error = %e,
                    "notice not sent: cannot claim it in the store (decided again at the next poll)");
                Claim::Failed
            }
        }
    }

    /// Replaces what is remembered of `server` with the store's row (another poller told
    /// something meanwhile); keeps what it has when the store cannot answer.
    async fn reload_memory(&mut self, server: &str) {
        match self.store.load_notify_memory(Some(server)).await {
            Ok(rows) => {
                if let Some(row) = rows.into_iter().next() {
                    let (name, mem) = Memory::from_row(row);
                    self.memory.insert(name, mem);
                }
            }
            Err(e) => tracing::warn!(server = %server, error = %e, "cannot reread the notification memory"),
        }
    }

    /// The dashboard page of `server`, when `public_url` is set.
    fn url(&self, server: &str) -> Option<String> {
        self.public_url.as_ref().map(|u| format!("{}/servers/{server}", u.trim_end_matches('/')))
    }

    /// Handles every downtime that ended (or was removed) by now: for each server it
    /// covered that is still not fine, not acknowledged and no other downtime covers, one
    /// notice. A natural
    /// end is closed in the store first, so a restart never handles it again.
    async fn end_downtimes(&mut self) {
        let now = Utc::now();
        for (d, removed) in self.downtimes.take_ended(now) {
            if !removed {
                match self.store.close_downtime(d.id).await {
                    Ok(Some(_)) => {}
                    Ok(None) => continue, // closed already: removed meanwhile
                    Err(e) => {
                        tracing::error!(downtime = d.id, error = %e, "cannot close an ended downtime; its end notices are sent anyway");
                    }
                }
            }
            tracing::info!(downtime = d.id, server = %d.server, removed, "downtime ended");
            let mut servers: Vec<String> =
                self.memory.keys().filter(|name| crate::levels::glob_match(&d.server, name)).cloned().collect();
            servers.sort();
            for name in servers {
                let (deficiencies, acked) = self.silenced.remove(&name).unwrap_or_default();
                if acked || self.downtimes.covering(&name, now).is_some() {
                    continue;
                }
                let Some(mem) = self.memory.get(&name) else { continue };
                let told = mem.told.clone();
                if told.is_fine(&self.first_level) {
                    continue;
                }
                let summary = format!(
                    "{} (downtime {} ended)",
                    summary(NoticeKind::Problem, &name, &told, &deficiencies),
                    if removed { "removed and so" } else { "has" }
                );
                let notice = Notice {
                    key: key::downtime_end(&name, d.id),
                    kind: NoticeKind::Problem,
                    server: name.clone(),
                    node: self.node.clone(),
                    at: now,
                    level: told.level.clone(),
                    state: told.state,
                    flapping: told.flapping,
                    previous: told,
                    deficiencies,
                    reason: Some(format!("still not fine when the downtime ended ({})", d.comment)),
                    clock: None,
                    summary,
                    deficient_since: self.since.get(&name).copied(),
                    ack: None,
                    downtime: Some(d.clone()),
                    url: self.url(&name),
                    servers_behind: 0,
                };
                self.claim(notice, None).await;
            }
        }
    }
}

/// What became of a notice's claim.
enum Claim {
    /// Claimed by this call: queued on the channels.
    Queued,
    /// Claimed before (another node, or before a restart): not sent.
    Refused,
    /// The store did not answer: not sent.
    Failed,
}

/// Saves what the store has not taken yet; what it refuses stays for the next try.
async fn save_unsaved(store: &dyn crate::store::Store, unsaved: &mut HashMap<String, crate::model::NotifyRow>) {
    let mut saved = Vec::new();
    for (server, row) in unsaved.iter() {
        match store.save_notify_memory(row).await {
            Ok(()) => saved.push(server.clone()),
            Err(e) => {
                tracing::error!(server = %server, error = %e, waiting = unsaved.len(), "cannot persist notification state; kept and retried");
                break;
            }
        }
    }
    for server in saved {
        unsaved.remove(&server);
    }
}

/// "1 server", "3 servers".
fn servers_count(n: u32) -> String {
    if n == 1 {
        "1 server".into()
    } else {
        format!("{n} servers")
    }
}

fn summary(kind: NoticeKind, server: &str, c: &Condition, deficiencies: &[Deficiency]) -> String {
    let what: Vec<&str> = deficiencies.iter().map(|d| d.source.as_str()).collect();
    let what = if what.is_empty() { String::new() } else { format!(": {}", what.join(", ")) };
    match kind {
        NoticeKind::Flapping => {
            format!("{server} is flapping (changing state too often); now {}{what}", c.state.as_str())
        }
        NoticeKind::Settled => format!("{server} settled: {} at level {}{what}", c.state.as_str(), c.level),
        NoticeKind::Recovery => format!("{server} recovered: ok at level {}", c.level),
        _ => format!("{server} is {} at level {}{what}", c.state.as_str(), c.level),
    }
}

/// A length of time as people say it: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn for_how_long(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Everything a delivery needs to say in plain text (email body, alert description): the
/// default template ([`template::DEFAULT`]) rendered.
pub fn describe(n: &Notice) -> String {
    static DEFAULT: std::sync::OnceLock<template::Template> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(template::Template::default_body).render(n).unwrap_or_else(|e| {
        tracing::error!(server = %n.server, error = %e, "the default notice template failed; the summary is sent alone");
        n.summary.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store as _;

    /// A decision is saved before anything else happens; flap history alone waits for the
    /// next save, and the stop saves it.
    #[tokio::test]
    async fn flap_history_waits_for_the_next_save_and_what_was_told_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("n.db").display())).await.unwrap();
        let (events, rx) = broadcast::channel(64);
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        let setup = NotifierSetup {
            channels: vec![],
            damping: Damping { threshold: 1, window: Duration::from_secs(3600) },
            first_level: "normal".into(),
            store: Arc::new(store.clone()),
            events: rx,
            public_url: None,
            writer: None,
            node: "test".into(),
        };
        Notifier::start(setup, &stop, &tracker).await.unwrap();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let poll = |state, s: i64| {
            let facts = crate::model::ServerFacts {
                state,
                last_poll_at: Some(t0 + chrono::TimeDelta::seconds(s)),
                ..crate::model::ServerFacts::new("mail-01", "http://mail-01", "normal")
            };
            FleetEvent::Polled(crate::model::ServerSummary { facts, next_poll_at: None, node: None, servers_behind: 0 })
        };
        let saved = || async { store.load_notify_memory(None).await.unwrap().pop() };
        let until = |want: fn(&crate::model::NotifyRow) -> bool| async move {
            for _ in 0..200 {
                if saved().await.is_some_and(|r| want(&r)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the notify memory never became what was expected: {:?}", saved().await);
        };
        // A problem, then flapping: each a decision, saved at once.
        events.send(poll(ServerState::Unreachable, 1)).unwrap();
        until(|r| r.state == ServerState::Unreachable && !r.flapping).await;
        events.send(poll(ServerState::Ok, 2)).unwrap();
        until(|r| r.flapping && r.changes.len() == 2).await;
        // One more flip while flapping decides nothing: it waits for the next save.
        events.send(poll(ServerState::Unreachable, 3)).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(saved().await.unwrap().changes.len(), 2, "flap history alone is not a commit of its own");
        stop.cancel();
        tracker.close();
        tracker.wait().await;
        assert_eq!(saved().await.unwrap().changes.len(), 3, "the stop saves what waited");
    }

    /// Memory the store refuses is kept, and saved once the store takes writes again.
    #[tokio::test]
    async fn notification_memory_the_store_refuses_is_kept_and_saved_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("n.db").display())).await.unwrap();
        let fault = "CREATE TRIGGER injected_fault BEFORE INSERT ON notify_state BEGIN SELECT RAISE(ABORT, 'injected fault'); END";
        sqlx::query(fault).execute(store.pool()).await.unwrap();
        let mut mem = Memory::fresh("normal");
        mem.told.state = ServerState::Unreachable;
        let mut unsaved = HashMap::from([("mail-01".to_string(), mem.to_row("mail-01"))]);
        save_unsaved(&store, &mut unsaved).await;
        assert_eq!(unsaved.len(), 1, "kept while the store refuses it");
        assert!(store.load_notify_memory(None).await.unwrap().is_empty());
        sqlx::query("DROP TRIGGER injected_fault").execute(store.pool()).await.unwrap();
        save_unsaved(&store, &mut unsaved).await;
        assert!(unsaved.is_empty());
        let saved = store.load_notify_memory(None).await.unwrap();
        assert_eq!(saved, [mem.to_row("mail-01")]);
        assert_eq!(Memory::from_row(saved[0].clone()), ("mail-01".to_string(), mem));
    }
}
