-- nexus state schema for PostgreSQL, version 2 (docs/state.md): the plan's signer per run, and
-- the drift-check trail (SQLite schema version 4).
ALTER TABLE nexus.runs ADD COLUMN signer TEXT;

CREATE TABLE nexus.drift_checks (
    id            BIGSERIAL PRIMARY KEY,
    project       TEXT    NOT NULL,
    checked_at    BIGINT  NOT NULL,
    plan_hash     TEXT    NOT NULL,
    config        TEXT    NOT NULL,
    hosts         TEXT    NOT NULL,
    drifted       TEXT    NOT NULL,
    changes       BIGINT  NOT NULL,
    nexus_version TEXT    NOT NULL,
    hostname      TEXT    NOT NULL,
    -- `sqlite:PATH#ID` for a check copied by `nexus state migrate`, so a second copy skips it.
    origin        TEXT,
    UNIQUE (project, origin)
);
CREATE INDEX drift_by_project ON nexus.drift_checks (project, id);
