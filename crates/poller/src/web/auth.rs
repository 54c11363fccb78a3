//! Who may use the poller over HTTP (SPEC section 11): [`guard`] lets each request
//! through with a [`User`] in its extensions, or refuses it.
//!
//! Rules it keeps:
//! - `GET /api/v1/health` is always open: it tells nothing about the fleet.
//! - No `[[api.user]]`: everyone is the operator [`ANONYMOUS`] (the config allows that
//!   only on a loopback `listen`, or with `api_insecure`). On loopback, a request must
//!   also name a loopback host (`Host: 127.0.0.1:7470`, `localhost`, `[::1]`): a web page
//!   that rebinds its own name to 127.0.0.1 (DNS rebinding) is refused `403`.
//! - With users, a request needs `Authorization: Bearer TOKEN` or `Basic` (a user's name
//!   and either its bcrypt-hashed password or its token, so a browser can log in with
//!   either), as Prometheus' web config takes them. Without one, or with a wrong one: `401`
//!   with `WWW-Authenticate: Basic realm="rollcall"`, so a browser asks for a login.
//! - Tokens are compared as SHA-256 digests in constant time, against every token user
//!   (no early exit). A bcrypt password is verified off the runtime, [`BCRYPT_AT_ONCE`] at a
//!   time (a flood of bad logins cannot take every core), and once verified its digest is
//!   remembered per user (as Prometheus' exporter-toolkit caches), so a dashboard's many
//!   requests cost one bcrypt, not one each. An unknown name costs a bcrypt too, so
//!   timing does not tell which names exist.
//! - A viewer may read: `GET`, `HEAD`, and the dashboard's reads by POST
//!   ([`READS_BY_POST`]). Anything else needs an operator: `403` for a viewer.
//! - A state-changing request (any method but `GET`, `HEAD`, `OPTIONS`) from another
//!   origin is refused `403`, users or not: `Sec-Fetch-Site` other than `same-origin` or
//!   `none`, or an `Origin` whose host and port are not the request's `Host`. With users it
//!   also needs an `Authorization` header (a browser sends its cached basic login; no
//!   cookie ever stands in for it), which the rule above already demands.
//!
//! Every refusal is JSON `{"error": ...}`, like every other error of the API.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ApiConfig, Credential, Role};

/// The user a request was let through as. Handlers that record who acted take it as
/// `axum::Extension<User>`; [`guard`] puts it on every request it lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The `[[api.user]]` name, or [`ANONYMOUS`] when no users are configured.
    pub name: String,
    pub role: Role,
}

/// Who acts when no `[[api.user]]` is configured (an open API on loopback).
pub const ANONYMOUS: &str = "anonymous";
/// Routes open to anyone, for `GET` and `HEAD`.
pub const OPEN: &[&str] = &["/api/v1/health"];
/// Routes that read by `POST` (the dashboard sends the names of rows to render): a viewer may.
pub const READS_BY_POST: &[&str] = &["/fleet/rows"];
/// Bcrypt verifications run at once; more wait for a turn.
pub const BCRYPT_AT_ONCE: usize = 1;
/// How long a login waits for its turn at bcrypt before it is told to come back (`503`).
pub const BCRYPT_WAIT: Duration = Duration::from_secs(10);
/// The challenge of every `401`: browsers then ask for a name and password.
pub const CHALLENGE: &str = "Basic realm=\"rollcall\", charset=\"UTF-8\"";

type Sha = [u8; 32];

fn sha(bytes: &[u8]) -> Sha {
    Sha256::digest(bytes).into()
}

/// How one user is recognised.
enum Check {
    Token(Sha),
    Bcrypt(String),
}

struct Known {
    name: String,
    role: Role,
    check: Check,
}

/// The users of `[api]`, ready to recognise requests.
pub struct Auth {
    users: Vec<Known>,
    /// Open on loopback: only requests naming a loopback host are served.
    loopback_only: bool,
    /// Per bcrypt user, the digest of the password last verified.
    verified: parking_lot::Mutex<HashMap<String, Sha>>,
    bcrypt_turns: tokio::sync::Semaphore,
}

/// Why a request gets no user.
enum Refusal {
    /// No or wrong credentials: `401` with the challenge.
    Unauthorized(String),
    /// Too many logins waiting for bcrypt: `503`.
    Busy,
}

impl Auth {
    pub fn new(config: &ApiConfig) -> Auth {
        let users = config
            .users
            .iter()
            .map(|u| Known {
                name: u.name.clone(),
                role: u.role,
                check: match &u.credential {
                    Credential::Token(t) => Check::Token(sha(t.expose().as_bytes())),
                    Credential::PasswordHash(h) => Check::Bcrypt(h.expose().to_string()),
                },
            })
            .collect();
        Auth {
            loopback_only: config.is_open() && !config.insecure,
            users,
            verified: parking_lot::Mutex::new(HashMap::new()),
            bcrypt_turns: tokio::sync::Semaphore::new(BCRYPT_AT_ONCE),
        }
    }

