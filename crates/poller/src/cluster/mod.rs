//! Several pollers sharing one fleet on one PostgreSQL database (SPEC section 12): who
//! polls which server, held by leases in the database; the protocol and its failure cases
//! are in `docs/cluster.md`.
//!
//! Rules it keeps:
//! - A node polls a server only while it holds the server's lease AND its own view of
//!   that lease is still valid: the view runs out `failover_after - timeout` after the
//!   heartbeat that renewed it was *sent*, so a node cut from the database stops starting
//!   polls (and its last poll has finished) before the database lets another node take
//!   over. No server is polled by two nodes at once.
//! - Heartbeats every `failover_after / 3`; a node whose heartbeat is older than
//!   `failover_after` is dead, and its leases (run out by then) go to the live nodes'
//!   rightful owners ([`plan`]) at their next round, which poll them at once.
//! - A node's first round only announces it (nodes started together then see each other
//!   before anyone takes servers); its second comes [`FIRST_ROUND_SETTLE`] later.
//! - A server given up (to a returning node, or removed) is first dropped locally, and
//!   released in the database one round later, after the writer has stored its last poll,
//!   so the next node starts from everything this one knew.
//! - Facts of servers held elsewhere are reread every round, so every node's API and
//!   dashboard show the whole fleet; a server taken over starts from the stored facts and
//!   notification memory, so nothing is told twice across a failover.
//! - Without a shared database (SQLite) there is no cluster: one node holds everything.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{NotifyRow, StoredServer};
use crate::store::{SharedStore, Writer};

pub mod plan;

use plan::{plan, Lease};

/// One node as the last heartbeat round saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub name: String,
    /// Seconds since the node's last heartbeat, by the database's clock.
    pub heartbeat_age_s: f64,
    /// Heartbeat younger than `failover_after`.
    pub live: bool,
    /// Servers whose running lease it holds.
    pub servers: usize,
}

#[derive(Debug, Default)]
struct State {
    held: HashSet<String>,
    /// Our leases' view runs out then (see the module rules); `None` before the first
    /// successful round.
    valid_until: Option<Instant>,
    owners: HashMap<String, String>,
    nodes: Vec<NodeStatus>,
    /// The stored facts of every server at the last round.
    stored: HashMap<String, StoredServer>,
    /// Notification memory of servers taken at the last rounds, until their loop adopts it.
    notify: HashMap<String, NotifyRow>,
    /// Servers dropped locally, to release in the database next round.
    leaving: Vec<String>,
    /// Servers taken from a node that is gone (their lease ran out), until their loop
    /// adopts them: polled at once.
    orphaned: HashSet<String>,
    /// The servers of this node's configuration (changed by a reload).
    inventory: Vec<String>,
}

/// What the fleet consults: which servers this node may poll now.
#[derive(Debug)]
pub struct Holdings {
    pub node: String,
    pub failover_after: Duration,
    state: RwLock<State>,
    changed: watch::Sender<u64>,
}

impl Holdings {
    pub fn new(node: &str, failover_after: Duration) -> Holdings {
        Holdings {
            node: node.to_string(),
            failover_after,
            state: RwLock::new(State::default()),
            changed: watch::channel(0).0,
        }
    }

    /// This node may poll `server` now.
    pub fn holds(&self, server: &str) -> bool {
        let s = self.state.read();
        s.valid_until.is_some_and(|v| Instant::now() < v) && s.held.contains(server)
    }

    /// Changes with every round that changed what is held or shown.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The node holding `server`'s lease at the last round.
    pub fn owner(&self, server: &str) -> Option<String> {
        self.state.read().owners.get(server).cloned()
    }

    /// Every node, as the last round saw them.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.state.read().nodes.clone()
    }

    /// The stored facts of `server` at the last round.
    pub fn stored(&self, server: &str) -> Option<StoredServer> {
        self.state.read().stored.get(server).cloned()
    }

    /// The servers this node's configuration names, after a reload: servers added are
    /// taken at the next round, servers removed given up.
    pub fn set_inventory(&self, servers: Vec<String>) {
        self.state.write().inventory = servers;
    }

    /// True once if `server` was taken from a node that is gone (poll it at once).
    pub fn take_orphaned(&self, server: &str) -> bool {
        self.state.write().orphaned.remove(server)
    }

    /// The notification memory of a server just taken over, once.
    pub fn take_notify(&self, server: &str) -> Option<NotifyRow> {
        self.state.write().notify.remove(server)
    }
}

/// How long after a node's first round (which only announces it) its second round comes,
/// when that is sooner than the usual `failover_after / 3`: long enough for nodes started
/// together to see each other, short enough that a lone node (or one restarted) does not
/// leave its fleet unpolled for a whole round (10 s at the default `failover_after`).
pub const FIRST_ROUND_SETTLE: Duration = Duration::from_secs(2);

