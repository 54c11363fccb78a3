//! Downtimes (SPEC 13): planned work during which matching servers are polled and move
//! levels as usual, but nothing about them is notified.
//!
//! Rules it keeps:
//! - A downtime covers a server when its glob (`*`, `?`; the rules' glob,
//!   [`crate::levels::glob_match`]) matches the name and `starts_at <= t < ends_at`.
//! - The live list here is what the notifier consults at each event; the store holds the
//!   same downtimes, so they survive restarts. The API adds to both.
//! - A downtime that ends (its time passes, or an operator removes it) is handed to the
//!   notifier once ([`Downtimes::take_ended`]): for each server it covered that is still
//!   not fine and no other downtime covers, one notice is sent then.

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::levels::glob_match;
use crate::model::Downtime;

/// Most characters of a downtime's server glob.
pub const MAX_GLOB: usize = 255;
/// Most characters of a downtime's (or an acknowledgement's) comment.
pub const MAX_COMMENT: usize = 1000;
/// The longest downtime: a year (longer is a decommissioned server: remove it).
pub const MAX_LENGTH: chrono::TimeDelta = chrono::TimeDelta::days(366);

/// Whether `d` covers `server` at `at`.
pub fn covers(d: &Downtime, server: &str, at: DateTime<Utc>) -> bool {
    d.starts_at <= at && at < d.ends_at && glob_match(&d.server, server)
}

/// What is wrong with a requested downtime, for a 400 answer: `None` when it is sound.
/// `now` is when it is asked for; it may start in the past but must end in the future.
pub fn problem(
    server: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    comment: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    if server.trim().is_empty() {
        return Some("server: the glob of server names must not be empty (e.g. \"web-*\")".into());
    }
    if server.chars().count() > MAX_GLOB {
        return Some(format!("server: the glob is longer than {MAX_GLOB} characters"));
    }
    if let Some(c) = server.chars().find(|c| c.is_whitespace() || c.is_control() || "[]{}!\\".contains(*c)) {
        return Some(format!(
            "server: {server:?} is not a glob of server names ({c:?} is not allowed; wildcards are * and ?)"
        ));
    }
    if ends_at <= starts_at {
        return Some(format!("ends_at ({ends_at}) is not after starts_at ({starts_at})"));
    }
    if ends_at <= now {
        return Some(format!("ends_at ({ends_at}) is in the past"));
    }
    if ends_at - starts_at > MAX_LENGTH {
        return Some("the downtime is longer than 366 days".into());
    }
    if comment.trim().is_empty() {
        return Some("comment: say why (e.g. \"kernel upgrade\"); it is shown to everyone on call".into());
    }
    if comment.chars().count() > MAX_COMMENT {
        return Some(format!("comment: longer than {MAX_COMMENT} characters"));
    }
    None
}

/// The downtimes the notifier consults: every one not ended yet.
#[derive(Debug, Default)]
pub struct Downtimes {
    inner: Mutex<Inner>,
    /// Wakes the notifier when a downtime is added or removed (its next end may change).
    pub(crate) changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    open: Vec<Downtime>,
    /// Removed by an operator, their end not handled yet.
    removed: Vec<Downtime>,
}

impl Downtimes {
    /// The downtimes the store kept open (past ones among them are ended at once).
    pub fn new(open: Vec<Downtime>) -> Downtimes {
        Downtimes { inner: Mutex::new(Inner { open, removed: Vec::new() }), changed: Notify::new() }
    }

    /// Every downtime not ended, oldest id first.
    pub fn list(&self) -> Vec<Downtime> {
        self.inner.lock().open.clone()
    }

    pub fn add(&self, d: Downtime) {
        self.inner.lock().open.push(d);
        self.changed.notify_one();
    }

