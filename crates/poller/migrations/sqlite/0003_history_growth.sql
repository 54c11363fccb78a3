-- Bounded history (crates/poller/src/store/growth.rs): compilations are kept as history
-- only when they changed in substance; `hash` is that substance's hash, so the next poll
-- compares without reading the body. Retention prunes old rows of every history table.
CREATE TABLE compilations (
    id      INTEGER PRIMARY KEY,
    server  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    hash    INTEGER NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX compilations_by_server ON compilations (server, id);
