//! Who keeps a connection slot when they run out (SPEC section 10, connection abuse).
//!
//! Every connection is in one of three tiers, by what it has done so far:
//! - **silent**: accepted, but no complete request head yet (idle and slowloris clients,
//!   TLS handshakes in progress);
//! - **asking**: has sent a complete request, none answered as allowed yet (a poller's
//!   first query while the attendant compiles; strangers answered 401/403 stay here);
//! - **known**: a request of it was answered with a status other than 401/403, so it
//!   carried valid credentials (or the listener needs none).
//!
//! Rules: a new connection is always admitted while any silent or asking connection is
//! held; when the cap is reached the OLDEST silent connection is shed (closed), else the
//! oldest asking one; known connections are never shed for a newcomer: when every slot is
//! held by known peers, the newcomer is closed at once. So accepting never blocks, and a
//! stranger can at most push out other strangers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

const SILENT: u8 = 0;
const ASKING: u8 = 1;
const KNOWN: u8 = 2;

/// The connection slots of one listener.
#[derive(Debug)]
pub(crate) struct Admission {
    cap: usize,
    inner: Mutex<Tiers>,
}

#[derive(Debug, Default)]
struct Tiers {
    next_id: u64,
    /// By id, so the first entry is the oldest.
    silent: BTreeMap<u64, CancellationToken>,
    asking: BTreeMap<u64, CancellationToken>,
    known: usize,
}

impl Tiers {
    fn held(&self) -> usize {
        self.silent.len() + self.asking.len() + self.known
    }
}

/// One admitted connection. `shed` is cancelled when the connection must close to make
/// room; dropping the ticket frees its slot.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    tier: AtomicU8,
    pub(crate) shed: CancellationToken,
    admission: Arc<Admission>,
}

/// What [`Admission::admit`] did to make room.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// A slot was free.
    Free,
    /// The oldest silent or asking connection was shed.
    Shed,
}

impl Admission {
    pub(crate) fn new(cap: usize) -> Arc<Admission> {
        Arc::new(Admission { cap: cap.max(1), inner: Mutex::new(Tiers::default()) })
    }

    /// Admits a new connection as silent, shedding the oldest stranger when at the cap;
    /// `None` when every slot is held by a known peer.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<(Arc<Ticket>, Admitted)> {
        let mut t = self.lock();
        let mut how = Admitted::Free;
        if t.held() >= self.cap {
            let victim = t.silent.pop_first().or_else(|| t.asking.pop_first());
            match victim {
                Some((_, shed)) => {
                    shed.cancel();
                    how = Admitted::Shed;
                }
                None => return None,
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let shed = CancellationToken::new();
        t.silent.insert(id, shed.clone());
        let ticket = Ticket { id, tier: AtomicU8::new(SILENT), shed, admission: self.clone() };
        Some((Arc::new(ticket), how))
    }

    /// Connections held now (silent, asking, known).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let t = self.lock();
        (t.silent.len(), t.asking.len(), t.known)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tiers> {
        // The tiers stay consistent under every early return, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ticket {
    /// A complete request head arrived.
    pub(crate) fn asked(&self) {
        if self.tier.compare_exchange(SILENT, ASKING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let mut t = self.admission.lock();
            // Absent when it was shed meanwhile: it is closing, and holds no slot.
            if let Some(shed) = t.silent.remove(&self.id) {
                t.asking.insert(self.id, shed);
            }
        }
    }

    /// A request was answered as allowed: the peer holds valid credentials.
    pub(crate) fn known(&self) {
        self.asked();
        if self.tier.compare_exchange(ASKING, KNOWN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let mut t = self.admission.lock();
            if t.asking.remove(&self.id).is_some() {
                t.known += 1;
            } else {
                // Shed while asking: stays out of the count, as it is closing.
                self.tier.store(ASKING, Ordering::Release);
            }
        }
    }

    /// Whether a complete request has arrived on this connection.
    pub(crate) fn has_asked(&self) -> bool {
        self.tier.load(Ordering::Acquire) != SILENT
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut t = self.admission.lock();
        match self.tier.load(Ordering::Acquire) {
            SILENT => {
                t.silent.remove(&self.id);
            }
            ASKING => {
                t.asking.remove(&self.id);
            }
            _ => t.known = t.known.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_silent_stranger_goes_first_then_askers_never_known_peers() {
        let a = Admission::new(3);
        let (known, _) = a.admit().unwrap();
        known.known();
        let (asker, _) = a.admit().unwrap();
        asker.asked();
        let (silent_old, _) = a.admit().unwrap();
        assert_eq!(a.counts(), (1, 1, 1));
        let (silent_new, how) = a.admit().unwrap();
        assert_eq!(how, Admitted::Shed);
        assert!(silent_old.shed.is_cancelled(), "the oldest silent connection is shed first");
        assert!(!asker.shed.is_cancelled() && !known.shed.is_cancelled());
        drop(silent_old);
        assert_eq!(a.counts(), (1, 1, 1), "a shed ticket's drop frees nothing twice");
        silent_new.known();
        let (_newest, how) = a.admit().unwrap();
        assert_eq!(how, Admitted::Shed);
        assert!(asker.shed.is_cancelled(), "with no silent one left, the oldest asker goes");
        drop(asker);
        assert_eq!(a.counts(), (1, 0, 2));
        _newest.known();
        assert!(a.admit().is_none(), "known peers are never shed for a newcomer");
        drop(known);
        assert_eq!(a.counts(), (0, 0, 2));
        assert!(a.admit().is_some(), "a closed connection frees its slot");
    }
}
