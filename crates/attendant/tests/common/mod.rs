//! What the attendant's scenario tests share: an in-process attendant, a bounded wait on
//! the file-access probe's latest result, mounts that are lazily unmounted on drop (also
//! when the mount hangs), and an IMAP session of the probe user on the test's Dovecot.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use rollcall_attendant::{Attendant, AttendantConfig};
use rollcall_protocol::ProbeResult;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// An attendant with only `[probe.file_access]` on `path`, stopped on drop.
pub struct Running {
    pub attendant: Arc<Attendant>,
    pub stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn start(dir: &Path, path: &Path, timing: &str) -> Running {
    start_with(dir, &format!("[probe.file_access]\npath = \"{}\"\n{timing}\n", path.display()))
}

/// An attendant (in process, virtual clock, no disk deficiencies) with `body` as the rest
/// of its config.
pub fn start_with(dir: &Path, body: &str) -> Running {
    let file = dir.join("attendant.toml");
    let text = format!(
        "name = \"share-test\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\nclock = \"virtual\"\n\
         [host]\ndisk_warning_percent = 100.0\ndisk_critical_percent = 100.0\n{body}"
    );
    std::fs::write(&file, text).expect("write config");
    let config =
        AttendantConfig::load(&file).unwrap_or_else(|e| panic!("config refused:\n{}", e.problems().join("\n")));
    let stop = CancellationToken::new();
    Running { attendant: rollcall_attendant::start(config, stop.clone()), stop }
}

/// Waits until the probe's latest result satisfies `pred`; fails showing the last one.
pub async fn wait_probe(run: &Running, what: &str, pred: impl Fn(&ProbeResult) -> bool) -> ProbeResult {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let last = run.attendant.probes.get("file_access");
        match last {
            Some(p) if pred(&p) => return p,
            _ if std::time::Instant::now() > deadline => {
                panic!("{what}: not within {DEADLINE:?}; last result {last:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub fn ms(p: &ProbeResult, key: &str) -> f64 {
    p.details.get(key).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("no {key} in {p:?}"))
}

/// Runs `program` with `args`; panics with its stderr when it fails.
pub fn command(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether `mount_point` is in this process's mount table (read without touching it).
pub fn mounted(mount_point: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mount_point.display().to_string();
    table.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A mount made by the test, lazily unmounted on drop (also when the mount hangs).
pub struct Mount {
    pub point: PathBuf,
    /// The FUSE daemon serving it, killed first on drop: that aborts every hung request.
    pub daemon: Option<Child>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
    }
}

/// An IMAP session of the probe user, opened with the attendant's own client.
pub async fn imap_session(d: &rollcall_testkit::mailstack::Dovecot) -> rollcall_attendant::mail::imap::Imap {
    use rollcall_attendant::config::{Endpoint, Security};
    use rollcall_attendant::mail::credentials::LoginSecret;
    let endpoint = Endpoint { address: format!("127.0.0.1:{}", d.imap_port), security: Security::None, ca_file: None };
    let mut imap =
        rollcall_attendant::mail::imap::Imap::connect(&endpoint, Duration::from_secs(5)).await.expect("connect");
    let secret = LoginSecret::Password(rollcall_config::Secret::new(rollcall_testkit::mailstack::PASSWORD));
    imap.login(rollcall_testkit::mailstack::USER, &secret).await.expect("login");
    imap
}
