//! Runs the programs the usage kinds read: bounded output, the C locale (figures and words
//! as the parsers expect them, never a decimal comma), no stdin, killed when the caller's
//! timeout drops the run.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Most of stdout read (a queue listing of ~4,000 messages); the rest is left unread.
const MAX_STDOUT: u64 = 1024 * 1024;
/// Most of stderr kept, for the first line of a failure.
const MAX_STDERR: u64 = 4096;

/// What a program printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
}

impl Output {
    /// "PROGRAM exited with N: FIRST STDERR LINE", for a run whose exit code says it failed.
    pub fn failure(&self, program: &str) -> String {
        let how = match self.code {
            Some(c) => format!("exited with {c}"),
            None => "was killed by a signal".to_string(),
        };
        match self.stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => format!("{program} {how}: {line}"),
            None => format!("{program} {how}"),
        }
    }
}

/// Runs `argv` to its end. A program that is not there is "PROGRAM: not found".
pub async fn run(argv: &[String]) -> Result<Output, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program}: not found"),
            _ => format!("cannot run {program}: {e}"),
        })?;
    let (stdout, stderr) = tokio::join!(read(child.stdout.take(), MAX_STDOUT), read(child.stderr.take(), MAX_STDERR));
    let status = child.wait().await.map_err(|e| format!("{program}: {e}"))?;
    Ok(Output { stdout, stderr, code: status.code() })
}

async fn read(pipe: Option<impl AsyncRead + Unpin>, max: u64) -> String {
    let mut buf = Vec::new();
    if let Some(p) = pipe {
        let _ = p.take(max).read_to_end(&mut buf).await;
    }
    String::from_utf8_lossy(&buf).into_owned()
}
