//! Answers built from every server (`/metrics`, `GET /api/v1/servers`, the dashboard's
//! fleet page), run beside the polls rather than on the runtime's workers.
//!
//! Rules it keeps:
//! - The work runs on tokio's blocking pool: at 50,000 servers `/metrics` is 33 MB of text
//!   and took 250–400 ms to render, and on a runtime worker that held up every poll due
//!   meanwhile (about 1,000 polls started over 50 ms late per scrape; the bench's own
//!   scrapes put the fleet's lateness p99 at 146 ms, docs/performance.md). Beside the
//!   polls, ten scrapes a second left no poll 50 ms late.
//! - At most [`AT_ONCE`] run at a time; more wait. Each holds a copy of the fleet's state
//!   (tens of megabytes at 50,000 servers). The slot is held by the work itself, so a
//!   client that gives up mid-render does not free it for another render while its own
//!   still runs.

/// Whole-fleet answers built at once.
pub const AT_ONCE: usize = 2;

static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(AT_ONCE);

/// Runs `work` on the blocking pool once a slot is free. Errors: the work panicked (the
/// caller answers 500 in its own format).
pub async fn build<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, tokio::task::JoinError> {
    build_in(&SLOTS, work).await
}

/// [`build`] within `slots` (tests give each their own).
async fn build_in<T: Send + 'static>(
    slots: &'static tokio::sync::Semaphore,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    // The semaphore is never closed, so acquiring cannot fail; were it closed, the work
    // would run without a slot rather than not at all.
    let slot = slots.acquire().await.ok();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::{build, build_in, AT_ONCE};

    #[tokio::test(flavor = "current_thread")]
    async fn a_whole_fleet_answer_is_built_beside_the_polls_not_on_their_thread() {
        let runtime = std::thread::current().id();
        let built_on = build(|| std::thread::current().id()).await.unwrap();
        assert_ne!(built_on, runtime, "built on the thread that runs the polls");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_fleet_answers_are_built_a_few_at_a_time() {
        static SLOTS: Semaphore = Semaphore::const_new(AT_ONCE);
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(build_in(&SLOTS, move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= AT_ONCE, "{} at once", most.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_render_given_up_by_its_client_keeps_its_slot_until_it_ends() {
        static SLOTS: Semaphore = Semaphore::const_new(AT_ONCE);
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let work = |running: Arc<AtomicUsize>, most: Arc<AtomicUsize>| {
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(100));
                running.fetch_sub(1, Ordering::SeqCst);
            }
        };
        // Clients that give up 10 ms into their render, then as many again that wait.
        for _ in 0..AT_ONCE * 2 {
            let given_up = build_in(&SLOTS, work(running.clone(), most.clone()));
            let _ = tokio::time::timeout(std::time::Duration::from_millis(10), given_up).await;
        }
        let waiting: Vec<_> =
            (0..AT_ONCE).map(|_| tokio::spawn(build_in(&SLOTS, work(running.clone(), most.clone())))).collect();
        for t in waiting {
            t.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= AT_ONCE, "{} renders at once", most.load(Ordering::SeqCst));
    }
}
