//! Host usage: uptime, load, CPU, memory, disks. Sampled in the background and cached, so
//! answering a query costs a copy, not a scan of /proc. Also the machine's hostname.
//!
//! Disks (rules kept by [`disk_figures`], [`disks`] and [`DiskFilter`]):
//! - usage is what `df` shows: used = blocks − free, and the percentage is used / (used +
//!   available), so blocks reserved for root count neither as used nor as free. A disk's
//!   `total` in the compilation is used + available (the space its users can fill), so
//!   used / total is `df`'s Use% wherever it is shown;
//! - the list is `/proc/self/mountinfo`, each filesystem once (a bind mount of a device
//!   already listed is left out, as `df` does), without those of zero size;
//! - pseudo filesystems and read-only images are left out, as node_exporter's filesystem
//!   collector leaves them out by default ([`DEFAULT_EXCLUDE_FS_TYPES`],
//!   [`DEFAULT_EXCLUDE_MOUNT_POINTS`]), and also FUSE-mounted images (`fuse.squashfuse`,
//!   snapd's `fuse.snapfuse`, ...): a read-only image is always "full" and never fills up.
//!   `tmpfs` stays in (a full /run or /dev/shm breaks a server). `[host]`
//!   `exclude_mount_points` / `exclude_fs_types` replace these lists;
//! - excluded mounts are not even asked (`statvfs` on a dead NFS mount hangs), and a
//!   changed filter applies from the next sample on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use regex::Regex;
use rollcall_protocol::{Disk, HostUsage, Memory};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use tokio_util::sync::CancellationToken;

/// How often the background sampler refreshes host usage.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Filesystem types left out by default: node_exporter's `fs-types-exclude` default, the
/// read-only image types `udf`, `cramfs`, `romfs`, and FUSE-mounted images and views.
pub const DEFAULT_EXCLUDE_FS_TYPES: &[&str] = &[
    "autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs",
    "overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs",
    "udf|cramfs|romfs",
    r"fuse\.(squashfuse|squashfuse_ll|snapfuse|archivemount|fuse-archive|fuseiso|AppImage|lxcfs|gvfsd-fuse|portal)",
];

/// Mount points left out by default: node_exporter's `mount-points-exclude` default.
pub const DEFAULT_EXCLUDE_MOUNT_POINTS: &[&str] =
    &["/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)(/.*)?"];

/// Which mounts the disk list leaves out: each pattern must match the whole mount point
/// or filesystem type ([`whole`]).
#[derive(Debug, Clone)]
pub struct DiskFilter {
    pub exclude_mount_points: Vec<Regex>,
    pub exclude_fs_types: Vec<Regex>,
}

impl Default for DiskFilter {
    fn default() -> DiskFilter {
        let all = |pats: &[&str]| pats.iter().filter_map(|p| whole(p).ok()).collect();
        DiskFilter {
            exclude_mount_points: all(DEFAULT_EXCLUDE_MOUNT_POINTS),
            exclude_fs_types: all(DEFAULT_EXCLUDE_FS_TYPES),
        }
    }
}

