//! `[api]` and `api_insecure` in poller.toml (SPEC section 11): who may use the poller's
//! API, dashboard and `/metrics`, and where an open one may listen.
//!
//! Rules it keeps:
//! - Each `[[api.user]]` has a unique, non-empty `name`, a `role` (`viewer` | `operator`)
//!   and exactly one credential: `token_file` (a Bearer token of at least
//!   [`MIN_TOKEN_CHARS`] characters, also taken as the basic-auth password so a browser can
//!   log in with it) or `password_hash` (bcrypt, as Prometheus' web config takes them, of a
//!   cost of at most [`MAX_BCRYPT_COST`]).
//! - No two users share a token: a token names its user.
//! - Without users the API is open, so it may only listen on a loopback address;
//!   `api_insecure = true` lifts that (and the poller warns at every start). Setting it
//!   with users is a contradiction, refused.

use std::net::SocketAddr;
use std::path::PathBuf;

use rollcall_config::{Located, Problems, Secret, SecretSource};
use serde::Deserialize;

/// `[api]` as written.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawApi {
    #[serde(default, rename = "user")]
    users: Vec<RawUser>,
    /// HTTPS for the API (read by `config::api_tls`).
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
}

/// One `[[api.user]]` as written; missing keys are validation problems, named with the rest.
#[derive(Debug, Deserialize)]
struct RawUser {
    #[serde(default)]
    name: String,
    role: Option<String>,
    token_file: Option<PathBuf>,
    password_hash: Option<String>,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything: the API's GETs, events, the dashboard, `/metrics`.
    Viewer,
    /// Also changes things: poll now, acknowledgements, downtimes.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// How a user proves who they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    /// `token_file`: presented as `Authorization: Bearer TOKEN` (or as the basic-auth password).
    Token(Secret),
    /// `password_hash`: a bcrypt hash (`$2b$12$...`); the password comes by HTTP basic auth.
    PasswordHash(Secret),
}

/// One `[[api.user]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiUser {
    pub name: String,
    pub role: Role,
    pub credential: Credential,
}

/// Who may use the API, dashboard and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiConfig {
    /// Empty: the API is open (loopback only, unless `insecure`).
    pub users: Vec<ApiUser>,
    /// `api_insecure = true`: an open API may listen on any address.
    pub insecure: bool,
}

/// The shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;
/// The dearest bcrypt cost accepted: at 14 one verification takes about a second of a core.
pub const MAX_BCRYPT_COST: u32 = 14;

impl ApiConfig {
    /// Whether anyone may use the API (no `[[api.user]]`).
    pub fn is_open(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether the API may serve on `addr`: an open API only on a loopback address, unless
    /// `api_insecure`. The error says why and what to do.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), String> {
        if !self.is_open() || self.insecure || addr.ip().is_loopback() {
            return Ok(());
        }
        Err(format!(
            "refused: {addr} is not a loopback address and no [[api.user]] is configured, so anyone who \
             reaches it could use the API; add [[api.user]] tables (see docs/config.md), listen on \
             127.0.0.1, or set api_insecure = true"
        ))
    }
}

/// Validates `[api]` and `api_insecure` against `listen`, pushing every problem by key.
pub(super) fn parse(
    raw: Option<&RawApi>,
    insecure: Option<bool>,
    listen: SocketAddr,
    loc: &Located,
    p: &mut Problems<'_>,
) -> ApiConfig {
    let raw_users = raw.map(|a| a.users.as_slice()).unwrap_or_default();
    let mut users: Vec<ApiUser> = Vec::new();
    for (i, u) in raw_users.iter().enumerate() {
        let at = |k: &str| format!("api.user[{i}].{k}");
        if u.name.trim().is_empty() {
            p.push(at("name"), "must not be empty");
        } else if raw_users[..i].iter().any(|o| o.name == u.name) {
            p.push(at("name"), format!("duplicate user name {:?}", u.name));
        }
        let role = match u.role.as_deref() {
            Some("viewer") => Role::Viewer,
            Some("operator") => Role::Operator,
            Some(other) => {
                p.push(at("role"), format!("unknown role {other:?} (viewer | operator)"));
                Role::Viewer
            }
            None => {
                p.push(format!("api.user[{i}]"), "missing: role = \"viewer\" (reads) or \"operator\" (also acts)");
                Role::Viewer
            }
        };
        let credential = match (&u.token_file, &u.password_hash) {
            (Some(_), Some(_)) => {
                p.push(format!("api.user[{i}]"), "token_file and password_hash are set together; choose one");
                continue;
            }
            (None, None) => {
                p.push(
                    format!("api.user[{i}]"),
                    "missing: token_file = \"PATH\" (a Bearer token) or password_hash = \"$2b$...\" (bcrypt, for basic auth)",
                );
                continue;
            }
            (Some(f), None) => match token(&SecretSource::File(loc.resolve(f))) {
                Ok(t) => Credential::Token(t),
                Err(e) => {
                    p.push(at("token_file"), e);
                    continue;
                }
            },
            (None, Some(h)) => match password_hash(h) {
                Ok(()) => Credential::PasswordHash(Secret::new(h.trim())),
                Err(e) => {
                    p.push(at("password_hash"), e);
                    continue;
                }
            },
        };
        let shared = users.iter().find(|o| matches!(o.credential, Credential::Token(_)) && o.credential == credential);
        if let Some(other) = shared {
            p.push(
                at("token_file"),
                format!("holds the same token as user {:?}: a token must name one user", other.name),
            );
        }
        users.push(ApiUser { name: u.name.clone(), role, credential });
    }
    let api = ApiConfig { users, insecure: insecure.unwrap_or(false) };
    if api.insecure && !raw_users.is_empty() {
        p.push("api_insecure", "set together with [[api.user]]: with users the API is not open; remove it");
    }
    if let Err(why) = api.check_listen(listen) {
        p.push("listen", why);
    }
    api
}

/// Reads a user's token; refuses one short enough to guess.
fn token(source: &SecretSource) -> Result<Secret, String> {
    let t = source.read()?;
    let chars = t.expose().chars().count();
    if chars < MIN_TOKEN_CHARS {
        let SecretSource::File(path) = source;
        return Err(format!(
            "the token in {} has {chars} characters, fewer than {MIN_TOKEN_CHARS}: it could be guessed \
             (make one with `head -c 32 /dev/urandom | base64`)",
            path.display()
        ));
    }
    Ok(t)
}

/// Checks a bcrypt hash's form and cost (never prints the hash).
fn password_hash(hash: &str) -> Result<(), String> {
    // The parser's error quotes the value, which may be a password written here by
    // mistake: it is not repeated.
    let parts: bcrypt::HashParts = hash.trim().parse().map_err(|_| {
        "is not a bcrypt hash ($2b$, a cost, 53 characters; `htpasswd -nbBC 10 NAME PASSWORD` prints one after `NAME:`)"
            .to_string()
    })?;
    let cost = parts.get_cost();
    if cost > MAX_BCRYPT_COST {
        return Err(format!(
            "bcrypt cost {cost} makes every login take seconds (at most {MAX_BCRYPT_COST}; 10 to 12 is usual)"
        ));
    }
    Ok(())
}
