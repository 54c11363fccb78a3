//! The inventory: the fleet's servers by name and by parent, replaced whole on reload.
//!
//! Rules it keeps:
//! - An inventory is never changed once built; a reload builds a new one and swaps it in,
//!   so a reader holds a consistent set (the API lists, a poll finds its parents).
//! - A reload diffs servers by name (SPEC 13, like Prometheus' `sync()`): an unchanged
//!   server keeps its `Server` (state, level, slot and loop untouched); a changed one gets
//!   a new `Server` carrying its state, and its loop restarts; a new one starts unknown at
//!   the first level; a removed one's loop stops. Nothing is deleted from the store.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::server::Server;

/// The servers of the fleet.
#[derive(Default)]
pub struct Inventory {
    servers: Vec<Arc<Server>>,
    by_name: HashMap<String, usize>,
    /// The servers naming each server in their `parents`, by the parent's index.
    children: HashMap<usize, Vec<usize>>,
}

impl std::ops::Deref for Inventory {
    type Target = [Arc<Server>];
    fn deref(&self) -> &[Arc<Server>] {
        &self.servers
    }
}

impl Inventory {
    pub(crate) fn new(servers: Vec<Arc<Server>>) -> Inventory {
        let by_name: HashMap<String, usize> =
            servers.iter().enumerate().map(|(i, s)| (s.config.name.clone(), i)).collect();
        let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, s) in servers.iter().enumerate() {
            for parent in &s.config.parents {
                if let Some(&p) = by_name.get(parent) {
                    children.entry(p).or_default().push(i);
                }
            }
        }
        Inventory { servers, by_name, children }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Server>> {
        self.by_name.get(name).map(|&i| &self.servers[i])
    }

    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The servers that name the server at `i` among their parents.
    pub(crate) fn children(&self, i: usize) -> &[usize] {
        self.children.get(&i).map(Vec::as_slice).unwrap_or_default()
    }

    pub(crate) fn has_children(&self, i: usize) -> bool {
        self.children.contains_key(&i)
    }
}

/// What a reload changed, by server name (`POST /api/v1/reload` answers it).
#[derive(Debug, Default, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Servers whose `[[server]]` table changed: their loops restarted, their state kept.
    pub changed: Vec<String>,
    /// How many servers were left as they were (level, state and schedule kept).
    pub unchanged: usize,
    /// Settings that changed but take effect only at the next restart.
    pub restart_needed: Vec<String>,
}
