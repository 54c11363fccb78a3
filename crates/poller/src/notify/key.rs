//! Notice keys: the name of one notice that every poller of a cluster computes alike for
//! the same event, so the store can refuse a second claim of it (the `notices` table's
//! UNIQUE key) and receivers can recognise a repeat (webhook `Idempotency-Key`, email
//! `X-Rollcall-Notice` and `Message-ID`).
//!
//! Rules it keeps (the forms, `SERVER` last so no server name can make two forms meet; the
//! fields before it are numbers or fixed words, without `:`):
//! - `told:N:SERVER`: the N-th notice decided from the server's notification memory
//!   (problem, change, recovery, flapping, settled). N is the stored memory's `seq` + 1:
//!   any node deciding from the same stored memory names the same notice, and once one
//!   has claimed it (saving the memory with `seq` N in the same transaction), the next
//!   decision of any node counts from N.
//! - `clock:MS:SERVER`: the clock order given at `MS` (Unix milliseconds, the order's own
//!   time, as stored in the server's clock corrections).
//! - `downtime:ID:SERVER`: the one notice for a server still not fine when the downtime
//!   `ID` ended.

use chrono::{DateTime, Utc};

/// The key of the `seq`-th notice decided from `server`'s notification memory.
pub fn told(server: &str, seq: i64) -> String {
    format!("told:{seq}:{server}")
}

/// The key of the notice about the clock order given to `server` at `at`.
pub fn clock(server: &str, at: DateTime<Utc>) -> String {
    format!("clock:{}:{server}", at.timestamp_millis())
}

/// The key of the notice about `server` when the downtime `id` ended.
pub fn downtime_end(server: &str, id: i64) -> String {
    format!("downtime:{id}:{server}")
}

/// `key` as the left part of an email `Message-ID` (RFC 5322 `dot-atom-text`): letters,
/// digits, `-` and `.` kept, every other byte as `=XX`, so two keys never give one id.
pub fn message_id_part(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_different_events_differ_even_for_odd_server_names() {
        assert_eq!(told("mail-01", 7), "told:7:mail-01");
        assert_ne!(told("1:a", 2), told("a", 21));
        let at = DateTime::from_timestamp_millis(1_764_540_000_123).unwrap();
        assert_eq!(clock("mx", at), "clock:1764540000123:mx");
        assert_eq!(downtime_end("web 03", 12), "downtime:12:web 03");
        assert_eq!(message_id_part("told:7:mail-01"), "told=3A7=3Amail-01");
        assert_ne!(message_id_part("a b"), message_id_part("a_b"));
        assert_eq!(message_id_part("ü"), "=C3=BC");
    }
}
