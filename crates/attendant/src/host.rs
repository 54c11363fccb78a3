//! Host usage: uptime, load, CPU, memory, disks. Sampled in the background and cached, so
//! answering a query costs a copy, not a scan of /proc. Also the machine's hostname.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rollcall_protocol::{Disk, HostUsage, Memory};
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};
use tokio_util::sync::CancellationToken;

/// How often the background sampler refreshes host usage.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The latest host usage, shared between the sampler and the query handler.
#[derive(Clone, Default)]
pub struct HostCache(Arc<RwLock<HostUsage>>);

impl HostCache {
    pub fn latest(&self) -> HostUsage {
        self.0.read().clone()
    }

    fn set(&self, h: HostUsage) {
        *self.0.write() = h;
    }

    /// Takes a first sample now and keeps sampling until `stop` is cancelled.
    pub fn start(stop: CancellationToken) -> HostCache {
        let cache = HostCache::default();
        let mut sampler = Sampler::new();
        cache.set(sampler.sample());
        let c = cache.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let sampled = tokio::task::spawn_blocking(move || {
                    let h = sampler.sample();
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
    disks: Disks,
}

impl Sampler {
    fn new() -> Sampler {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Sampler { sys, disks: Disks::new_with_refreshed_list() }
    }

    fn sample(&mut self) -> HostUsage {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        let load = System::load_average();
        let mut disks: Vec<Disk> = Vec::new();
        for d in self.disks.list() {
            let mount = d.mount_point().display().to_string();
            if d.total_space() == 0 || disks.iter().any(|x| x.mount == mount) {
                continue;
            }
            disks.push(Disk {
                mount,
                total: d.total_space(),
                used: d.total_space().saturating_sub(d.available_space()),
            });
        }
        HostUsage {
            uptime_s: System::uptime(),
            load: [load.one, load.five, load.fifteen],
            cpu_percent: f64::from(self.sys.global_cpu_usage()),
            memory: Memory { total: self.sys.total_memory(), used: self.sys.used_memory() },
            disks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_sample_is_taken_at_start() {
        let stop = CancellationToken::new();
        let h = HostCache::start(stop.clone()).latest();
        stop.cancel();
        assert!(h.uptime_s > 0);
        assert!(h.memory.total > 0 && h.memory.used <= h.memory.total);
        assert!(h.disks.iter().all(|d| d.used <= d.total));
    }
}
