//! The poller's picture of a server, shared by the scheduler, the store and the API.

use chrono::{DateTime, Utc};
use rollcall_protocol::Deficiency;
use serde::{Deserialize, Serialize};

/// A server's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Answered, nothing wrong.
    Ok,
    /// Answered, with deficiencies.
    Deficient,
    /// Did not answer usably (timeout, refused, TLS, auth, malformed, oversized, incompatible).
    Unreachable,
    /// Not polled yet.
    Unknown,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Ok => "ok",
            ServerState::Deficient => "deficient",
            ServerState::Unreachable => "unreachable",
            ServerState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> ServerState {
        match s {
            "ok" => ServerState::Ok,
            "deficient" => ServerState::Deficient,
            "unreachable" => ServerState::Unreachable,
            _ => ServerState::Unknown,
        }
    }
}

/// What is known of a server and kept across restarts: the one persisted shape. The live
/// state ([`crate::fleet`]) holds one of these, the store writes it when it changes, and
/// the API's [`ServerSummary`] is it plus what only the running poller knows. A new server
/// fact is a field here and a column in each store backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerFacts {
    pub name: String,
    pub address: String,
    /// The level's name in poller.toml.
    pub level: String,
    /// Clean polls in a row counted towards a lower level (see [`crate::levels`]).
    #[serde(skip)]
    pub calm_streak: u32,
    /// When the server came to its level (for `escalate_after`).
    #[serde(skip)]
    pub level_since: Option<DateTime<Utc>>,
    /// Its level was reached by `escalate_after` (see [`crate::levels`]).
    #[serde(skip)]
    pub escalated: bool,
    pub state: ServerState,
    #[schema(value_type = Vec<DeficiencyDoc>)]
    pub deficiencies: Vec<Deficiency>,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The server's clock minus the poller's at the last answered poll (ms, NTP-style).
    pub clock_offset_ms: Option<f64>,
    /// Network round trip of the last answered poll (ms).
    pub rtt_ms: Option<f64>,
    /// The operator's acknowledgement of the current problem, while it lasts (SPEC 13):
    /// it silences notifications until the server recovers or gets worse. (Boxed: most
    /// servers have none, and every poll event carries the facts.)
    #[schema(value_type = Option<Ack>)]
    pub ack: Option<Box<Ack>>,
    /// The parents (`parents` in poller.toml) this server is unreachable behind: its
    /// failed polls while every parent is unreachable move no level and notify nothing
    /// (SPEC 13). `null` otherwise.
    pub behind: Option<String>,
}

impl ServerFacts {
    /// A server never polled: at `first_level`, state unknown.
    pub fn new(name: &str, address: &str, first_level: &str) -> ServerFacts {
        ServerFacts {
            name: name.to_string(),
            address: address.to_string(),
            level: first_level.to_string(),
            calm_streak: 0,
            level_since: None,
            escalated: false,
            state: ServerState::Unknown,
            deficiencies: Vec::new(),
            last_poll_at: None,
            last_error: None,
            clock_offset_ms: None,
            rtt_ms: None,
            ack: None,
            behind: None,
        }
    }
}

/// An acknowledgement: an operator owns the server's current problem (SPEC 13). The API
/// shows `{by, at, comment}`; what was acknowledged (the level and the deficiency
/// sources at that time) is kept to tell when the problem gets worse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ack {
    /// The operator's name (`anonymous` without API users).
    pub by: String,
    pub at: DateTime<Utc>,
    pub comment: String,
    /// The level the server was at when acknowledged.
    #[serde(skip)]
    pub level: String,
    /// The deficiency sources the server had when acknowledged.
    #[serde(skip)]
    pub sources: Vec<String>,
}

/// A change of a server's acknowledgement, handed to the store's writer.
#[derive(Debug, Clone, PartialEq)]
pub enum AckChange {
    /// An operator acknowledged the problem.
    Set(Ack),
    /// The acknowledgement given at this time ended (recovery or worse).
    Ended { at: DateTime<Utc> },
}

/// An operator action on a server (poll now, ack, downtime, reload), as the history shows
/// it (SPEC 11: every operator action is recorded with the user's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionRow {
    pub at: DateTime<Utc>,
    /// Who: the API user's name (`anonymous` without API users).
    pub by: String,
    /// `poll`, `ack`, `downtime-add`, `downtime-remove` or `reload`.
    pub action: String,
    /// What the operator said or asked for (the comment, the downtime's window).
    pub detail: String,
}

