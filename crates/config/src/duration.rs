//! Durations written as `"500ms"`, `"90s"`, `"15m"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A duration in a config file: a string such as `"500ms"`, `"90s"`, `"15m"`, `"1h 30m"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it like \"500ms\", \"90s\" or \"15m\""))
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_forms() {
        assert_eq!("500ms".parse::<Duration>().unwrap().0.as_millis(), 500);
        assert_eq!("90s".parse::<Duration>().unwrap().0.as_secs(), 90);
        assert_eq!("15m".parse::<Duration>().unwrap().0.as_secs(), 900);
    }

    #[test]
    fn rejects_bare_numbers_with_an_example() {
        let err = "15".parse::<Duration>().unwrap_err();
        assert!(err.contains("\"15\"") && err.contains("\"90s\""), "{err}");
    }
}
