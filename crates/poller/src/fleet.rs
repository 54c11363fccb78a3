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
use crate::fetch::{Fetch, PollError};
use crate::levels::{LevelState, Rules};
use crate::model::{PollRecord, PollRow, ServerRow, ServerState, ServerSummary, TransitionRow};
use crate::schedule::{next_slot, Timebase};
use crate::store::Writer;

/// Something that happened in the fleet, for live views and notifications.
#[derive(Debug, Clone)]
pub enum FleetEvent {
    /// A poll finished; the server as it now stands.
    Polled(ServerSummary),
    /// A server changed level.
    Transition {
        server: String,
        transition: TransitionRow,
    },
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
}

impl<F: Fetch> Fleet<F> {
    /// Builds the fleet from config, resuming each server from its stored row.
    pub fn new(
        configs: Vec<ServerConfig>,
        stored: Vec<ServerRow>,
        rules: Rules,
        fetcher: F,
        writer: Writer,
        timebase: Timebase,
        max_in_flight: usize,
    ) -> Fleet<F> {
        let mut stored: HashMap<String, ServerRow> =
            stored.into_iter().map(|r| (r.name.clone(), r)).collect();
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
                        level: LevelState {
                            level,
                            calm_streak: row.calm_streak,
                        },
                        state: row.state,
                        deficiencies: row.deficiencies,
                        last_poll_at: row.last_poll_at,
                        next_poll_at: None,
                        last_error: row.last_error,
                        clock_offset_ms: row.clock_offset_ms,
                        rtt_ms: row.rtt_ms,
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
            timebase,
            in_flight: Semaphore::new(max_in_flight.max(1)),
            events,
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

    /// The server as the API shows it.
    pub fn summary(&self, server: &Server) -> ServerSummary {
        let s = server.status();
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

    /// Polls `server` now, applies the result and records it; answers the server as it
    /// now stands.
    pub async fn poll(&self, server: &Server) -> ServerSummary {
        let _one_at_a_time = server.polling.lock().await;
        let result = {
            let _slot = self.in_flight.acquire().await;
            self.fetcher.fetch(&server.config).await
        };
        let at = self.timebase.wall_now();
        let name = &server.config.name;
        let before = server.status();
        let (state, deficiencies, error, estimate, compilation) = match result {
            Ok(f) => {
                let e = ClockEstimate::from_stamps(
                    f.sent_at,
                    f.compilation.time.received_at,
                    f.compilation.time.replied_at,
                    f.received_at,
                );
                let d = f.compilation.deficiencies;
                let state = if d.is_empty() {
                    ServerState::Ok
                } else {
                    ServerState::Deficient
                };
                (state, d, None, Some(e), Some(f.raw))
            }
            Err(e) => {
                if before.last_error.as_deref() != Some(&e.to_string()) {
                    tracing::warn!(server = %name, kind = e.kind(), error = %e, "poll failed");
                }
                (
                    ServerState::Unreachable,
                    vec![poll_deficiency(&e)],
                    Some(e.to_string()),
                    None,
                    None,
                )
            }
        };
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
        server.update(|s| {
            s.level = level;
            s.state = state;
            s.deficiencies = deficiencies.clone();
            s.last_poll_at = Some(at);
            s.last_error = error.clone();
            if let Some(e) = estimate {
                s.clock_offset_ms = Some(e.offset_ms);
                s.rtt_ms = Some(e.delay_ms);
            }
        });
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
            },
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
        };
        if let Err(e) = self.writer.record(record).await {
            tracing::error!(server = %name, error = %e, "poll result not stored");
        }
        if let Some(t) = transition {
            let _ = self.events.send(FleetEvent::Transition {
                server: name.clone(),
                transition: t,
            });
        }
        let _ = self.events.send(FleetEvent::Polled(summary.clone()));
        summary
    }

    /// Polls `server` now on request and lets its loop pick its next slot again.
    pub async fn poll_now(&self, server: &Server) -> ServerSummary {
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
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.poll(&server) => {}
            }
        }
    }
}

/// The deficiency a failed poll stands for: `poll:KIND`, always critical.
pub fn poll_deficiency(e: &PollError) -> Deficiency {
    Deficiency {
        source: format!("poll:{}", e.kind()),
        severity: Severity::Critical,
        summary: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
