//! Validators of single values the tables share (`HOST:PORT`, a positive duration, a mail
//! address, a regular expression) and [`TableCx`], through which a table's keys are read and its problems named.
//!
//! Rules: a validator pushes one problem under the key it checks (so the message carries
//! that key's line) and answers `None`, never an error value; nothing here reads another
//! module of the crate.

use std::path::{Path, PathBuf};

use rollcall_config::{Duration, Located, Problems};
use serde::de::DeserializeOwned;

/// One table being validated: the file (for lines and relative paths), the problem list,
/// and the table's key prefix (`service[2]`, `probe.mailbox`).
pub struct TableCx<'a, 'f> {
    loc: &'f Located,
    problems: &'a mut Problems<'f>,
    prefix: String,
}

impl<'a, 'f> TableCx<'a, 'f> {
    pub fn new(loc: &'f Located, problems: &'a mut Problems<'f>, prefix: impl Into<String>) -> Self {
        TableCx { loc, problems, prefix: prefix.into() }
    }

    /// The context of the sub-table `name` of this table (`probe` → `probe.mailbox`).
    pub fn sub(&mut self, name: &str) -> TableCx<'_, 'f> {
        let prefix = self.at(name);
        TableCx { loc: self.loc, problems: &mut *self.problems, prefix }
    }

    /// The full key of `key` in this table, e.g. `service[2].address`.
    pub fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    /// The table itself, e.g. `service[2]` (for problems of the table as a whole).
    pub fn table(&self) -> &str {
        &self.prefix
    }

    /// Records a problem of `key` of this table.
    pub fn push(&mut self, key: &str, message: impl std::fmt::Display) {
        let at = self.at(key);
        self.problems.push(at, message);
    }

    /// Records a problem of the table as a whole.
    pub fn push_table(&mut self, message: impl std::fmt::Display) {
        self.problems.push(self.prefix.clone(), message);
    }

    /// A path as written in the file, resolved beside the file when relative.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.loc.resolve(path)
    }

    /// Reads `table` as `T` (a struct of `Option` fields). A value of the wrong type is a
    /// problem named by its own key; keys `T` does not know must have been refused before.
    pub fn settings<T: DeserializeOwned>(&mut self, table: &toml::Table) -> Option<T> {
        match toml::Value::Table(table.clone()).try_into::<T>() {
            Ok(t) => Some(t),
            Err(whole) => {
                // Find the key at fault by reading each alone (every field is optional).
                let mut named = false;
                for (key, value) in table {
                    let one = toml::Table::from_iter([(key.clone(), value.clone())]);
                    if let Err(e) = toml::Value::Table(one).try_into::<T>() {
                        self.push(key, e.message().trim());
                        named = true;
                    }
                }
                if !named {
                    self.push_table(whole.message().trim());
                }
                None
            }
        }
    }
}

/// Whether `a` is `HOST:PORT` with a non-empty host and a port from 1 to 65535.
pub fn valid_host_port(a: &str) -> bool {
    match a.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// `value` of `key` as `HOST:PORT`; `needs` completes the "missing" message.
pub fn host_port(cx: &mut TableCx<'_, '_>, key: &str, value: Option<&str>, needs: &str) -> Option<String> {
    match value {
        Some(a) if valid_host_port(a) => Some(a.to_string()),
        Some(a) => {
            cx.push(key, format!("{a:?} is not HOST:PORT"));
            None
        }
        None => {
            cx.push(key, format!("missing: {needs}"));
            None
        }
    }
}

/// Refuses a zero duration under `key`.
pub fn positive(cx: &mut TableCx<'_, '_>, key: &str, d: Duration) {
    if d.get().is_zero() {
        cx.push(key, "must be longer than 0");
    }
}

/// `value` of `key` as a bare mail address (`user@domain`, nothing SMTP would misread).
pub fn mail_address(cx: &mut TableCx<'_, '_>, key: &str, value: Option<&str>) -> Option<String> {
    match value {
        Some(a) if a.contains('@') && !a.contains(['<', '>', ' ', '\r', '\n']) => Some(a.to_string()),
        Some(a) => {
            cx.push(key, format!("{a:?} is not a mail address (user@domain)"));
            None
        }
        None => {
            cx.push(key, "missing: write it as \"user@domain\"");
            None
        }
    }
}

/// A command line (`["/path/to/program", "ARG", ...]`) is usable: a non-empty program.
pub fn usable_argv(argv: &[String]) -> bool {
    argv.first().is_some_and(|p| !p.is_empty())
}

/// `pattern` of `key` compiled by `build` (`Regex::new`, or a variant that anchors it); a
/// pattern that does not compile is a one-line problem naming the fault.
pub fn regex(
    cx: &mut TableCx<'_, '_>,
    key: &str,
    pattern: &str,
    build: impl Fn(&str) -> Result<regex::Regex, regex::Error>,
) -> Option<regex::Regex> {
    match build(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            // The regex crate draws the spot over several lines; the last one names the fault.
            let why = e.to_string();
            let why = why.lines().last().unwrap_or("").trim().trim_start_matches("error: ").to_string();
            cx.push(key, format!("{pattern:?} is not a regular expression: {why}"));
            None
        }
    }
}
