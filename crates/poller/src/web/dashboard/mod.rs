//! The dashboard (SPEC section 5): the fleet at `/`, one server at `/servers/{name}`.
//!
//! Server-rendered HTML (maud, checked at compile time) with one small script and
//! stylesheet embedded in the binary: nothing to build, nothing fetched at run time. The
//! script keeps pages live from `GET /api/v1/events`: on the fleet page, the rows of the
//! servers just polled are re-fetched, batched, from `POST /fleet/rows` (rendered by
//! `row`, the same function the page uses); a server page re-fetches its parts
//! (`/servers/{name}/parts`). Every piece of HTML is rendered here, in one place, so a
//! live update shows exactly what a reload would.
//!
//! Operators set and remove downtimes (fleet page) and acknowledge problems (server page)
//! through small forms the script sends to the JSON API (`form.api` and
//! `button.api-delete`), so the dashboard has no write path of its own.
//!
//! Rules it keeps: every value from an attendant or the config is escaped (maud does);
//! a page works without JavaScript (it is just not live); reads come from the fleet's
//! memory and the store, never from the attendants; counts are worded by `plural`;
//! clock offsets carry the class `clock_class` gives against `max_clock_skew`;
//! timestamps never wrap.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use rollcall_protocol::{CheckResult, Compilation, ProbeResult, ResultView, Severity, Status, UsageReport};
use serde_json::Value;

use crate::fleet::Server;
use crate::model::{History, ServerState, ServerSummary};
use crate::web::api::Api;

const APP_JS: &str = include_str!("../../../assets/app.js");
const APP_CSS: &str = include_str!("../../../assets/app.css");
/// Polls drawn in a server page's chart.
const CHART_POLLS: u32 = 120;
/// Rows of each history kind on a server page.
const HISTORY_ROWS: u32 = 50;

/// The dashboard's routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(fleet_page))
        .route("/servers/{name}", get(server_page))
        .route("/servers/{name}/parts", get(server_parts))
        .route("/fleet/rows", axum::routing::post(fleet_rows))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .with_state(api)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn page(title: &str, body_class: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Rollcall" }
                    link rel="stylesheet" href="/assets/app.css";
                    script src="/assets/app.js" defer {}
                }
                body class=(body_class) {
                    header.top {
                        a.brand href="/" { "Rollcall" }
                        span.live #live title="Live updates" { "connecting" }
                    }
                    div #notify-banner hidden {}
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// Level classes: the first level is calm, the last alarming, the ones between in between.
fn level_class(index: usize, count: usize) -> &'static str {
    if index == 0 {
        "lvl-first"
    } else if index + 1 >= count {
        "lvl-last"
    } else {
        "lvl-mid"
    }
}

/// `1 server`, `3 servers`, `0 servers`: a count and its noun, agreeing.
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How a clock offset stands against `max_clock_skew`: `clk-ok` within half of it,
/// `clk-warn` up to it, `clk-crit` beyond it (the poller corrects it, or would with a key).
pub(crate) fn clock_class(offset_ms: f64, max_skew_ms: f64) -> &'static str {
    let a = offset_ms.abs();
    if a > max_skew_ms {
        "clk-crit"
    } else if a > max_skew_ms / 2.0 {
        "clk-warn"
    } else {
        "clk-ok"
    }
}

/// A clock offset, coloured against `max_clock_skew` (its title says the threshold).
fn offset(v: Option<f64>, max_skew: std::time::Duration) -> Markup {
    let max_ms = max_skew.as_secs_f64() * 1000.0;
    match v {
        Some(v) => {
            let class = clock_class(v, max_ms);
            let says = match class {
                "clk-crit" => "beyond",
                "clk-warn" => "over half of",
                _ => "within half of",
            };
            html! {
                span class=(format!("clk {class}")) title=(format!("{says} max_clock_skew = {}", rollcall_config::Duration(max_skew))) {
                    (ms_text(v))
                }
            }
        }
        None => html! { span.none { "—" } },
    }
}

/// Servers by state, as the fleet page words it: `3 servers`, then each state other than
/// ok that has any (`3 servers: 1 deficient, 1 unreachable`).
fn fleet_total(states: &[ServerState]) -> String {
    let mut s = plural(states.len(), "server", "servers");
    let problems: Vec<String> = [ServerState::Deficient, ServerState::Unreachable, ServerState::Unknown]
        .iter()
        .filter_map(|st| {
            let n = states.iter().filter(|x| *x == st).count();
            (n > 0).then(|| format!("{n} {}", st.as_str()))
        })
        .collect();
    if !problems.is_empty() {
        s += ": ";
        s += &problems.join(", ");
    }
    s
}

