//! Runs a child program the way monitoring plugins and secret commands must be run: the
//! one place the attendant starts a process and waits for it.
//!
//! Rules (as NRPE and Icinga 2 run plugins):
//! - the program runs in its own process group with no stdin; at the deadline the whole
//!   group is killed, so a hung plugin's children go with it;
//! - stdout and stderr are read *concurrently* while the program runs, each kept up to its
//!   bound and the rest read and dropped, so a chatty program never blocks on a full pipe
//!   (the part beyond the bound is reported as truncated, not as a hang);
//! - the run ends when the program itself exits: after [`EXIT_GRACE`] to collect what is
//!   still buffered in the pipes, it is over even if a background child it left (`sleep
//!   30 &`) still holds them open. Such children are left alone.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How long output is still collected after the program exited (what it wrote just before
/// exiting is already in the pipe; only a background child could write more).
pub const EXIT_GRACE: Duration = Duration::from_millis(100);

/// What to run and how much of its output to keep.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// The program and its arguments (`argv[0]` is looked up in `PATH` when it has no `/`).
    pub argv: &'a [String],
    /// Variables set on top of the attendant's own environment.
    pub env: &'a [(String, String)],
    /// Most bytes of stdout kept.
    pub max_stdout: usize,
    /// Most bytes of stderr kept.
    pub max_stderr: usize,
    /// The whole run, start to exit; the process group is killed when it passes.
    pub timeout: Duration,
}

/// A program that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// What one output stream said, up to its bound.
#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// More came than the bound; it was read and dropped.
    pub truncated: bool,
}

impl Captured {
    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The first line that is not blank, trimmed (`""` when there is none).
    pub fn first_line(&self) -> String {
        self.text().lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
    }
}

/// Why a program did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("empty command")]
    Empty,
    /// `execve` failed: the program is missing, not executable, ...
    #[error("{}", spawn_message(program, source))]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed; the process group was killed.
    #[error("{program} did not finish within {after:?} and was killed")]
    TimedOut { program: String, after: Duration },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// `not found: PROGRAM`, `not executable: PROGRAM`, or the OS's words.
fn spawn_message(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("not found: {program}"),
        std::io::ErrorKind::PermissionDenied => format!("not executable: {program} ({e})"),
        _ => format!("cannot run {program}: {e}"),
    }
}

/// Runs `spec` to its end (see the module rules).
pub async fn run(spec: &Spec<'_>) -> Result<Finished, RunError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(RunError::Empty);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn { program: program.clone(), source })?;
    let pid = child.id();
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunError::Wait { program: program.clone(), source: std::io::Error::other("no pipes") });
    };
    let mut stdout = Capture::new(spec.max_stdout);
    let mut stderr = Capture::new(spec.max_stderr);
    let work = async {
        let mut status: Option<ExitStatus> = None;
        let grace = tokio::time::sleep(Duration::MAX);
        tokio::pin!(grace);
        let (mut b1, mut b2) = (vec![0u8; 8192], vec![0u8; 8192]);
        loop {
            if status.is_some() && stdout.eof && stderr.eof {
                break;
            }
            tokio::select! {
                r = out.read(&mut b1), if !stdout.eof => stdout.take(r, &b1),
                r = err.read(&mut b2), if !stderr.eof => stderr.take(r, &b2),
                s = child.wait(), if status.is_none() => {
                    status = Some(s?);
                    grace.as_mut().reset(tokio::time::Instant::now() + EXIT_GRACE);
                }
                _ = &mut grace, if status.is_some() => break,
            }
        }
        Ok::<_, std::io::Error>(status.unwrap_or_else(|| ExitStatus::from_raw(0)))
    };
    match tokio::time::timeout(spec.timeout, work).await {
        Ok(Ok(status)) => Ok(Finished { status, stdout: stdout.done(), stderr: stderr.done() }),
        Ok(Err(source)) => Err(RunError::Wait { program: program.clone(), source }),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the child's own process group; no memory is touched.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            Err(RunError::TimedOut { program: program.clone(), after: spec.timeout })
        }
    }
}

/// One stream being read: kept up to `max`, the rest counted and dropped.
struct Capture {
    kept: Captured,
    max: usize,
    eof: bool,
}

impl Capture {
    fn new(max: usize) -> Capture {
        Capture { kept: Captured::default(), max, eof: false }
    }

    fn take(&mut self, read: std::io::Result<usize>, buf: &[u8]) {
        match read {
            Ok(0) | Err(_) => self.eof = true,
            Ok(n) => {
                let room = self.max.saturating_sub(self.kept.bytes.len());
                self.kept.bytes.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    self.kept.truncated = true;
                }
            }
        }
    }

    fn done(self) -> Captured {
        self.kept
    }
}

/// `signal 9 (SIGKILL)` for a status that ended by a signal.
pub fn signal_name(status: &ExitStatus) -> Option<String> {
    let sig = status.signal()?;
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return Some(format!("signal {sig}")),
    };
    Some(format!("signal {sig} ({name})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn spec(argv: &[String]) -> Spec<'_> {
        Spec { argv, env: &[], max_stdout: 1024, max_stderr: 256, timeout: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn both_streams_are_read_to_their_bounds_while_the_program_runs() {
        // 200 KB on each stream: far beyond a pipe's 64 KiB, so a sequential reader blocks.
        let argv = sh("head -c 200000 /dev/zero | tr '\\0' x; head -c 200000 /dev/zero | tr '\\0' y >&2; echo done");
        let f = run(&spec(&argv)).await.expect("ran");
        assert!(f.status.success());
        assert_eq!((f.stdout.bytes.len(), f.stdout.truncated), (1024, true));
        assert_eq!((f.stderr.bytes.len(), f.stderr.truncated), (256, true));
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipes_does_not_hold_the_run() {
        let argv = sh("echo started; sleep 30 & exit 0");
        let t = std::time::Instant::now();
        let f = run(&spec(&argv)).await.expect("ran");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(f.stdout.first_line(), "started");
    }

    #[tokio::test]
    async fn missing_and_unexecutable_programs_are_named() {
        let e = run(&spec(&["/nonexistent/check_x".to_string()])).await.unwrap_err();
        assert_eq!(e.to_string(), "not found: /nonexistent/check_x");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("check_plain");
        std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
        let e = run(&spec(&[plain.display().to_string()])).await.unwrap_err();
        assert!(e.to_string().starts_with(&format!("not executable: {}", plain.display())), "{e}");
    }
}
