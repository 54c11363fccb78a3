//! Pure: which servers this node should take and give up at one heartbeat round.
//!
//! Rules it keeps:
//! - Each server's rightful node is chosen by rendezvous hashing (highest random weight)
//!   over the live nodes: every node computes the same answer from the same view, servers
//!   spread evenly, and when a node joins or leaves only the servers it wins or loses
//!   move (about 1/n of them), never a reshuffle.
//! - A running lease is never taken: a node takes a server only when nobody holds it or
//!   its lease has run out (the database has the last word, see `store::Store::claim`).
//! - Servers move back to a returning node gradually: a node gives up at most
//!   [`moves_per_round`] rightful-elsewhere servers per round, and the rightful node takes
//!   them at its next round.

use std::collections::HashMap;

/// `node`'s rendezvous weight for `server`: the schedule's stable hash (the same on every
/// node, whatever its build: std's hasher is not stable across Rust versions, and nodes may
/// run different builds during an upgrade) of both names, each ended by a byte no UTF-8
/// text holds, so ("ab", "c") and ("a", "bc") differ.
fn weight(node: &str, server: &str) -> u64 {
    crate::schedule::stable_hash_bytes(node.bytes().chain([0xff]).chain(server.bytes()).chain([0xff]))
}

/// The live node that should poll `server` (rendezvous hashing); `None` with no live node.
pub fn rightful<'a>(server: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter().max_by_key(|n| (weight(n, server), n.as_str())).map(String::as_str)
}

/// Servers a node gives up per round when they belong elsewhere: a tenth of what it
/// holds, at least one.
pub fn moves_per_round(held: usize) -> usize {
    (held / 10).max(1)
}

/// One lease as the database showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    pub node: &'a str,
    pub running: bool,
}

/// What to do this round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Servers to take (free, or their lease ran out, and rightfully ours).
    pub claim: Vec<String>,
    /// Servers to give up (rightfully another live node's, or no longer in the inventory).
    pub release: Vec<String>,
    /// Servers we hold and keep.
    pub keep: Vec<String>,
}

/// The plan of node `me` for `inventory`, given the `live` nodes (sorted, `me` among them)
/// and every lease.
pub fn plan(me: &str, inventory: &[String], live: &[String], leases: &HashMap<&str, Lease<'_>>) -> Plan {
    let mut out = Plan::default();
    let mut elsewhere = Vec::new();
    let mut in_inventory = std::collections::HashSet::with_capacity(inventory.len());
    for server in inventory {
        in_inventory.insert(server.as_str());
        let mine = rightful(server, live) == Some(me);
        match leases.get(server.as_str()) {
            Some(l) if l.running && l.node == me => {
                if mine {
                    out.keep.push(server.clone());
                } else {
                    elsewhere.push(server.clone());
                }
            }
            Some(l) if l.running => {}
            _ if mine => out.claim.push(server.clone()),
            _ => {}
        }
    }
    let allowed = moves_per_round(out.keep.len() + elsewhere.len());
    let (go, stay) = elsewhere.split_at(elsewhere.len().min(allowed));
    out.release.extend_from_slice(go);
    out.keep.extend_from_slice(stay);
    for (server, l) in leases {
        if l.node == me && !in_inventory.contains(server) {
            out.release.push(server.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:05}")).collect()
    }

    #[test]
    fn servers_spread_evenly_and_a_leaving_node_moves_only_its_own() {
        let servers = names("mail-", 30_000);
        let three: Vec<String> = ["poller-a", "poller-b", "poller-c"].map(String::from).to_vec();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for s in &servers {
            *count.entry(rightful(s, &three).unwrap()).or_default() += 1;
        }
        for (n, c) in &count {
            assert!((9_500..=10_500).contains(c), "{n} has {c} of 30,000");
        }
        let two = &three[..2];
        for s in &servers {
            let before = rightful(s, &three).unwrap();
            if before != "poller-c" {
                assert_eq!(rightful(s, two), Some(before), "{s} moved although its node stayed");
            }
        }
    }

    #[test]
    fn running_leases_are_left_alone_and_run_out_ones_are_taken_by_their_rightful_node() {
        let live: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let inventory = names("s", 200);
        let mut leases = HashMap::new();
        // b died: its leases ran out. a's are running.
        for s in &inventory {
            let node = if rightful(s, &live) == Some("a") { "a" } else { "b" };
            leases.insert(s.as_str(), Lease { node, running: node == "a" });
        }
        let only_a = vec!["a".to_string()];
        let p = plan("a", &inventory, &only_a, &leases);
        let b_had = inventory.iter().filter(|s| leases[s.as_str()].node == "b").count();
        assert_eq!(p.claim.len(), b_had, "a takes every run-out lease once b is no longer live");
        assert!(p.release.is_empty());
        // While b's leases still run, a takes none of them.
        for s in &inventory {
            leases.get_mut(s.as_str()).unwrap().running = true;
        }
        assert!(plan("a", &inventory, &only_a, &leases).claim.is_empty());
    }

    #[test]
    fn a_returning_node_gets_its_servers_back_a_few_at_a_time() {
        let inventory = names("s", 1_000);
        let leases: HashMap<&str, Lease> =
            inventory.iter().map(|s| (s.as_str(), Lease { node: "a", running: true })).collect();
        let live: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let p = plan("a", &inventory, &live, &leases);
        assert_eq!(p.release.len(), 100, "a tenth of 1,000 per round");
        assert_eq!(p.keep.len() + p.release.len(), 1_000);
        assert!(p.release.iter().all(|s| rightful(s, &live) == Some("b")));
        assert!(plan("b", &inventory, &live, &leases).claim.is_empty(), "b waits for a to let go");
    }

    #[test]
    fn servers_removed_from_the_inventory_are_given_up() {
        let leases: HashMap<&str, Lease> = [("gone", Lease { node: "a", running: true })].into();
        let p = plan("a", &[], &["a".to_string()], &leases);
        assert_eq!(p.release, ["gone"]);
    }
}
