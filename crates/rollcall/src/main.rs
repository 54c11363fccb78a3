//! `rollcall`: one binary, one subcommand per role (SPEC section 5).
//!
//! This file only parses arguments, sets up logging and signals, and hands over to the
//! library crates; each subcommand's edge logic lives in its own module.

mod check_config;
mod demo;
mod keygen;
mod query;
mod render;
mod simulate;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use rollcall::{generate, process};

#[derive(Parser)]
#[command(name = "rollcall", version, about = "Server monitoring with one query per server.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the attendant on a monitored server.
    Attendant {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the poller: schedule polls, keep state, serve the API.
    Poller {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the fleet as the poller sees it.
    Status {
        /// The poller's base URL.
        #[arg(long, default_value = "http://127.0.0.1:7470", env = "ROLLCALL_POLLER")]
        poller: String,
        /// Print the `GET /api/v1/servers` array instead of a table.
        #[arg(long)]
        json: bool,
        /// File holding a user's token (`[[api.user]]` of the poller), sent as a Bearer
        /// token; needed when the poller has users.
        #[arg(long, env = "ROLLCALL_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Ask one attendant for its compilation and print it.
    Query {
        /// The attendant, as `http://HOST:PORT`, `https://...` or `HOST:PORT`.
        address: String,
        /// File holding the attendant's token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the compilation as received (JSON).
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "10s")]
        timeout: rollcall_config::Duration,
    },
    /// Validate an attendant or poller config file; exit 1 naming every problem.
    CheckConfig {
        file: PathBuf,
        /// The kind of file; guessed from its keys when not given.
        #[arg(long, value_enum)]
        kind: Option<check_config::Kind>,
    },
    /// Create the poller's key pair for signing clock orders; prints the public key line.
    Keygen {
        /// Folder for poller.key (private) and poller.pub.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
    /// Serve N virtual attendants from this one process (benchmarks, fleet-scale trials).
    Simulate(simulate::Args),
    /// Run a poller and attendants on loopback with virtual clocks, until Ctrl-C.
    Demo {
        /// Where the poller's API listens.
        #[arg(long, default_value = "127.0.0.1:7470")]
        listen: SocketAddr,
        /// Keep configs and the database here instead of a temporary folder.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // `rollcall generate man|completions DIR` (packaging) is parsed apart from `Cli`, so it
    // shows in no help text, man page or completion script of its own.
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        return generate::main(Cli::command());
    }
    let cli = Cli::parse();
    process::main(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Attendant { config } => {
            let stop = process::stop_on_signal();
            rollcall_attendant::run(config, stop).await?;
        }
        Command::Poller { config } => {
            let stop = process::stop_on_signal();
            process::ignore_hangup("poller");
            let cfg = rollcall_poller::PollerConfig::load(&config)?;
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("cannot listen on {} (`listen` in {})", cfg.listen, config.display()))?;
            rollcall_poller::run(cfg, listener, stop).await?;
        }
        Command::Status { poller, json, token_file } => status::run(&poller, json, token_file.as_deref()).await?,
        Command::Query { address, token_file, json, timeout } => {
            query::run(&address, token_file.as_deref(), json, timeout.get()).await?;
        }
        Command::Keygen { out, force } => keygen::run(&out, force)?,
        Command::CheckConfig { file, kind } => return Ok(check_config::run(&file, kind)),
        Command::Simulate(args) => simulate::run(args, process::stop_on_signal()).await?,
        Command::Demo { listen, state_dir } => {
            let stop = process::stop_on_signal();
            process::ignore_hangup("demo");
            demo::run(listen, state_dir, stop).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