    /// Ends a downtime early (an operator removed it); its end is handled like any other.
    pub fn remove(&self, id: i64) {
        let mut inner = self.inner.lock();
        if let Some(i) = inner.open.iter().position(|d| d.id == id) {
            let d = inner.open.remove(i);
            inner.removed.push(d);
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// A downtime covering `server` at `at`, if any.
    pub fn covering(&self, server: &str, at: DateTime<Utc>) -> Option<Downtime> {
        self.inner.lock().open.iter().find(|d| covers(d, server, at)).cloned()
    }

    /// The soonest end of an open downtime.
    pub fn next_end(&self) -> Option<DateTime<Utc>> {
        self.inner.lock().open.iter().map(|d| d.ends_at).min()
    }

    /// Takes the downtimes that ended by `now` (or were removed): each is answered once,
    /// with whether it was removed by an operator.
    pub fn take_ended(&self, now: DateTime<Utc>) -> Vec<(Downtime, bool)> {
        let mut inner = self.inner.lock();
        let mut out: Vec<(Downtime, bool)> = inner.removed.drain(..).map(|d| (d, true)).collect();
        let (ended, open): (Vec<Downtime>, Vec<Downtime>) = inner.open.drain(..).partition(|d| d.ends_at <= now);
        inner.open = open;
        out.extend(ended.into_iter().map(|d| (d, false)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn dt(id: i64, glob: &str, from: i64, to: i64) -> Downtime {
        Downtime {
            id,
            server: glob.into(),
            starts_at: t(from),
            ends_at: t(to),
            comment: "kernel upgrade".into(),
            by: "ops".into(),
            created_at: t(0),
        }
    }

    #[test]
    fn a_downtime_covers_matching_names_from_its_start_until_just_before_its_end() {
        let d = dt(1, "web-*", 100, 200);
        assert!(!covers(&d, "web-01", t(99)));
        assert!(covers(&d, "web-01", t(100)));
        assert!(covers(&d, "web-01", t(199)));
        assert!(!covers(&d, "web-01", t(200)), "the end is not covered: the end notice goes out then");
        assert!(!covers(&d, "mail-01", t(150)));
    }

    #[test]
    fn ended_and_removed_downtimes_are_taken_once() {
        let list = Downtimes::new(vec![dt(1, "a", 0, 100), dt(2, "b", 0, 300), dt(3, "c", 0, 200)]);
        assert_eq!(list.next_end(), Some(t(100)));
        assert_eq!(list.covering("b", t(50)).map(|d| d.id), Some(2));
        list.remove(3);
        let ended: Vec<(i64, bool)> = list.take_ended(t(100)).into_iter().map(|(d, r)| (d.id, r)).collect();
        assert_eq!(ended, [(3, true), (1, false)]);
        assert!(list.take_ended(t(100)).is_empty(), "each end is handled once");
        assert_eq!(list.list().iter().map(|d| d.id).collect::<Vec<_>>(), [2]);
        assert_eq!(list.next_end(), Some(t(300)));
    }

    #[test]
    fn bad_requests_are_named() {
        let ok = |g: &str, a: i64, b: i64, c: &str| problem(g, t(a), t(b), c, t(10));
        assert_eq!(ok("web-*", 0, 100, "kernel upgrade"), None);
        assert!(ok("", 0, 100, "x").unwrap().starts_with("server: the glob of server names must not be empty"));
        assert!(ok("web 01", 0, 100, "x").unwrap().contains("' ' is not allowed"));
        assert!(ok("web-[12]", 0, 100, "x").unwrap().contains("'[' is not allowed"));
        assert!(ok("web-*", 100, 50, "x").unwrap().contains("is not after starts_at"));
        assert!(ok("web-*", 0, 5, "x").unwrap().contains("is in the past"));
        assert!(ok("web-*", 0, 100, " ").unwrap().starts_with("comment: say why"));
        assert_eq!(ok("web-*", 0, 400 * 86_400, "x").unwrap(), "the downtime is longer than 366 days");
    }
}
