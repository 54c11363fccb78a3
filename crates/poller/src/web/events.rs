//! `GET /api/v1/events`: server-sent events for live views (the dashboard, scripts).
//!
//! Event names and their `data` (JSON):
//! - `poll`: a poll finished; the server's summary, as `GET /api/v1/servers` shows it.
//! - `transition`: a level change: `{server, at, from, to, reason}`.
//! - `clock`: a clock order sent or verified: `{server, at, offset_ms, correction_ms, outcome, detail}`.
//! - `notify`: a notification channel's health changed: its [`ChannelStatus`].
//! - `lagged`: this client fell behind and `missed` events were dropped; re-read the API.
//!
//! Rules it keeps: a slow client never slows the fleet (broadcast channels drop for it and
//! say so with `lagged`); a comment is sent every 15 s so proxies keep the stream open;
//! every stream ends when the poller stops, so shutdown never waits on a browser.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::fleet::FleetEvent;
use crate::model::{ClockCorrectionRow, TransitionRow};
use crate::notify::ChannelStatus;
use crate::web::api::Api;

/// `data` of a `transition` event.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TransitionEvent {
    pub server: String,
    #[serde(flatten)]
    pub transition: TransitionRow,
}

/// `data` of a `clock` event.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ClockEvent {
    pub server: String,
    #[serde(flatten)]
    pub correction: ClockCorrectionRow,
}

/// `data` of a `lagged` event.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LaggedEvent {
    pub missed: u64,
}

fn event<T: Serialize>(name: &str, data: &T) -> Event {
    Event::default().event(name).json_data(data).unwrap_or_else(|_| Event::default().comment("unserializable event"))
}

fn fleet_event(e: FleetEvent) -> Event {
    match e {
        FleetEvent::Polled(s) => event("poll", &s),
        FleetEvent::Transition { server, transition } => event("transition", &TransitionEvent { server, transition }),
        FleetEvent::ClockCorrection { server, correction } => event("clock", &ClockEvent { server, correction }),
        // Internal to the notifier; the server's next poll shows its state.
        FleetEvent::Adopted { .. } => Event::default().comment("adopted"),
    }
}

/// Turns a broadcast receiver into a stream of events, with `lagged` for drops.
fn stream_of<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    map: fn(T) -> Event,
) -> impl Stream<Item = Event> + Send + 'static {
    futures::stream::unfold(rx, move |mut rx| async move {
        match rx.recv().await {
            Ok(v) => Some((map(v), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((event("lagged", &LaggedEvent { missed: n }), rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "live",
    description = "Server-sent events (text/event-stream): `poll` (ServerSummary), `transition` \
        (TransitionEvent), `clock` (ClockEvent), `notify` (ChannelStatus), `lagged` (LaggedEvent).",
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String))
)]
pub async fn events(State(api): State<Arc<Api>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let fleet = stream_of(api.fleet.subscribe(), fleet_event);
    let notify = stream_of(api.notifier.subscribe(), |s: ChannelStatus| event("notify", &s));
    let stop = api.stop.clone();
    let stream = futures::stream::select(fleet, notify).take_until(stop.cancelled_owned()).map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive"))
}
