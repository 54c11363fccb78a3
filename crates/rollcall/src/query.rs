//! `rollcall query ADDRESS`: one compilation from one attendant, printed for a person.

use std::path::Path;
use std::time::Duration;

use rollcall_config::SecretSource;
use rollcall_poller::config::ServerConfig;
use rollcall_poller::fetch::{Fetch, HttpFetcher};
use rollcall_protocol::{Compilation, ResultView};

use crate::render::{bytes, human_secs, table};

/// Replies larger than this are refused, as the poller's default does.
const MAX_REPLY: u64 = 1024 * 1024;

pub async fn run(address: &str, token_file: Option<&Path>, json: bool, timeout: Duration) -> anyhow::Result<()> {
    let address = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let token = match token_file {
        Some(f) => Some(SecretSource::File(f.to_path_buf()).read().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let server =
        ServerConfig { name: address.clone(), address: address.trim_end_matches('/').to_string(), token, tls: None };
    let fetched = HttpFetcher::new(timeout, MAX_REPLY)?
        .fetch(&server)
        .await
        .map_err(|e| anyhow::anyhow!("{address}: {e} (poll:{})", e.kind()))?;
    if json {
        let v: serde_json::Value = serde_json::from_slice(&fetched.raw)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&Compilation::from_slice(&fetched.raw)?));
    }
    Ok(())
}

pub fn render(c: &Compilation) -> String {
    let mut out = String::new();
    let a = &c.attendant;
    out += &format!("{} (host {}, attendant {})\n", a.name, a.hostname, a.version);
    let zone = c.time.zone.as_deref().unwrap_or("zone unknown");
    let off = c.time.utc_offset_seconds;
    out += &format!(
        "time   {} UTC (UTC{}{:02}:{:02}, {zone})\n",
        c.time.utc.format("%Y-%m-%d %H:%M:%S%.3f"),
        if off < 0 { '-' } else { '+' },
        off.abs() / 3600,
        (off.abs() % 3600) / 60
    );
    let h = &c.host;
    out += &format!(
        "host   up {}, load {:.2} {:.2} {:.2}, cpu {:.0}%, memory {} of {}\n",
        human_secs(h.uptime_s),
        h.load[0],
        h.load[1],
        h.load[2],
        h.cpu_percent,
        bytes(h.memory.used),
        bytes(h.memory.total)
    );
    for d in &h.disks {
        out += &format!(
            "disk   {} {} of {} ({:.0}%)\n",
            d.mount,
            bytes(d.used),
            bytes(d.total),
            d.used as f64 * 100.0 / d.total.max(1) as f64
        );
    }
    let section = |title: &str, rows: Vec<Vec<String>>| {
        if rows.is_empty() {
            format!("\n{title}: none\n")
        } else {
            format!("\n{title}:\n{}", table(&["STATUS", "NAME", "KIND", "TOOK", "MESSAGE"], &rows))
        }
    };
    let row = |r: ResultView| {
        vec![r.status.to_string(), r.name.into(), r.kind.into(), format!("{:.1}ms", r.duration_ms), r.message.into()]
    };
    out += &section("services", c.services.iter().map(|s| row(s.view())).collect());
    out += &section("probes", c.probes.iter().map(|p| row(p.view())).collect());
    if c.deficiencies.is_empty() {
        out += "\ndeficiencies: none\n";
    } else {
        out += "\ndeficiencies:\n";
        for d in &c.deficiencies {
            out += &format!("  {:<8}  {}  {}\n", d.severity.as_str(), d.source, d.summary);
        }
    }
    out
}
