//! `rollcall demo`: a poller and three attendants on loopback, in this one process.
//!
//! Everything a newcomer needs to see the product work: configs written to a state folder
//! (printed, so they can be read and copied), SQLite there too, virtual clocks (the
//! machine's real clock is never touched), services of this machine. Short intervals, so
//! levels visibly move within a minute.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn run(listen: SocketAddr, state_dir: Option<PathBuf>, stop: CancellationToken) -> anyhow::Result<()> {
    let (_temp, dir) = match state_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            (None, d)
        }
        None => {
            let t = tempfile::Builder::new().prefix("rollcall-demo-").tempdir()?;
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    };
    let token: String = crate::keygen::random_seed()?.iter().map(|b| format!("{b:02x}")).collect();
    write(&dir.join("token"), &format!("{token}\n"))?;
    let (key_text, public) = rollcall_protocol::clock_order::signing_key_text(crate::keygen::random_seed()?);
    write(&dir.join("poller.key"), &key_text)?;
    let public = rollcall_protocol::clock_order::public_key_line(&public);

    let poller_listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is another poller or demo running? try --listen 127.0.0.1:0)")
    })?;
    let poller_addr = poller_listener.local_addr()?;

    let load_check = if Path::new("/usr/lib/nagios/plugins/check_load").exists() {
        r#"["/usr/lib/nagios/plugins/check_load", "-w", "8,6,4", "-c", "16,12,8"]"#.to_string()
    } else {
        r#"["/bin/sh", "-c", "read a b c rest < /proc/loadavg; echo \"LOAD OK - load average: $a, $b, $c | load1=$a load5=$b load15=$c\""]"#.to_string()
    };
    let attendants = [
        (
            "mail-01",
            "0s",
            format!(
                r#"
[[service]]
name = "mta"
check = "tcp"
address = "127.0.0.1:25"
expect = "220"
timeout = "2s"

[[service]]
name = "rollcall"
check = "process"
process = "rollcall"

[[service]]
name = "load"
check = "command"
command = {load_check}
"#
            ),
        ),
        (
            "web-01",
            "1500ms",
            format!(
                r#"
[[service]]
name = "poller-api"
check = "tcp"
address = "{poller_addr}"

[[service]]
name = "rollcall"
check = "process"
process = "rollcall"
"#
            ),
        ),
        (
            "db-01",
            "45s",
            r#"
[[service]]
name = "root-disk"
check = "command"
command = ["/bin/sh", "-c", "df -P / | awk 'NR==2 { u=$5+0; s=(u>=95)?2:(u>=90)?1:0; print \"DISK \" (s==0?\"OK\":\"FULL\") \" - / \" $5 \" used | root=\" $5 \";90;95\"; exit s }'"]
"#
            .to_string(),
        ),
    ];

    let mut servers = String::new();
    let mut tasks = Vec::new();
    for (name, offset, services) in attendants {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let path = dir.join(format!("attendant-{name}.toml"));
        write(
            &path,
            &format!(
                "name = \"{name}\"\nlisten = \"{addr}\"\ntoken_file = \"token\"\nclock = \"virtual\"\nclock_offset = \"{offset}\"\npoller_public_key = \"{public}\"\n{services}"
            ),
        )?;
        let config = rollcall_attendant::AttendantConfig::load(&path)?;
        tasks.push(tokio::spawn(rollcall_attendant::run_on(path, config, listener, stop.clone())));
        servers += &format!("\n[[server]]\nname = \"{name}\"\naddress = \"http://{addr}\"\ntoken_file = \"token\"\n");
    }

    let poller_path = dir.join("poller.toml");
    write(
        &poller_path,
        &format!(
            r#"# Demo intervals are short so that levels visibly move; production defaults are 15m / 2m.
listen = "{poller_addr}"
database = "sqlite://rollcall.db"
signing_key_file = "poller.key"   # clock orders: db-01 starts 45 s ahead and is corrected
timeout = "3s"
recover_after = 2

[[level]]
name = "normal"
interval = "20s"

[[level]]
name = "critical"
interval = "5s"
{servers}"#
        ),
    )?;
    let poller_cfg = rollcall_poller::PollerConfig::load(&poller_path)?;
    let base = format!("http://{poller_addr}");
    println!("Rollcall demo: a poller and 3 attendants on loopback (virtual clocks; the real clock is untouched).");
    println!();
    println!("  Dashboard: {base}/");
    println!("  API:       {base}/api/v1/servers");
    println!("  Try:       cargo run --release -- status --poller {base}");
    println!(
        "             cargo run --release -- query {} --token-file {}",
        first_address(&poller_cfg),
        dir.join("token").display()
    );
    println!("  Configs:   {}", dir.display());
    println!();
    println!("Press Ctrl-C to stop.");
    let result = rollcall_poller::run(poller_cfg, poller_listener, stop.clone()).await;
    stop.cancel();
    for t in tasks {
        match t.await {
            Ok(Err(e)) => tracing::error!(error = %e, "attendant failed"),
            Err(e) => tracing::error!(error = %e, "attendant task failed"),
            Ok(Ok(())) => {}
        }
    }
    result
}

fn first_address(cfg: &rollcall_poller::PollerConfig) -> String {
    cfg.servers.first().map(|s| s.address.clone()).unwrap_or_default()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
