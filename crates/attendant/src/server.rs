//! The attendant's HTTP face: `GET /v1/compilation` and `POST /v1/clock` (a signed clock
//! order), both behind the same Bearer check, bounded in connections, time and body size;
//! over TLS when configured, mutual TLS with `client_ca_file` (the token still applies).
//! Connection slots and deadlines are `rollcall_netserve`'s: strangers cannot hold them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::attendant::Attendant;
use crate::config::Auth;
use rollcall_protocol::clock_order::SignedOrder;

/// Connections held at once. A poller needs one; the rest is room for strangers to be
/// shed from (SPEC section 10: 1,000 idle clients must not keep the poller out).
pub const MAX_CONNECTIONS: usize = 2048;
/// Longest a request may take, checks included (their own timeouts are shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request body accepted (clock orders are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(attendant: Arc<Attendant>) -> Router {
    Router::new()
        .route(rollcall_protocol::COMPILATION_PATH, get(compilation))
        .route(rollcall_protocol::clock_order::CLOCK_PATH, axum::routing::post(clock_order))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .with_state(attendant)
}

/// Serves until `stop` is cancelled, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    attendant: Arc<Attendant>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let limits = rollcall_netserve::Limits { max_connections: MAX_CONNECTIONS, ..Default::default() };
    let tls = attendant.config().tls.clone();
    rollcall_netserve::serve_tls(listener, router(attendant), limits, tls, stop).await
}

/// The Bearer check both routes share; `Some(response)` when refused.
fn refuse_unauthenticated(config: &crate::AttendantConfig, headers: &HeaderMap) -> Option<Response> {
    let Auth::Token(token) = &config.auth else {
        return None;
    };
    if bearer_matches(headers, token.expose()) {
        return None;
    }
    tracing::warn!(server = %config.name, "refused a request without a valid token");
    Some(
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a valid Bearer token is required\n")
            .into_response(),
    )
}

/// `POST /v1/clock`: a signed clock order (SPEC section 4).
async fn clock_order(
    State(att): State<Arc<Attendant>>,
    headers: HeaderMap,
    body: Result<axum::Json<SignedOrder>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let config = att.config();
    if let Some(refused) = refuse_unauthenticated(&config, &headers) {
        return refused;
    }
    let signed = match body {
        Ok(axum::Json(s)) => s,
        Err(e) => {
            tracing::warn!(server = %config.name, error = %e, "unreadable clock order");
            return (StatusCode::BAD_REQUEST, format!("not a signed clock order: {e}\n")).into_response();
        }
    };
    let (status, reply) = att.clock_keeper.handle(&signed, &att.clock, &config.name, &att.probes);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(reply)).into_response()
}

async fn compilation(State(att): State<Arc<Attendant>>, headers: HeaderMap) -> Response {
    let received_at = att.clock.now();
    let config = att.config();
    if let Some(refused) = refuse_unauthenticated(&config, &headers) {
        return refused;
    }
    let mut c = att.compile(received_at).await;
    c.time.replied_at = att.clock.now();
    match serde_json::to_vec(&c) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(server = %config.name, error = %e, "cannot serialize the compilation");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot serialize the compilation\n").into_response()
        }
    }
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.trim().as_bytes().ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AttendantConfig;
    use rollcall_protocol::{Compilation, Status};

    async fn start(extra: &str, token: Option<&str>) -> (String, CancellationToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let auth = match token {
            Some(t) => {
                std::fs::write(dir.path().join("token"), t).unwrap();
                "token_file = \"token\"\n"
            }
            None => "insecure = true\n",
        };
        let file = dir.path().join("attendant.toml");
        let text = format!(
            "name = \"t\"\nlisten = \"127.0.0.1:0\"\n{auth}clock = \"virtual\"\nclock_offset = \"-3s\"\n{extra}"
        );
        let config = AttendantConfig::parse(file.to_str().unwrap(), &text).unwrap();
        let stop = CancellationToken::new();
        let att = crate::start(config, stop.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{}", l.local_addr().unwrap(), rollcall_protocol::COMPILATION_PATH);
        tokio::spawn(serve(l, att, stop.clone()));
        (url, stop, dir)
    }

    #[tokio::test]
    async fn queries_without_the_token_are_refused() {
        let (url, stop, _d) = start("", Some("s3cret")).await;
        let c = reqwest::Client::new();
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = c.get(&url).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = c.get(&url).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        let comp = Compilation::from_slice(&body).unwrap();
        assert_eq!(comp.attendant.name, "t");
        stop.cancel();
    }

    #[tokio::test]
    async fn one_reply_holds_every_service_and_is_bounded_by_the_slowest_timeout() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let extra = format!(
            "[[service]]\nname = \"slow\"\ncheck = \"command\"\ncommand = [\"/bin/sleep\", \"30\"]\ntimeout = \"700ms\"\n\
             [[service]]\nname = \"down\"\ncheck = \"tcp\"\naddress = \"{closed}\"\ntimeout = \"700ms\"\n\
             [[service]]\nname = \"fine\"\ncheck = \"command\"\ncommand = [\"/bin/echo\", \"OK | x=1\"]\n"
        );
        let (url, stop, _d) = start(&extra, None).await;
        let t = std::time::Instant::now();
        let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
        let took = t.elapsed();
        assert!(took < std::time::Duration::from_millis(1500), "reply took {took:?}");
        let c = Compilation::from_slice(&body).unwrap();
        let got: Vec<(&str, Status)> = c.services.iter().map(|s| (s.name.as_str(), s.status)).collect();
        assert_eq!(got, [("slow", Status::Unknown), ("down", Status::Critical), ("fine", Status::Ok)]);
        let sources: Vec<&str> = c.deficiencies.iter().map(|d| d.source.as_str()).collect();
        assert!(sources.contains(&"service:slow") && sources.contains(&"service:down"), "{sources:?}");
        assert!(!sources.contains(&"service:fine"));
        // The virtual clock runs 3 s behind, and replied_at follows received_at.
        let behind = chrono::Utc::now() - c.time.utc;
        assert!((behind.num_milliseconds() - 3000).abs() < 500, "{behind}");
        assert!(c.time.replied_at >= c.time.received_at);
        assert!(c.host.memory.total > 0);
        stop.cancel();
    }
}
