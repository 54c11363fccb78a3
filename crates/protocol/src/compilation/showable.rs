//! One rule for every reader of a compilation: a document is accepted only if it can be
//! shown whole (SPEC section 10: a compilation the poller accepts is one the API can show,
//! never an `ok` with `compilation: null`).
//!
//! The poller's [`Digest`](super::Digest) skips messages and details, and serde_json skips
//! without checking what a full parse checks: UTF-8 inside strings, lone surrogate
//! escapes (`"\ud800"`), numbers beyond `f64` (`1e400`), and nesting (skipping has no
//! depth limit, a full parse stops at 128). The API shows the compilation by parsing it
//! fully, inside its own reply. So every reader first walks the whole document the way a
//! full parse does, allocating nothing, and refuses it ([`DecodeError::Malformed`], with
//! line and column) unless that parse would succeed and the document nests at most
//! [`MAX_DEPTH`] levels: room for any real compilation (about 6 levels) and for the
//! reply that embeds it, within every serde_json reader's limit of 128.

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::DecodeError;

/// Deepest nesting of arrays and objects a compilation may have (the document itself is
/// level 1).
pub const MAX_DEPTH: usize = 64;

/// [`check_showable`] for a document a serde_json reader has just read (so it is one
/// well-formed JSON document): most documents are settled by one plain byte scan, the
/// rest by the full walk.
///
/// Hand-written because the full walk (a second serde_json pass with every string
/// validated) cost 0.011 CPU-s per 1,000 polls at 5,000 polls/s, a fifth of the poller's
/// CPU (perf: `parse_str`, `from_utf8`). What the scan settles needs no walk: the whole
/// buffer is valid UTF-8 (one pass), no string has a `\u` escape (so no lone surrogate),
/// no number has an exponent or more than 300 digits (so none is beyond `f64`), and the
/// nesting stays within [`MAX_DEPTH`]. Anything else, however rare, takes the full walk.
pub(crate) fn check_showable_read(bytes: &[u8]) -> Result<(), DecodeError> {
    if plainly_showable(bytes) {
        Ok(())
    } else {
        check_showable(bytes)
    }
}

/// [`check_showable_read`] for a document already known to be UTF-8 (the caller validated
/// it once for its own reading): the scan without a second UTF-8 pass.
pub(crate) fn check_showable_text(text: &str) -> Result<(), DecodeError> {
    if plain_scan(text.as_bytes()) {
        Ok(())
    } else {
        check_showable(text.as_bytes())
    }
}

/// The byte scan of [`check_showable_read`]: true only when the document surely passes.
fn plainly_showable(b: &[u8]) -> bool {
    simdutf8::basic::from_utf8(b).is_ok() && plain_scan(b)
}

