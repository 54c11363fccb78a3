//! The compilation: everything an attendant knows about its server, in one JSON document.
//!
//! This crate is the wire contract between attendant and poller (SPEC section 1). Rules it
//! keeps: field names never change within a schema version; readers ignore unknown fields
//! so newer attendants still talk to older pollers; a document of another
//! `schema_version` is reported as [`DecodeError::Incompatible`], never a crash.

pub mod clock_order;
mod compilation;
mod timefmt;

pub use compilation::*;
pub use timefmt::{rfc3339_ms, rfc3339_us};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The path on the attendant that answers the poller's one query.
pub const COMPILATION_PATH: &str = "/v1/compilation";

/// The attendant's default TCP port.
pub const DEFAULT_ATTENDANT_PORT: u16 = 7460;

/// The poller's default TCP port (API, dashboard, metrics).
pub const DEFAULT_POLLER_PORT: u16 = 7470;
