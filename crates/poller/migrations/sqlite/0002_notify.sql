-- What notifications last told about each server (crates/poller/src/notify): read at
-- start-up, so a restart never tells the same condition again.
CREATE TABLE notify_state (
    server      TEXT PRIMARY KEY NOT NULL,
    level       TEXT NOT NULL,
    state       TEXT NOT NULL,
    flapping    INTEGER NOT NULL DEFAULT 0,
    seen_state  TEXT NOT NULL,
    -- Unix ms of the state changes within the flap window, as a JSON array.
    changes     TEXT NOT NULL DEFAULT '[]',
    updated_at  INTEGER NOT NULL
);
