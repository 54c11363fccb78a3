//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every `/api/v1` route,
//! generated at compile time by utoipa from the handlers' annotations and the response
//! types' derives, so it cannot drift from the code (and `tests/web.rs` checks real
//! answers against it).
//!
//! Security schemes: `bearer` and `basic`, required by every route but the health check
//! (whose `security` is empty), as `web::auth` enforces.
//!
//! Rule it keeps: a type from another crate (the protocol's `Deficiency`) is described by a
//! mirror here with the same serde shape; the response test is what keeps the two equal.

use std::sync::OnceLock;

use axum::Json;
use utoipa::OpenApi;

/// The poller's API, as documented.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rollcall poller API",
        description = "The fleet as the poller sees it (SPEC sections 5 and 8). Reads come from the \
            poller's live state and its store, never from the attendants. With `[[api.user]]` in \
            poller.toml, every route but `GET /api/v1/health` needs a user (Bearer token or HTTP basic \
            auth): 401 without one, 403 for a viewer on a route that changes something (an operator's), \
            and 403 for a POST or DELETE from another origin. Without users the API is open, on \
            loopback only."
    ),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("basic" = [])),
    paths(
        crate::web::api::list,
        crate::web::api::detail,
        crate::web::api::history,
        crate::web::api::poll,
        crate::web::api::ack,
        crate::web::api::downtimes_list,
        crate::web::api::downtimes_add,
        crate::web::api::downtimes_remove,
        crate::web::api::reload,
        crate::web::api::notifications,
        crate::web::api::cluster,
        crate::web::events::events,
        crate::web::health::health,
        document,
    ),
    components(schemas(
        crate::model::ServerSummary,
        crate::model::ServerState,
        crate::web::api::ServerDetail,
        crate::web::api::ApiError,
        crate::model::History,
        crate::model::PollRow,
        crate::model::TransitionRow,
        crate::model::ClockCorrectionRow,
        crate::model::ActionRow,
        crate::model::Ack,
        crate::model::Downtime,
        crate::web::api::AckRequest,
        crate::web::api::DowntimeRequest,
        crate::web::api::DowntimeView,
        crate::fleet::ReloadReport,
        crate::web::events::TransitionEvent,
        crate::web::events::ClockEvent,
        crate::web::events::LaggedEvent,
        crate::notify::ChannelStatus,
        crate::web::api::ClusterDoc,
        crate::cluster::NodeStatus,
        crate::notify::Notice,
        crate::notify::Condition,
        crate::notify::NoticeKind,
        crate::model::DeficiencyDoc,
        crate::model::SeverityDoc,
        crate::web::health::Health,
        crate::web::health::HealthStatus,
        crate::web::health::StoreHealth,
    )),
    tags(
        (name = "servers", description = "The fleet: state, latest compilation, history, poll on request"),
        (name = "hygiene", description = "Acknowledgements, downtimes and reloading the inventory (SPEC section 13)"),
        (name = "live", description = "Server-sent events"),
        (name = "notifications", description = "Notification channels"),
        (name = "meta", description = "This document and the poller's health"),
    )
)]
pub struct ApiDoc;

/// The two ways to present an `[[api.user]]` (SPEC section 11).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = |kind, about: &str| {
            SecurityScheme::Http(HttpBuilder::new().scheme(kind).description(Some(about.to_string())).build())
        };
        components.add_security_scheme(
            "bearer",
            scheme(HttpAuthScheme::Bearer, "A user's token (token_file of its [[api.user]])"),
        );
        components.add_security_scheme(
            "basic",
            scheme(HttpAuthScheme::Basic, "A user's name and password (password_hash of its [[api.user]]) or token"),
        );
    }
}

/// The document, built once.
pub fn spec() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(spec().clone())
}
