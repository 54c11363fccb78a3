//! `rollcall store copy`: moves a poller's store to another backend (SQLite to PostgreSQL,
//! or back), history included. Rerunning it resumes, and copies nothing twice
//! (`rollcall_poller::store::copy`); the poller must be stopped meanwhile.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rollcall_config::SecretSource;
use rollcall_poller::store::copy::copy;

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every table of one store into another (history included); stop the poller first.
    /// A rerun resumes where an interrupted copy stopped and copies nothing twice.
    Copy {
        /// The store to read: sqlite://PATH or postgres://USER@HOST[:PORT]/DB.
        #[arg(long)]
        from: String,
        /// The store to write (created and migrated when new).
        #[arg(long)]
        to: String,
        /// File holding the password of a postgres:// --from (else the URL's or PGPASSWORD).
        #[arg(long)]
        from_password_file: Option<PathBuf>,
        /// File holding the password of a postgres:// --to.
        #[arg(long)]
        to_password_file: Option<PathBuf>,
    },
}

pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    let StoreCommand::Copy { from, to, from_password_file, to_password_file } = command;
    let shown = |url: &str| rollcall_poller::config::redact_url(url);
    if from == to {
        anyhow::bail!("--from and --to are the same store ({})", shown(&from));
    }
    let source = open(&from, from_password_file.as_deref(), "--from").await?;
    let dest = open(&to, to_password_file.as_deref(), "--to").await?;
    eprintln!("copying {} to {}", shown(&from), shown(&to));
    let mut err = std::io::stderr();
    let copied = copy(&source, &dest, |table, done, total| {
        let _ = write!(err, "\r{table}: {done} of {total} rows");
        let _ = err.flush();
    })
    .await;
    eprintln!();
    let copied = copied.with_context(|| format!("copy from {} to {} stopped", shown(&from), shown(&to)))?;
    source.close().await;
    dest.close().await;
    for c in &copied {
        println!("{:<20} {:>10} copied {:>10} in the source", c.table, c.copied, c.source_rows);
    }
    Ok(())
}

async fn open(
    url: &str,
    password_file: Option<&Path>,
    flag: &str,
) -> anyhow::Result<rollcall_poller::store::SharedStore> {
    let password = match password_file {
        Some(f) => Some(SecretSource::File(f.to_path_buf()).read().map_err(|e| anyhow::anyhow!("{flag}: {e}"))?),
        None => None,
    };
    rollcall_poller::store::open(url, password.as_ref()).await.with_context(|| flag.to_string())
}
