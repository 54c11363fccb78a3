//! The attendant: runs on every monitored server and answers its poller's one query with
//! one compilation of everything about that server (SPEC section 2).
//!
//! Rooms (docs/architecture.md draws them and what each may import): `lifecycle` (start,
//! SIGHUP reload, stop), `attendant` (the [`Attendant`] and its query), `config`
//! (attendant.toml: every table and its validation), `checks` (service checks run at query
//! time, one file per kind), `probes` (the synthetic user's background probes), `mail`
//! (the IMAP/SMTP/TLS clients and login secrets both use), `probe_board` (latest probe
//! results), `usage` (the `[[usage]]` reports, measured in the background), `compile`
//! (builds the document), `host` (cached host usage), `clock` and `clock_keeper` (the
//! reported time and the poller's clock orders), `server` (HTTP, auth, limits),
//! `subprocess` (how plugins and secret commands run), `follow` (the reload-following
//! loop of the probe and usage supervisors), and `nagios_range` (threshold ranges, a leaf).

pub mod attendant;
pub mod checks;
pub mod clock;
pub mod clock_keeper;
pub mod compile;
pub mod config;
pub mod follow;
pub mod host;
pub mod lifecycle;
pub mod mail;
pub mod nagios_range;
pub mod probe_board;
pub mod probes;
pub mod server;
pub mod subprocess;
pub mod usage;

pub use attendant::Attendant;
pub use config::AttendantConfig;
pub use lifecycle::{run, run_on, start};
