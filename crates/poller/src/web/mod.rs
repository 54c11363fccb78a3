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

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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

/// Runs `work` on tokio's blocking pool, at most [`WHOLE_FLEET_AT_ONCE`] at a time: for
/// answers built from every server (`/metrics`, `GET /api/v1/servers`). At 50,000 servers
/// `/metrics` is 33 MB of text and took 250–400 ms to render; on a runtime worker that
/// held up every poll due meanwhile, and two scrapes per minute put the fleet's lateness
/// p99 at 146 ms (`bench/peers/run.sh poller 50000`, docs/performance.md). On the
/// blocking pool the polls go on beside it. A failed task (a panic) answers 500.
pub(crate) async fn whole_fleet<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(WHOLE_FLEET_AT_ONCE);
    let _slot = SLOTS.acquire().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?;
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "an answer about the whole fleet failed");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

/// Whole-fleet answers built at once; more wait. Each holds a copy of the fleet's state
/// (tens of megabytes at 50,000 servers), so a burst of scrapes cannot multiply it.
pub(crate) const WHOLE_FLEET_AT_ONCE: usize = 2;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::{whole_fleet, WHOLE_FLEET_AT_ONCE};

    #[tokio::test(flavor = "current_thread")]
    async fn a_whole_fleet_answer_is_built_beside_the_polls_not_on_their_thread() {
        let runtime = std::thread::current().id();
        let built_on = whole_fleet(|| std::thread::current().id()).await.unwrap();
        assert_ne!(built_on, runtime, "built on the thread that runs the polls");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_fleet_answers_are_built_a_few_at_a_time() {
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(whole_fleet(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= WHOLE_FLEET_AT_ONCE, "{} at once", most.load(Ordering::SeqCst));
        assert!(most.load(Ordering::SeqCst) >= 2, "six requests were served one by one");
    }
}
