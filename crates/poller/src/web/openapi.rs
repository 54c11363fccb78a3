//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every `/api/v1` route,
//! generated at compile time by utoipa from the handlers' annotations and the response
//! types' derives, so it cannot drift from the code (and `tests/web.rs` checks real
//! answers against it).
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
            poller's live state and its store, never from the attendants."
    ),
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
    )),
    tags(
        (name = "servers", description = "The fleet: state, latest compilation, history, poll on request"),
        (name = "hygiene", description = "Acknowledgements, downtimes and reloading the inventory (SPEC section 13)"),
        (name = "live", description = "Server-sent events"),
        (name = "notifications", description = "Notification channels"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

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
