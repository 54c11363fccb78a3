-- Exactly-once notices (SPEC sections 5 and 12): every notice is claimed here, under its
-- key, before any channel is given it; the key is UNIQUE, so a second claim of the same
-- notice (by another poller of the cluster, or by this one after a restart) inserts
-- nothing and the notice is not sent again. Keys: see crates/poller/src/notify/key.rs.
CREATE TABLE notices (
    id      INTEGER PRIMARY KEY,
    key     TEXT NOT NULL UNIQUE,
    server  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    -- The poller (`node`) whose claim it is: the one that sent it.
    node    TEXT NOT NULL,
    -- Unix ms of the claim: pruned with the transitions' retention.
    at      INTEGER NOT NULL
);

-- How many notices about the server were claimed from this memory: the next one's key
-- is `told:<seq + 1>:<server>`, the same on every node that reads this row.
ALTER TABLE notify_state ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
