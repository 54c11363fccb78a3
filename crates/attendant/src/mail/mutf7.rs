//! IMAP's modified UTF-7 for mailbox names (RFC 3501 section 5.1.3): how every mailbox
//! name goes on the wire (SELECT, EXAMINE, STATUS, APPEND, CREATE, ...), so `Überwachung`,
//! `R&D` and `日本語` work as operators write them.
//!
//! Rules (the RFC's): printable US-ASCII (0x20-0x7e) stands for itself, except `&`, which
//! is `&-`; any other run of characters is UTF-16 in modified base64 (`,` instead of `/`,
//! no padding) between `&` and `-`. Decoding refuses what the RFC forbids (an unclosed or
//! empty shift, bits left over, a shifted run of printable ASCII, two shifted runs in a
//! row, raw non-ASCII), so a server's garbled name is an error, never a silent misreading.
//!
//! Hand-written, not a crate: the one on crates.io (`utf7-imap`, last released 2022) pulls
//! in `regex`, `encoding_rs` and an old `base64` for these sixty lines; a property test
//! holds the round trip and unit tests hold the RFC's examples.

/// The modified base64 alphabet: RFC 2045's with `,` for `/`.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// `name` as it goes on the wire, e.g. `Überwachung` -> `&ANw-berwachung`, `R&D` -> `R&-D`.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut run: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            run.extend_from_slice(c.encode_utf16(&mut [0; 2]));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Writes a shifted run `&...-` of the UTF-16 units in `run`, and empties it.
fn flush(run: &mut Vec<u16>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    out.push('&');
    let bytes: Vec<u8> = run.drain(..).flat_map(u16::to_be_bytes).collect();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let digits = chunk.len() + 1; // 1 byte -> 2 digits, 2 -> 3, 3 -> 4
        for i in 0..digits {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out.push('-');
}

/// Why a name from the server is not modified UTF-7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mailbox name {name:?} is not modified UTF-7 (RFC 3501 5.1.3): {why}")]
pub struct DecodeError {
    pub name: String,
    pub why: &'static str,
}

/// The name a server sent, decoded: `&ZeVnLIqe-` -> `日本語`.
pub fn decode(wire: &str) -> Result<String, DecodeError> {
    let err = |why| DecodeError { name: wire.to_string(), why };
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    let mut last_was_shift = false;
    while let Some(c) = rest.chars().next() {
        if c != '&' {
            if !(' '..='~').contains(&c) {
                return Err(err("a character outside printable US-ASCII"));
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            last_was_shift = false;
            continue;
        }
        let Some(end) = rest.find('-') else { return Err(err("a shift '&' without its closing '-'")) };
        let run = &rest[1..end];
        rest = &rest[end + 1..];
        if run.is_empty() {
            out.push('&');
            last_was_shift = false;
            continue;
        }
        if last_was_shift {
            return Err(err("two shifted runs in a row (they must be one)"));
        }
        let units = base64_units(run).ok_or_else(|| err("a shifted run that is not modified base64"))?;
        let text = String::from_utf16(&units).map_err(|_| err("a shifted run that is not UTF-16"))?;
        if text.chars().any(|c| (' '..='~').contains(&c)) {
            return Err(err("printable US-ASCII inside a shifted run"));
        }
        out.push_str(&text);
        last_was_shift = true;
    }
    Ok(out)
}

/// The UTF-16 units of a modified-base64 run; `None` for a bad digit, a length that leaves
/// a partial unit, or leftover bits that are not zero.
fn base64_units(run: &str) -> Option<Vec<u16>> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut bytes = Vec::with_capacity(run.len() * 3 / 4);
    for b in run.bytes() {
        let v = ALPHABET.iter().position(|a| *a == b)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if bits != 0 || nbits >= 6 || !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(bytes.chunks(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rfc_s_and_the_field_s_names() {
        for (name, wire) in [
            ("INBOX", "INBOX"),
            ("R&D", "R&-D"),
            ("&", "&-"),
            ("Überwachung", "&ANw-berwachung"),
            ("日本語", "&ZeVnLIqe-"),
            // RFC 3501 5.1.3's example.
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
            ("Entwürfe & Notizen", "Entw&APw-rfe &- Notizen"),
            // Outside the BMP: a surrogate pair.
            ("Post 📬", "Post &2D3c7A-"),
        ] {
            assert_eq!(encode(name), wire, "encode {name:?}");
            assert_eq!(decode(wire).as_deref(), Ok(name), "decode {wire:?}");
        }
    }

    #[test]
    fn what_the_rfc_forbids_is_refused_by_name() {
        for (wire, why) in [
            ("&ANw", "without its closing"),
            ("&A!w-", "not modified base64"),
            ("&ANw-&AOQ-", "two shifted runs"),
            ("&AGEAYgBj-", "printable US-ASCII inside"),
            ("Über", "outside printable"),
            ("&ANx-", "not modified base64"),
            ("&2D0-", "not UTF-16"),
        ] {
            let e = decode(wire).expect_err(wire);
            assert!(e.to_string().contains(why), "{wire:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn every_name_round_trips_and_is_printable_ascii(name in "\\PC{0,40}") {
            let wire = encode(&name);
            prop_assert!(wire.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{wire:?}");
            prop_assert_eq!(decode(&wire), Ok(name));
        }
    }
}