/// `pattern` as a regex that must match a whole value (`nfs4?` matches `nfs` and `nfs4`,
/// not `nfsd`).
pub fn whole(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl DiskFilter {
    /// Whether `m` is listed.
    pub fn keeps(&self, m: &Mount) -> bool {
        !self.exclude_fs_types.iter().any(|r| r.is_match(&m.fs_type))
            && !self.exclude_mount_points.iter().any(|r| r.is_match(&m.mount_point))
    }
}

/// One line of `/proc/self/mountinfo` (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem's device: the same for a bind mount.
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// The mounts of a mountinfo text, in its order (lines that do not parse are skipped).
/// Octal escapes (`\040` for a space) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            Some(Mount {
                device: f.get(2)?.to_string(),
                mount_point: unescape(f.get(4)?),
                fs_type: right.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// Decodes mountinfo's `\NNN` octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                let n = u32::from(d[0] - b'0') * 64 + u32::from(d[1] - b'0') * 8 + u32::from(d[2] - b'0');
                out.push(u8::try_from(n).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `statvfs(3)` says of a filesystem, in blocks of `fragment_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statvfs {
    pub blocks: u64,
    /// Free blocks, including those reserved for root.
    pub free: u64,
    /// Free blocks an unprivileged user may use.
    pub available: u64,
    pub fragment_size: u64,
}

/// `(total, used)` in bytes as the compilation reports a disk: used = blocks − free,
/// total = used + available (see the module rules: `df`'s Use% is used / total).
pub fn disk_figures(s: &Statvfs) -> (u64, u64) {
    let used = s.blocks.saturating_sub(s.free).saturating_mul(s.fragment_size);
    let available = s.available.saturating_mul(s.fragment_size);
    (used.saturating_add(available), used)
}

/// `statvfs(3)` of `path`; `None` when it fails.
fn statvfs(path: &str) -> Option<Statvfs> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs(3) only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let frag = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
    #[allow(clippy::useless_conversion)] // the field widths differ between targets
    Some(Statvfs {
        blocks: u64::from(st.f_blocks),
        free: u64::from(st.f_bfree),
        available: u64::from(st.f_bavail),
        fragment_size: u64::from(frag),
    })
}

/// The disks of `mounts` that `filter` keeps, each device once, measured by `stat` (asked
/// only for those kept).
pub fn disks(mounts: &[Mount], filter: &DiskFilter, stat: impl Fn(&str) -> Option<Statvfs>) -> Vec<Disk> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| filter.keeps(m)) {
        if !seen.insert(m.device.as_str()) {
            continue;
        }
        let Some(st) = stat(&m.mount_point) else { continue };
        let (total, used) = disk_figures(&st);
        if total > 0 {
            out.push(Disk { mount: m.mount_point.clone(), total, used });
        }
    }
    out
}

/// The latest host usage, shared between the sampler and the query handler, and the
/// disk filter the sampler follows.
#[derive(Clone, Default)]
pub struct HostCache {
    latest: Arc<RwLock<HostUsage>>,
    filter: Arc<RwLock<DiskFilter>>,
}

impl HostCache {
    pub fn latest(&self) -> HostUsage {
        self.latest.read().clone()
    }

    fn set(&self, h: HostUsage) {
        *self.latest.write() = h;
    }

    /// Which disks the next samples list (a reloaded `[host]`).
    pub fn set_filter(&self, filter: DiskFilter) {
        *self.filter.write() = filter;
    }

    /// Takes a first sample now (listing the disks `filter` keeps) and keeps sampling until
    /// `stop` is cancelled.
    pub fn start(filter: DiskFilter, stop: CancellationToken) -> HostCache {
        let cache = HostCache::default();
        let mut sampler = Sampler::new();
        cache.set(sampler.sample(&filter));
        cache.set_filter(filter);
        let c = cache.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let filter = c.filter.read().clone();
                let sampled = tokio::task::spawn_blocking(move || {
                    let h = sampler.sample(&filter);
                    (sampler, h)
                });
                let Ok((s, h)) = sampled.await else { break };
                sampler = s;
                c.set(h);
            }
        });
        cache
    }
}

/// The machine's hostname (`/proc/sys/kernel/hostname`), else `localhost`: the default
/// attendant name, the compilation's `hostname` and the SMTP `EHLO` name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

struct Sampler {
    sys: System,
}

impl Sampler {
    fn new() -> Sampler {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Sampler { sys }
    }

    fn sample(&mut self, filter: &DiskFilter) -> HostUsage {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let load = System::load_average();
        let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        HostUsage {
            uptime_s: System::uptime(),
            load: [load.one, load.five, load.fifteen],
            cpu_percent: f64::from(self.sys.global_cpu_usage()),
            memory: Memory { total: self.sys.total_memory(), used: self.sys.used_memory() },
            disks: disks(&mounts, filter, statvfs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_sample_is_taken_at_start() {
        let stop = CancellationToken::new();
        let h = HostCache::start(DiskFilter::default(), stop.clone()).latest();
        stop.cancel();
        assert!(h.uptime_s > 0);
        assert!(h.memory.total > 0 && h.memory.used <= h.memory.total);
        assert!(h.disks.iter().all(|d| d.used <= d.total));
        assert!(h.disks.iter().all(|d| !d.mount.starts_with("/proc") && !d.mount.starts_with("/sys")), "{h:?}");
    }

    /// statvfs of a 100 GiB ext4 filesystem (4 KiB blocks, 5 % reserved for root) holding
    /// 16.6 GiB: `df` shows Used 17G, Avail 79G, Use% 18%.
    const EXT4: Statvfs = Statvfs { blocks: 26_214_400, free: 21_862_400, available: 20_551_680, fragment_size: 4096 };

    #[test]
    fn usage_is_what_df_shows() {
        let (total, used) = disk_figures(&EXT4);
        assert_eq!(used, (26_214_400 - 21_862_400) * 4096);
        assert_eq!(total, used + 20_551_680 * 4096);
        // df: 4352000 / (4352000 + 20551680) = 17.48 %, printed rounded up as 18 %.
        let pct = used as f64 * 100.0 / total as f64;
        assert!((pct - 17.475).abs() < 0.01, "{pct}");
        // The old figure, (blocks - available) / blocks, counted root's reserve as used.
        let old = (EXT4.blocks - EXT4.available) as f64 * 100.0 / EXT4.blocks as f64;
        assert!(old > 21.0, "{old}");
        // Full for users, root's reserve still free: df says 100 %.
        let full = Statvfs { blocks: 1000, free: 50, available: 0, fragment_size: 4096 };
        let (total, used) = disk_figures(&full);
        assert_eq!(total, used);
        // Nonsense from a broken filesystem never wraps.
        let odd = Statvfs { blocks: 10, free: 20, available: u64::MAX, fragment_size: u64::MAX };
        assert_eq!(disk_figures(&odd), (u64::MAX, 0));
    }

    /// A mountinfo of a server with snaps, a squashfuse image, docker and a bind mount.
    const MOUNTINFO: &str = r"22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 22 0:5 / /dev rw,nosuid,relatime shared:8 - devtmpfs udev rw,size=8000000k
26 22 0:25 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=1600000k
27 22 259:1 / /boot/efi rw,relatime shared:30 - vfat /dev/nvme0n1p1 rw
28 22 7:3 / /snap/core22/1380 ro,nodev,relatime shared:40 - squashfs /dev/loop3 ro
29 22 0:50 / /mnt/tools\040image rw,nosuid,nodev,relatime shared:41 - fuse.squashfuse squashfuse rw,user_id=0
30 22 0:51 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/x
31 22 259:2 /srv/data /export/data rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
32 22 0:52 / /srv/backup rw,relatime - nfs4 nas:/backup rw
";

    #[test]
    fn pseudo_filesystems_and_images_are_left_out_by_default() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 11);
        assert_eq!(mounts[7].mount_point, "/mnt/tools image");
        assert_eq!(mounts[7].fs_type, "fuse.squashfuse");
        let asked = parking_lot::Mutex::new(Vec::new());
        let stat = |p: &str| {
            asked.lock().push(p.to_string());
            Some(EXT4)
        };
        let listed: Vec<String> = disks(&mounts, &DiskFilter::default(), stat).into_iter().map(|d| d.mount).collect();
        // The bind mount of /'s device is / again; images, pseudo filesystems and the
        // container layer are gone; tmpfs and the network share stay.
        assert_eq!(listed, ["/", "/run", "/boot/efi", "/srv/backup"]);
        assert_eq!(*asked.lock(), listed, "only listed mounts are asked");
        // An operator's own lists replace the defaults.
        let own = DiskFilter {
            exclude_mount_points: vec![whole("/boot/.*").unwrap()],
            exclude_fs_types: vec![whole("nfs4?|tmpfs").unwrap()],
        };
        let listed: Vec<String> = disks(&mounts, &own, |_| Some(EXT4)).into_iter().map(|d| d.mount).collect();
        assert_eq!(
            listed,
            [
                "/",
                "/proc",
                "/sys",
                "/dev",
                "/snap/core22/1380",
                "/mnt/tools image",
                "/var/lib/docker/overlay2/abc/merged"
            ]
        );
    }
}
