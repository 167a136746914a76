-- nexus state schema for PostgreSQL, version 1 (docs/state.md). The same records as the SQLite
-- schema (versions 1 to 3 there), in schema `nexus`, with a `project` column so that several
-- projects share one database. Run ids are global; each project sees only its own runs.
CREATE TABLE nexus.runs (
    id            BIGSERIAL PRIMARY KEY,
    project       TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('apply', 'run')),
    status        TEXT    NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'failed', 'refused', 'interrupted')),
    plan_hash     TEXT    NOT NULL,
    config        TEXT    NOT NULL,
    tasks         TEXT    NOT NULL,
    hosts         TEXT    NOT NULL,
    started_at    BIGINT  NOT NULL,
    finished_at   BIGINT,
    summary       TEXT,
    nexus_version TEXT    NOT NULL,
    pid           BIGINT  NOT NULL,
    hostname      TEXT    NOT NULL,
    boot_id       TEXT,
    process_start BIGINT,
    succeeded     BIGINT  NOT NULL DEFAULT 0,
    changed       BIGINT  NOT NULL DEFAULT 0,
    failed        BIGINT  NOT NULL DEFAULT 0,
    skipped       BIGINT  NOT NULL DEFAULT 0,
    not_run       BIGINT  NOT NULL DEFAULT 0,
    pruned        BOOLEAN NOT NULL DEFAULT FALSE,
    -- `sqlite:PATH#ID` for a run copied by `nexus state migrate`, so a second copy skips it.
    origin        TEXT,
    UNIQUE (project, origin)
);
CREATE INDEX runs_by_plan ON nexus.runs (project, plan_hash);

CREATE TABLE nexus.actions (
    id                BIGSERIAL PRIMARY KEY,
    run_id            BIGINT  NOT NULL REFERENCES nexus.runs (id),
    host              TEXT    NOT NULL,
    key               TEXT    NOT NULL,
    task              TEXT    NOT NULL,
    resource_id       TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    label             TEXT    NOT NULL,
    action            TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed', 'skipped', 'not-run')),
    exit_code         INTEGER,
    duration_ms       BIGINT  NOT NULL,
    attempts          BIGINT  NOT NULL,
    output_tail       TEXT    NOT NULL,
    error             TEXT,
    fingerprint_after TEXT,
    finished_at       BIGINT  NOT NULL,
    holds_secrets     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX actions_by_run ON nexus.actions (run_id);

CREATE TABLE nexus.last_applied (
    project       TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    label         TEXT    NOT NULL,
    task          TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    fingerprint   TEXT,
    run_id        BIGINT  NOT NULL REFERENCES nexus.runs (id),
    applied_at    BIGINT  NOT NULL,
    holds_secrets BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (project, host, resource_id)
);

-- Who holds a project's apply lock. The lock itself is a session-level advisory lock, which the
-- server releases when the holder's connection ends; this row only names the holder.
CREATE TABLE nexus.apply_lock (
    project       TEXT    PRIMARY KEY,
    token         TEXT    NOT NULL,
    pid           BIGINT  NOT NULL,
    hostname      TEXT    NOT NULL,
    command       TEXT    NOT NULL,
    since         BIGINT  NOT NULL,
    boot_id       TEXT,
    process_start BIGINT
);

CREATE TABLE nexus.pending_handlers (
    project     TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    handler     TEXT    NOT NULL,
    since_run   BIGINT  NOT NULL REFERENCES nexus.runs (id),
    notified_by TEXT    NOT NULL,
    notified_at BIGINT  NOT NULL,
    PRIMARY KEY (project, host, handler)
);
