//! The library half of the `rollcall` package: what its two binaries (`rollcall` and the
//! attendant-only `rollcall-attendant`) share. Only process plumbing, the attendant-only
//! binary's arguments (so `rollcall generate` can document them) and the writers of man
//! pages and completions live here; the work itself lives in the library crates.

pub mod attendant_args;
pub mod generate;
pub mod process;
