//! The command line of `rollcall-attendant`, kept in the library so that `rollcall generate`
//! can write its man page and completions from the very definition the binary parses.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "rollcall-attendant", version, about = "Rollcall's attendant: answers the poller's one query.")]
pub struct Args {
    /// The attendant's config file (the package installs /etc/rollcall/attendant.toml).
    #[arg(long, short)]
    pub config: PathBuf,
}
