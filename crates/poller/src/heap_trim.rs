//! Gives freed heap pages back to the system every few seconds.
//!
//! Each poll allocates and frees a few kilobytes while every server's latest compilation
//! stays alive between them; glibc's heap keeps pages that hold only free chunks among
//! live ones and returns them only when asked. `malloc_trim(0)` asks (it also releases
//! free pages inside the heap, not only at its top); a pass over the heap of a large fleet
//! takes about a millisecond.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the heap is trimmed.
const EVERY: Duration = Duration::from_secs(5);

pub fn spawn(stop: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => trim(),
            }
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heap; it takes no pointers from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
