//! A bounded fuzz of the poll client's HTTP parsing (issue 12): status lines, headers,
//! lengths and chunked bodies from random bytes and from valid replies cut at random
//! places. Run by `cargo test` with a fixed number of cases; fault 1's and 2's replies
//! are explicit cases.
//!
//! Properties: nothing panics; a decoded body is never longer than `max`; a head never
//! claims more bytes than it was given; a chunked body split anywhere decodes to itself.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
}

/// Bytes that look like a reply head often enough to get past the status line.
fn heads() -> impl Strategy<Value = Vec<u8>> {
    let lines = prop::collection::vec(
        prop_oneof![
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.0 401 Unauthorized\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Connection: close\r\n".to_vec()),
            (any::<u64>()).prop_map(|n| format!("Content-Length: {n}\r\n").into_bytes()),
            Just(b"Content-Length: -1\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..24),
        ],
        0..8,
    );
    lines.prop_map(|l| l.concat())
}

/// `body` as chunks of the given sizes (cycled), with an extension on some.
fn chunked(body: &[u8], sizes: &[usize], trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        let ext = if i % 3 == 1 { ";x=y" } else { "" };
        out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(if trailer { b"0\r\nX-T: 1\r\n\r\n" } else { b"0\r\n\r\n" });
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn heads_never_panic_nor_overrun(buf in heads()) {
        if let Ok(Some(head)) = parse_head(&buf) {
            prop_assert!(head.len <= buf.len());
        }
    }

    #[test]
    fn random_chunk_streams_never_panic_nor_exceed_max(buf in prop::collection::vec(any::<u8>(), 0..256), max in 0u64..64) {
        let mut buf = BytesMut::from(&buf[..]);
        let mut body = BytesMut::new();
        let _ = decode_chunks(&mut buf, &mut body, max);
        prop_assert!(body.len() as u64 <= max);
    }

    #[test]
    fn chunked_bodies_split_anywhere_decode_to_themselves(
        body in prop::collection::vec(any::<u8>(), 0..600),
        sizes in prop::collection::vec(1usize..200, 1..6),
        cuts in prop::collection::vec(0.0..1.0f64, 0..6),
        trailer in any::<bool>(),
    ) {
        let wire = chunked(&body, &sizes, trailer);
        let mut at: Vec<usize> = cuts.iter().map(|c| (c * wire.len() as f64) as usize).collect();
        at.push(wire.len());
        at.sort_unstable();
        let (mut buf, mut out, mut from, mut done) = (BytesMut::new(), BytesMut::new(), 0, false);
        for to in at {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            if let Chunks::Done = decode_chunks(&mut buf, &mut out, 1 << 20).unwrap() {
                done = true;
                break;
            }
        }
        prop_assert!(done && from == wire.len() && buf.is_empty());
        prop_assert_eq!(&out[..], &body[..]);
        // And one byte under the body's size is oversized, never more held.
        if !body.is_empty() {
            let (mut buf, mut out) = (BytesMut::from(&wire[..]), BytesMut::new());
            let got = decode_chunks(&mut buf, &mut out, body.len() as u64 - 1);
            prop_assert!(matches!(got, Err(PollError::Oversized(_))));
            prop_assert!(out.len() < body.len());
        }
    }
}

/// The seeds: what panicked or aborted the poller before (issue 12, faults 1 and 2).
#[test]
fn the_replies_of_faults_1_and_2_are_bounded() {
    let mut buf = BytesMut::from(&b"fffffffffffffffe\r\nabc\r\n"[..]);
    assert!(matches!(decode_chunks(&mut buf, &mut BytesMut::new(), u64::MAX), Err(PollError::Oversized(_))));
    let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000000\r\n\r\n").unwrap().unwrap();
    assert_eq!(head.framing, Framing::Length(10_000_000_000_000), "checked against max before any allocation");
}
