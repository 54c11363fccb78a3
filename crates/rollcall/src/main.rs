//! `rollcall`: one binary, one subcommand per role (SPEC section 5).
//!
//! This file only parses arguments, sets up logging and signals, and hands over to the
//! library crates; each subcommand's edge logic lives in its own module.

mod check_config;
mod demo;
mod keygen;
mod operator;
mod poller_api;
mod query;
mod render;
mod simulate;
mod status;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
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
        #[command(flatten)]
        poller: PollerArg,
        /// Print the `GET /api/v1/servers` array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Plan maintenance: matching servers are polled but nothing about them is notified.
    Downtime {
        #[command(subcommand)]
        command: DowntimeCommand,
    },
    /// Acknowledge a server's current problem: no more notifications until it recovers
    /// or gets worse.
    Ack {
        /// The server's name in poller.toml.
        name: String,
        /// Why, or who is on it (shown to everyone on call).
        #[arg(short = 'm', long = "comment")]
        comment: String,
        #[command(flatten)]
        poller: PollerArg,
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
        /// For https://: the CA (PEM) the attendant's certificate must chain to (default:
        /// the system's CAs).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// For https:// with mutual TLS: the client certificate (PEM) to present.
        #[arg(long, requires = "key_file")]
        cert_file: Option<PathBuf>,
        /// The key (PEM) of --cert-file.
        #[arg(long, requires = "cert_file")]
        key_file: Option<PathBuf>,
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
    /// Manage the poller's store (copy it to another backend).
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
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

/// Which poller an operator command talks to.
#[derive(Args)]
struct PollerArg {
    /// The poller's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7470", env = "ROLLCALL_POLLER")]
    poller: String,
    /// File holding a user's token (`[[api.user]]` of the poller), sent as a Bearer
    /// token; needed when the poller has users.
    #[arg(long, env = "ROLLCALL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl PollerArg {
    fn target(&self) -> poller_api::Poller {
        poller_api::Poller { url: self.poller.clone(), token_file: self.token_file.clone() }
    }
}

#[derive(Subcommand)]
enum DowntimeCommand {
    /// Add a downtime for the servers matching GLOB (`web-*`, `mail-0?`, `router-01`).
    Add {
        glob: String,
        /// How long: `2h`, `90m`, `3d`.
        #[arg(long = "for")]
        length: rollcall_config::Duration,
        /// When it starts (RFC 3339, e.g. 2026-12-01T22:00:00Z); default now.
        #[arg(long)]
        start: Option<String>,
        /// Why (shown to everyone on call).
        #[arg(short = 'm', long = "comment")]
        comment: String,
        #[command(flatten)]
        poller: PollerArg,
    },
    /// List the downtimes in force or to come.
    List {
        /// Print the `GET /api/v1/downtimes` array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        poller: PollerArg,
    },
    /// Remove a downtime by its id (it ends now).
    Remove {
        id: i64,
        #[command(flatten)]
        poller: PollerArg,
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
            // SIGHUP reloads the configuration: the poller listens for it itself.
            let cfg = rollcall_poller::PollerConfig::load(&config)?;
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("cannot listen on {} (`listen` in {})", cfg.listen, config.display()))?;
            rollcall_poller::run(cfg, listener, stop).await?;
        }
        Command::Status { poller, json } => status::run(&poller.target(), json).await?,
        Command::Downtime { command } => match command {
            DowntimeCommand::Add { glob, length, start, comment, poller } => {
                operator::downtime_add(&poller.target(), &glob, length.get(), start.as_deref(), &comment).await?
            }
            DowntimeCommand::List { json, poller } => operator::downtime_list(&poller.target(), json).await?,
            DowntimeCommand::Remove { id, poller } => operator::downtime_remove(&poller.target(), id).await?,
        },
        Command::Ack { name, comment, poller } => operator::ack(&poller.target(), &name, &comment).await?,
        Command::Query { address, token_file, json, timeout, ca_file, cert_file, key_file } => {
            let tls = query::Tls { ca_file, cert_file, key_file };
            query::run(&address, token_file.as_deref(), json, timeout.get(), &tls).await?;
        }
        Command::Keygen { out, force } => keygen::run(&out, force)?,
        Command::CheckConfig { file, kind } => return Ok(check_config::run(&file, kind)),
        Command::Store { command } => store::run(command).await?,
        Command::Simulate(args) => simulate::run(args, process::stop_on_signal()).await?,
        Command::Demo { listen, state_dir } => {
            let stop = process::stop_on_signal();
            process::ignore_hangup("demo");
            demo::run(listen, state_dir, stop).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
