//! What administrators read and drive over HTTP: the JSON API (`api`), its live events
//! (`events`) and OpenAPI document (`openapi`), the poller's own health (`health`),
//! `/metrics` for Prometheus (`metrics`), and the HTML dashboard (`dashboard`). Every
//! surface reads the fleet's live state and the store's API; none knows of the fetcher or
//! a store backend. `auth` stands in front of them all: who may use which (SPEC section 11).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod events;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod whole_fleet;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;

/// Every route the poller serves: the JSON API under `/api/v1` (bounded in body size and
/// time; every error there, unknown routes and wrong methods included, is JSON
/// `{"error": ...}`), the dashboard at `/`, and `/metrics`; each request through
/// [`auth::guard`] first.
pub fn router(api: Arc<api::Api>, metrics: Arc<metrics::MetricsState>, auth: Arc<auth::Auth>) -> Router {
    let json = Router::new()
        .route("/api/v1/servers", get(api::list))
        .route("/api/v1/servers/{name}", get(api::detail))
        .route("/api/v1/servers/{name}/history", get(api::history))
        .route("/api/v1/servers/{name}/poll", post(api::poll))
        .route("/api/v1/servers/{name}/ack", post(api::ack))
        .route("/api/v1/downtimes", get(api::downtimes_list).post(api::downtimes_add))
        .route("/api/v1/downtimes/{id}", delete(api::downtimes_remove))
        .route("/api/v1/reload", post(api::reload))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/notifications", get(api::notifications))
        .route("/api/v1/cluster", get(api::cluster))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/{*rest}", axum::routing::any(api::no_route))
        .method_not_allowed_fallback(api::wrong_method)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(api::MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            api::REQUEST_TIMEOUT,
        ))
        .with_state(api.clone());
    json.merge(dashboard::router(api))
        .merge(metrics::router(metrics))
        .layer(axum::middleware::from_fn_with_state(auth, auth::guard))
}
