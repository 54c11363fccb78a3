//! Reading a TOML file into typed config, with errors that name file, key and line.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found while validating a parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `server[2].name` (indices count from 0, like the file's order).
    pub key: String,
    /// 1-based line of the key in the file, where it can be found.
    pub line: Option<usize>,
    pub message: String,
}

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is part of the message (check-config prints only the message), so it is
    /// not also a `source`: a chain printer would say it twice.
    #[error("{file}: cannot read: {cause}")]
    Io { file: String, cause: std::io::Error },
    #[error("{file}:{line}:{column}: {message}")]
    Parse { file: String, line: usize, column: usize, message: String },
    #[error("{}", render_problems(file, problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

impl ConfigError {
    /// Every problem as its own line, for `check-config` and start-up errors.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { file, problems } => problems.iter().map(|p| render_problem(file, p)).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn render_problem(file: &str, p: &Problem) -> String {
    let key = if p.key.is_empty() { String::new() } else { format!("{}: ", p.key) };
    match p.line {
        Some(l) => format!("{file}:{l}: {key}{}", p.message),
        None => format!("{file}: {key}{}", p.message),
    }
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| render_problem(file, p)).collect();
    lines.join("\n")
}

/// Reads a whole config file as text.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: path.display().to_string(), cause: source })
}

/// A parsed file kept beside its text, so validation can point at lines.
pub struct Located {
    file: String,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
    dir: PathBuf,
    /// Keys the file has that the config does not know, as `table[i].key` paths.
    unknown: Vec<String>,
    /// Keys whose value could not be read (wrong type or form), with why.
    invalid: Vec<(String, String)>,
}

impl fmt::Debug for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Located").field("file", &self.file).finish()
    }
}

impl Located {
    /// Parses `text` (read from `file`) into `T`, collecting every unknown key and every
    /// value of the wrong type or form, so `check-config` names them all at once.
    ///
    /// A value that cannot be read is taken out (blanked, so lines and offsets stay) and
    /// the text read again, until it reads or what fails cannot be taken out (a syntax
    /// error, a missing table key); the values taken out become problems that
    /// [`Located::problems`] holds from the start. A syntax error alone stays a
    /// `ConfigError::Parse` naming line and column.
    pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<(T, Located), ConfigError> {
        let doc = toml_edit::ImDocument::parse(text.to_string()).ok();
        let dir = Path::new(file).parent().map(Path::to_path_buf).unwrap_or_default();
        let mut located = Located {
            file: file.to_string(),
            text: text.to_string(),
            doc,
            dir,
            unknown: Vec::new(),
            invalid: Vec::new(),
        };
        let mut current = text.to_string();
        loop {
            let mut seen = Vec::new();
            let result: Result<T, toml::de::Error> =
                serde_ignored::deserialize(toml::Deserializer::new(&current), |path| seen.push(key_of(&path)));
            for key in seen {
                if !located.unknown.contains(&key) {
                    located.unknown.push(key);
                }
            }
            let e = match result {
                Ok(value) => return Ok((value, located)),
                Err(e) => e,
            };
            let message = e.message().trim().to_string();
            let found = e.span().and_then(|s| entry_at(&current, s.start));
            if let Some(Found::Value { key, range }) = &found {
                // Bounded: each round blanks one more entry of a finite text.
                located.invalid.push((key.clone(), message));
                current = blank(&current, range.clone());
                continue;
            }
            let caused_by_us = located.invalid.iter().any(|(k, _)| {
                let leaf = k.rsplit('.').next().unwrap_or(k);
                message.starts_with(&format!("missing field `{leaf}`"))
            });
            if located.invalid.is_empty() && located.unknown.is_empty() {
                let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
                return Err(ConfigError::Parse { file: file.to_string(), line, column, message });
            }
            let mut p = located.problems();
            if !caused_by_us {
                match found {
                    Some(Found::Table { key }) => p.push(key, message),
                    _ => {
                        let line = e.span().map(|s| line_col(text, s.start).0);
                        p.list.push(Problem { key: String::new(), line, message });
                    }
                }
            }
            return Err(p.finish().expect_err("a problem was found"));
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Resolves a path relative to the config file's folder, as operators expect of
    /// `token_file = "token"` beside the config.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The 1-based line where `key` (e.g. `server[2].name`) is written, if it is.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table: &toml_edit::Table = doc.as_table();
        let mut span = None;
        let segs: Vec<&str> = key.split('.').collect();
        for (i, seg) in segs.iter().enumerate() {
            let (name, index) = match seg.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (*seg, None),
            };
            let last = i + 1 == segs.len();
            // A missing key points at the table that should hold it.
            let Some(item) = table.get(name) else { break };
            span = table.key(name).and_then(|k| k.span()).or(span);
            match (item, index) {
                (toml_edit::Item::ArrayOfTables(aot), Some(ix)) => {
                    let t = aot.get(ix)?;
                    span = t.span().or(span);
                    table = t;
                }
                (toml_edit::Item::Table(t), None) if !last => table = t,
                _ if last => break,
                _ => return span.map(|s| line_col(&self.text, s.start).0),
            }
        }
        span.map(|s| line_col(&self.text, s.start).0)
    }

