//! Man pages and shell completions written from the clap definitions the binaries parse
//! (`rollcall generate man|completions DIR`, hidden; `scripts/package` calls it), so the
//! packaged documentation can never drift from the programs.
//!
//! Rules it keeps: one page per visible command (`rollcall.1`, `rollcall-poller.1`, ...);
//! `rollcall generate` itself is parsed apart from the user's command line (`main` looks
//! at its first argument), so no page or completion names it; `rollcall-attendant.1` comes from the attendant-only binary's definition, not from the
//! `rollcall attendant` subcommand (same flag, one name: the two packages must not ship
//! the same file); hidden commands get no page.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;

/// `rollcall generate man|completions DIR`.
#[derive(Parser)]
#[command(name = "rollcall generate", about = "Write man pages or shell completions (for packaging).")]
struct Args {
    #[arg(value_enum)]
    what: What,
    /// The folder to write them into (created when missing).
    dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum What {
    Man,
    Completions,
}

/// Parses `rollcall generate ...` from the process arguments and writes what it asks for,
/// printing each file written; `rollcall` is the definition `rollcall` itself parses.
pub fn main(rollcall: clap::Command) -> ExitCode {
    let args = Args::parse_from(std::env::args_os().skip(1));
    let written = match args.what {
        What::Man => man_pages(rollcall, &args.dir),
        What::Completions => completions(rollcall, &args.dir),
    };
    match written {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The shells completions are written for, each with the file name its package installs.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes `NAME.1` for `rollcall`, each visible subcommand and `rollcall-attendant` into
/// `dir`; returns the files written.
pub fn man_pages(rollcall: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut rollcall = rollcall.disable_help_subcommand(true);
    rollcall.build();
    for sub in rollcall.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "attendant") {
        written.push(page(sub.clone(), dir)?);
    }
    written.push(page(rollcall, dir)?);
    written.push(page(crate::attendant_args::Args::command(), dir)?);
    Ok(written)
}

fn page(cmd: clap::Command, dir: &Path) -> anyhow::Result<PathBuf> {
    let man = clap_mangen::Man::new(cmd).source(format!("Rollcall {}", env!("CARGO_PKG_VERSION"))).manual("Rollcall");
    man.generate_to(dir).with_context(|| format!("cannot write a man page into {}", dir.display()))
}

/// Writes bash, zsh and fish completions for `rollcall` and `rollcall-attendant` into
/// `dir` (`rollcall.bash`, `_rollcall`, `rollcall.fish`, ...); returns the files written.
pub fn completions(mut rollcall: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut attendant = crate::attendant_args::Args::command();
    let mut written = Vec::new();
    for shell in SHELLS {
        for cmd in [&mut rollcall, &mut attendant] {
            let name = cmd.get_name().to_string();
            let file = clap_complete::generate_to(shell, cmd, name, dir)
                .with_context(|| format!("cannot write {shell} completions into {}", dir.display()))?;
            written.push(file);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[PathBuf]) -> Vec<String> {
        let mut n: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        n.sort();
        n
    }

    #[test]
    fn one_page_per_visible_command_and_the_attendant_from_its_own_binary() {
        let cli = clap::Command::new("rollcall")
            .subcommand(clap::Command::new("attendant").about("the subcommand"))
            .subcommand(clap::Command::new("status"))
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = tempfile::tempdir().unwrap();
        let files = man_pages(cli, dir.path()).unwrap();
        assert_eq!(names(&files), ["rollcall-attendant.1", "rollcall-status.1", "rollcall.1"]);
        let page = std::fs::read_to_string(dir.path().join("rollcall-attendant.1")).unwrap();
        assert!(page.contains("answers the poller"), "{page}");
    }

    #[test]
    fn completions_for_both_binaries_in_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        let files = completions(clap::Command::new("rollcall"), dir.path()).unwrap();
        assert_eq!(
            names(&files),
            [
                "_rollcall",
                "_rollcall-attendant",
                "rollcall-attendant.bash",
                "rollcall-attendant.fish",
                "rollcall.bash",
                "rollcall.fish"
            ]
        );
    }
}
