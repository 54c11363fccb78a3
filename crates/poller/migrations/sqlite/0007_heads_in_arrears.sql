-- Poll heads written in arrears (crates/poller/src/store/sqlite/chains.rs): `poll_heads` is
-- rewritten every 30 s and at a clean stop instead of in every batch, where it dirtied a page
-- per ~200 servers each commit (at 50,000 servers, half of all bytes written). `covered` is
-- the highest poll id `poll_heads` accounts for; a server's head is the newer of its row there
-- and its newest poll above `covered`, which opening the store reads back.
CREATE TABLE poll_heads_mark (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    covered INTEGER NOT NULL
);
INSERT INTO poll_heads_mark (one, covered) SELECT 1, COALESCE(max(id), 0) FROM polls;
