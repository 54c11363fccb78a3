-- Poll rows are chained per server instead of indexed by server. With `polls_by_server`
-- each poll dirtied a page of an index that grows with the history (each server's newest
-- entries end up on pages of their own): most of the poller's disk writes. Now each row
-- names the server's previous row, and `poll_heads` (one small row per server, a few pages
-- for the whole fleet) names its newest; history walks the chain back from there.
ALTER TABLE polls ADD COLUMN prev_id INTEGER;
UPDATE polls SET prev_id = (SELECT max(p.id) FROM polls p WHERE p.server = polls.server AND p.id < polls.id);
CREATE TABLE poll_heads (
    server  TEXT PRIMARY KEY NOT NULL,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO poll_heads (server, last_id) SELECT server, max(id) FROM polls GROUP BY server;
DROP INDEX polls_by_server;
