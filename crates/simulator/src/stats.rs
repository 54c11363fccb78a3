//! Requests counted per client (by User-Agent), and the gaps between one client's
//! consecutive requests to the same server: each peer's poll count and interval lateness,
//! measured at the receiving end, the same way for every peer.
//!
//! Rules it keeps: counting a request is a few atomic operations (no lock on the hot path
//! once a client is known); at most [`MAX_CLIENTS`] distinct User-Agents are told apart,
//! later ones count as `other`; a reset starts a measurement window without forgetting
//! when each server was last asked, so the first gap after a reset is still a true gap.
//!
//! Per server, each client's requests in the window and its shortest gap are kept too
//! ([`Stats::per_server`]): several pollers sharing one User-Agent (a cluster's nodes) are
//! told apart by which servers each holds, and a server asked by two of them shows a gap
//! of at most half the interval between their two slots.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Instant;

use serde_json::{json, Value};

/// Distinct clients told apart; a benchmark has two, a test one.
pub const MAX_CLIENTS: usize = 8;
/// Gaps are counted in 1 ms buckets up to this many ms; longer ones go in the last bucket.
const MAX_GAP_MS: usize = 600_000;

/// What one client did.
pub struct Client {
    pub agent: String,
    requests: AtomicU64,
    compilations: AtomicU64,
    metrics: AtomicU64,
    /// Requests the fleet's hung or unreachable servers left unanswered.
    unanswered: AtomicU64,
    /// Per server: when this client last asked, ns since the simulator started, plus one.
    last: Box<[AtomicU64]>,
    gaps: Box<[AtomicU64]>,
    /// Per server: requests in the window.
    per_server: Box<[AtomicU32]>,
    /// Per server: the shortest gap in the window, ms ([`NO_GAP`] when none yet).
    shortest_gap: Box<[AtomicU32]>,
}

/// A server's shortest gap before this client asked it twice in the window.
const NO_GAP: u32 = u32::MAX;

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Compilation,
    Metrics,
}

/// Every client's counters.
pub struct Stats {
    servers: usize,
    t0: Instant,
    window_start: RwLock<Instant>,
    clients: RwLock<Vec<Arc<Client>>>,
    /// Connections reset at accept (unreachable servers addressed by IP): no User-Agent yet.
    pub refused: AtomicU64,
}

fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Stats {
    pub fn new(servers: usize) -> Stats {
        Stats {
            servers,
            t0: Instant::now(),
            window_start: RwLock::new(Instant::now()),
            clients: RwLock::new(Vec::new()),
            refused: AtomicU64::new(0),
        }
    }

    /// The client with this User-Agent, added when new.
    pub fn client(&self, agent: &str) -> Arc<Client> {
        let agent = if agent.is_empty() { "unknown" } else { agent };
        let agent: String = agent.chars().take(100).collect();
        if let Some(c) = self.clients.read().iter().find(|c| c.agent == agent) {
            return c.clone();
        }
        let mut list = self.clients.write();
        if let Some(c) = list.iter().find(|c| c.agent == agent) {
            return c.clone();
        }
        let agent = if list.len() + 1 >= MAX_CLIENTS { "other".to_string() } else { agent };
        if let Some(c) = list.iter().find(|c| c.agent == agent) {
            return c.clone();
        }
        let c = Arc::new(Client {
            agent,
            requests: AtomicU64::new(0),
            compilations: AtomicU64::new(0),
            metrics: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            last: zeroed(self.servers),
            gaps: zeroed(MAX_GAP_MS + 1),
            per_server: (0..self.servers).map(|_| AtomicU32::new(0)).collect(),
            shortest_gap: (0..self.servers).map(|_| AtomicU32::new(NO_GAP)).collect(),
        });
        list.push(c.clone());
        c
    }

    /// Counts one request of `client` for server `i`.
    pub fn record(&self, client: &Client, i: usize, asked: Asked) {
        client.requests.fetch_add(1, Ordering::Relaxed);
        match asked {
            Asked::Compilation => client.compilations.fetch_add(1, Ordering::Relaxed),
            Asked::Metrics => client.metrics.fetch_add(1, Ordering::Relaxed),
        };
        let Some(last) = client.last.get(i) else { return };
        client.per_server[i].fetch_add(1, Ordering::Relaxed);
        let now = self.t0.elapsed().as_nanos() as u64 + 1;
        let before = last.swap(now, Ordering::Relaxed);
        if before != 0 && now > before {
            let ms = ((now - before) / 1_000_000) as usize;
            client.gaps[ms.min(MAX_GAP_MS)].fetch_add(1, Ordering::Relaxed);
            client.shortest_gap[i].fetch_min(ms.min(NO_GAP as usize - 1) as u32, Ordering::Relaxed);
        }
    }

    /// Counts a request the server left unanswered (hung or unreachable).
    pub fn unanswered(&self, client: &Client) {
        client.unanswered.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a new measurement window: counters and gaps from zero.
    pub fn reset(&self) {
        for c in self.clients.read().iter() {
            for a in [&c.requests, &c.compilations, &c.metrics, &c.unanswered] {
                a.store(0, Ordering::Relaxed);
            }
            for g in c.gaps.iter() {
                g.store(0, Ordering::Relaxed);
            }
            for (n, g) in c.per_server.iter().zip(c.shortest_gap.iter()) {
                n.store(0, Ordering::Relaxed);
                g.store(NO_GAP, Ordering::Relaxed);
            }
        }
        self.refused.store(0, Ordering::Relaxed);
        *self.window_start.write() = Instant::now();
    }

    /// Everything counted since the last reset, as JSON. With `interval_ms`, each client's
    /// lateness: how far the gaps between its requests to one server stray from the interval.
    pub fn report(&self, interval_ms: Option<u64>) -> Value {
        let window = self.window_start.read().elapsed().as_secs_f64();
        let clients: Vec<Value> = self.clients.read().iter().map(|c| c.report(window, interval_ms)).collect();
        json!({
            "servers": self.servers,
            "window_s": window,
            "refused_at_accept": self.refused.load(Ordering::Relaxed),
            "clients": clients,
        })
    }

    /// Per client, per server since the last reset: `requests` (an array indexed by server)
    /// and `shortest_gap_ms` (the same, `null` where the server was asked less than twice
    /// counting the request before the window). For `GET /stats/servers`.
    pub fn per_server(&self) -> Value {
        let clients: Vec<Value> = self
            .clients
            .read()
            .iter()
            .map(|c| {
                let requests: Vec<u32> = c.per_server.iter().map(|n| n.load(Ordering::Relaxed)).collect();
                let gaps: Vec<Option<u32>> =
                    c.shortest_gap.iter().map(|g| Some(g.load(Ordering::Relaxed)).filter(|&ms| ms != NO_GAP)).collect();
                json!({ "agent": c.agent, "requests": requests, "shortest_gap_ms": gaps })
            })
            .collect();
        json!({ "servers": self.servers, "clients": clients })
    }
}

impl Client {
    fn report(&self, window: f64, interval_ms: Option<u64>) -> Value {
        let requests = self.requests.load(Ordering::Relaxed);
        let gaps: Vec<(u64, u64)> = self
            .gaps
            .iter()
            .enumerate()
            .filter_map(|(ms, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((ms as u64, n))
            })
            .collect();
        let count: u64 = gaps.iter().map(|g| g.1).sum();
        let quantile = |sorted: &[(u64, u64)], q: f64| -> Option<u64> {
            let total: u64 = sorted.iter().map(|g| g.1).sum();
            let want = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            sorted
                .iter()
                .find(|g| {
                    seen += g.1;
                    seen >= want
                })
                .map(|g| g.0)
        };
        let mut out = json!({
            "agent": self.agent,
            "requests": requests,
            "per_second": if window > 0.0 { requests as f64 / window } else { 0.0 },
            "compilations": self.compilations.load(Ordering::Relaxed),
            "metrics": self.metrics.load(Ordering::Relaxed),
            "unanswered": self.unanswered.load(Ordering::Relaxed),
            "servers_seen": self.last.iter().filter(|t| t.load(Ordering::Relaxed) != 0).count(),
            "gaps": { "count": count, "p50_ms": quantile(&gaps, 0.5), "p99_ms": quantile(&gaps, 0.99) },
        });
        if let Some(iv) = interval_ms {
            let mut dev: Vec<(u64, u64)> = gaps.iter().map(|&(ms, n)| (ms.abs_diff(iv), n)).collect();
            dev.sort_unstable();
            out["lateness_ms"] =
                json!({ "p50": quantile(&dev, 0.5), "p99": quantile(&dev, 0.99), "max": dev.last().map(|d| d.0) });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_told_apart_and_gaps_measured() {
        let s = Stats::new(3);
        let a = s.client("rollcall-poller/0.1.0");
        let b = s.client("Prometheus/2.42.0");
        for _ in 0..3 {
            s.record(&a, 1, Asked::Compilation);
        }
        s.record(&b, 1, Asked::Metrics);
        let r = s.report(Some(0));
        assert_eq!(r["clients"][0]["requests"], 3);
        assert_eq!(r["clients"][0]["gaps"]["count"], 2);
        assert_eq!(r["clients"][1]["metrics"], 1);
        assert_eq!(r["clients"][1]["servers_seen"], 1);
        let per = s.per_server();
        assert_eq!(per["clients"][0]["requests"], json!([0, 3, 0]));
        assert_eq!(per["clients"][0]["shortest_gap_ms"], json!([null, 0, null]));
        assert_eq!(per["clients"][1]["shortest_gap_ms"], json!([null, null, null]));
        s.reset();
        assert_eq!(s.report(None)["clients"][0]["requests"], 0);
        let per = s.per_server();
        assert_eq!(per["clients"][0]["requests"], json!([0, 0, 0]));
        assert_eq!(per["clients"][0]["shortest_gap_ms"], json!([null, null, null]));
        for i in 0..20 {
            s.client(&format!("c{i}"));
        }
        assert!(s.clients.read().len() <= MAX_CLIENTS);
    }
}