    /// No users: anyone may do anything.
    pub fn is_open(&self) -> bool {
        self.users.is_empty()
    }

    /// The user `headers` authenticate, or why none.
    async fn identify(&self, headers: &HeaderMap) -> Result<User, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refusal::Unauthorized(
                "log in: this poller needs a user (HTTP basic auth, or Authorization: Bearer TOKEN)".into(),
            ));
        };
        let value = value.to_str().unwrap_or_default();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.by_token(sha(rest.trim().as_bytes())).ok_or_else(|| {
                tracing::warn!("API request with an unknown Bearer token refused");
                Refusal::Unauthorized("unknown token".into())
            });
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Refusal::Unauthorized(format!("Authorization {scheme:?} is neither Bearer nor Basic")));
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok();
        let Some((name, password)) =
            decoded.as_deref().and_then(|d| std::str::from_utf8(d).ok()).and_then(|t| t.split_once(':'))
        else {
            return Err(Refusal::Unauthorized("Authorization Basic is not base64 of NAME:PASSWORD".into()));
        };
        let user = self.users.iter().find(|u| u.name == name);
        let ok = match user.map(|u| &u.check) {
            Some(Check::Token(t)) => bool::from(sha(password.as_bytes()).ct_eq(t)),
            Some(Check::Bcrypt(hash)) => self.password_matches(name, hash, password).await?,
            // As dear as a real check: timing must not tell which names exist.
            None => {
                let _ = self.bcrypt(None, password).await?;
                false
            }
        };
        match user {
            Some(u) if ok => Ok(User { name: u.name.clone(), role: u.role }),
            _ => {
                tracing::warn!(user = ?name, "API login refused: wrong name or password");
                Err(Refusal::Unauthorized(format!("wrong name or password for {name:?}")))
            }
        }
    }

    /// The token user whose token has digest `given`; every token is compared.
    fn by_token(&self, given: Sha) -> Option<User> {
        let mut found = None;
        for u in &self.users {
            if let Check::Token(t) = &u.check {
                if bool::from(t.ct_eq(&given)) {
                    found = Some(User { name: u.name.clone(), role: u.role });
                }
            }
        }
        found
    }

    /// Whether `password` is `name`'s: the remembered digest, else bcrypt (then remembered).
    async fn password_matches(&self, name: &str, hash: &str, password: &str) -> Result<bool, Refusal> {
        let given = sha(password.as_bytes());
        if self.verified.lock().get(name).is_some_and(|known| bool::from(known.ct_eq(&given))) {
            return Ok(true);
        }
        let ok = self.bcrypt(Some(hash.to_string()), password).await?;
        if ok {
            self.verified.lock().insert(name.to_string(), given);
        }
        Ok(ok)
    }

    /// One bcrypt verification against `hash` (`None`: against a hash nothing matches),
    /// on the blocking pool, when its turn comes.
    async fn bcrypt(&self, hash: Option<String>, password: &str) -> Result<bool, Refusal> {
        let _turn = match tokio::time::timeout(BCRYPT_WAIT, self.bcrypt_turns.acquire()).await {
            Ok(Ok(turn)) => turn,
            _ => return Err(Refusal::Busy),
        };
        let password = password.to_string();
        let verified = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(dummy_hash);
            bcrypt::verify(password, &hash)
        })
        .await;
        Ok(matches!(verified, Ok(Ok(true))))
    }
}

/// A valid hash of cost 10 that unknown names are checked against (made once, when first
/// needed, on the blocking pool).
fn dummy_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("no such user", 10).unwrap_or_default()).clone()
}

