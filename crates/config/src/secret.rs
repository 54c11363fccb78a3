//! Secrets (tokens, passwords) that never appear in logs, errors or `Debug` output.

use std::fmt;

/// A secret value; prints as `MASKED`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The clear value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// Where a secret comes from: the config names a source, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(std::path::PathBuf),
}

impl SecretSource {
    /// Reads the secret, trimming the trailing newline editors add. Empty is an error.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretSource::File(p) => {
                let s =
                    std::fs::read_to_string(p).map_err(|e| format!("cannot read secret file {}: {e}", p.display()))?;
                let s = s.trim();
                if s.is_empty() {
                    return Err(format!("secret file {} is empty", p.display()));
                }
                Ok(Secret::new(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "MASKED MASKED");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_is_trimmed_and_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(SecretSource::File(p.clone()).read().unwrap().expose(), "abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(SecretSource::File(p).read().unwrap_err().contains("empty"));
    }
}
