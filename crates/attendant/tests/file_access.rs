//! The file-access probe (SPEC section 14) on real filesystems: a local directory, a
//! read-only mount (tmpfs mounted `ro`), a directory that is not there. The hung share is
//! in `file_access_hang.rs`, a process of its own (it counts the probe's threads).

mod common;

use common::*;
use rollcall_protocol::{Severity, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_round_is_ok_with_each_step_timed_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let share = dir.path().join("share");
    std::fs::create_dir(&share).expect("mkdir");
    let run = start(dir.path(), &share, "interval = \"200ms\"\ntimeout = \"2s\"\nmax_latency = \"2s\"");
    let first = wait_probe(&run, "file_access ok", |p| p.status == Status::Ok).await;
    assert_eq!(first.kind, "file_access");
    assert!(first.message.starts_with("wrote, read back and deleted 4096 bytes in "), "{}", first.message);
    for step in ["write_ms", "read_ms", "compare_ms", "delete_ms"] {
        assert!(ms(&first, step) >= 0.0 && ms(&first, step) < 2000.0, "{step}: {first:?}");
    }
    // A later round: a new file name every round, and nothing left behind.
    let later = wait_probe(&run, "a second round", |p| p.details["file"] != first.details["file"]).await;
    assert_eq!(later.status, Status::Ok, "{later:?}");
    let left: Vec<_> = std::fs::read_dir(&share).expect("read_dir").flatten().map(|e| e.file_name()).collect();
    assert!(left.len() <= 1, "probe files left behind: {left:?}");
    let c = run.attendant.compile(chrono::Utc::now()).await;
    assert!(c.deficiencies.is_empty(), "{:?}", c.deficiencies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_share_is_critical_with_the_system_s_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let share = dir.path().join("ro");
    std::fs::create_dir(&share).expect("mkdir");
    // A real read-only filesystem (root passes any permission check, not a read-only mount).
    command("mount", &["-t", "tmpfs", "-o", "ro,size=1m", "rollcall-ro", &share.display().to_string()]);
    let _mount = Mount { point: share.clone(), daemon: None };
    let run = start(dir.path(), &share, "interval = \"200ms\"\ntimeout = \"2s\"");
    let p = wait_probe(&run, "file_access critical", |p| p.status == Status::Critical).await;
    assert!(
        p.message.starts_with(&format!("cannot write {}/.rollcall-file-access.share-test.", share.display())),
        "{}",
        p.message
    );
    assert!(p.message.contains("Read-only file system"), "{}", p.message);
    assert_eq!(p.details["failed_step"], "write", "{p:?}");
    let c = run.attendant.compile(chrono::Utc::now()).await;
    assert!(
        c.deficiencies.iter().any(|d| d.source == "probe:file_access" && d.severity == Severity::Critical),
        "{:?}",
        c.deficiencies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directory_is_critical_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let share = dir.path().join("not-mounted");
    let run = start(dir.path(), &share, "interval = \"200ms\"");
    let p = wait_probe(&run, "file_access critical", |p| p.status == Status::Critical).await;
    assert!(p.message.contains(&share.display().to_string()), "{}", p.message);
    assert!(p.message.contains("No such file or directory"), "{}", p.message);
}