/// Whether a `Host` header (a name or address, maybe with a port) names a loopback host.
fn loopback_host(host: &str) -> bool {
    let name = host.rsplit_once(':').filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit())).map_or(host, |h| h.0);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a method changes state (everything but reads and preflights).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request comes from another origin, if it does (`Sec-Fetch-Site`, then `Origin`
/// against `Host`). A request with neither header (curl, the CLI) is not cross-origin.
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("Sec-Fetch-Site is {site:?}"));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or("");
        let authority = origin.split_once("://").map_or("", |(_, a)| a.trim_end_matches('/'));
        if host.is_empty() || !authority.eq_ignore_ascii_case(host) {
            return Some(format!("Origin {origin:?} is not this poller (Host {host:?})"));
        }
    }
    None
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The middleware: every request but the open ones gets a [`User`] or a refusal.
pub async fn guard(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if OPEN.contains(&path.as_str()) && matches!(method, Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    if auth.loopback_only {
        let host = req.headers().get(header::HOST).map(|h| h.to_str().unwrap_or("(not text)"));
        if let Some(host) = host.filter(|h| !loopback_host(h)) {
            tracing::warn!(host = ?host, path = %path, "request for another host refused by an open API on loopback");
            return refuse(
                StatusCode::FORBIDDEN,
                format!("this poller has no users, so it answers only requests for a loopback host, not {host:?}"),
            );
        }
    }
    let changes = changes_state(&method);
    if changes {
        if let Some(why) = cross_origin(req.headers()) {
            tracing::warn!(method = %method, path = %path, why = %why, "cross-origin request refused");
            return refuse(StatusCode::FORBIDDEN, format!("cross-origin {method} refused: {why}"));
        }
    }
    let user = if auth.is_open() {
        User { name: ANONYMOUS.to_string(), role: Role::Operator }
    } else {
        match auth.identify(req.headers()).await {
            Ok(u) => u,
            Err(Refusal::Unauthorized(why)) => {
                let mut r = refuse(StatusCode::UNAUTHORIZED, why);
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
                return r;
            }
            Err(Refusal::Busy) => {
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many logins at once; try again".into());
            }
        }
    };
    let needed = if changes && !READS_BY_POST.contains(&path.as_str()) { Role::Operator } else { Role::Viewer };
    if !user.role.allows(needed) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{method} {path} needs an operator; {} is a {}", user.name, user.role.as_str()),
        );
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(header::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_requests_and_clients_without_browser_headers_pass() {
        assert_eq!(cross_origin(&headers(&[])), None, "curl and the CLI send neither header");
        let same = headers(&[("host", "127.0.0.1:7470"), ("origin", "http://127.0.0.1:7470")]);
        assert_eq!(cross_origin(&same), None);
        let typed = headers(&[("host", "poller.example.org"), ("sec-fetch-site", "none")]);
        assert_eq!(cross_origin(&typed), None, "a request the user typed");
    }

    #[test]
    fn other_origins_are_named() {
        for h in [
            headers(&[("host", "127.0.0.1:7470"), ("origin", "https://evil.example")]),
            headers(&[("host", "127.0.0.1:7470"), ("origin", "http://127.0.0.1:7471")]),
            headers(&[("host", "127.0.0.1:7470"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:7470"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:7470"), ("sec-fetch-site", "same-site")]),
            headers(&[("origin", "http://127.0.0.1:7470")]),
        ] {
            assert!(cross_origin(&h).is_some(), "{h:?} passed");
        }
    }

    fn basic_login(password: &str) -> HeaderMap {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("bob:{password}"));
        headers(&[("authorization", &format!("Basic {credentials}"))])
    }

    /// A login verified once is remembered, so the dashboard's requests need no bcrypt; a
    /// login that needs one while every turn is taken (a flood of logins) is told to come
    /// back (`503`) once [`BCRYPT_WAIT`] has passed, instead of queueing for ever.
    #[tokio::test(start_paused = true)]
    async fn a_remembered_login_needs_no_bcrypt_and_a_crowd_of_others_waits_its_turn_in_bounds() {
        let hash = rollcall_config::Secret::new(bcrypt::hash("builder", 4).unwrap());
        let user = crate::config::ApiUser {
            name: "bob".into(),
            role: Role::Viewer,
            credential: Credential::PasswordHash(hash),
        };
        let auth = Auth::new(&ApiConfig { users: vec![user], insecure: false });
        let bob = User { name: "bob".into(), role: Role::Viewer };
        assert_eq!(auth.identify(&basic_login("builder")).await.ok(), Some(bob.clone()));
        let _every_turn = auth.bcrypt_turns.acquire().await.unwrap();
        assert_eq!(auth.identify(&basic_login("builder")).await.ok(), Some(bob), "remembered: no bcrypt");
        let started = tokio::time::Instant::now();
        assert!(matches!(auth.identify(&basic_login("wrong")).await, Err(Refusal::Busy)));
        assert_eq!(started.elapsed(), BCRYPT_WAIT);
    }

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for h in ["127.0.0.1:7470", "127.0.0.1", "localhost:7470", "LOCALHOST", "[::1]:7470", "[::1]", "127.1.2.3:80"] {
            assert!(loopback_host(h), "{h}");
        }
        for h in
            ["evil.example:7470", "evil.example", "10.0.0.5:7470", "[2001:db8::1]:7470", "localhost.evil.example", ""]
        {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Operator.allows(Role::Viewer) && Role::Operator.allows(Role::Operator));
        assert!(Role::Viewer.allows(Role::Viewer) && !Role::Viewer.allows(Role::Operator));
    }
}
