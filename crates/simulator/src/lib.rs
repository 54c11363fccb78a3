//! The simulator: N virtual attendants served by one process, for benchmarks and
//! fleet-scale tests (`rollcall simulate`).
//!
//! Layout: `fleet` (who the virtual servers are: their knobs, services, clocks, and the
//! compilation and Prometheus text they answer), `stats` (requests counted per client and
//! the gaps between them, so each peer's poll count and interval lateness are known
//! independently of what the peer says about itself), `server` (the HTTP face and how a
//! request finds its virtual server), `targets` (target lists for the poller and Prometheus).
//!
//! Rules it keeps: everything about virtual server `i` follows from `(seed, i)`, so two runs
//! with the same knobs serve the same fleet and tests know which server is which; no server
//! ever touches the machine's clock (each has a virtual offset); what a server costs in
//! memory is a few atomics, so 50,000 of them fit anywhere.

pub mod fleet;
pub mod server;
pub mod stats;
pub mod targets;

pub use fleet::{Kind, Knobs, KnobsError, VirtualFleet};
pub use server::{serve, Addressing};
pub use stats::Stats;
