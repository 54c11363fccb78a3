//! The writer: the one task that writes poll results, and so owns what is stored.
//!
//! Rules it keeps:
//! - Records are gathered for up to [`COMMIT_WINDOW`] after the first (or [`MAX_BATCH`]
//!   of them) and written in one transaction: a transaction per poll would cost a commit
//!   per poll. A flush ends the window at once, so readers never wait for it.
//! - A batch whose write fails is kept, whole, and retried with doubling back-off
//!   ([`FIRST_RETRY`] to [`MAX_RETRY`]); new records join it meanwhile, so the fleet never
//!   waits on a failing disk. Under a long fault only poll rows beyond [`MAX_PENDING_POLLS`]
//!   and history compilations beyond [`MAX_PENDING_COMPILATIONS`] are dropped, oldest
//!   first, and counted; facts, transitions, clock corrections, acknowledgements and
//!   operator actions are never dropped.
//! - The fault is logged once when it starts and once when writes succeed again, counted
//!   in [`WriterStats`] (`/metrics`) and reported there while it lasts ([`FaultReport`],
//!   `GET /api/v1/health`).
//! - A flush answers `Ok` once everything recorded before it is written, or
//!   [`StoreError::Failing`] at once while the store is failing. Who only needs to know
//!   when a record is written, without cutting the window short, compares
//!   [`Writer::mark`] with [`Writer::committed`].
//! - When every [`Writer`] is dropped, the task writes what is queued, retrying for up to
//!   [`SHUTDOWN_PATIENCE`], and says what it could not write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{Batch, SharedStore, StoreError};
use crate::model::{AckChange, ActionRow, PollRecord};

/// Most records gathered into one transaction while the store works.
pub const MAX_BATCH: usize = 8192;
/// Longest a record waits for others to share its transaction.
pub const COMMIT_WINDOW: Duration = Duration::from_millis(500);
/// Records queued before the fleet has to wait (backpressure, never unbounded memory).
const QUEUE: usize = 65_536;
/// The first retry after a failed write; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// Poll rows kept while the store fails (about 150 bytes each: some 40 MB). At 5,000 polls
/// a second that is 52 s of outage; at 100 a second, 44 minutes.
pub const MAX_PENDING_POLLS: usize = 262_144;
/// History compilations kept while the store fails (a few kB each).
pub const MAX_PENDING_COMPILATIONS: usize = 8_192;
/// How long the writer keeps retrying at shutdown.
pub const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(20);

/// What the writer counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Writes that failed (each retry counts).
    pub failures: AtomicU64,
    /// Rows waiting to be written now.
    pub pending: AtomicU64,
    /// Poll rows dropped under a long fault.
    pub dropped_polls: AtomicU64,
    /// History compilations dropped under a long fault.
    pub dropped_compilations: AtomicU64,
    /// Poll records handed to the writer so far.
    sent: AtomicU64,
    /// Held while a record is queued and counted, so the count follows the queue's order.
    queueing: parking_lot::Mutex<()>,
    /// Time spent writing batches, in nanoseconds (wall time of each attempt: the store's
    /// work, the `store` phase of `/metrics`).
    pub busy_ns: AtomicU64,
    /// The write fault in progress, if any (`GET /api/v1/health`).
    fault: parking_lot::Mutex<Option<FaultReport>>,
}

/// A write fault in progress, as `GET /api/v1/health` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultReport {
    /// When the first write of this fault failed.
    pub since: chrono::DateTime<chrono::Utc>,
    /// Why the last attempt failed.
    pub last_error: String,
}

impl WriterStats {
    /// The write fault in progress: `None` while writes succeed.
    pub fn fault(&self) -> Option<FaultReport> {
        self.fault.lock().clone()
    }
}

enum Msg {
    Record(Box<PollRecord>),
    Ack(String, AckChange),
    Action(String, ActionRow),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// A handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    stats: Arc<WriterStats>,
    committed: watch::Receiver<u64>,
}

impl Writer {
    /// Starts the writer task on `store`; it ends when every `Writer` clone is dropped,
    /// after writing everything queued.
    pub fn start(store: SharedStore) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Msg>(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let (committed_tx, committed) = watch::channel(0);
        let task = Task {
            store,
            rx,
            batch: Batch::default(),
            waiters: Vec::new(),
            fault: None,
            stats: stats.clone(),
            received: 0,
            committed: committed_tx,
        };
        (Writer { tx, stats, committed }, tokio::spawn(task.run()))
    }

