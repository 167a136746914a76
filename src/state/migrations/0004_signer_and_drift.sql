-- nexus state schema, version 4 (docs/state.md): who signed the plan a run applied, and the
-- trail that scheduled drift checks (`nexus plan --record`) leave.
ALTER TABLE runs ADD COLUMN signer TEXT;

CREATE TABLE drift_checks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    checked_at    INTEGER NOT NULL,
    plan_hash     TEXT    NOT NULL,
    config        TEXT    NOT NULL,
    hosts         TEXT    NOT NULL,              -- JSON array of the hosts planned
    drifted       TEXT    NOT NULL,              -- JSON array of the hosts with changes
    changes       INTEGER NOT NULL,
    nexus_version TEXT    NOT NULL,
    hostname      TEXT    NOT NULL
);
