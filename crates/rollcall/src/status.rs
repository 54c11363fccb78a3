//! `rollcall status`: the fleet table from the poller's `GET /api/v1/servers`, as a user
//! of the poller (its token from `--token-file` / `ROLLCALL_TOKEN_FILE`) when it has users.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use rollcall_config::SecretSource;
use rollcall_poller::model::ServerSummary;

use crate::render::{relative, table};

pub async fn run(poller: &str, json: bool, token_file: Option<&Path>) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/servers", poller.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url).timeout(std::time::Duration::from_secs(10));
    if let Some(file) = token_file {
        let token = SecretSource::File(file.to_path_buf()).read().map_err(|e| anyhow::anyhow!("--token-file: {e}"))?;
        request = request.bearer_auth(token.expose());
    }
    let resp = request
        .send()
        .await
        .with_context(|| format!("cannot reach the poller at {url} (another one: --poller URL or ROLLCALL_POLLER)"))?;
    let status = resp.status();
    let body = resp.text().await.with_context(|| format!("reading {url}"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let hint = if token_file.is_some() {
            "the poller does not know this token"
        } else {
            "the poller has users: give one's token with --token-file FILE or ROLLCALL_TOKEN_FILE"
        };
        anyhow::bail!("{url} answered HTTP {status}: {hint} ({})", body.trim());
    }
    if !status.is_success() {
        anyhow::bail!("{url} answered HTTP {status}: {}", body.trim());
    }
    let servers: Vec<ServerSummary> =
        serde_json::from_str(&body).with_context(|| format!("{url} did not answer a server list"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&servers)?);
    } else {
        print!("{}", render(&servers));
    }
    Ok(())
}

pub fn render(servers: &[ServerSummary]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let defs = if s.facts.deficiencies.is_empty() {
                "-".to_string()
            } else {
                s.facts
                    .deficiencies
                    .iter()
                    .map(|d| format!("{} ({})", d.source, d.severity))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                s.facts.name.clone(),
                s.facts.level.clone(),
                s.facts.state.as_str().to_string(),
                relative(s.facts.last_poll_at, now),
                relative(s.next_poll_at, now),
                s.facts.clock_offset_ms.map_or("-".into(), offset),
                defs,
            ]
        })
        .collect();
    table(&["NAME", "LEVEL", "STATE", "LAST POLL", "NEXT POLL", "CLOCK", "DEFICIENCIES"], &rows)
}

/// A clock offset in whole milliseconds, signed; never `-0ms`.
fn offset(ms: f64) -> String {
    let r = ms.round();
    if r == 0.0 {
        "0ms".into()
    } else {
        format!("{r:+.0}ms")
    }
}

#[cfg(test)]
#[test]
fn offsets_are_whole_signed_milliseconds_and_never_minus_zero() {
    assert_eq!(
        (offset(-0.3), offset(0.4), offset(1.5), offset(-45_000.2)),
        ("0ms".into(), "0ms".into(), "+2ms".into(), "-45000ms".into())
    );
}
