//! What administrators read and drive over HTTP: the JSON API (`api`), its live events
//! (`events`) and OpenAPI document (`openapi`), `/metrics` for Prometheus (`metrics`), and
//! the HTML dashboard (`dashboard`). Every surface reads the fleet's live state and the
//! store's API; none knows of the fetcher or a store backend.

pub mod api;
pub mod dashboard;
pub mod events;
pub mod metrics;
pub mod openapi;
