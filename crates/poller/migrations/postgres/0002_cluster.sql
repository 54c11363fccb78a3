-- Several pollers on one database (SPEC section 12). Times here are the database's own
-- (now()), never a node's, so nodes whose clocks differ still agree on who is alive and
-- whose lease has run out.

-- Every node that ever joined, with its last heartbeat.
CREATE TABLE nodes (
    name         TEXT PRIMARY KEY,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL
);

-- Who polls each server, until when. A lease past `expires_at` may be taken by any node.
CREATE TABLE leases (
    server     TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX leases_by_node ON leases (node);
