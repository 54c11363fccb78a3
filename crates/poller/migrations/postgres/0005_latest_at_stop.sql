-- The latest compilations are written at a clean stop only, with the time they were saved
-- (as in SQLite's migration 0009): the newest history row is the latest after a crash or a
-- change since, and `compilation` reads whichever of the two is newer.
ALTER TABLE latest_compilations ADD COLUMN at BIGINT NOT NULL DEFAULT 0;
