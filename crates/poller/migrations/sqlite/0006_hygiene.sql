-- Alert hygiene (SPEC 13) and the operator audit trail (SPEC 11).

-- Planned work: servers matching the glob `server` are polled but not notified between
-- starts_at and ends_at. `closed` is set when it was removed or its end was handled (the
-- one notice for a server still deficient), so a restart never handles an end twice.
CREATE TABLE downtimes (
    id          INTEGER PRIMARY KEY,
    server      TEXT NOT NULL,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    comment     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    closed      INTEGER NOT NULL DEFAULT 0
);

-- The acknowledgement of each server's current problem, while it lasts. `level` and
-- `sources` (JSON array) are what was acknowledged, to tell when it gets worse.
CREATE TABLE acks (
    server      TEXT PRIMARY KEY NOT NULL,
    by_name     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    comment     TEXT NOT NULL,
    level       TEXT NOT NULL,
    sources     TEXT NOT NULL DEFAULT '[]'
);

-- Who did what to which server: poll now, ack, downtime add and remove, reload.
CREATE TABLE operator_actions (
    id          INTEGER PRIMARY KEY,
    server      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    by_name     TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX operator_actions_by_server ON operator_actions (server, id);

-- Progressive escalation (escalate_after): when each server came to its level, and whether
-- it got there by escalation (then it stays while deficient).
ALTER TABLE servers ADD COLUMN level_since INTEGER;
ALTER TABLE servers ADD COLUMN escalated INTEGER NOT NULL DEFAULT 0;
