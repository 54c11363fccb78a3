//! Shared machinery for Rollcall's configuration files.
//!
//! Rules it keeps (SPEC section 7): unknown keys are errors; every error names the file,
//! the key and the line; validation reports every problem at once, not just the first;
//! secrets never print.

mod duration;
mod load;
mod secret;

pub use duration::Duration;
pub use load::{read_file, ConfigError, Located, Problem, Problems};
pub use secret::{Secret, SecretSource};