/// Runs the heartbeat rounds until `stop`; on stop, gives every lease up so the other
/// nodes take over at once rather than after `failover_after`.
pub fn spawn(
    holdings: Arc<Holdings>,
    store: SharedStore,
    writer: Writer,
    inventory: Vec<String>,
    poll_timeout: Duration,
    stop: CancellationToken,
    tracker: &TaskTracker,
) {
    holdings.set_inventory(inventory);
    tracker.spawn(async move {
        let every = holdings.failover_after / 3;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let inventory = holdings.state.read().inventory.clone();
            match round(&holdings, &store, &writer, &inventory, poll_timeout).await {
                Ok(first) => {
                    if first {
                        // The first round only announced this node; the next one takes
                        // servers after nodes started with it have announced themselves.
                        tick.reset_after(FIRST_ROUND_SETTLE.min(every));
                    }
                    if failing {
                        tracing::info!(node = %holdings.node, "cluster: the database answers again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(node = %holdings.node, error = %e,
                            "cluster: cannot reach the database; polling stops before this node's leases run out");
                    }
                    failing = true;
                }
            }
        }
        let held: Vec<String> = {
            let mut s = holdings.state.write();
            s.valid_until = None;
            let mut all: Vec<String> = s.held.drain().collect();
            all.append(&mut s.leaving);
            all
        };
        holdings.changed.send_modify(|v| *v += 1);
        let _ = writer.flush().await;
        match store.release(&holdings.node, &held).await {
            Ok(()) => tracing::info!(node = %holdings.node, servers = held.len(), "cluster: leases given up at stop"),
            Err(e) => {
                tracing::warn!(node = %holdings.node, error = %e, "cluster: leases not given up at stop; they run out")
            }
        }
    });
}

/// One heartbeat round; answers whether it was this node's first (which only announces it).
async fn round(
    h: &Holdings,
    store: &SharedStore,
    writer: &Writer,
    inventory: &[String],
    poll_timeout: Duration,
) -> Result<bool, crate::store::StoreError> {
    let sent = Instant::now();
    // What was dropped last round is released now that its last polls are stored.
    let leaving = std::mem::take(&mut h.state.write().leaving);
    if !leaving.is_empty() {
        writer.flush().await?;
        store.release(&h.node, &leaving).await?;
    }
    let view = store.heartbeat(&h.node, h.failover_after).await?;
    let valid_until = sent + h.failover_after.saturating_sub(poll_timeout);
    let mut live: Vec<String> =
        view.nodes.iter().filter(|(_, age)| *age < h.failover_after).map(|(n, _)| n.clone()).collect();
    if !live.contains(&h.node) {
        live.push(h.node.clone());
        live.sort();
    }
    let leases: HashMap<&str, Lease> = view
        .leases
        .iter()
        .map(|(server, node, running)| (server.as_str(), Lease { node: node.as_str(), running: *running }))
        .collect();
    // A node's first round only announces it: nodes started together then see each other
    // before anyone takes servers, instead of the first one taking all and handing most back.
    let first_round = h.state.read().valid_until.is_none();
    let mut p = plan(&h.node, inventory, &live, &leases);
    if first_round {
        p.claim.clear();
    }
    let taken = store.claim(&h.node, &p.claim, h.failover_after).await?;
    let stored = store.load_servers().await?;
    let notify = if taken.is_empty() { Vec::new() } else { store.load_notify_memory(None).await? };

    let mut owners: HashMap<String, String> =
        view.leases.iter().filter(|(_, _, running)| *running).map(|(s, n, _)| (s.clone(), n.clone())).collect();
    for s in &taken {
        owners.insert(s.clone(), h.node.clone());
    }
    for s in &p.release {
        owners.remove(s);
    }
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for n in owners.values() {
        *per_node.entry(n.as_str()).or_default() += 1;
    }
    let nodes = view
        .nodes
        .iter()
        .map(|(name, age)| NodeStatus {
            name: name.clone(),
            heartbeat_age_s: age.as_secs_f64(),
            live: live.contains(name),
            servers: per_node.get(name.as_str()).copied().unwrap_or(0),
        })
        .collect();
    if !taken.is_empty() {
        tracing::info!(node = %h.node, servers = taken.len(), "cluster: took over servers (free or their node is gone)");
    }
    if !p.release.is_empty() {
        tracing::info!(node = %h.node, servers = p.release.len(), "cluster: giving servers back to their rightful node");
    }
    let taken_set: HashSet<&String> = taken.iter().collect();
    // A lease that ran out (rather than was given up or never existed) was a gone node's.
    let orphaned: Vec<String> =
        taken.iter().filter(|s| leases.get(s.as_str()).is_some_and(|l| !l.running)).cloned().collect();
    {
        let mut s = h.state.write();
        s.held = p.keep.into_iter().chain(taken.iter().cloned()).collect();
        s.valid_until = Some(valid_until);
        s.owners = owners;
        s.nodes = nodes;
        s.stored = stored.into_iter().map(|r| (r.facts.name.clone(), r)).collect();
        s.notify.extend(notify.into_iter().filter(|n| taken_set.contains(&n.server)).map(|n| (n.server.clone(), n)));
        s.leaving = p.release;
        s.orphaned.extend(orphaned);
    }
    h.changed.send_modify(|v| *v += 1);
    Ok(first_round)
}
