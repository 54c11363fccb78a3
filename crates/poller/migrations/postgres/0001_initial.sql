-- Rollcall poller state, PostgreSQL. The same tables as the SQLite backend's, at its latest
-- migration, so `rollcall store copy` moves rows as they are. Times are Unix milliseconds
-- (UTC), as on SQLite.

-- One row per server: where it stands now. Survives restarts, so nothing is re-announced.
CREATE TABLE servers (
    name            TEXT PRIMARY KEY,
    address         TEXT NOT NULL,
    level           TEXT NOT NULL,
    calm_streak     INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    deficiencies    TEXT NOT NULL DEFAULT '[]',
    last_poll_at    BIGINT,
    last_error      TEXT,
    clock_offset_ms DOUBLE PRECISION,
    rtt_ms          DOUBLE PRECISION
);

-- One compact row per poll. Ids grow with time (several pollers may write at once, so
-- nearly so); BRIN on `at` finds old rows for pruning at almost no cost per insert.
CREATE TABLE polls (
    id              BIGSERIAL PRIMARY KEY,
    server          TEXT NOT NULL,
    at              BIGINT NOT NULL,
    state           TEXT NOT NULL,
    level           TEXT NOT NULL,
    rtt_ms          DOUBLE PRECISION,
    clock_offset_ms DOUBLE PRECISION,
    error           TEXT,
    deficiencies    INTEGER NOT NULL
);
CREATE INDEX polls_by_server ON polls (server, id);
CREATE INDEX polls_by_time ON polls USING brin (at);

CREATE TABLE transitions (
    id          BIGSERIAL PRIMARY KEY,
    server      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    from_level  TEXT NOT NULL,
    to_level    TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX transitions_by_server ON transitions (server, id);
CREATE INDEX transitions_by_time ON transitions USING brin (at);

-- Clock orders sent and their outcome.
CREATE TABLE clock_corrections (
    id              BIGSERIAL PRIMARY KEY,
    server          TEXT NOT NULL,
    at              BIGINT NOT NULL,
    offset_ms       DOUBLE PRECISION NOT NULL,
    correction_ms   DOUBLE PRECISION NOT NULL,
    outcome         TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX clock_corrections_by_server ON clock_corrections (server, id);
CREATE INDEX clock_corrections_by_time ON clock_corrections USING brin (at);

-- What notifications last told about each server: read at start-up, so a restart never
-- tells the same condition again.
CREATE TABLE notify_state (
    server      TEXT PRIMARY KEY,
    level       TEXT NOT NULL,
    state       TEXT NOT NULL,
    flapping    BOOLEAN NOT NULL DEFAULT false,
    seen_state  TEXT NOT NULL,
    -- Unix ms of the state changes within the flap window, as a JSON array.
    changes     TEXT NOT NULL DEFAULT '[]',
    updated_at  BIGINT NOT NULL
);

-- Compilations kept as history only when they changed in substance; `hash` is that
-- substance's hash, so the next poll compares without reading the body.
CREATE TABLE compilations (
    id      BIGSERIAL PRIMARY KEY,
    server  TEXT NOT NULL,
    at      BIGINT NOT NULL,
    hash    BIGINT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX compilations_by_server ON compilations (server, id);
CREATE INDEX compilations_by_time ON compilations USING brin (at);

-- Each server's latest compilation as received, written with each change of substance and
-- at shutdown.
CREATE TABLE latest_compilations (
    server  TEXT PRIMARY KEY,
    body    TEXT NOT NULL
);
