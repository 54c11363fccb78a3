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
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
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
    match p.line {
        Some(l) => format!("{file}:{l}: {}: {}", p.key, p.message),
        None => format!("{file}: {}: {}", p.key, p.message),
    }
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| render_problem(file, p)).collect();
    lines.join("\n")
}

/// Reads a whole config file as text.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: path.display().to_string(), source })
}

/// A parsed file kept beside its text, so validation can point at lines.
pub struct Located {
    file: String,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
    dir: PathBuf,
    /// Keys the file has that the config does not know, as `table[i].key` paths.
    unknown: Vec<String>,
}

impl fmt::Debug for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Located").field("file", &self.file).finish()
    }
}

impl Located {
    /// Parses `text` (read from `file`) into `T`. Unknown keys fail here when `T` denies them.
    pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<(T, Located), ConfigError> {
        // Unknown keys are collected, not fatal at the first: `check-config` names them all.
        let mut unknown = Vec::new();
        let value: T = serde_ignored::deserialize(toml::Deserializer::new(text), |path| unknown.push(key_of(&path)))
            .map_err(|e: toml::de::Error| {
                let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
                ConfigError::Parse { file: file.to_string(), line, column, message: e.message().trim().to_string() }
            })?;
        let doc = toml_edit::ImDocument::parse(text.to_string()).ok();
        let dir = Path::new(file).parent().map(Path::to_path_buf).unwrap_or_default();
        Ok((value, Located { file: file.to_string(), text: text.to_string(), doc, dir, unknown }))
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
    pub fn push(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        let key = key.into();
        let line = self.located.line_of(&key);
        self.list.push(Problem { key, line, message: message.to_string() });
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
