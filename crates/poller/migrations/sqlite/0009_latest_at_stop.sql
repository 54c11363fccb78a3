-- The latest compilations are written at a clean stop only, with the time they were saved
-- (crates/poller/src/store/sqlite/mod.rs). Writing each server's latest again at every change
-- of substance copied the history row just written: a tenth of all bytes written at 1,000
-- servers @ 1 s. After a crash the newest history row is the latest: `compilation` reads
-- whichever of the two is newer.
ALTER TABLE latest_compilations ADD COLUMN at INTEGER NOT NULL DEFAULT 0;