/// A downtime: planned work during which a server is polled and moves levels as usual
/// but nothing is notified (SPEC 13). `server` is a glob over server names (`*`, `?`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Downtime {
    pub id: i64,
    /// A glob over server names: `web-*`, `mail-0?`, `router-01`.
    pub server: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
    /// Who set it.
    pub by: String,
    pub created_at: DateTime<Utc>,
}

/// A server as `GET /api/v1/servers` shows it (SPEC section 8): its facts and when it is
/// polled next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerSummary {
    #[serde(flatten)]
    pub facts: ServerFacts,
    pub next_poll_at: Option<DateTime<Utc>>,
    /// The poller node polling it, when several share the fleet (SPEC section 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How many servers are behind this one now: those reached only through it (by their
    /// `parents`, transitively) while it is unreachable. 0 otherwise.
    #[serde(default)]
    pub servers_behind: u32,
}

/// A server as the store read it back on start.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredServer {
    pub facts: ServerFacts,
    /// Substance hash of the newest compilation in the history.
    pub substance: Option<i64>,
}

/// One poll in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PollRow {
    pub at: DateTime<Utc>,
    pub state: ServerState,
    pub level: String,
    pub rtt_ms: Option<f64>,
    pub clock_offset_ms: Option<f64>,
    pub error: Option<String>,
    pub deficiencies: u32,
}

/// One level change in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionRow {
    pub at: DateTime<Utc>,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// One clock order in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClockCorrectionRow {
    pub at: DateTime<Utc>,
    pub offset_ms: f64,
    pub correction_ms: f64,
    pub outcome: String,
    pub detail: String,
}

/// `GET /api/v1/servers/{name}/history`: each list newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct History {
    pub polls: Vec<PollRow>,
    pub transitions: Vec<TransitionRow>,
    pub clock_corrections: Vec<ClockCorrectionRow>,
    /// Operator actions on this server (poll now, ack, downtimes).
    #[serde(default)]
    pub actions: Vec<ActionRow>,
}

/// Everything one poll changes, handed to the store's writer.
#[derive(Debug, Clone)]
pub struct PollRecord {
    /// The server's facts after this poll.
    pub facts: ServerFacts,
    /// Level, state, deficiencies or error differ from the stored row (or there is none):
    /// only then is the row written.
    pub facts_changed: bool,
    pub poll: PollRow,
    pub transition: Option<TransitionRow>,
    /// The reply as received, when its substance changed: it joins the history and
    /// becomes the server's latest.
    pub compilation: Option<ChangedCompilation>,
    /// Clock orders sent after this poll, and verifications of earlier ones.
    pub clock_corrections: Vec<ClockCorrectionRow>,
}

/// A compilation that differs in substance from the server's previous one.
#[derive(Debug, Clone)]
pub struct ChangedCompilation {
    /// [`rollcall_protocol::Compilation::substance_hash`].
    pub hash: i64,
    pub body: bytes::Bytes,
}

/// What notifications last told about a server, as the store keeps it (see
/// [`crate::notify::damping::Memory`], which it is converted from and to).
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyRow {
    pub server: String,
    /// The level last told.
    pub level: String,
    /// The state last told.
    pub state: ServerState,
    /// Flapping was told and not yet settled.
    pub flapping: bool,
    /// The state the last poll found.
    pub seen_state: ServerState,
    /// When the state changed, within the flap window.
    pub changes: Vec<DateTime<Utc>>,
    /// How many notices about the server were claimed from this memory (the next one's
    /// key counts on from it: [`crate::notify::key`]).
    pub seq: i64,
}

/// A notice claimed in the store before it is sent: at most one claim per `key` ever
/// succeeds, on any node (SPEC sections 5 and 12).
#[derive(Debug, Clone, PartialEq)]
pub struct NoticeClaim {
    /// The notice's key ([`crate::notify::key`]): the same on every node for the same event.
    pub key: String,
    pub server: String,
    /// The notice's kind (`problem`, `recovery`, `clock`, ...).
    pub kind: String,
    /// The poller claiming it (`node`).
    pub node: String,
    /// When it was claimed (what retention counts from).
    pub at: DateTime<Utc>,
}

/// The OpenAPI document's description of `rollcall_protocol::Deficiency` (a type of
/// another crate, mirrored with the same serde shape; `tests/web.rs` keeps them equal).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Deficiency)]
pub struct DeficiencyDoc {
    /// `service:NAME`, `probe:NAME`, `host:...` or `poll:KIND`.
    pub source: String,
    pub severity: SeverityDoc,
    pub summary: String,
}

/// The document's description of `rollcall_protocol::Severity`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Severity)]
#[serde(rename_all = "lowercase")]
pub enum SeverityDoc {
    Warning,
    Critical,
}
