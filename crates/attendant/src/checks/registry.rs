//! The check kinds, one line each. Adding a kind: write `checks/NAME.rs` with its keys'
//! settings struct, its validation (`parse`) and a [`ServiceCheck`](super::ServiceCheck),
//! export a `KIND` ([`Kind`]), and add that `KIND` to [`KINDS`]. `config` reads every
//! `[[service]]` through this list.

use super::{command, http, imap, ldap, process, smtp, systemd, tcp, Kind};

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