fn time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => {
            html! { time.rel datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
        }
        None => html! { span.none { "—" } },
    }
}

/// Milliseconds to one decimal, never `-0.0`.
pub(crate) fn ms_text(v: f64) -> String {
    format!("{} ms", crate::fleet::clock_keeping::Ms(v))
}

fn ms(v: Option<f64>) -> Markup {
    match v {
        Some(v) => html! { (ms_text(v)) },
        None => html! { span.none { "—" } },
    }
}

fn state_badge(s: ServerState) -> Markup {
    html! { span class=(format!("badge st-{}", s.as_str())) { (s.as_str()) } }
}

/// Each deficiency as its source and, beside it, its summary (visible, not a tooltip).
fn deficiency_list(s: &ServerSummary) -> Markup {
    html! {
        @if s.facts.deficiencies.is_empty() { span.none { "none" } }
        @else {
            ul.defs {
                @for d in &s.facts.deficiencies {
                    li class=(format!("sev-{}", d.severity.as_str())) {
                        b.src { (d.source) } " " span.sum { (d.summary) }
                    }
                }
            }
        }
    }
}

/// Beside a server's state: its acknowledgement, the parents it is behind, how many are
/// behind it, and the downtime it is in.
fn hygiene_marks(api: &Api, s: &ServerSummary) -> Markup {
    let downtime = api.notifier.downtimes().covering(&s.facts.name, Utc::now());
    html! {
        @if let Some(a) = &s.facts.ack {
            span.mark.ack title=(format!("acknowledged by {} at {}: {}", a.by, a.at, a.comment)) { "acked by " (a.by) }
        }
        @if let Some(p) = &s.facts.behind { span.mark.behind { "behind " (p) } }
        @if s.servers_behind > 0 { span.mark.behind-it { (plural(s.servers_behind as usize, "server", "servers")) " behind" } }
        @if let Some(d) = downtime {
            span.mark.downtime title=(d.comment) { "downtime until " (time(Some(d.ends_at))) }
        }
    }
}

/// The downtimes in force or to come, each with a Remove button, and a form to add one.
fn downtimes_view(api: &Api) -> Markup {
    let list = api.notifier.downtimes().list();
    let now = Utc::now();
    html! {
        section.card #downtimes {
            h2 { "Downtimes" }
            @if list.is_empty() { p.none { "None planned." } }
            @else {
                table { thead { tr { th { "Servers" } th { "From" } th { "Until" } th { "By" } th { "Why" } th {} } }
                    tbody { @for d in &list {
                        tr.downtime data-id=(d.id) data-active=(d.starts_at <= now) {
                            td data-label="Servers" { code { (d.server) } }
                            td data-label="From" { (time(Some(d.starts_at))) }
                            td data-label="Until" { (time(Some(d.ends_at))) }
                            td data-label="By" { (d.by) }
                            td data-label="Why" { (d.comment) }
                            td { button.api-delete type="button" data-url=(format!("/api/v1/downtimes/{}", d.id)) { "Remove" } }
                        }
                    } } }
            }
            form.api #downtime-form data-method="POST" data-url="/api/v1/downtimes" data-kind="downtime" {
                label { "Servers " input name="server" required placeholder="web-*" size="12"; }
                label { "for " input name="hours" type="number" min="0.1" step="0.1" value="2" required size="4"; " h" }
                label { "why " input name="comment" required placeholder="kernel upgrade" size="24"; }
                button type="submit" { "Add downtime" }
                span.form-error {}
            }
        }
    }
}

