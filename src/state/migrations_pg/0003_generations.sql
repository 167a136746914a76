-- nexus state schema for PostgreSQL, version 3 (docs/state.md, docs/rollback.md): generations and
-- pre-images (SQLite schema version 5).
CREATE TABLE nexus.run_plans (
    run_id      BIGINT PRIMARY KEY REFERENCES nexus.runs(id),
    plan        TEXT   NOT NULL,
    rollback_of BIGINT
);

CREATE TABLE nexus.preimages (
    run_id            BIGINT NOT NULL REFERENCES nexus.runs(id),
    host              TEXT   NOT NULL,
    key               TEXT   NOT NULL,
    seq               BIGINT NOT NULL,
    resource_id       TEXT   NOT NULL,
    image             TEXT   NOT NULL,
    blob              TEXT,
    fingerprint_after TEXT,
    PRIMARY KEY (run_id, host, key)
);
CREATE INDEX preimages_by_host ON nexus.preimages (host, run_id);

-- Blobs are keyed by project too: one project must not read another's contents.
CREATE TABLE nexus.blobs (
    project TEXT    NOT NULL,
    hash    TEXT    NOT NULL,
    sealed  BOOLEAN NOT NULL,
    data    BYTEA   NOT NULL,
    PRIMARY KEY (project, hash)
);