    /// Queues one poll's results (waits only when the queue is full).
    pub async fn record(&self, rec: PollRecord) -> Result<(), StoreError> {
        let permit = self.tx.reserve().await.map_err(|_| StoreError::WriterGone)?;
        // Queued and counted together: the count is never behind the queue.
        let _in_order = self.stats.queueing.lock();
        permit.send(Msg::Record(Box::new(rec)));
        self.stats.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The poll records queued so far: once [`Writer::committed`] reaches this number,
    /// every record queued before this call is written.
    pub fn mark(&self) -> u64 {
        self.stats.sent.load(Ordering::SeqCst)
    }

    /// How many poll records are written (or, under a long fault, shed): it changes at
    /// each commit.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Queues an acknowledgement set or ended for `server`.
    pub async fn record_ack(&self, server: &str, change: AckChange) -> Result<(), StoreError> {
        self.tx.send(Msg::Ack(server.to_string(), change)).await.map_err(|_| StoreError::WriterGone)
    }

    /// Queues an operator action on `server` (the audit trail).
    pub async fn record_action(&self, server: &str, action: ActionRow) -> Result<(), StoreError> {
        self.tx.send(Msg::Action(server.to_string(), action)).await.map_err(|_| StoreError::WriterGone)
    }

    /// Waits until everything recorded before this call is written; answers
    /// [`StoreError::Failing`] at once while the store is failing.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Flush(tx)).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

/// A write fault in progress.
struct Fault {
    error: String,
    retry_at: Instant,
    wait: Duration,
    since: Instant,
}

struct Task {
    store: SharedStore,
    rx: mpsc::Receiver<Msg>,
    batch: Batch,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// Poll records taken from the queue so far (each is in the batch until written).
    received: u64,
    committed: watch::Sender<u64>,
    fault: Option<Fault>,
    stats: Arc<WriterStats>,
}

impl Task {
    async fn run(mut self) {
        loop {
            let first = match self.fault.as_ref().map(|f| f.retry_at) {
                None => self.rx.recv().await,
                Some(at) => tokio::select! {
                    m = self.rx.recv() => m,
                    _ = tokio::time::sleep_until(at) => {
                        self.write().await;
                        continue;
                    }
                },
            };
            let Some(first) = first else { break };
            self.gather(first).await;
            if self.fault.as_ref().is_none_or(|f| Instant::now() >= f.retry_at) {
                self.write().await;
            }
            self.answer_waiters();
        }
        self.finish().await;
    }

    /// Takes `first` and whatever follows within the commit window (while failing: until
    /// the retry is due), up to a full batch or a flush.
    async fn gather(&mut self, first: Msg) {
        let deadline = match &self.fault {
            None => Instant::now() + COMMIT_WINDOW,
            Some(f) => f.retry_at,
        };
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => {
                    self.received += 1;
                    self.batch.push(*r);
                }
                Msg::Ack(server, change) => self.batch.push_ack(server, change),
                Msg::Action(server, action) => self.batch.push_action(server, action),
                Msg::Flush(w) => self.waiters.push(w),
            }
            if (self.fault.is_none() && self.batch.polls() >= MAX_BATCH) || !self.waiters.is_empty() {
                break;
            }
            next = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, self.rx.recv()).await.ok().flatten()
                }
            };
        }
        self.shed();
    }

    /// One attempt at writing the batch.
    async fn write(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let written = self.store.write(&self.batch).await;
        self.stats.busy_ns.fetch_add(started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        match written {
            Ok(()) => {
                *self.stats.fault.lock() = None;
                if let Some(f) = self.fault.take() {
                    tracing::info!(
                        rows = self.batch.len(),
                        failing_for_s = f.since.elapsed().as_secs(),
                        "the store takes writes again; everything kept is written"
                    );
                }
                self.batch.clear();
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.committed.send_replace(self.received);
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let error = e.to_string();
                match &mut self.fault {
                    None => {
                        tracing::error!(
                            error = %error,
                            rows = self.batch.len(),
                            retry_in_s = FIRST_RETRY.as_secs(),
                            "cannot write poll results; they are kept and retried"
                        );
                        *self.stats.fault.lock() =
                            Some(FaultReport { since: chrono::Utc::now(), last_error: error.clone() });
                        self.fault = Some(Fault { error, retry_at: now + FIRST_RETRY, wait: FIRST_RETRY, since: now });
                    }
                    Some(f) => {
                        if f.error != error {
                            tracing::error!(error = %error, rows = self.batch.len(), "poll results still not written");
                        }
                        if let Some(report) = self.stats.fault.lock().as_mut() {
                            report.last_error.clone_from(&error);
                        }
                        f.wait = (f.wait * 2).min(MAX_RETRY);
                        f.retry_at = now + f.wait;
                        f.error = error;
                    }
                }
            }
        }
        self.stats.pending.store(self.batch.len() as u64, Ordering::Relaxed);
    }

    /// Keeps the batch within its bounds while the store is failing.
    fn shed(&mut self) {
        let shed = self.batch.shed(MAX_PENDING_POLLS, MAX_PENDING_COMPILATIONS);
        if shed.polls > 0 || shed.compilations > 0 {
            self.stats.dropped_polls.fetch_add(shed.polls as u64, Ordering::Relaxed);
            self.stats.dropped_compilations.fetch_add(shed.compilations as u64, Ordering::Relaxed);
            tracing::warn!(
                polls = shed.polls,
                compilations = shed.compilations,
                "the store has failed for long: the oldest poll rows waiting are dropped (transitions and clock corrections are kept)"
            );
        }
        self.stats.pending.store(self.batch.len() as u64, Ordering::Relaxed);
    }

    fn answer_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            let answer = match &self.fault {
                None => Ok(()),
                Some(f) => Err(StoreError::Failing { pending: self.batch.len(), last_error: f.error.clone() }),
            };
            let _ = w.send(answer);
        }
    }

    /// Every handle is gone: writes what is left, retrying for a while.
    async fn finish(mut self) {
        let give_up = Instant::now() + SHUTDOWN_PATIENCE;
        loop {
            self.write().await;
            let Some(f) = &self.fault else { return };
            if f.retry_at >= give_up {
                tracing::error!(
                    rows = self.batch.len(),
                    transitions = self.batch.transitions.len(),
                    clock_corrections = self.batch.clock_corrections.len(),
                    error = %f.error,
                    "stopping with poll results the store would not take: they are lost"
                );
                return;
            }
            tokio::time::sleep_until(f.retry_at).await;
        }
    }
}
