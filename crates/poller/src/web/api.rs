//! The JSON API of SPEC sections 8 and 13, under `/api/v1`. Reads come from the fleet's
//! live state (and the store for the latest compilation and history), never from the
//! attendants.
//!
//! Rules it keeps: every operator action (poll now, ack, downtime add and remove) is
//! recorded in the audit trail with the name [`operator`] gives, for each server it
//! concerns, and shows in that server's history; bad input is a 4xx JSON error naming
//! the field.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::User;
use crate::fleet::{Fleet, PollNowError};
use crate::model::{ActionRow, Downtime, ServerSummary};
use crate::notify::downtimes;
use crate::store::SharedStore;

/// Who is asking: the API user's name the authentication layer ([`User`]) put on the
/// request, recorded with every operator action; `anonymous` on an open API.
pub fn operator(user: Option<&Extension<User>>) -> String {
    user.map_or_else(|| super::auth::ANONYMOUS.to_string(), |u| u.name.clone())
}

/// What the API handlers share.
pub struct Api {
    pub fleet: Arc<Fleet>,
    pub store: SharedStore,
    /// Notification channels and their health (dashboard, `/api/v1/notifications`).
    pub notifier: Arc<crate::notify::Notifier>,
    /// Cancelled when the poller stops; ends live event streams so shutdown never waits.
    pub stop: tokio_util::sync::CancellationToken,
    /// The config's `max_clock_skew`: the dashboard colours clock offsets against it.
    pub max_clock_skew: std::time::Duration,
    /// This poller's `node` name.
    pub node: String,
}

impl Api {
    /// Records an operator action on `server` in the audit trail (through the store's
    /// writer, so it is kept and retried like poll results) and logs it.
    pub async fn audit(&self, server: &str, by: &str, action: &str, detail: String) {
        tracing::info!(server, by, action, detail = %detail, "operator action");
        let row = ActionRow { at: Utc::now(), by: by.to_string(), action: action.to_string(), detail };
        if let Err(e) = self.fleet.writer().record_action(server, row).await {
            tracing::error!(server, action, error = %e, "operator action not stored");
        }
    }

    /// The configured servers a downtime's glob matches, in config order.
    fn matching(&self, glob: &str) -> Vec<String> {
        self.fleet
            .servers()
            .iter()
            .map(|s| &s.config.name)
            .filter(|n| crate::levels::glob_match(glob, n))
            .cloned()
            .collect()
    }

    fn view(&self, downtime: Downtime) -> DowntimeView {
        let now = Utc::now();
        DowntimeView {
            active: downtime.starts_at <= now && now < downtime.ends_at,
            servers: self.matching(&downtime.server),
            downtime,
        }
    }

    /// The server as it stands and its latest compilation: the one received this run, or
    /// before the server's first answer the newest the store has.
    pub async fn latest(
        &self,
        server: &crate::fleet::Server,
    ) -> Result<(ServerSummary, Option<serde_json::Value>), crate::store::StoreError> {
        let (summary, latest) = self.fleet.detail(server);
        // Every accepted reply passed `rollcall_protocol::check_showable`, so this parse
        // succeeds; if it ever does not, that is a bug worth a line, not a silent null.
        let shown = |r: Result<serde_json::Value, serde_json::Error>| {
            r.map_err(
                |e| tracing::error!(server = %summary.facts.name, error = %e, "cannot show the latest compilation"),
            )
            .ok()
        };
        let compilation = match latest {
            Some(raw) => shown(serde_json::from_slice(&raw)),
            None => {
                self.store.compilation(&summary.facts.name).await?.and_then(|text| shown(serde_json::from_str(&text)))
            }
        };
        Ok((summary, compilation))
    }
}

/// `GET /api/v1/servers/{name}`: the summary plus the latest compilation, as received.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerDetail {
    #[serde(flatten)]
    pub summary: ServerSummary,
    /// The compilation as the attendant sent it (schema v1, see SPEC section 1).
    #[schema(value_type = Option<Object>)]
    pub compilation: Option<serde_json::Value>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Most rows of each kind (default 100, at most 1000).
    pub(crate) limit: Option<u32>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: String,
}