fn row(api: &Api, s: &ServerSummary) -> Markup {
    let levels = api.fleet.rules().levels();
    let i = levels.iter().position(|l| l.name == s.facts.level).unwrap_or(0);
    html! {
        tr.server id=(format!("server-{}", s.facts.name)) data-server=(s.facts.name) data-state=(s.facts.state.as_str()) data-level=(s.facts.level) {
            td.name data-label="Server" { a href=(server_href(&s.facts.name)) { (s.facts.name) } div.addr { (s.facts.address) } }
            td.level data-label="Level" { span class=(format!("badge {}", level_class(i, levels.len()))) { (s.facts.level) } }
            td.state data-label="State" { (state_badge(s.facts.state)) (hygiene_marks(api, s)) }
            td.deficiencies data-label="Deficiencies" { (deficiency_list(s)) }
            td.last data-label="Last poll" { (time(s.facts.last_poll_at)) }
            td.next data-label="Next poll" { (time(s.next_poll_at)) }
            td.offset data-label="Clock offset" { (offset(s.facts.clock_offset_ms, api.max_clock_skew)) }
            td.rtt data-label="RTT" { (ms(s.facts.rtt_ms)) }
            td.actions { button.poll-now type="button" data-server=(s.facts.name) { "Poll now" } }
        }
    }
}

/// `GET /`: the whole fleet's page, built beside the polls (`web::whole_fleet`).
async fn fleet_page(State(api): State<Arc<Api>>) -> Response {
    match super::whole_fleet::build(move || fleet_page_html(&api)).await {
        Ok(html) => html.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the fleet page could not be built");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("the fleet page could not be built: {e}")).into_response()
        }
    }
}

fn fleet_page_html(api: &Api) -> Html<String> {
    let servers = api.fleet.summaries();
    let levels = api.fleet.rules().levels();
    let states = [ServerState::Ok, ServerState::Deficient, ServerState::Unreachable, ServerState::Unknown];
    let level_names: Vec<&str> = levels.iter().map(|l| l.name.as_str()).collect();
    let body = html! {
        section.summary {
            div.counts #level-counts {
                @for (i, l) in levels.iter().enumerate() {
                    div class=(format!("count c-{}", level_class(i, levels.len()))) data-level=(l.name) {
                        b { (servers.iter().filter(|s| s.facts.level == l.name).count()) }
                        span { (l.name) }
                        small { "every " (rollcall_config::Duration(l.interval)) }
                    }
                }
            }
            div.filters role="group" aria-label="Filter by state" {
                button.filter.active type="button" data-state="all" { "all " span.n { (servers.len()) } }
                @for st in states {
                    button.filter type="button" data-state=(st.as_str()) {
                        (st.as_str()) " " span.n { (servers.iter().filter(|s| s.facts.state == st).count()) }
                    }
                }
            }
        }
        p.fleet-total #fleet-total { (fleet_total(&servers.iter().map(|s| s.facts.state).collect::<Vec<_>>())) }
        table.fleet #fleet data-levels=(level_names.join(",")) {
            thead { tr {
                th { "Server" } th { "Level" } th { "State" } th { "Deficiencies" }
                th { "Last poll" } th { "Next poll" } th { "Clock offset" } th { "RTT" } th {}
            } }
            tbody {
                @for s in &servers { (row(api, s)) }
            }
        }
        @if servers.is_empty() { p.none { "No servers configured: add [[server]] tables to poller.toml." } }
        (downtimes_view(api))
    };
    page("Fleet", "fleet-page", body)
}

/// `POST /fleet/rows` with a JSON array of server names: their fleet rows, as the fleet
/// page renders them (unknown names are left out). The live fleet page's only source of
/// row HTML, so a live update equals a reload.
async fn fleet_rows(State(api): State<Arc<Api>>, Json(names): Json<Vec<String>>) -> Html<String> {
    let mut out = String::new();
    for name in &names {
        if let Some(server) = api.fleet.get(name) {
            out += &row(&api, &api.fleet.summary(&server)).into_string();
        }
    }
    Html(out)
}

async fn server_page(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                "",
                html! { p { "No server named " code { (name) } "." } a href="/" { "Back to the fleet" } },
            ),
        )
            .into_response();
    };
    let (s, parts) = match parts(&api, &server).await {
        Ok(p) => p,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let levels = api.fleet.rules().levels();
    let body = html! {
        nav.crumbs { a href="/" { "Fleet" } " / " (s.facts.name) }
        div #server-page data-server=(s.facts.name) data-levels=(levels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(",")) {
            div #live-parts { (parts) }
        }
    };
    page(&s.facts.name, "server-page", body).into_response()
}