    /// A collector for this file's validation problems, holding its unknown keys already.
    pub fn problems(&self) -> Problems<'_> {
        let mut p = Problems { located: self, list: Vec::new() };
        for (key, message) in &self.invalid {
            let line = self.line_of(key);
            p.list.push(Problem { key: key.clone(), line, message: message.clone() });
        }
        for key in &self.unknown {
            p.push(key.clone(), "unknown key (check its spelling and section)");
        }
        p
    }
}

/// Collects every validation problem of one file, each located by key.
pub struct Problems<'a> {
    located: &'a Located,
    list: Vec<Problem>,
}

impl Problems<'_> {
    /// Adds a problem at `key`, unless it speaks of a value that could not be read (the
    /// key itself, a key inside it, or its table naming it as missing): that value is
    /// named once already, and what validation says of its absence is only a consequence.
    pub fn push(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        let key = key.into();
        let message = message.to_string();
        let unreadable = self.located.invalid.iter().any(|(bad, _)| {
            let leaf = bad.rsplit('.').next().unwrap_or(bad);
            key == *bad || is_under(&key, bad) || (is_under(bad, &key) && message.contains(leaf))
        });
        if unreadable {
            return;
        }
        let line = self.located.line_of(&key);
        self.list.push(Problem { key, line, message });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Ok` when nothing was found, else every problem in file order.
    pub fn finish(mut self) -> Result<(), ConfigError> {
        if self.list.is_empty() {
            return Ok(());
        }
        self.list.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(ConfigError::Invalid { file: self.located.file.clone(), problems: self.list })
    }
}

/// Whether `key` is inside the table or array `outer` (`server[1].name` is in `server`
/// and in `server[1]`).
fn is_under(key: &str, outer: &str) -> bool {
    key.strip_prefix(outer).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// `server[2].name` from serde_ignored's path.
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        P::Map { parent, key } => match key_of(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => key_of(parent),
    }
}

/// What holds a byte offset of the text: a key's value (with the byte range of the whole
/// `key = value` entry, to take out), or a table (which is never taken out: it would
/// shift the indices of the tables after it).
enum Found {
    Value { key: String, range: std::ops::Range<usize> },
    Table { key: String },
}

/// The entry of a real table (not inline) whose value holds `offset`.
fn entry_at(text: &str, offset: usize) -> Option<Found> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    find_in(doc.as_table(), "", offset)
}

fn find_in(table: &toml_edit::Table, prefix: &str, offset: usize) -> Option<Found> {
    let contains = |span: Option<std::ops::Range<usize>>| {
        span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
    };
    for (name, item) in table.iter() {
        let key = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        match item {
            toml_edit::Item::Value(v) if contains(v.span()) => {
                let start = table.key(name).and_then(|k| k.span()).map_or(v.span()?.start, |s| s.start);
                return Some(Found::Value { key, range: start..v.span()?.end });
            }
            toml_edit::Item::Table(t) => {
                if let Some(f) = find_in(t, &key, offset) {
                    return Some(f);
                }
                if contains(t.span()) {
                    return Some(Found::Table { key });
                }
            }
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let key = format!("{key}[{i}]");
                    if let Some(f) = find_in(t, &key, offset) {
                        return Some(f);
                    }
                    if contains(t.span()) {
                        return Some(Found::Table { key });
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` with `range` blanked: every byte but newlines becomes a space, so every
/// line and offset after it stays where it was.
fn blank(text: &str, range: std::ops::Range<usize>) -> String {
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..range.start]);
    for c in text[range.clone()].chars() {
        match c {
            '\n' => out.push('\n'),
            c => out.extend(std::iter::repeat_n(' ', c.len_utf8())),
        }
    }
    out.push_str(&text[range.end..]);
    out
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Cfg {
        name: String,
        #[serde(default)]
        server: Vec<Srv>,
    }
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Srv {
        name: String,
        port: u16,
    }

    const TEXT: &str = "name = \"x\"\n\n[[server]]\nname = \"a\"\nport = 1\n\n[[server]]\nname = \"b\"\nport = 2\n";

    #[test]
    fn every_unknown_key_is_named_with_its_line() {
        let text = "name = \"x\"\nnmae = 1\n[[server]]\nname = \"a\"\nport = 1\nprot = 2\n[typo]\nx = 1\n";
        let (_, loc) = Located::parse::<Cfg>("p.toml", text).unwrap();
        let mut p = loc.problems();
        p.push("name", "too short");
        let err = p.finish().unwrap_err();
        assert_eq!(
            err.problems(),
            [
                "p.toml:1: name: too short",
                "p.toml:2: nmae: unknown key (check its spelling and section)",
                "p.toml:6: server[0].prot: unknown key (check its spelling and section)",
                "p.toml:7: typo: unknown key (check its spelling and section)",
            ]
        );
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let text = "name = \"x\"\n[[server]]\nname = \"a\"\nport = \"high\"\n";
        let err = Located::parse::<Cfg>("p.toml", text).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:4:"), "{err}");
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Timed {
        name: Option<String>,
        timeout: Option<crate::Duration>,
        #[serde(default)]
        server: Vec<OptSrv>,
    }
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct OptSrv {
        name: String,
        port: Option<u16>,
    }

    /// An invalid value must not hide the unknown keys after it (or before it), nor the
    /// other invalid values: every problem of the file at once.
    #[test]
    fn invalid_values_and_unknown_keys_are_named_together() {
        let text = "nmae = \"x\"\ntimeout = \"ten\"\n[[server]]\nname = \"a\"\nport = \"high\"\nprot = 2\n[[server]]\nname = \"b\"\nport = 3\ntypo = 1\n";
        let (cfg, loc) = Located::parse::<Timed>("p.toml", text).unwrap();
        assert!(cfg.timeout.is_none());
        let err = loc.problems().finish().unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert_eq!(problems[0], "p.toml:1: nmae: unknown key (check its spelling and section)");
        assert!(problems[1].starts_with("p.toml:2: timeout: invalid duration \"ten\""), "{problems:#?}");
        assert!(problems[2].starts_with("p.toml:5: server[0].port: invalid type: string \"high\""), "{problems:#?}");
        assert_eq!(problems[3], "p.toml:6: server[0].prot: unknown key (check its spelling and section)");
        assert_eq!(problems[4], "p.toml:10: server[1].typo: unknown key (check its spelling and section)");
    }

    /// What validation says of a value that could not be read is only its consequence:
    /// the key is named once, for the value.
    #[test]
    fn an_unreadable_value_is_named_once() {
        let (_, loc) = Located::parse::<Timed>("p.toml", "timeout = 5\n").unwrap();
        let mut p = loc.problems();
        p.push("timeout", "missing: set a timeout");
        assert_eq!(p.finish().unwrap_err().problems().len(), 1);
        let text = "[[server]]\nname = \"a\"\nport = \"x\"\n";
        let (_, loc) = Located::parse::<Timed>("p.toml", text).unwrap();
        let mut p = loc.problems();
        p.push("server[0]", "missing: port = 7460");
        p.push("server[0]", "name \"a\" is reserved");
        assert_eq!(
            p.finish().unwrap_err().problems(),
            [
                "p.toml:1: server[0]: name \"a\" is reserved",
                "p.toml:3: server[0].port: invalid type: string \"x\", expected u16"
            ]
        );
    }

    /// A required key with a bad value cannot be taken out: its problem and the unknown
    /// keys found so far are still named, without a "missing field" for it.
    #[test]
    fn a_required_key_with_a_bad_value_is_named_with_the_unknown_keys() {
        let text = "nmae = 1\nname = \"x\"\n[[server]]\nname = \"a\"\nport = -1\n";
        let err = Located::parse::<Cfg>("p.toml", text).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[0], "p.toml:1: nmae: unknown key (check its spelling and section)");
        assert!(problems[1].starts_with("p.toml:5: server[0].port: "), "{problems:#?}");
    }

    #[test]
    fn a_syntax_error_alone_names_line_and_column() {
        let err = Located::parse::<Cfg>("p.toml", "name = \"x\"\nport = = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("p.toml:2:"), "{err}");
    }

    #[test]
    fn blanking_keeps_every_offset() {
        let text = "a = \"h\u{e9}\"\nb = [\n1,\n]\nc = 1\n";
        let start = text.find('b').unwrap();
        let end = text.find(']').unwrap() + 1;
        let out = blank(text, start..end);
        assert_eq!(out.len(), text.len());
        assert_eq!(out.find("c = 1"), text.find("c = 1"));
    }

    #[test]
    fn keys_are_found_in_arrays_of_tables() {
        let (_, loc) = Located::parse::<Cfg>("p.toml", TEXT).unwrap();
        assert_eq!(loc.line_of("name"), Some(1));
        assert_eq!(loc.line_of("server[1].name"), Some(8));
        assert_eq!(loc.line_of("server[0].port"), Some(5));
        assert_eq!(loc.line_of("server[1]"), Some(7));
        assert_eq!(loc.line_of("missing"), None);
        assert_eq!(loc.line_of("server[1].missing"), Some(7));
    }

    #[test]
    fn all_problems_are_reported_in_file_order() {
        let (_, loc) = Located::parse::<Cfg>("p.toml", TEXT).unwrap();
        let mut p = loc.problems();
        p.push("server[1].port", "too high");
        p.push("name", "too short");
        let err = p.finish().unwrap_err();
        assert_eq!(err.problems(), vec!["p.toml:1: name: too short", "p.toml:9: server[1].port: too high"]);
    }
}
