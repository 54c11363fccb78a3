//! The JSON API of SPEC section 8, under `/api/v1`. Reads come from the fleet's live state
//! (and the store for the latest compilation and history), never from the attendants.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::fleet::{Fleet, PollNowError};
use crate::model::ServerSummary;
use crate::store::SharedStore;

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
}

impl Api {
    /// The server as it stands and its latest compilation: the one received this run, or
    /// before the server's first answer the newest the store has.
    pub async fn latest(
        &self,
        server: &crate::fleet::Server,
    ) -> Result<(ServerSummary, Option<serde_json::Value>), crate::store::StoreError> {
        let (summary, latest) = self.fleet.detail(server);
        let compilation = match latest {
            Some(raw) => serde_json::from_slice(&raw).ok(),
            None => {
                self.store.compilation(&summary.facts.name).await?.and_then(|text| serde_json::from_str(&text).ok())
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

/// `GET` on a route that takes `POST`, or the other way round.
pub(crate) async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let allowed = if uri.path().ends_with("/poll") { "POST" } else { "GET" };
    error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}: use {allowed}", uri.path()))
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
    responses((status = 200, description = "Every configured server", body = [ServerSummary])))]
pub(crate) async fn list(State(api): State<Arc<Api>>) -> Json<Vec<ServerSummary>> {
    Json(api.fleet.servers().iter().map(|s| api.fleet.summary(s)).collect())
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
    let (summary, compilation) = match api.latest(server).await {
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
        (status = 200, description = "Polls, level transitions and clock corrections, newest first", body = crate::model::History),
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
        (status = 429, description = "Polled on request less than a second ago; Retry-After says when to ask again", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait")))))]
pub(crate) async fn poll(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return no_such(&name);
    };
    match api.fleet.poll_now(server).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e @ PollNowError::TooSoon { retry_after }) => {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, format!("{name}: {e}"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            r
        }
        Err(e @ PollNowError::Lost) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{name}: {e}")),
    }
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    responses((status = 200, description = "Every notification channel and its health", body = [crate::notify::ChannelStatus])))]
pub(crate) async fn notifications(State(api): State<Arc<Api>>) -> Json<Vec<crate::notify::ChannelStatus>> {
    Json(api.notifier.channels())
}
