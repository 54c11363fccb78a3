-- Exactly-once notices (SPEC sections 5 and 12): every notice is claimed here, under its
-- key, before any channel is given it; the key is UNIQUE, so a second claim of the same
-- notice (by another node of the cluster, or by this one after a restart) inserts
-- nothing and the notice is not sent again. Keys: see crates/poller/src/notify/key.rs.
CREATE TABLE notices (
    id      BIGSERIAL PRIMARY KEY,
    key     TEXT NOT NULL UNIQUE,
    server  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    -- The poller (`node`) whose claim it is: the one that sent it.
    node    TEXT NOT NULL,
    -- Unix ms of the claim: pruned with the transitions' retention.
    at      BIGINT NOT NULL
);
CREATE INDEX notices_at ON notices USING brin (at);

-- How many notices about the server were claimed from this memory: the next one's key
-- is `told:<seq + 1>:<server>`, the same on every node that reads this row.
ALTER TABLE notify_state ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