/// Largest request body the API reads (no route takes more than a few bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take; a poll on request is bounded by the poll timeout already.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Most history rows of each kind one request returns.
pub const MAX_HISTORY: u32 = 1000;

/// A method the route does not take (`GET` on a route that takes `POST`...).
pub(crate) async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let allowed = if path.ends_with("/poll") || path.ends_with("/ack") || path == "/api/v1/reload" {
        "POST"
    } else if path == "/api/v1/downtimes" {
        "GET or POST"
    } else if path.starts_with("/api/v1/downtimes/") {
        "DELETE"
    } else {
        "GET"
    };
    error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}: use {allowed}"))
}

/// A path under /api/v1 that is no route.
pub(crate) async fn no_route(uri: axum::http::Uri) -> Response {
    error(StatusCode::NOT_FOUND, format!("no API route {} (see /api/v1/openapi.json)", uri.path()))
}

pub(crate) fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn no_such(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no server named {name:?}"))
}

#[utoipa::path(get, path = "/api/v1/servers", tag = "servers",
    responses(
        (status = 200, description = "Every configured server", body = [ServerSummary]),
        (status = 500, description = "The list could not be built", body = ApiError)))]
pub(crate) async fn list(State(api): State<Arc<Api>>) -> Response {
    let body = super::whole_fleet::build(move || serde_json::to_vec(&api.fleet.summaries()).map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match body {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the server list could not be built");
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("the server list could not be built: {e}"))
        }
    }
}

#[utoipa::path(get, path = "/api/v1/servers/{name}", tag = "servers",
    params(("name" = String, Path, description = "The server's name in poller.toml")),
    responses(
        (status = 200, description = "The server and its latest compilation", body = ServerDetail),
        (status = 404, description = "No such server", body = ApiError),
        (status = 500, description = "The store cannot be read", body = ApiError)))]
pub(crate) async fn detail(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return no_such(&name);
    };
    let (summary, compilation) = match api.latest(&server).await {
        Ok(both) => both,
        Err(e) => {
            tracing::error!(server = %name, error = %e, "cannot read the latest compilation");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    Json(ServerDetail { summary, compilation }).into_response()
}

#[utoipa::path(get, path = "/api/v1/servers/{name}/history", tag = "servers",
    params(("name" = String, Path, description = "The server's name in poller.toml"), HistoryQuery),
    responses(
        (status = 200, description = "Polls, level transitions, clock corrections and operator actions, newest first", body = crate::model::History),
        (status = 400, description = "The query is not understood (limit: 0 to 1000)", body = ApiError),
        (status = 404, description = "No such server", body = ApiError),
        (status = 500, description = "The store cannot be read", body = ApiError),
        (status = 503, description = "The store is failing (its writer retries) or has stopped", body = ApiError)))]
