//! Target lists for the two peers a benchmark compares: `[[server]]` tables for a
//! poller.toml, and a Prometheus `file_sd` JSON file, both naming the same servers.
//!
//! Rules it keeps: server `i` has the same name (`sim-0000i`) and host for both peers; the
//! Prometheus list needs no relabelling (a path-addressed server carries its own
//! `__metrics_path__`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::fleet::VirtualFleet;
use crate::server::Addressing;

/// `[[server]]` tables for `servers` virtual servers, to append to a poller.toml.
pub fn poller_servers(servers: usize, addressing: &Addressing) -> String {
    let mut out = String::with_capacity(servers * 80);
    for i in 0..servers {
        let _ =
            write!(out, "\n[[server]]\nname = \"{}\"\naddress = \"{}\"\n", VirtualFleet::name(i), addressing.url(i));
    }
    out
}

/// A Prometheus `file_sd_configs` file for the same servers.
pub fn prometheus_file_sd(servers: usize, addressing: &Addressing) -> String {
    let groups: Vec<serde_json::Value> = match addressing {
        Addressing::Loopback { .. } => {
            vec![json!({ "targets": (0..servers).map(|i| addressing.host(i)).collect::<Vec<_>>() })]
        }
        Addressing::Path { .. } => (0..servers)
            .map(|i| {
                json!({
                    "targets": [addressing.host(i)],
                    "labels": { "__metrics_path__": format!("{}/metrics", addressing.prefix(i)), "server": VirtualFleet::name(i) },
                })
            })
            .collect(),
    };
    serde_json::Value::Array(groups).to_string()
}

/// Writes `servers.toml` and `prometheus-targets.json` into `dir`.
pub fn write(dir: &Path, servers: usize, addressing: &Addressing) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("servers.toml"), poller_servers(servers, addressing))?;
    std::fs::write(dir.join("prometheus-targets.json"), prometheus_file_sd(servers, addressing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_lists_name_the_same_servers() {
        let a = Addressing::for_listener("0.0.0.0:7460".parse().unwrap());
        let toml = poller_servers(2, &a);
        assert!(toml.contains("name = \"sim-00001\"\naddress = \"http://127.1.0.1:7460\""), "{toml}");
        let sd: serde_json::Value = serde_json::from_str(&prometheus_file_sd(2, &a)).unwrap();
        assert_eq!(sd[0]["targets"][1], "127.1.0.1:7460");
        let p = Addressing::for_listener("127.0.0.1:9".parse().unwrap());
        let sd: serde_json::Value = serde_json::from_str(&prometheus_file_sd(2, &p)).unwrap();
        assert_eq!(sd[1]["labels"]["__metrics_path__"], "/s/1/metrics");
    }
}