/// [`plainly_showable`] past the UTF-8 pass: escapes, numbers and nesting.
fn plain_scan(b: &[u8]) -> bool {
    let (mut depth, mut digits, mut in_string) = (0usize, 0usize, false);
    let mut i = 0;
    while i < b.len() {
        if in_string {
            // Strings are most of a compilation: jump to their next quote or escape.
            let Some(at) = memchr::memchr2(b'"', b'\\', &b[i..]) else { return false };
            i += at;
            if b[i] == b'"' {
                in_string = false;
            } else if b.get(i + 1) == Some(&b'u') {
                return false;
            } else {
                i += 1;
            }
            i += 1;
            continue;
        }
        match b[i] {
            b'"' => in_string = true,
            b'{' | b'[' => {
                // The document is level 1 and its innermost value takes a level too, as
                // in the full walk: at most MAX_DEPTH - 1 open brackets.
                depth += 1;
                if depth >= MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'0'..=b'9' => {
                digits += 1;
                if digits > 300 {
                    return false;
                }
                i += 1;
                continue;
            }
            b'e' | b'E' if digits > 0 || b.get(i.wrapping_sub(1)) == Some(&b'.') => return false,
            b'.' if digits > 0 => {
                i += 1;
                continue; // a fraction: its digits count on
            }
            _ => {}
        }
        digits = 0;
        i += 1;
    }
    true
}

/// Whether `bytes` is one JSON document a full parse reads, nested at most [`MAX_DEPTH`].
pub fn check_showable(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Node { room: MAX_DEPTH }.deserialize(&mut de)?;
    de.end()?;
    Ok(())
}

/// A value with `room` levels of nesting left for it.
#[derive(Clone, Copy)]
struct Node {
    room: usize,
}

impl Node {
    fn inner<E: serde::de::Error>(self) -> Result<Node, E> {
        match self.room.checked_sub(1) {
            Some(room) if room > 0 => Ok(Node { room }),
            _ => Err(E::custom(format_args!("nested deeper than {MAX_DEPTH} levels"))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json never yields a non-finite number; kept as the rule, not the parser's.
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("a number beyond the range of f64"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner::<A::Error>()?;
        while map.next_key_seed(Node { room: 1 })?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1))
    }

    #[test]
    fn what_a_full_parse_refuses_is_refused_and_named() {
        for (what, doc) in [
            ("invalid UTF-8", &b"{\"m\": \"caf\xe9\"}"[..]),
            ("a lone surrogate", br#"{"m": "\ud800"}"#),
            ("a number beyond f64", br#"{"n": 1e400}"#),
            ("two documents", br#"{} {}"#),
        ] {
            let full = serde_json::from_slice::<serde_json::Value>(doc);
            assert!(full.is_err(), "{what}: serde_json now reads it; the rule may be looser");
            let e = check_showable(doc).expect_err(what).to_string();
            assert!(e.starts_with("malformed compilation: ") && e.contains("line 1"), "{what}: {e}");
        }
    }

    #[test]
    fn the_scan_settles_only_what_the_full_walk_accepts() {
        // Each of these is well-formed JSON that the full walk refuses: the scan must not
        // call any of them showable.
        for doc in [
            &b"{\"m\": \"caf\xe9\"}"[..],
            br#"{"m": "\ud800"}"#,
            br#"{"n": 1e400}"#,
            br#"{"n": 1.5E400}"#,
            format!("{{\"n\": {}}}", "9".repeat(400)).as_bytes(),
            nested(MAX_DEPTH + 1).as_bytes(),
        ] {
            assert!(check_showable(doc).is_err());
            assert!(!plainly_showable(doc), "{}", String::from_utf8_lossy(doc));
            assert!(check_showable_read(doc).is_err());
        }
        // An ordinary compilation is settled by the scan alone.
        let doc = r#"{"schema_version": 1, "m": "ok \" \\ café", "n": [1, -2.5, true, false, null], "e": "1e400"}"#
            .as_bytes();
        assert!(plainly_showable(doc));
        check_showable(doc).unwrap();
        // Escapes and exponents that are fine go the long way and pass.
        check_showable_read(br#"{"m": "\u00e9", "n": 3.5e300}"#).unwrap();
    }

    #[test]
    fn nesting_is_bounded_at_max_depth_however_deep_it_goes() {
        check_showable(nested(MAX_DEPTH).as_bytes()).unwrap();
        let e = check_showable(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 64 levels"), "{e}");
        // 100,000 levels: refused without recursing through them (no stack overflow).
        let e = check_showable(nested(100_000).as_bytes()).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
        let e = check_showable(format!("{{\"a\":{}}}", nested(MAX_DEPTH)).as_bytes()).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "objects count as levels too: {e}");
    }

    #[test]
    fn what_it_accepts_a_full_parse_reads_and_shows_inside_another_document() {
        let doc =
            format!(r#"{{"m": "ok \u00e9 \ud83d\ude00", "n": [1, -2, 3.5e300, true, null], "d": {}}}"#, nested(60));
        check_showable(doc.as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let wrapped = serde_json::to_vec(&serde_json::json!({ "name": "s", "compilation": v })).unwrap();
        serde_json::from_slice::<serde_json::Value>(&wrapped).expect("the API's reply parses");
    }
}
