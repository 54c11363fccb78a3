//! The operator's commands (SPEC 13): `rollcall downtime add|list|remove` and
//! `rollcall ack`, each one request to the poller's API; what the poller refuses is
//! printed as it said it, and the command exits 1.

use anyhow::Context;
use chrono::{DateTime, Utc};
use reqwest::Method;
use rollcall_poller::model::ServerSummary;
use rollcall_poller::web::api::DowntimeView;
use serde_json::json;

use crate::poller_api::{call, Poller};
use crate::render::{relative, table};

/// `rollcall downtime add GLOB --for LENGTH [--start TIME] -m COMMENT`.
pub async fn downtime_add(
    poller: &Poller,
    glob: &str,
    length: std::time::Duration,
    start: Option<&str>,
    comment: &str,
) -> anyhow::Result<()> {
    let starts_at = match start {
        None => Utc::now(),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--start {s:?} is not an RFC 3339 time (like 2026-12-01T22:00:00Z)"))?
            .with_timezone(&Utc),
    };
    let length = chrono::Duration::from_std(length).context("--for is too long")?;
    if length.is_zero() {
        anyhow::bail!("--for must be longer than 0 (like 2h)");
    }
    let body = json!({ "server": glob, "starts_at": starts_at, "ends_at": starts_at + length, "comment": comment });
    let text = call(Method::POST, poller, "/api/v1/downtimes", Some(&body)).await?;
    let d: DowntimeView = serde_json::from_str(&text).context("the poller did not answer a downtime")?;
    let matched = if d.servers.is_empty() { "no server matches it yet".to_string() } else { d.servers.join(", ") };
    println!(
        "downtime {}: {} from {} to {} ({matched})",
        d.downtime.id, d.downtime.server, d.downtime.starts_at, d.downtime.ends_at
    );
    Ok(())
}

/// `rollcall downtime list [--json]`.
pub async fn downtime_list(poller: &Poller, json: bool) -> anyhow::Result<()> {
    let text = call(Method::GET, poller, "/api/v1/downtimes", None).await?;
    let list: Vec<DowntimeView> = serde_json::from_str(&text).context("the poller did not answer a downtime list")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let d = &v.downtime;
            vec![
                d.id.to_string(),
                d.server.clone(),
                if v.active { "now".into() } else { relative(Some(d.starts_at), now) },
                relative(Some(d.ends_at), now),
                d.by.clone(),
                if v.servers.is_empty() { "-".into() } else { v.servers.join(",") },
                d.comment.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "SERVER", "STARTS", "ENDS", "BY", "MATCHES", "COMMENT"], &rows));
    Ok(())
}

/// `rollcall downtime remove ID`.
pub async fn downtime_remove(poller: &Poller, id: i64) -> anyhow::Result<()> {
    let text = call(Method::DELETE, poller, &format!("/api/v1/downtimes/{id}"), None).await?;
    let d: DowntimeView = serde_json::from_str(&text).context("the poller did not answer a downtime")?;
    println!("downtime {} for {} removed", d.downtime.id, d.downtime.server);
    Ok(())
}

/// `rollcall ack NAME -m COMMENT`.
pub async fn ack(poller: &Poller, name: &str, comment: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/servers/{name}/ack");
    let text = call(Method::POST, poller, &path, Some(&json!({ "comment": comment }))).await?;
    let s: ServerSummary = serde_json::from_str(&text).context("the poller did not answer a server")?;
    match &s.facts.ack {
        Some(a) => println!(
            "{name} acknowledged by {} ({} at level {}): {}",
            a.by,
            s.facts.state.as_str(),
            s.facts.level,
            a.comment
        ),
        None => println!("{name}: the poller took the acknowledgement but shows none (it ended at once)"),
    }
    Ok(())
}
