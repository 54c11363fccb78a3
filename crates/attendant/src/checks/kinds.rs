//! The registry of check kinds: the one `kinds!` line below declares each kind's file
//! (`checks/kinds/NAME.rs`) and lists its `KIND` in [`KINDS`]. Adding a kind: write its
//! file (its keys' settings struct, their validation in `parse`, a
//! [`ServiceCheck`](super::ServiceCheck), and `pub const KIND: Kind`), then add its name
//! to that line. `config` reads every `[[service]]` through [`find`].

use super::Kind;

/// Declares the kinds' modules and lists them in [`KINDS`], in the order given.
macro_rules! kinds {
    ($($name:ident),* $(,)?) => {
        $(pub(crate) mod $name;)*
        /// Every check kind, in the order error messages list them.
        pub const KINDS: &[Kind] = &[$($name::KIND),*];
    };
}

kinds!(tcp, process, command, systemd, imap, smtp, ldap, http);

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