async fn server_parts(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return (StatusCode::NOT_FOUND, "no such server").into_response();
    };
    match parts(&api, &server).await {
        Ok((_, p)) => Html(p.into_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Everything on a server page that changes with a poll.
async fn parts(api: &Api, server: &Server) -> Result<(ServerSummary, Markup), String> {
    let name = &server.config.name;
    // Include polls still queued for the writer, so the page follows the event it answers.
    api.fleet.writer().flush().await.map_err(|e| e.to_string())?;
    let history = api.store.history(name, CHART_POLLS.max(HISTORY_ROWS)).await.map_err(|e| {
        tracing::error!(server = %name, error = %e, "cannot read history for the dashboard");
        e.to_string()
    })?;
    type Typed = Option<Result<Compilation, String>>;
    let (s, compilation): (ServerSummary, Typed) = match api.latest(server).await {
        // The dashboard reads the typed compilation; one it cannot read is shown as such.
        Ok((s, raw)) => (s, raw.map(|v| serde_json::from_value(v).map_err(|e| e.to_string()))),
        Err(e) => {
            tracing::error!(server = %name, error = %e, "cannot read the latest compilation for the dashboard");
            (api.fleet.summary(server), None)
        }
    };
    let s = &s;
    let levels = api.fleet.rules().levels();
    let i = levels.iter().position(|l| l.name == s.facts.level).unwrap_or(0);
    Ok((
        s.clone(),
        html! {
            section.head data-state=(s.facts.state.as_str()) data-level=(s.facts.level) {
                div.title {
                    h1 { (s.facts.name) }
                    span class=(format!("badge level {}", level_class(i, levels.len()))) { (s.facts.level) }
                    span.state { (state_badge(s.facts.state)) }
                    button.poll-now type="button" data-server=(s.facts.name) { "Poll now" }
                }
                dl.facts {
                    div { dt { "Address" } dd { (s.facts.address) } }
                    div { dt { "Last poll" } dd { (time(s.facts.last_poll_at)) } }
                    div { dt { "Next poll" } dd { (time(s.next_poll_at)) } }
                    div { dt { "Clock offset" } dd { (offset(s.facts.clock_offset_ms, api.max_clock_skew)) } }
                    div { dt { "RTT" } dd { (ms(s.facts.rtt_ms)) } }
                    @if let Some(e) = &s.facts.last_error { div.error { dt { "Last error" } dd { (e) } } }
                    @if let Some(a) = &s.facts.ack {
                        div.ack { dt { "Acknowledged" } dd { "by " (a.by) " " (time(Some(a.at))) ": " (a.comment) } }
                    }
                    @if let Some(p) = &s.facts.behind { div.behind { dt { "Behind" } dd { (p) " (unreachable: nothing is told of this server)" } } }
                    @if s.servers_behind > 0 { div.behind-it { dt { "Behind it" } dd { (plural(s.servers_behind as usize, "server", "servers")) } } }
                    @if let Some(d) = api.notifier.downtimes().covering(&s.facts.name, Utc::now()) {
                        div.downtime { dt { "Downtime" } dd { "until " (time(Some(d.ends_at))) " by " (d.by) ": " (d.comment) } }
                    }
                }
                div.deficiencies { h2 { "Deficiencies" } (deficiency_list(s)) }
                @if !s.facts.deficiencies.is_empty() && s.facts.ack.is_none() {
                    form.api #ack-form data-method="POST" data-url=(format!("/api/v1/servers/{}/ack", s.facts.name)) data-kind="ack" {
                        label { "Acknowledge: " input name="comment" required placeholder="on it (your name)" size="30"; }
                        button type="submit" { "Acknowledge" }
                        span.form-error {}
                    }
                }
            }
            (chart(&history, api.max_clock_skew))
            @match &compilation {
                Some(Ok(c)) => (compilation_view(c)),
                Some(Err(e)) => section.card { h2 { "Latest compilation" } p.none { "Received, but this poller cannot read it: " (e) } },
                None => section.card { h2 { "Latest compilation" } p.none { "No compilation received yet." } },
            }
            (history_view(&history, api.max_clock_skew))
        },
    ))
}

fn chart(h: &History, max_skew: std::time::Duration) -> Markup {
    let api_skew_ms = max_skew.as_secs_f64() * 1000.0;
    // Oldest first, only polls that answered (a failed poll has no RTT or offset).
    let points: Vec<Value> = h
        .polls
        .iter()
        .take(CHART_POLLS as usize)
        .rev()
        .filter_map(|p| {
            Some(serde_json::json!({ "t": p.at.timestamp_millis(), "rtt": p.rtt_ms?, "offset": p.clock_offset_ms? }))
        })
        .collect();
    let data = serde_json::to_string(&points).unwrap_or_else(|_| "[]".into()).replace("</", "<\\/");
    html! {
        section.card.charts {
            h2 { "RTT and clock offset" }
            div.chart-row {
                figure { figcaption { "RTT (ms)" span.stats #chart-rtt-stats {} } svg.chart #chart-rtt role="img" aria-label="RTT over time" {} }
                figure { figcaption { "Clock offset (ms)" span.stats #chart-offset-stats {} } svg.chart #chart-offset role="img" aria-label="Clock offset over time" data-max-skew-ms=(api_skew_ms) {} }
            }
            script #chart-data type="application/json" { (PreEscaped(data)) }
        }
    }
}

fn status_badge(s: Status) -> Markup {
    html! { span class=(format!("badge cs-{}", s.as_str())) { (s.as_str()) } }
}

fn checks_table<'a>(title: &str, kind_title: &str, items: impl ExactSizeIterator<Item = ResultView<'a>>) -> Markup {
    html! {
        section.card {
            h2 { (title) }
            @if items.len() == 0 { p.none { "None reported." } }
            @else {
                table.checks {
                    thead { tr { th { "Name" } th { (kind_title) } th { "Status" } th { "Message" } th { "Observed" } th { "Took" } } }
                    tbody {
                        @for c in items {
                            tr data-status=(c.status.as_str()) {
                                td data-label="Name" { (c.name) }
                                td data-label="Kind" { (c.kind) }
                                td data-label="Status" { (status_badge(c.status)) }
                                td.msg data-label="Message" { (c.message) }
                                td data-label="Observed" { (time(Some(c.observed_at))) }
                                td data-label="Took" { (format!("{:.0} ms", c.duration_ms)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The `usage[]` figures (SPEC section 14); a row is marked by the deficiency its
/// thresholds made (`usage:NAME`), if any.
fn usage_table(c: &Compilation) -> Markup {
    let severity = |u: &UsageReport| {
        let source = format!("usage:{}", u.name);
        c.deficiencies.iter().filter(|d| d.source == source).map(|d| d.severity).max()
    };
    html! {
        section.card #usage {
            h2 { "Usage" }
            table.checks.usage-reports {
                thead { tr { th { "Name" } th { "Value" } th { "State" } th { "Message" } th { "Observed" } } }
                tbody {
                    @for u in &c.usage {
                        @let status = match severity(u) {
                            Some(Severity::Critical) => Status::Critical,
                            Some(Severity::Warning) => Status::Warning,
                            None => Status::Ok,
                        };
                        tr data-status=(status.as_str()) {
                            td data-label="Name" { (u.name) }
                            td.num data-label="Value" { (usage_value(u)) }
                            td data-label="State" { (status_badge(status)) }
                            td.msg data-label="Message" { (u.message) }
                            td data-label="Observed" { (time(Some(u.observed_at))) }
                        }
                    }
                }
            }
        }
    }
}

/// `3 messages`, `0.25 s`, `12`; `unknown` when it could not be measured.
fn usage_value(u: &UsageReport) -> String {
    match u.value {
        None => "unknown".to_string(),
        Some(v) => {
            let n = if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") };
            if u.unit.is_empty() {
                n
            } else {
                format!("{n} {}", u.unit)
            }
        }
    }
}

fn bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// The link to a server's page: its name as one percent-encoded path segment, so a name
/// with `/`, `%`, `?`, `#` or spaces reaches `/servers/{name}` whole (as app.js's
/// `encodeURIComponent` sends it).
fn server_href(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // encodeURIComponent's set: all but A-Z a-z 0-9 - _ . ! ~ * ' ( )
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    format!("/servers/{}", utf8_percent_encode(name, SEGMENT))
}

/// A zone's offset as ISO 8601 writes it: `+05:30`, `+05:45`, `-03:30`, `+00:00` (zones
/// are not whole hours: India, Nepal, Newfoundland, South Australia).
fn utc_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

fn usage(used: f64, total: f64) -> Markup {
    let pct = if total > 0.0 { used / total * 100.0 } else { 0.0 };
    let class = if pct >= 95.0 {
        "crit"
    } else if pct >= 90.0 {
        "warn"
    } else {
        "ok"
    };
    html! {
        span.usage { span.bar { span class=(format!("fill {class}")) style=(format!("width:{pct:.0}%")) {} } (format!("{} of {} ({pct:.0} %)", bytes(used), bytes(total))) }
    }
}

fn compilation_view(c: &Compilation) -> Markup {
    let (att, t, host) = (&c.attendant, &c.time, &c.host);
    let load: Vec<String> = host.load.iter().map(|l| format!("{l:.2}")).collect();
    let uptime = host.uptime_s;
    html! {
        section.card.compilation #compilation {
            h2 { "Latest compilation" }
            dl.facts {
                div { dt { "Attendant" } dd { (att.name) " " small { (att.version) } } }
                div { dt { "Hostname" } dd { (att.hostname) } }
                div.wide { dt { "Server time" } dd.ts { (t.utc.format("%Y-%m-%d %H:%M:%S%.3f UTC")) } }
                div { dt { "Zone" } dd { (t.zone.as_deref().unwrap_or("?")) " (UTC" (utc_offset(t.utc_offset_seconds)) ")" } }
            }
        }
        (checks_table("Services", "Check", c.services.iter().map(CheckResult::view)))
        (checks_table("Probes", "Kind", c.probes.iter().map(ProbeResult::view)))
        @if !c.usage.is_empty() { (usage_table(c)) }
        section.card.host {
            h2 { "Host usage" }
            dl.facts {
                div { dt { "Uptime" } dd { (format!("{}d {}h {}m", uptime / 86400, uptime % 86400 / 3600, uptime % 3600 / 60)) } }
                div { dt { "Load" } dd { (load.join(" · ")) } }
                div { dt { "CPU" } dd { (format!("{:.0} %", host.cpu_percent)) } }
                div { dt { "Memory" } dd { (usage(host.memory.used as f64, host.memory.total as f64)) } }
            }
            @if !host.disks.is_empty() {
                table.disks {
                    thead { tr { th { "Mount" } th { "Used" } } }
                    tbody { @for d in &host.disks { tr { td data-label="Mount" { (d.mount) } td data-label="Used" { (usage(d.used as f64, d.total as f64)) } } } }
                }
            }
        }
    }
}

fn history_view(h: &History, max_skew: std::time::Duration) -> Markup {
    html! {
        section.card.history #transitions {
            h2 { "Level transitions" }
            @if h.transitions.is_empty() { p.none { "None yet." } }
            @else {
                table { thead { tr { th { "When" } th { "Change" } th { "Why" } } }
                    tbody { @for t in h.transitions.iter().take(HISTORY_ROWS as usize) {
                        tr { td data-label="When" { (time(Some(t.at))) } td data-label="Change" { (t.from) " → " (t.to) } td data-label="Why" { (t.reason) } }
                    } } }
            }
        }
        section.card.history #clock-corrections {
            h2 { "Clock corrections" }
            @if h.clock_corrections.is_empty() { p.none { "None yet." } }
            @else {
                table { thead { tr { th { "When" } th { "Outcome" } th { "Offset" } th { "Correction" } th { "Detail" } } }
                    tbody { @for c in h.clock_corrections.iter().take(HISTORY_ROWS as usize) {
                        tr { td data-label="When" { (time(Some(c.at))) } td data-label="Outcome" { (c.outcome) }
                             td data-label="Offset" { (offset(Some(c.offset_ms), max_skew)) } td data-label="Correction" { (ms_text(c.correction_ms)) }
                             td data-label="Detail" { (c.detail) } }
                    } } }
            }
        }
        section.card.history #operator-actions {
            h2 { "Operator actions" }
            @if h.actions.is_empty() { p.none { "None yet." } }
            @else {
                table { thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Detail" } } }
                    tbody { @for a in h.actions.iter().take(HISTORY_ROWS as usize) {
                        tr { td data-label="When" { (time(Some(a.at))) } td data-label="Who" { (a.by) }
                             td data-label="Action" { (a.action) } td data-label="Detail" { (a.detail) } }
                    } } }
            }
        }
        section.card.history #polls {
            h2 { "Recent polls" }
            table { thead { tr { th { "When" } th { "State" } th { "Level" } th { "RTT" } th { "Offset" } th { "Deficiencies" } th { "Error" } } }
                tbody { @for p in h.polls.iter().take(20) {
                    tr { td data-label="When" { (time(Some(p.at))) } td data-label="State" { (state_badge(p.state)) } td data-label="Level" { (p.level) }
                         td data-label="RTT" { (ms(p.rtt_ms)) } td data-label="Offset" { (offset(p.clock_offset_ms, max_skew)) } td data-label="Deficiencies" { (p.deficiencies) }
                         td data-label="Error" { (p.error.as_deref().unwrap_or("")) } }
                } } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(plural(0, "server", "servers"), "0 servers");
        assert_eq!(plural(1, "server", "servers"), "1 server");
        assert_eq!(plural(2, "server", "servers"), "2 servers");
        assert_eq!(fleet_total(&[ServerState::Ok]), "1 server");
        assert_eq!(
            fleet_total(&[ServerState::Ok, ServerState::Deficient, ServerState::Unreachable]),
            "3 servers: 1 deficient, 1 unreachable"
        );
        assert_eq!(fleet_total(&[]), "0 servers");
    }

    #[test]
    fn server_links_carry_the_whole_name_as_one_segment() {
        assert_eq!(server_href("mail-01"), "/servers/mail-01");
        assert_eq!(server_href("a/b 100% ü?#"), "/servers/a%2Fb%20100%25%20%C3%BC%3F%23");
    }

    #[test]
    fn zone_offsets_that_are_not_whole_hours_are_shown_as_such() {
        assert_eq!(utc_offset(19_800), "+05:30");
        assert_eq!(utc_offset(20_700), "+05:45");
        assert_eq!(utc_offset(-9_000), "-02:30");
        assert_eq!(utc_offset(0), "+00:00");
        assert_eq!(utc_offset(-36_000), "-10:00");
    }

    #[test]
    fn milliseconds_never_read_minus_zero() {
        assert_eq!(ms_text(-0.008), "0.0 ms");
        assert_eq!(ms_text(-0.06), "-0.1 ms");
        assert_eq!(ms_text(1499.92), "1499.9 ms");
        assert_eq!(ms_text(45000.0), "45000.0 ms");
    }

    #[test]
    fn usage_figures_show_with_their_state_and_names_are_escaped() {
        let now = Utc::now();
        let c: Compilation = serde_json::from_value(serde_json::json!({
            "schema_version": 1,
            "attendant": {"name": "m", "version": "0", "hostname": "m"},
            "time": {"utc": now, "utc_offset_seconds": 0, "received_at": now, "replied_at": now},
            "host": {"uptime_s": 1, "load": [0.0, 0.0, 0.0], "cpu_percent": 0.0, "memory": {"total": 1, "used": 0}},
            "deficiencies": [{"source": "usage:queue", "severity": "critical", "summary": "s"}],
            "usage": [
                {"name": "queue", "value": 1500.0, "unit": "messages", "observed_at": now, "message": "1500 message(s)"},
                {"name": "<b>x</b>", "value": null, "unit": "", "observed_at": now, "message": "cannot measure: gone"},
                {"name": "load.ratio", "value": 0.25, "unit": "", "observed_at": now, "message": "ok"}
            ]
        }))
        .expect("compilation");
        let html = compilation_view(&c).into_string();
        assert!(html.contains("<h2>Usage</h2>"), "{html}");
        assert!(html.contains("1500 messages"), "{html}");
        assert!(html.contains(r#"<tr data-status="critical"><td data-label="Name">queue</td>"#), "{html}");
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x</b>"), "{html}");
        assert!(html.contains(">unknown<") && html.contains(">0.25<"), "{html}");
        let none: Compilation = serde_json::from_value({
            let mut v = serde_json::to_value(&c).expect("json");
            v.as_object_mut().map(|o| o.remove("usage"));
            v
        })
        .expect("compilation");
        assert!(!compilation_view(&none).into_string().contains("Usage"));
    }

    #[test]
    fn clock_offsets_are_classed_against_max_clock_skew() {
        assert_eq!(clock_class(0.3, 2000.0), "clk-ok");
        assert_eq!(clock_class(-1000.0, 2000.0), "clk-ok");
        assert_eq!(clock_class(1500.0, 2000.0), "clk-warn");
        assert_eq!(clock_class(-2000.0, 2000.0), "clk-warn");
        assert_eq!(clock_class(2000.1, 2000.0), "clk-crit");
        assert_eq!(clock_class(-45001.0, 2000.0), "clk-crit");
    }
}
