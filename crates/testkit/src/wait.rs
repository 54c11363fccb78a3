//! Waiting until something holds, never forever.
//!
//! Rules: every wait is bounded by a deadline; a wait that runs out fails the test saying
//! what it waited for and, where the check can tell, what it saw instead the last time.

use std::fmt::{self, Display};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a wait waits when the test names no deadline of its own.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The pause between two checks.
pub const PAUSE: Duration = Duration::from_millis(100);

/// Runs `check` until it answers `Ok`, pausing [`PAUSE`] between tries; after `deadline`
/// fails the test with `what` and the last `Err` (what was seen instead; an empty one is
/// left out of the message).
pub async fn wait_until<T, E: Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= end {
            let last = last.to_string();
            let seen = if last.is_empty() { String::new() } else { format!("; last seen:\n{last}") };
            panic!("gave up after {deadline:?} waiting for {what}{seen}");
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Runs `check` until it answers `Some`, at most [`DEADLINE`]; see [`wait_until`].
pub async fn wait_for<T, Fut: Future<Output = Option<T>>>(what: &str, check: impl FnMut() -> Fut) -> T {
    wait_for_within(what, DEADLINE, check).await
}

/// Runs `check` until it answers `Some`, at most `deadline`; see [`wait_until`].
pub async fn wait_for_within<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> T {
    wait_until(what, deadline, || {
        let answer = check();
        async move { answer.await.ok_or("") }
    })
    .await
}

/// A log file as what a wait saw: its text, read only when a failed wait shows it.
pub struct LogFile(pub PathBuf);

impl Display for LogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        write!(f, "--- {}\n{text}", self.0.display())
    }
}