pub(crate) async fn history(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            let why = e.body_text();
            return error(StatusCode::BAD_REQUEST, format!("{why} (limit is a whole number, 0 to {MAX_HISTORY})"));
        }
    };
    if api.fleet.get(&name).is_none() {
        return no_such(&name);
    }
    // Include the polls still queued for the writer, so a read follows a poll.
    if let Err(e) = api.fleet.writer().flush().await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    match api.store.history(&name, q.limit.unwrap_or(100).min(MAX_HISTORY)).await {
        Ok(h) => Json(h).into_response(),
        Err(e) => {
            tracing::error!(server = %name, error = %e, "cannot read history");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

#[utoipa::path(post, path = "/api/v1/servers/{name}/poll", tag = "servers",
    params(("name" = String, Path, description = "The server's name in poller.toml")),
    responses(
        (status = 200, description = "Polled now (or joined the poll on request in flight); the server as it now stands", body = ServerSummary),
        (status = 403, description = "A viewer, or a request from another origin", body = ApiError),
        (status = 404, description = "No such server", body = ApiError),
        (status = 409, description = "Another poller node polls this server (ask that node)", body = ApiError),
        (status = 429, description = "Polled on request less than a second ago; Retry-After says when to ask again", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait")))))]
pub(crate) async fn poll(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    user: Option<Extension<User>>,
) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return no_such(&name);
    };
    if let Some(node) = api.fleet.polled_elsewhere(&server) {
        // Two nodes must never poll one server at once (SPEC section 12).
        return error(StatusCode::CONFLICT, format!("{name} is polled by node {node}: ask that node to poll it now"));
    }
    match api.fleet.poll_now(&server).await {
        Ok(summary) => {
            api.audit(&name, &operator(user.as_ref()), "poll", "poll now".into()).await;
            Json(summary).into_response()
        }
        Err(e @ PollNowError::TooSoon { retry_after }) => {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, format!("{name}: {e}"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            r
        }
        Err(e @ PollNowError::Lost) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{name}: {e}")),
    }
}

#[utoipa::path(post, path = "/api/v1/reload", tag = "hygiene",
    responses(
        (status = 200, description = "Reloaded: which servers were added, changed and removed", body = crate::fleet::ReloadReport),
        (status = 400, description = "The new configuration is invalid (every problem named); the running one is kept", body = ApiError),
        (status = 409, description = "The poller was not started from a config file", body = ApiError)))]
pub(crate) async fn reload(State(api): State<Arc<Api>>, user: Option<Extension<User>>) -> Response {
    let by = operator(user.as_ref());
    match api.fleet.reload_file().await {
        Ok(report) => {
            api.fleet.audit_reload(&report, &by).await;
            Json(report).into_response()
        }
        Err(e @ crate::fleet::ReloadError::NoFile) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => {
            tracing::error!(by, error = %e, "reload refused");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// `POST /api/v1/servers/{name}/ack`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Why, or who is on it: shown to everyone on call.
    pub comment: String,
}

/// A JSON body the route cannot read: 400 with what serde said.
fn bad_body(e: JsonRejection) -> Response {
    error(e.status(), format!("the request body: {}", e.body_text()))
}

/// A comment's problem, if any: empty or too long.
fn comment_problem(comment: &str) -> Option<String> {
    if comment.trim().is_empty() {
        Some("comment: say why or who is on it; it is shown to everyone on call".into())
    } else if comment.chars().count() > downtimes::MAX_COMMENT {
        Some(format!("comment: longer than {} characters", downtimes::MAX_COMMENT))
    } else {
        None
    }
}

#[utoipa::path(post, path = "/api/v1/servers/{name}/ack", tag = "hygiene",
    params(("name" = String, Path, description = "The server's name in poller.toml")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged: the server as it now stands, with its `ack`", body = ServerSummary),
        (status = 400, description = "No comment, or a body that is not {\"comment\": \"...\"}", body = ApiError),
        (status = 404, description = "No such server", body = ApiError),
        (status = 409, description = "The server has no problem to acknowledge", body = ApiError)))]
pub(crate) async fn ack(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    user: Option<Extension<User>>,
    body: Result<Json<AckRequest>, JsonRejection>,
) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return no_such(&name);
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return bad_body(e),
    };
    if let Some(p) = comment_problem(&req.comment) {
        return error(StatusCode::BAD_REQUEST, p);
    }
    let by = operator(user.as_ref());
    match api.fleet.acknowledge(&server, &by, req.comment.trim()).await {
        Ok(_) => {
            api.audit(&name, &by, "ack", req.comment.trim().to_string()).await;
            Json(api.fleet.summary(&server)).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// `POST /api/v1/downtimes`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DowntimeRequest {
    /// A glob over server names (`*` any run, `?` one character): `web-*`, `router-01`.
    pub server: String,
    /// RFC 3339; default now.
    pub starts_at: Option<DateTime<Utc>>,
    /// RFC 3339; after `starts_at` and in the future, at most 366 days after the start.
    pub ends_at: DateTime<Utc>,
    pub comment: String,
}

/// A downtime as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DowntimeView {
    #[serde(flatten)]
    pub downtime: Downtime,
    /// In force now.
    pub active: bool,
    /// The configured servers its glob matches now.
    pub servers: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/downtimes", tag = "hygiene",
    responses((status = 200, description = "Every downtime in force or to come, oldest first", body = [DowntimeView])))]
pub(crate) async fn downtimes_list(State(api): State<Arc<Api>>) -> Json<Vec<DowntimeView>> {
    Json(api.notifier.downtimes().list().into_iter().map(|d| api.view(d)).collect())
}

