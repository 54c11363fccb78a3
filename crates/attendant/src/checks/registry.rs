//! The check kinds, one line each. Adding a kind: write `checks/NAME.rs` with its keys'
//! settings struct, its validation (`parse`) and a [`ServiceCheck`], export a `KIND`, and
//! add that `KIND` to [`KINDS`]. `config` reads every `[[service]]` through this list.

use std::sync::Arc;

use super::{command, http, imap, ldap, process, smtp, systemd, tcp, ServiceCheck};
use crate::config::fields::TableCx;

/// One check kind: its `check = "..."` name, its own keys and their validation.
pub struct Kind {
    /// The value of `check` that selects this kind.
    pub name: &'static str,
    /// The keys it reads besides `name`, `check` and `timeout`, in the order the error
    /// for a foreign key lists them.
    pub keys: &'static [&'static str],
    /// Validates those keys of one table (only keys of `keys` are present); every problem
    /// goes to the context, and then the answer is `None`.
    pub parse: fn(&toml::Table, &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>>,
}

impl Kind {
    /// Whether `key` is one of this kind's own keys.
    pub fn reads(&self, key: &str) -> bool {
        self.keys.contains(&key)
    }
}

/// Every check kind, in the order error messages list them.
pub const KINDS: &[Kind] =
    &[tcp::KIND, process::KIND, command::KIND, systemd::KIND, imap::KIND, smtp::KIND, ldap::KIND, http::KIND];

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Whether any kind reads `key`.
pub fn known_key(key: &str) -> bool {
    KINDS.iter().any(|k| k.reads(key))
}

/// `tcp, process, ...`: every kind's name, for error messages.
pub fn names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_unique_names_and_no_common_key_of_their_own() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        for k in KINDS {
            for common in ["name", "check", "timeout"] {
                assert!(!k.keys.contains(&common), "{} lists {common}", k.name);
            }
        }
    }
}
