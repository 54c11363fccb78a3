//! Timestamp formats of the wire: RFC 3339 in UTC, with milliseconds for reported times and
//! microseconds for the two clock-estimation stamps. Readers accept any RFC 3339 offset.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 time {s:?}: {e}")))
}

/// RFC 3339 with milliseconds (`2026-11-26T17:18:07.123Z`).
pub mod rfc3339_ms {
    use super::*;
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        parse(d)
    }
}

/// RFC 3339 with microseconds, for `received_at` / `replied_at`.
pub mod rfc3339_us {
    use super::*;
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        parse(d)
    }
}