#[utoipa::path(post, path = "/api/v1/downtimes", tag = "hygiene",
    request_body = DowntimeRequest,
    responses(
        (status = 201, description = "The downtime, with its id", body = DowntimeView),
        (status = 400, description = "A bad glob, times that do not make a window in the future, no comment", body = ApiError),
        (status = 500, description = "The store cannot write it", body = ApiError)))]
pub(crate) async fn downtimes_add(
    State(api): State<Arc<Api>>,
    user: Option<Extension<User>>,
    body: Result<Json<DowntimeRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return bad_body(e),
    };
    let now = Utc::now();
    let starts_at = req.starts_at.unwrap_or(now);
    if let Some(p) = downtimes::problem(&req.server, starts_at, req.ends_at, &req.comment, now) {
        return error(StatusCode::BAD_REQUEST, p);
    }
    let by = operator(user.as_ref());
    let new = Downtime {
        id: 0,
        server: req.server.clone(),
        starts_at,
        ends_at: req.ends_at,
        comment: req.comment.trim().to_string(),
        by: by.clone(),
        created_at: now,
    };
    let d = match api.store.add_downtime(&new).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot store a downtime");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    api.notifier.downtimes().add(d.clone());
    let view = api.view(d);
    let detail = format!(
        "downtime {} for {} from {} to {}: {}",
        view.downtime.id, view.downtime.server, view.downtime.starts_at, view.downtime.ends_at, view.downtime.comment
    );
    for server in &view.servers {
        api.audit(server, &by, "downtime-add", detail.clone()).await;
    }
    (StatusCode::CREATED, Json(view)).into_response()
}

#[utoipa::path(delete, path = "/api/v1/downtimes/{id}", tag = "hygiene",
    params(("id" = i64, Path, description = "The downtime's id")),
    responses(
        (status = 200, description = "Removed: the downtime as it was", body = DowntimeView),
        (status = 400, description = "The id is not a number", body = ApiError),
        (status = 404, description = "No downtime in force or to come has this id", body = ApiError),
        (status = 500, description = "The store cannot be written", body = ApiError)))]
pub(crate) async fn downtimes_remove(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    user: Option<Extension<User>>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a downtime id (a number, see GET /api/v1/downtimes)"),
        );
    };
    let d = match api.store.close_downtime(id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no downtime {id} in force or to come (GET /api/v1/downtimes)"),
            )
        }
        Err(e) => {
            tracing::error!(downtime = id, error = %e, "cannot remove a downtime");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    api.notifier.downtimes().remove(id);
    let by = operator(user.as_ref());
    let view = api.view(d);
    let detail = format!("downtime {} for {} removed: {}", id, view.downtime.server, view.downtime.comment);
    for server in &view.servers {
        api.audit(server, &by, "downtime-remove", detail.clone()).await;
    }
    Json(view).into_response()
}

/// `GET /api/v1/cluster`: the pollers sharing this fleet (SPEC section 12).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterDoc {
    /// This node's name.
    pub node: String,
    /// False on SQLite: one poller polls everything.
    pub shared: bool,
    /// Seconds of silence after which a node's servers go to the others.
    pub failover_after_s: f64,
    /// Every node that ever joined, by name.
    pub nodes: Vec<crate::cluster::NodeStatus>,
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "servers",
    responses((status = 200, description = "The poller nodes, their heartbeat age and servers held", body = ClusterDoc)))]
pub(crate) async fn cluster(State(api): State<Arc<Api>>) -> Json<ClusterDoc> {
    Json(match api.fleet.holdings() {
        Some(h) => ClusterDoc {
            node: h.node.clone(),
            shared: true,
            failover_after_s: h.failover_after.as_secs_f64(),
            nodes: h.nodes(),
        },
        None => ClusterDoc {
            node: api.node.clone(),
            shared: false,
            failover_after_s: 0.0,
            nodes: vec![crate::cluster::NodeStatus {
                name: api.node.clone(),
                heartbeat_age_s: 0.0,
                live: true,
                servers: api.fleet.servers().len(),
            }],
        },
    })
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    responses((status = 200, description = "Every notification channel and its health", body = [crate::notify::ChannelStatus])))]
pub(crate) async fn notifications(State(api): State<Arc<Api>>) -> Json<Vec<crate::notify::ChannelStatus>> {
    Json(api.notifier.channels())
}
