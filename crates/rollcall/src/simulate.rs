//! `rollcall simulate`: N virtual attendants in this one process, for benchmarks and for
//! trying a poller against a fleet far larger than the machines at hand.
//!
//! Edge logic only: parse the knobs, raise the open-file limit, bind, write the target
//! lists when asked, print where things are, and serve until Ctrl-C. The fleet itself is
//! `rollcall_simulator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rollcall_simulator::{Addressing, Knobs, VirtualFleet};
use tokio_util::sync::CancellationToken;

/// Knobs and addresses of `rollcall simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// Virtual servers to serve.
    #[arg(long, default_value_t = 1000)]
    servers: usize,
    /// `0.0.0.0:PORT`: server i is http://127.1.0.0+i:PORT (one host per server, Linux);
    /// `IP:PORT`: server i is http://IP:PORT/s/i.
    #[arg(long, default_value = "0.0.0.0:7460")]
    listen: SocketAddr,
    /// Fraction of servers whose directory service is critical.
    #[arg(long, default_value_t = 0.0)]
    deficient: f64,
    /// Fraction of servers deficient and clean in turn.
    #[arg(long, default_value_t = 0.0)]
    flapping: f64,
    /// Fraction of servers that answer after --slow-delay.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// Fraction of servers that never answer.
    #[arg(long, default_value_t = 0.0)]
    hung: f64,
    /// Fraction of servers that reset every connection.
    #[arg(long, default_value_t = 0.0)]
    unreachable: f64,
    #[arg(long, default_value = "300ms")]
    slow_delay: rollcall_config::Duration,
    /// How long a hung server holds a request before dropping it unanswered.
    #[arg(long, default_value = "60s")]
    hang_for: rollcall_config::Duration,
    /// A flapping server changes every this many requests.
    #[arg(long, default_value_t = 1)]
    flap_every: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write servers.toml (poller) and prometheus-targets.json (file_sd) into this folder.
    #[arg(long)]
    targets_dir: Option<PathBuf>,
}

pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    let knobs = Knobs {
        deficient: args.deficient,
        flapping: args.flapping,
        slow: args.slow,
        hung: args.hung,
        unreachable: args.unreachable,
        slow_delay: args.slow_delay.get(),
        hang_for: args.hang_for.get(),
        flap_every: args.flap_every,
        seed: args.seed,
    };
    let fleet = Arc::new(VirtualFleet::new(args.servers, knobs).context("invalid knobs")?);
    let files = rollcall_simulator::server::raise_fd_limit();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addressing = Addressing::for_listener(listener.local_addr()?);
    if let Some(dir) = &args.targets_dir {
        rollcall_simulator::targets::write(dir, args.servers, &addressing)
            .with_context(|| format!("cannot write target lists into {}", dir.display()))?;
    }
    let last = args.servers.saturating_sub(1);
    println!("Rollcall simulator: {} virtual attendants (open-file limit {files}).", args.servers);
    println!("  server 0:      {}", addressing.url(0));
    println!("  server {last}:  {}", addressing.url(last));
    println!("  stats:         {}/stats?interval_ms=N   (POST /stats/reset starts a window)", addressing.control_url());
    if let Some(dir) = &args.targets_dir {
        println!("  target lists:  {}/servers.toml, prometheus-targets.json", dir.display());
    }
    rollcall_simulator::serve(listener, fleet, stop).await.context("simulator failed")?;
    Ok(())
}
