//! The attendant's HTTP face: `GET /v1/compilation`, authenticated, bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::compile::Attendant;
use crate::config::Auth;
use crate::listener::CappedListener;

/// Connections held at once; a poller needs one, a few more leave room for operators.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest a request may take, checks included (their own timeouts are shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request body accepted (clock orders are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(attendant: Arc<Attendant>) -> Router {
    Router::new()
        .route(rollcall_protocol::COMPILATION_PATH, get(compilation))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .with_state(attendant)
}

/// Serves until `stop` is cancelled, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    attendant: Arc<Attendant>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        CappedListener::new(listener, MAX_CONNECTIONS),
        router(attendant),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}

async fn compilation(State(att): State<Arc<Attendant>>, headers: HeaderMap) -> Response {
    let received_at = att.clock.now();
    let config = att.config();
    if let Auth::Token(token) = &config.auth {
        if !bearer_matches(&headers, token.expose()) {
            tracing::warn!(server = %config.name, "refused a query without a valid token");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid Bearer token is required\n",
            )
                .into_response();
        }
    }
    let mut c = att.compile(received_at).await;
    c.time.replied_at = att.clock.now();
    match serde_json::to_vec(&c) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(server = %config.name, error = %e, "cannot serialize the compilation");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot serialize the compilation\n",
            )
                .into_response()
        }
    }
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.trim().as_bytes().ct_eq(token.as_bytes()).into()
}
