//! The mail wire clients the mail checks (`checks`) and the synthetic user (`probes`)
//! share: one bounded text-protocol connection (`wire`), IMAP (`imap`, mailbox names in
//! modified UTF-7 by `mutf7`) and SMTP (`smtp`) on it, the TLS configuration (`tls`, also
//! used by the `ldap` check), and the login secrets fetched at the moment of login
//! (`credentials`).
//!
//! Rules: every network step is bounded by the caller's timeout and every line, literal
//! and reply by size; a failure carries the server's own words; a secret only ever lives
//! in a `Secret` and never appears in an error. This room imports only the validated
//! settings types of `config::login` and `subprocess` (to run secret commands); it knows
//! nothing of checks, probes or the board.

pub mod credentials;
pub mod imap;
pub mod mutf7;
pub mod smtp;
pub mod tls;
pub mod wire;
