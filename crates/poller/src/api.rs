//! The JSON API of SPEC section 8, under `/api/v1`. Reads come from the fleet's live state
//! (and the store for the latest compilation and history), never from the attendants.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::fetch::Fetch;
use crate::fleet::Fleet;
use crate::model::ServerSummary;
use crate::store::Store;

/// What the API handlers share.
pub struct Api<F: Fetch> {
    pub fleet: Arc<Fleet<F>>,
    pub store: Store,
}

/// `GET /api/v1/servers/{name}`: the summary plus the latest compilation, as received.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerDetail {
    #[serde(flatten)]
    pub summary: ServerSummary,
    pub compilation: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<u32>,
}

/// Largest request body the API reads (no route takes more than a few bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take; a poll on request is bounded by the poll timeout already.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Most history rows of each kind one request returns.
pub const MAX_HISTORY: u32 = 1000;

pub fn router<F: Fetch>(api: Arc<Api<F>>) -> Router {
    Router::new()
        .route("/api/v1/servers", get(list::<F>))
        .route("/api/v1/servers/{name}", get(detail::<F>))
        .route("/api/v1/servers/{name}/history", get(history::<F>))
        .route("/api/v1/servers/{name}/poll", post(poll::<F>))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .with_state(api)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn no_such(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no server named {name:?}"))
}

async fn list<F: Fetch>(State(api): State<Arc<Api<F>>>) -> Json<Vec<ServerSummary>> {
    Json(api.fleet.servers().iter().map(|s| api.fleet.summary(s)).collect())
}

async fn detail<F: Fetch>(State(api): State<Arc<Api<F>>>, Path(name): Path<String>) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return no_such(&name);
    };
    let summary = api.fleet.summary(server);
    let compilation = match api.store.compilation(&name).await {
        Ok(c) => c.and_then(|text| serde_json::from_str(&text).ok()),
        Err(e) => {
            tracing::error!(server = %name, error = %e, "cannot read the latest compilation");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    Json(ServerDetail { summary, compilation }).into_response()
}

async fn history<F: Fetch>(
    State(api): State<Arc<Api<F>>>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
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

async fn poll<F: Fetch>(State(api): State<Arc<Api<F>>>, Path(name): Path<String>) -> Response {
    let Some(server) = api.fleet.get(&name) else {
        return no_such(&name);
    };
    Json(api.fleet.poll_now(server).await).into_response()
}
