-- Rollcall poller state, SQLite. Times are Unix milliseconds (UTC).

-- One row per server: where it stands now. Survives restarts, so nothing is re-announced.
CREATE TABLE servers (
    name            TEXT PRIMARY KEY NOT NULL,
    address         TEXT NOT NULL,
    level           TEXT NOT NULL,
    calm_streak     INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    deficiencies    TEXT NOT NULL DEFAULT '[]',
    last_poll_at    INTEGER,
    last_error      TEXT,
    clock_offset_ms REAL,
    rtt_ms          REAL,
    compilation     TEXT
);

-- One compact row per poll.
CREATE TABLE polls (
    id              INTEGER PRIMARY KEY,
    server          TEXT NOT NULL,
    at              INTEGER NOT NULL,
    state           TEXT NOT NULL,
    level           TEXT NOT NULL,
    rtt_ms          REAL,
    clock_offset_ms REAL,
    error           TEXT,
    deficiencies    INTEGER NOT NULL
);
CREATE INDEX polls_by_server ON polls (server, id);

CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY,
    server      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    from_level  TEXT NOT NULL,
    to_level    TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX transitions_by_server ON transitions (server, id);

-- Clock orders sent and their outcome (filled by clock keeping).
CREATE TABLE clock_corrections (
    id              INTEGER PRIMARY KEY,
    server          TEXT NOT NULL,
    at              INTEGER NOT NULL,
    offset_ms       REAL NOT NULL,
    correction_ms   REAL NOT NULL,
    outcome         TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX clock_corrections_by_server ON clock_corrections (server, id);
