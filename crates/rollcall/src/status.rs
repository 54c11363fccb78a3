//! `rollcall status`: the fleet table from the poller's `GET /api/v1/servers`, as a user
//! of the poller (its token from `--token-file` / `ROLLCALL_TOKEN_FILE`) when it has users.

use anyhow::Context;
use chrono::Utc;
use rollcall_poller::model::ServerSummary;

use crate::render::{relative, table};

pub async fn run(poller: &crate::poller_api::Poller, json: bool) -> anyhow::Result<()> {
    let body = crate::poller_api::call(reqwest::Method::GET, poller, "/api/v1/servers", None).await?;
    let servers: Vec<ServerSummary> =
        serde_json::from_str(&body).with_context(|| format!("{} did not answer a server list", poller.url))?;
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
                state(s),
                relative(s.facts.last_poll_at, now),
                relative(s.next_poll_at, now),
                s.facts.clock_offset_ms.map_or("-".into(), offset),
                defs,
            ]
        })
        .collect();
    table(&["NAME", "LEVEL", "STATE", "LAST POLL", "NEXT POLL", "CLOCK", "DEFICIENCIES"], &rows)
}

/// The state, with what silences it: `deficient (acked by ops)`, `unreachable (behind router-01)`.
fn state(s: &ServerSummary) -> String {
    let mut out = s.facts.state.as_str().to_string();
    if let Some(a) = &s.facts.ack {
        out += &format!(" (acked by {})", a.by);
    }
    if let Some(p) = &s.facts.behind {
        out += &format!(" (behind {p})");
    }
    out
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
