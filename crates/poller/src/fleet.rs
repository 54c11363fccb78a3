//! The fleet: every server's live state, the poll that updates it, and one loop per server.
//!
//! Like Prometheus' scrape loops, each server has its own loop and timer, so one hung or
//! slow attendant only ever delays itself; a semaphore caps polls in flight. The in-memory
//! state is what the API reads; the store gets every poll through its batching writer.
//! A loop can run and be stopped again; it must not be reused after it was stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rollcall_protocol::{Deficiency, Severity};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock_estimate::ClockEstimate;
use crate::config::ServerConfig;
use crate::config::SigningKey;
use crate::fetch::{Fetch, PollError};
use crate::levels::{LevelState, Rules};
use crate::model::{
    ChangedCompilation, ClockCorrectionRow, PollRecord, PollRow, ServerRow, ServerState, ServerSummary, TransitionRow,
};
use crate::schedule::{next_slot, Timebase};
use crate::store::Writer;
use rollcall_protocol::clock_order::{ClockOrder, Outcome, SignedOrder};

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

#[derive(Debug, Clone)]
struct Status {
    level: LevelState,
    state: ServerState,
    deficiencies: Vec<Deficiency>,
    last_poll_at: Option<DateTime<Utc>>,
    next_poll_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    clock_offset_ms: Option<f64>,
    rtt_ms: Option<f64>,
    /// A correction was applied; the next poll checks that it took.
    clock_pending: bool,
    /// After a refused or failed order, no new one before this (the attendant would only
    /// refuse again, once per poll).
    clock_quiet_until: Option<DateTime<Utc>>,
    /// Substance hash of the newest compilation in the history.
    substance: Option<i64>,
    /// The latest compilation as received. Kept here, not written at every poll: between
    /// changes of substance only times, messages and usage figures differ, and rewriting
    /// a few kilobytes per poll cost most of the poller's disk writes (22 kB per poll at
    /// 5,000 polls/s, measured). The store gets it with each change and at shutdown.
    latest: Option<Packed>,
    /// The store's row for this server holds its current level, state and deficiencies.
    /// The row is written only when they change: time, offset and delay of every poll are
    /// in its poll row, where the store reads them back from on start.
    row_written: bool,
}

/// One server: its config and live state.
pub struct Server {
    pub config: ServerConfig,
    /// Where in every interval this server's slot lies (see [`crate::schedule::phases`]).
    phase: f64,
    status: Mutex<Status>,
    /// Held while polling, so a poll on request and a scheduled one never overlap.
    polling: tokio::sync::Mutex<()>,
    /// Wakes the loop to recompute its next slot (after a poll on request).
    reschedule: Notify,
}

