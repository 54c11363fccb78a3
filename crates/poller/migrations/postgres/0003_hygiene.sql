-- Alert hygiene (SPEC 13) and the operator audit trail (SPEC 11): the SQLite backend's
-- tables of its migration 0006, column for column (so `rollcall store copy` moves them).

-- Planned work: servers matching the glob `server` are polled but not notified between
-- starts_at and ends_at. `closed` is set when it was removed or its end was handled.
CREATE TABLE downtimes (
    id          BIGSERIAL PRIMARY KEY,
    server      TEXT NOT NULL,
    starts_at   BIGINT NOT NULL,
    ends_at     BIGINT NOT NULL,
    comment     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    closed      BOOLEAN NOT NULL DEFAULT false
);

-- The acknowledgement of each server's current problem, while it lasts.
CREATE TABLE acks (
    server      TEXT PRIMARY KEY,
    by_name     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    comment     TEXT NOT NULL,
    level       TEXT NOT NULL,
    sources     TEXT NOT NULL DEFAULT '[]'
);

-- Who did what to which server: poll now, ack, downtime add and remove, reload.
CREATE TABLE operator_actions (
    id          BIGSERIAL PRIMARY KEY,
    server      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    by_name     TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX operator_actions_by_server ON operator_actions (server, id);
CREATE INDEX operator_actions_by_time ON operator_actions USING brin (at);

-- Progressive escalation: when each server came to its level, and whether by escalation.
ALTER TABLE servers ADD COLUMN level_since BIGINT;
ALTER TABLE servers ADD COLUMN escalated BOOLEAN NOT NULL DEFAULT false;
