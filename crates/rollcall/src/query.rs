//! `rollcall query ADDRESS`: one compilation from one attendant, printed for a person.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_config::SecretSource;
use rollcall_poller::config::{ClientTls, ServerConfig};
use rollcall_poller::fetch::{Fetch, HttpFetcher};
use rollcall_protocol::{Compilation, ResultView};

use crate::render::{bytes, human_secs, table};

/// Replies larger than this are refused, as the poller's default does.
const MAX_REPLY: u64 = 1024 * 1024;

/// `--ca-file`, `--cert-file`, `--key-file`: TLS for an `https://` address, as the
/// poller's `tls_ca_file`, `tls_client_cert_file`, `tls_client_key_file`.
#[derive(Debug, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Tls {
    fn client(&self, address: &str) -> anyhow::Result<Option<ClientTls>> {
        let given = self.ca_file.is_some() || self.cert_file.is_some();
        if !address.starts_with("https://") {
            anyhow::ensure!(!given, "--ca-file, --cert-file and --key-file need an https:// address");
            return Ok(None);
        }
        let identity = self.cert_file.as_deref().zip(self.key_file.as_deref());
        let config = rollcall_netserve::tls::client_config(self.ca_file.as_deref(), identity)?;
        let files = [self.ca_file.clone(), self.cert_file.clone(), self.key_file.clone()];
        Ok(Some(ClientTls { files, config }))
    }
}

pub async fn run(
    address: &str,
    token_file: Option<&Path>,
    json: bool,
    timeout: Duration,
    tls: &Tls,
) -> anyhow::Result<()> {
    let address = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let token = match token_file {
        Some(f) => Some(SecretSource::File(f.to_path_buf()).read().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let tls = tls.client(&address)?;
    let server = ServerConfig {
        name: address.clone(),
        address: address.trim_end_matches('/').to_string(),
        token,
        parents: Vec::new(),
        tls,
    };
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