impl Server {
    fn status(&self) -> Status {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

/// How the poller keeps clocks (SPEC section 4).
#[derive(Clone, Debug)]
pub struct ClockPolicy {
    /// Orders are only sent with a key.
    pub key: Option<SigningKey>,
    /// Correct when |offset| − delay/2 exceeds this.
    pub max_skew: std::time::Duration,
}

/// Everything about running the fleet that is not the servers themselves.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub timebase: Timebase,
    pub max_in_flight: usize,
    pub clock: ClockPolicy,
}

/// The whole fleet and what it needs to poll.
pub struct Fleet<F: Fetch> {
    servers: Vec<Arc<Server>>,
    by_name: HashMap<String, usize>,
    rules: Rules,
    fetcher: F,
    writer: Writer,
    timebase: Timebase,
    in_flight: Semaphore,
    events: broadcast::Sender<FleetEvent>,
    clock: ClockPolicy,
    nonces: std::sync::atomic::AtomicU64,
    /// Counters and histograms of the polls themselves, for `/metrics`.
    stats: crate::metrics::PollStats,
}

impl<F: Fetch> Fleet<F> {
    /// Builds the fleet from config, resuming each server from its stored row.
    pub fn new(
        configs: Vec<ServerConfig>,
        stored: Vec<ServerRow>,
        rules: Rules,
        fetcher: F,
        writer: Writer,
        options: FleetOptions,
    ) -> Fleet<F> {
        let mut stored: HashMap<String, ServerRow> = stored.into_iter().map(|r| (r.name.clone(), r)).collect();
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        let phases = crate::schedule::phases(&names);
        let mut servers = Vec::with_capacity(configs.len());
        let mut by_name = HashMap::with_capacity(configs.len());
        for (config, phase) in configs.into_iter().zip(phases) {
            let status = match stored.remove(&config.name) {
                Some(row) => {
                    let level = rules.index_of(&row.level).unwrap_or_else(|| {
                        tracing::warn!(server = %config.name, level = %row.level, "stored level no longer exists; starting at the first level");
                        0
                    });
                    Status {
                        level: LevelState { level, calm_streak: row.calm_streak },
                        state: row.state,
                        deficiencies: row.deficiencies,
                        last_poll_at: row.last_poll_at,
                        next_poll_at: None,
                        last_error: row.last_error,
                        clock_offset_ms: row.clock_offset_ms,
                        rtt_ms: row.rtt_ms,
                        clock_pending: false,
                        clock_quiet_until: None,
                        substance: row.substance,
                        latest: None,
                        row_written: row.address == config.address,
                    }
                }
                None => Status {
                    level: LevelState::default(),
                    state: ServerState::Unknown,
                    deficiencies: Vec::new(),
                    last_poll_at: None,
                    next_poll_at: None,
                    last_error: None,
                    clock_offset_ms: None,
                    rtt_ms: None,
                    clock_pending: false,
                    clock_quiet_until: None,
                    substance: None,
                    latest: None,
                    row_written: false,
                },
            };
            by_name.insert(config.name.clone(), servers.len());
            servers.push(Arc::new(Server {
                config,
                phase,
                status: Mutex::new(status),
                polling: tokio::sync::Mutex::new(()),
                reschedule: Notify::new(),
            }));
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
            clock: options.clock,
            nonces: std::sync::atomic::AtomicU64::new(0),
            stats: crate::metrics::PollStats::default(),
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
    pub fn stats(&self) -> &crate::metrics::PollStats {
        &self.stats
    }

    /// The server as the API shows it.
    pub fn summary(&self, server: &Server) -> ServerSummary {
        self.summary_of(server, server.status())
    }

    fn summary_of(&self, server: &Server, s: Status) -> ServerSummary {
        ServerSummary {
            name: server.config.name.clone(),
            address: server.config.address.clone(),
            level: self.rules.level(s.level.level).name.clone(),
            state: s.state,
            deficiencies: s.deficiencies,
            last_poll_at: s.last_poll_at,
            next_poll_at: s.next_poll_at,
            last_error: s.last_error,
            clock_offset_ms: s.clock_offset_ms,
            rtt_ms: s.rtt_ms,
        }
    }

    /// The server as the API shows it with its latest compilation as received this run
    /// (`None` before its first answer), both from the same poll.
    pub fn detail(&self, server: &Server) -> (ServerSummary, Option<bytes::Bytes>) {
        let s = server.status();
        let latest = s.latest.as_ref().and_then(|p| p.unpack(&server.config.name));
        (self.summary_of(server, s), latest)
    }

    /// Every server's latest compilation received this run, for the store at shutdown.
    pub fn latest_compilations(&self) -> Vec<(String, bytes::Bytes)> {
        self.servers
            .iter()
            .filter_map(|s| Some((s.config.name.clone(), s.status().latest?.unpack(&s.config.name)?)))
            .collect()
    }

    /// Polls `server` now, applies the result and records it; answers the server as it
    /// now stands.
    pub async fn poll(&self, server: &Server) -> ServerSummary {
        let _one_at_a_time = server.polling.lock().await;
        let started = std::time::Instant::now();
        let result = {
            let _slot = self.in_flight.acquire().await;
            let _counted = self.stats.in_flight();
            self.fetcher.fetch(&server.config).await
        };
        let took = started.elapsed();
        let at = self.timebase.wall_now();
        let name = &server.config.name;
        let before = server.status();
        let (state, deficiencies, error, estimate, reply, attendant) = match result {
            Ok(f) => {
                let e = ClockEstimate::from_stamps(f.sent_at, f.digest.received_at, f.digest.replied_at, f.received_at);
                let hash = f.digest.substance;
                let d = f.digest.deficiencies;
                let state = if d.is_empty() { ServerState::Ok } else { ServerState::Deficient };
                let attendant = f.digest.attendant;
                (state, d, None, Some(e), Some((hash, f.raw)), Some(attendant))
            }
            Err(e) => {
                if before.last_error.as_deref() != Some(&e.to_string()) {
                    tracing::warn!(server = %name, kind = e.kind(), error = %e, "poll failed");
                }
                (ServerState::Unreachable, vec![poll_deficiency(&e)], Some(e.to_string()), None, None, None)
            }
        };
        self.stats.polled(state, took);
        let (level, change) = self.rules.decide(before.level, &deficiencies);
        let transition = change.map(|t| {
            let row = TransitionRow {
                at,
                from: self.rules.level(t.from).name.clone(),
                to: self.rules.level(t.to).name.clone(),
                reason: t.reason,
            };
            tracing::info!(server = %name, from = %row.from, to = %row.to, reason = %row.reason, "level changed");
            row
        });
        if before.state != state && transition.is_none() {
            tracing::info!(server = %name, from = before.state.as_str(), to = state.as_str(), "state changed");
        }
        let row_changed = !before.row_written
            || before.level != level
            || before.state != state
            || before.deficiencies != deficiencies
            || before.last_error != error;
        let mut compilation = None;
        let mut substance = before.substance;
        let packed = reply.as_ref().map(|(_, raw)| Packed::pack(raw));
        server.update(|s| {
            s.row_written = true;
            s.level = level;
            s.state = state;
            s.deficiencies = deficiencies.clone();
            s.last_poll_at = Some(at);
            s.last_error = error.clone();
            if let Some(e) = estimate {
                s.clock_offset_ms = Some(e.offset_ms);
                s.rtt_ms = Some(e.delay_ms);
            }
            if let Some((hash, raw)) = reply {
                if s.substance != Some(hash) {
                    compilation = Some(ChangedCompilation { hash, body: raw.clone() });
                    s.substance = Some(hash);
                    substance = Some(hash);
                }
                s.latest = packed;
            }
        });
        let clock_corrections = match (estimate, attendant) {
            (Some(e), Some(attendant)) => self.keep_clock(server, &attendant, e, at).await,
            _ => Vec::new(),
        };
        let summary = self.summary(server);
        let level_name = summary.level.clone();
        let record = PollRecord {
            server: ServerRow {
                name: name.clone(),
                address: server.config.address.clone(),
                level: level_name.clone(),
                calm_streak: level.calm_streak,
                state,
                deficiencies: summary.deficiencies.clone(),
                last_poll_at: Some(at),
                last_error: error.clone(),
                clock_offset_ms: summary.clock_offset_ms,
                rtt_ms: summary.rtt_ms,
                substance,
            },
            row_changed,
            poll: PollRow {
                at,
                state,
                level: level_name,
                rtt_ms: estimate.map(|e| e.delay_ms),
                clock_offset_ms: estimate.map(|e| e.offset_ms),
                error,
                deficiencies: deficiencies.len() as u32,
            },
            transition: transition.clone(),
            compilation,
            clock_corrections: clock_corrections.clone(),
        };
        if let Err(e) = self.writer.record(record).await {
            tracing::error!(server = %name, error = %e, "poll result not stored");
        }
        if let Some(t) = transition {
            let _ = self.events.send(FleetEvent::Transition { server: name.clone(), transition: t });
        }
        for c in clock_corrections {
            let _ = self.events.send(FleetEvent::ClockCorrection { server: name.clone(), correction: c });
        }
        let _ = self.events.send(FleetEvent::Polled(summary.clone()));
        summary
    }

    /// Verifies the last correction, and orders a new one when the offset is beyond
    /// `max_clock_skew` by more than network asymmetry could explain (SPEC section 4).
    async fn keep_clock(
        &self,
        server: &Server,
        attendant: &str,
        e: ClockEstimate,
        at: DateTime<Utc>,
    ) -> Vec<ClockCorrectionRow> {
        let name = &server.config.name;
        let max_ms = self.clock.max_skew.as_secs_f64() * 1000.0;
        let off = e.certain_skew_ms() > max_ms;
        let mut rows = Vec::new();
        let mut pending = false;
        server.update(|s| pending = std::mem::take(&mut s.clock_pending));
        if pending {
            let (outcome, detail) = if off {
                tracing::warn!(server = %name, offset_ms = e.offset_ms, "clock still off after a correction");
                ("not effective", format!("offset still {:.1} ms after the correction", e.offset_ms))
            } else {
                tracing::info!(server = %name, offset_ms = e.offset_ms, "clock correction verified");
                ("verified", format!("offset now {:.1} ms (delay {:.1} ms)", e.offset_ms, e.delay_ms))
            };
            rows.push(ClockCorrectionRow {
                at,
                offset_ms: e.offset_ms,
                correction_ms: 0.0,
                outcome: outcome.into(),
                detail,
            });
        }
        if !off {
            return rows;
        }
        let Some(key) = &self.clock.key else {
            tracing::debug!(server = %name, offset_ms = e.offset_ms, "clock beyond max_clock_skew; no signing_key_file, so no correction");
            return rows;
        };
        if server.status().clock_quiet_until.is_some_and(|t| at < t) {
            return rows;
        }
        let correction_us = -(e.offset_ms * 1000.0).round() as i64;
        let order =
            ClockOrder { server: attendant.to_string(), correction_us, poller_time: Utc::now(), nonce: self.nonce() };
        let signed = SignedOrder::sign(&order, &key.0);
        let correction_ms = correction_us as f64 / 1000.0;
        let (outcome, detail) = match self.fetcher.order_clock(&server.config, &signed).await {
            Ok(reply) => {
                if reply.outcome == Outcome::Applied {
                    server.update(|s| {
                        s.clock_pending = true;
                        s.clock_quiet_until = None;
                    });
                    tracing::info!(server = %name, offset_ms = e.offset_ms, correction_ms, "clock corrected");
                } else {
                    server.update(|s| s.clock_quiet_until = Some(at + ORDER_BACKOFF));
                    tracing::warn!(server = %name, offset_ms = e.offset_ms, outcome = reply.outcome.as_str(), reason = %reply.reason, "clock order not applied");
                }
                (reply.outcome.as_str().to_string(), reply.reason)
            }
            Err(err) => {
                server.update(|s| s.clock_quiet_until = Some(at + ORDER_BACKOFF));
                tracing::warn!(server = %name, error = %err, "clock order failed");
                ("failed".to_string(), err.to_string())
            }
        };
        rows.push(ClockCorrectionRow { at, offset_ms: e.offset_ms, correction_ms, outcome, detail });
        rows
    }

    /// Unique per order: the process, the time and a counter. Not secret: the signature
    /// makes orders unforgeable; the nonce only makes each one single-use.
    fn nonce(&self) -> String {
        let n = self.nonces.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = self.timebase.wall_now().timestamp_micros();
        format!("{:x}-{t:x}-{n:x}", std::process::id())
    }

    /// Polls `server` now on request and lets its loop pick its next slot again.
    /// An operator's request also lifts the clock-order back-off: they may have just
    /// fixed what made the attendant refuse.
    pub async fn poll_now(&self, server: &Server) -> ServerSummary {
        server.update(|s| s.clock_quiet_until = None);
        let summary = self.poll(server).await;
        server.reschedule.notify_one();
        summary
    }

    /// Starts one loop per server; they stop when `stop` is cancelled.
    pub fn start(self: &Arc<Self>, stop: &CancellationToken, tracker: &TaskTracker) {
        for server in &self.servers {
            tracker.spawn(self.clone().run_loop(server.clone(), stop.clone()));
        }
    }

    async fn run_loop(self: Arc<Self>, server: Arc<Server>, stop: CancellationToken) {
        loop {
            let interval = self.rules.level(server.status().level.level).interval;
            let due = next_slot(server.phase, interval, self.timebase.wall_now());
            server.update(|s| s.next_poll_at = Some(due));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = server.reschedule.notified() => continue,
                _ = tokio::time::sleep_until(self.timebase.instant(due)) => {}
            }
            self.stats.started_late(self.timebase.wall_now() - due);
            tokio::select! {
                _ = stop.cancelled() => return,
                // Boxed: the poll's state (HTTP client, JSON, store) is kilobytes, and an
                // idle loop would otherwise carry it between polls, once per server.
                _ = Box::pin(self.poll(&server)) => {}
            }
        }
    }
}

/// A compilation held compressed (LZ4): every server's latest stays in memory, and at
/// 3.6 kB each it was the largest part of the poller's memory per server.
#[derive(Debug, Clone)]
struct Packed(std::sync::Arc<[u8]>);

impl Packed {
    fn pack(raw: &[u8]) -> Packed {
        thread_local! {
            /// Room for the worst case, reused: the only allocation per poll is the result.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|out| {
            let bound = 4 + lz4_flex::block::get_maximum_output_size(raw.len());
            if out.len() < bound {
                out.resize(bound, 0);
            }
            out[..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            match lz4_flex::block::compress_into(raw, &mut out[4..]) {
                Ok(n) => Packed(out[..4 + n].into()),
                // Cannot happen with room for the worst case; kept whole rather than lost.
                Err(_) => Packed(lz4_flex::compress_prepend_size(raw).into()),
            }
        })
    }

    fn unpack(&self, server: &str) -> Option<bytes::Bytes> {
        match lz4_flex::decompress_size_prepended(&self.0) {
            Ok(raw) => Some(raw.into()),
            Err(e) => {
                tracing::error!(server, error = %e, "the latest compilation held in memory is unreadable");
                None
            }
        }
    }
}

/// How long after a refused or failed clock order the poller waits before ordering again.
pub const ORDER_BACKOFF: chrono::Duration = chrono::Duration::minutes(30);

/// The deficiency a failed poll stands for: `poll:KIND`, always critical.
pub fn poll_deficiency(e: &PollError) -> Deficiency {
    Deficiency { source: format!("poll:{}", e.kind()), severity: Severity::Critical, summary: e.to_string() }
}

#[cfg(test)]
mod tests;
