-- The latest compilation moves out of `servers`, whose row is rewritten at every poll: with
-- a few kilobytes of compilation in it, each poll rewrote a whole page for it. The latest
-- is written with each change of substance and at shutdown (crates/poller/src/fleet.rs).
CREATE TABLE latest_compilations (
    server  TEXT PRIMARY KEY NOT NULL,
    body    TEXT NOT NULL
);
INSERT INTO latest_compilations (server, body)
    SELECT name, compilation FROM servers WHERE compilation IS NOT NULL;
ALTER TABLE servers DROP COLUMN compilation;
