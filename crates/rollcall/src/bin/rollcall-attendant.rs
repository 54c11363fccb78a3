//! `rollcall-attendant --config FILE`: the attendant alone, for the monitored servers.
//!
//! The same attendant as `rollcall attendant`, built without the poller, its database,
//! dashboard and mail notifications: a smaller program on every server of the fleet
//! (measured in docs/performance.md).

use std::process::ExitCode;

use clap::Parser;
use rollcall::attendant_args::Args;
use rollcall::process;

fn main() -> ExitCode {
    let args = Args::parse();
    process::main(async move {
        rollcall_attendant::run(args.config, process::stop_on_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
