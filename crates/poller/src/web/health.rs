//! `GET /api/v1/health`: whether the poller keeps what it polls, for load balancers and
//! monitors of the monitor (SPEC section 10). Always open, even with `[[api.user]]`: it
//! tells nothing about the fleet.
//!
//! Rules it keeps: `200` with `status: ok` while the store takes writes; `503` with
//! `status: degraded` while the store's writer is failing (it keeps and retries what it
//! could not write: `pending_rows`). Read from the writer's own counters, never from a
//! query that could hang on the failing store.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::web::api::Api;

/// The answer of `GET /api/v1/health`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` while the store is failing.
    pub status: HealthStatus,
    pub store: StoreHealth,
    /// This poller's version.
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// The store as its writer sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreHealth {
    /// Writes succeed.
    pub ok: bool,
    /// When the failing writes began (null while `ok`).
    pub failing_since: Option<DateTime<Utc>>,
    /// Why the last write failed (null while `ok`).
    pub last_error: Option<String>,
    /// Rows waiting to be written (kept in memory and retried while failing).
    pub pending_rows: u64,
    /// Writes that failed since start, retries included (`rollcall_store_errors_total`).
    pub errors_total: u64,
}

#[utoipa::path(get, path = "/api/v1/health", tag = "meta", security(()),
    responses(
        (status = 200, description = "The store takes writes", body = Health),
        (status = 503, description = "The store is failing; what it could not write is kept and retried", body = Health)))]
pub(crate) async fn health(State(api): State<Arc<Api>>) -> Response {
    let stats = api.fleet.writer().stats();
    let fault = stats.fault();
    let store = StoreHealth {
        ok: fault.is_none(),
        failing_since: fault.as_ref().map(|f| f.since),
        last_error: fault.map(|f| f.last_error),
        pending_rows: stats.pending.load(Ordering::Relaxed),
        errors_total: stats.failures.load(Ordering::Relaxed),
    };
    let (code, status) = if store.ok {
        (StatusCode::OK, HealthStatus::Ok)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, HealthStatus::Degraded)
    };
    let body = Health { status, store, version: env!("CARGO_PKG_VERSION").to_string() };
    (code, Json(body)).into_response()
}
