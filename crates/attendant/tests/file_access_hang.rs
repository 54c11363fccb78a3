//! The file-access probe on a share that really hangs: a FUSE filesystem (bindfs) whose
//! daemon is frozen with SIGSTOP, so every file operation on it blocks in the kernel, as
//! on a dead NFS server. NFS itself cannot be used here: this kernel has neither the NFS
//! client nor nfsd (no CONFIG_NFS_FS, no modules), while FUSE is built in.
//!
//! Rules: the test never stats the frozen mount itself (that would hang the test); the
//! mount's guard kills the daemon (which aborts every hung request) and unmounts lazily,
//! even when the test fails, so it ends in bounded time. A process of its own: it counts
//! the probe's round threads.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rollcall_protocol::{Severity, Status};
use rollcall_testkit::wait_for_within;

/// Threads of this test process named as the probe names its round threads.
fn share_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "rollcall-share"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_share_is_critical_in_bounded_time_never_blocks_the_compilation_and_never_piles_up() {
    if rollcall_testkit::skip("SHARE", "a FUSE filesystem (bindfs)") {
        return;
    }
    rollcall_testkit::require("/usr/bin/bindfs", "bindfs", "SHARE");
    rollcall_testkit::require("/dev/fuse", "fuse (and a kernel with FUSE)", "SHARE");
    let dir = tempfile::tempdir().expect("tempdir");
    let (backing, share) = (dir.path().join("backing"), dir.path().join("share"));
    std::fs::create_dir(&backing).expect("mkdir");
    std::fs::create_dir(&share).expect("mkdir");
    let daemon =
        Command::new("bindfs").arg("-f").arg(&backing).arg(&share).stdin(Stdio::null()).spawn().expect("start bindfs");
    let pid = daemon.id().to_string();
    let mount = Mount { point: share.clone(), daemon: Some(daemon) };
    wait_for_within("bindfs to mount", DEADLINE, || async { mounted(&share).then_some(()) }).await;

    // Beside it, other background work: a usage report measured every 200 ms.
    let run = start(
        dir.path(),
        &share,
        "interval = \"1500ms\"\ntimeout = \"1s\"\nmax_latency = \"1s\"\n\
         [[usage]]\nname = \"tick\"\nkind = \"command\"\ncommand = [\"/bin/echo\", \"OK | n=1\"]\ninterval = \"200ms\"",
    );
    wait_probe(&run, "file_access ok through FUSE", |p| p.status == Status::Ok).await;

    // The share's server stops answering: every file operation on it now blocks.
    command("kill", &["-STOP", &pid]);
    let t = Instant::now();
    let p = wait_probe(&run, "file_access critical by timeout", |p| p.status == Status::Critical).await;
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(p.message.starts_with("no answer from the share within 1s (stuck in "), "{}", p.message);
    assert!(p.duration_ms >= 900.0 && p.duration_ms < 2500.0, "{}", p.duration_ms);
    // The compilation does not wait for the share, and rounds do not pile up.
    let usage_at = |c: &rollcall_protocol::Compilation| c.usage.first().map(|u| u.observed_at);
    let hung_at = usage_at(&run.attendant.compile(chrono::Utc::now()).await);
    let mut stuck_rounds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stuck_rounds.len() < 2 {
        assert!(Instant::now() < deadline, "no 'still stuck' rounds: {:?}", run.attendant.probes.get("file_access"));
        let t = Instant::now();
        let c = run.attendant.compile(chrono::Utc::now()).await;
        assert!(t.elapsed() < Duration::from_millis(300), "compilation took {:?}", t.elapsed());
        let p = c.probes.iter().find(|p| p.name == "file_access").expect("probe");
        assert_eq!(p.status, Status::Critical, "{p:?}");
        if p.message.starts_with("previous round still stuck since ") {
            assert!(p.message.contains("no new round started"), "{}", p.message);
            if !stuck_rounds.contains(&p.observed_at) {
                stuck_rounds.push(p.observed_at);
            }
        }
        assert_eq!(share_threads(), 1, "one stuck thread at most");
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    assert!(c_has_critical(&run).await, "a deficiency while the share hangs");
    // The other background work went on while the share hung.
    let now_at = usage_at(&run.attendant.compile(chrono::Utc::now()).await);
    assert!(hung_at.is_some() && now_at > hung_at, "the usage report stalled: {hung_at:?} -> {now_at:?}");

    // The server answers again: the stuck round comes back and new rounds are ok.
    command("kill", &["-CONT", &pid]);
    let p = wait_probe(&run, "file_access ok again", |p| p.status == Status::Ok).await;
    assert!(p.message.starts_with("wrote, read back"), "{}", p.message);
    drop(run);
    drop(mount);
}

async fn c_has_critical(run: &Running) -> bool {
    let c = run.attendant.compile(chrono::Utc::now()).await;
    c.deficiencies.iter().any(|d| d.source == "probe:file_access" && d.severity == Severity::Critical)
}
