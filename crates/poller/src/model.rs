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

/// A server as `GET /api/v1/servers` shows it (SPEC section 8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerSummary {
    pub name: String,
    pub address: String,
    pub level: String,
    pub state: ServerState,
    #[schema(value_type = Vec<crate::openapi::DeficiencyDoc>)]
    pub deficiencies: Vec<Deficiency>,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub clock_offset_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
}

/// What the store keeps of a server between restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    pub name: String,
    pub address: String,
    pub level: String,
    pub calm_streak: u32,
    pub state: ServerState,
    pub deficiencies: Vec<Deficiency>,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub clock_offset_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// Substance hash of the newest compilation in the history (read back on start; the
    /// writer ignores it).
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
}

/// Everything one poll changes, written to the store in one go.
#[derive(Debug, Clone)]
pub struct PollRecord {
    pub server: ServerRow,
    /// Level, state, deficiencies or error differ from the stored row (or there is none):
    /// only then is the row written.
    pub row_changed: bool,
    pub poll: PollRow,
    pub transition: Option<TransitionRow>,
    /// The reply as received, when its substance changed: it joins the history and
    /// becomes the row's latest.
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
