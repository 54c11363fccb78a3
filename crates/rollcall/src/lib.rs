//! The library half of the `rollcall` package: what its two binaries (`rollcall` and the
//! attendant-only `rollcall-attendant`) share. Only process plumbing lives here; each
//! binary keeps its own argument parsing, and the work itself lives in the library crates.

pub mod process;
