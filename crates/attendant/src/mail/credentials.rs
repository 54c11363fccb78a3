//! Fetches a login secret from its source at the moment it is needed.
//!
//! Rules: the value only ever lives in a `Secret` (prints `MASKED`); a command runs with
//! no stdin, its stderr discarded (it may echo the secret), killed at the timeout, and
//! its output trimmed; errors say which source failed and how, never what it printed.

use std::process::Stdio;
use std::time::Duration;

use rollcall_config::{Secret, SecretSource};
use tokio::io::AsyncReadExt;

use crate::config::login::SecretFrom;

/// Largest output accepted from a secret command (tokens are a few KiB at most).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A secret ready for SASL: a password, or an OAuth2 access token for XOAUTH2.
#[derive(Debug, Clone)]
pub enum LoginSecret {
    Password(Secret),
    OAuth2Token(Secret),
}

/// Reads the secret from `from`; a command is killed after `timeout`.
///
/// Errors are one line naming the source and what went wrong (unreadable file, command
/// not found, failed, silent, not UTF-8, too slow), never what the command printed.
pub async fn fetch(from: &SecretFrom, timeout: Duration) -> Result<LoginSecret, String> {
    match from {
        SecretFrom::File(path) => SecretSource::File(path.clone()).read().map(LoginSecret::Password),
        SecretFrom::Command(argv) => run(argv, timeout).await.map(LoginSecret::Password),
        SecretFrom::OAuth2Command(argv) => run(argv, timeout).await.map(LoginSecret::OAuth2Token),
    }
}

async fn run(argv: &[String], timeout: Duration) -> Result<Secret, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty secret command".into());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run secret command {program}: {e}"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| format!("secret command {program}: no stdout"))?;
    let work = async {
        let mut out = Vec::new();
        (&mut stdout)
            .take(MAX_SECRET_BYTES)
            .read_to_end(&mut out)
            .await
            .map_err(|e| format!("reading secret command {program}: {e}"))?;
        let status = child.wait().await.map_err(|e| format!("waiting for secret command {program}: {e}"))?;
        Ok::<_, String>((out, status))
    };
    let (out, status) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("secret command {program} did not finish within {timeout:?}"))??;
    if !status.success() {
        return Err(format!("secret command {program} failed ({status})"));
    }
    let text =
        String::from_utf8(out).map_err(|_| format!("secret command {program} printed something that is not UTF-8"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("secret command {program} printed nothing"));
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> SecretFrom {
        SecretFrom::Command(vec!["/bin/sh".into(), "-c".into(), script.into()])
    }

    #[tokio::test]
    async fn command_output_is_trimmed_and_masked() {
        let s = fetch(&sh("echo '  hunter2  '"), Duration::from_secs(5)).await.expect("secret");
        let LoginSecret::Password(p) = &s else { panic!("not a password") };
        assert_eq!(p.expose(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn failing_hanging_and_silent_commands_are_errors_without_output() {
        let e = fetch(&sh("echo hunter2; exit 3"), Duration::from_secs(5)).await.unwrap_err();
        assert!(e.contains("failed") && !e.contains("hunter2"), "{e}");
        let t = std::time::Instant::now();
        let e = fetch(&sh("sleep 30"), Duration::from_millis(300)).await.unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let e = fetch(&sh("true"), Duration::from_secs(5)).await.unwrap_err();
        assert!(e.contains("printed nothing"), "{e}");
    }
}
