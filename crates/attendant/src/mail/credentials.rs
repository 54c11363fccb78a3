//! Fetches a login secret from its source at the moment it is needed.
//!
//! Rules: the value only ever lives in a `Secret` (prints `MASKED`); a command runs with
//! no stdin (through `crate::subprocess`: its own process group, killed whole at the
//! timeout), its output trimmed; errors say which source failed and how: a failed command's
//! exit status and first stderr line (the cause: "gpg: decryption failed: No secret key"),
//! with anything it printed on stdout masked there, so never the secret.

use std::time::Duration;

use rollcall_config::{Secret, SecretSource};

use crate::config::login::SecretFrom;
use crate::subprocess::{self, RunError, Spec};

/// Largest output accepted from a secret command (tokens are a few KiB at most).
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Stderr kept of a secret command: its first line is the reason shown.
const MAX_STDERR_BYTES: usize = 4 * 1024;

/// Longest reason quoted from a failed command's stderr.
const MAX_REASON_CHARS: usize = 200;

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
    let program = argv.first().map_or("", String::as_str);
    let spec = Spec { argv, env: &[], max_stdout: MAX_SECRET_BYTES, max_stderr: MAX_STDERR_BYTES, timeout };
    let f = match subprocess::run(&spec).await {
        Ok(f) => f,
        Err(RunError::Empty) => return Err("empty secret command".into()),
        Err(RunError::TimedOut { .. }) => {
            return Err(format!("secret command {program} did not finish within {timeout:?}"))
        }
        Err(e) => return Err(format!("secret command {e}")),
    };
    let out = f.stdout.bytes;
    if !f.status.success() {
        let how = match subprocess::signal_name(&f.status) {
            Some(signal) => format!("killed by {signal}"),
            None => f.status.to_string(),
        };
        // The first stderr line says why ("gpg: decryption failed: No secret key"); a part of
        // stdout echoed there is masked, so the secret never reaches the message.
        let mut why = f.stderr.first_line();
        let printed = String::from_utf8_lossy(&out);
        for word in printed.split_whitespace().filter(|w| w.len() >= 4) {
            why = why.replace(word, "MASKED");
        }
        let why: String = why.chars().take(MAX_REASON_CHARS).collect();
        return Err(if why.is_empty() {
            format!("secret command {program} failed ({how}, nothing on stderr)")
        } else {
            format!("secret command {program} failed ({how}): {why}")
        });
    }
    if f.stdout.truncated {
        return Err(format!("secret command {program} printed more than {MAX_SECRET_BYTES} bytes"));
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
    async fn a_failed_command_names_its_first_stderr_line_never_the_secret() {
        let e = fetch(
            &sh("echo hunter2-secret; echo 'gpg: decryption failed: No secret key' >&2; echo more >&2; exit 2"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e, "secret command /bin/sh failed (exit status: 2): gpg: decryption failed: No secret key");
        // A command that echoes what it printed to stderr: the secret is masked there.
        let e = fetch(&sh("echo hunter2-secret; echo 'bad token hunter2-secret' >&2; exit 1"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e, "secret command /bin/sh failed (exit status: 1): bad token MASKED");
        let e = fetch(&SecretFrom::Command(vec!["/bin/cat".into(), "/nonexistent/pw".into()]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.starts_with("secret command /bin/cat failed (exit status: 1): /bin/cat: /nonexistent/pw"), "{e}");
        let e = fetch(&SecretFrom::Command(vec!["/nonexistent/vault-get".into()]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e, "secret command not found: /nonexistent/vault-get");
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
