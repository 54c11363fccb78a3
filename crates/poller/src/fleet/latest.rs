//! The latest compilation of each server, held in memory LZ4-compressed: every server's
//! latest stays in memory, and at 3.6 kB each it was the largest part of the poller's
//! memory per server (2.6x smaller packed; packing takes 2.1 µs, measured).

/// A compilation held compressed: its length (4 bytes, little-endian) then the LZ4 block.
#[derive(Debug, Clone)]
pub(crate) struct Packed(std::sync::Arc<[u8]>);

impl Packed {
    pub(crate) fn pack(raw: &[u8]) -> Packed {
        thread_local! {
            /// Room for the worst case, reused: the only allocation per poll is the result.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|out| {
            let bound = 4 + lz4_flex::block::get_maximum_output_size(raw.len());
            if out.len() < bound {
                out.resize(bound, 0);
            }
            out[..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            match lz4_flex::block::compress_into(raw, &mut out[4..]) {
                Ok(n) => Packed(out[..4 + n].into()),
                // Cannot happen with room for the worst case; kept whole rather than lost.
                Err(_) => Packed(lz4_flex::compress_prepend_size(raw).into()),
            }
        })
    }

    /// The compilation as received; `None` (logged with the server's name) if unreadable.
    pub(crate) fn unpack(&self, server: &str) -> Option<bytes::Bytes> {
        match lz4_flex::decompress_size_prepended(&self.0) {
            Ok(raw) => Some(raw.into()),
            Err(e) => {
                tracing::error!(server, error = %e, "the latest compilation held in memory is unreadable");
                None
            }
        }
    }
}

#[cfg(test)]
#[test]
fn a_packed_compilation_unpacks_to_the_same_bytes() {
    let raw = br#"{"services":[{"name":"mta","status":"ok"},{"name":"mta","status":"ok"}]}"#;
    assert_eq!(Packed::pack(raw).unpack("s").as_deref(), Some(&raw[..]));
}
