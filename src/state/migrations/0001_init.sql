-- nexus state schema, version 1 (docs/state.md). Times are unix milliseconds.
-- Applied in one transaction together with its schema_version row.

-- One row per `nexus apply` / `nexus run`. Never deleted: replay protection and last_applied
-- refer to runs, and the rows are small.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL CHECK (kind IN ('apply', 'run')),
    status        TEXT    NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'failed', 'refused', 'interrupted')),
    plan_hash     TEXT    NOT NULL,
    config        TEXT    NOT NULL,
    tasks         TEXT    NOT NULL,              -- JSON array of task names
    hosts         TEXT    NOT NULL,              -- JSON array of host names
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,                       -- NULL while running, and for interrupted runs
    summary       TEXT,                          -- JSON given by the executor to finish_run
    nexus_version TEXT    NOT NULL,
    -- The process that runs it: a 'running' run whose process is gone was interrupted.
    pid           INTEGER NOT NULL,
    hostname      TEXT    NOT NULL,
    boot_id       TEXT,
    process_start INTEGER,
    -- Counters, updated in the same transaction as each action row; they survive pruning.
    succeeded     INTEGER NOT NULL DEFAULT 0,
    changed       INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    skipped       INTEGER NOT NULL DEFAULT 0,
    not_run       INTEGER NOT NULL DEFAULT 0,
    pruned        INTEGER NOT NULL DEFAULT 0     -- 1 once retention deleted its actions
);
CREATE INDEX runs_by_plan_hash ON runs (plan_hash);
CREATE INDEX runs_running ON runs (id) WHERE status = 'running';

-- One row per executed (or skipped, or not reached) resource of a run.
CREATE TABLE actions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            INTEGER NOT NULL REFERENCES runs (id),
    host              TEXT    NOT NULL,
    key               TEXT    NOT NULL,          -- TASK#N, handler:NAME#N
    task              TEXT    NOT NULL,
    resource_id       TEXT    NOT NULL,          -- file:/etc/motd
    kind              TEXT    NOT NULL,          -- file
    label             TEXT    NOT NULL,
    action            TEXT    NOT NULL,          -- what the plan said: no-op, create, update, ...
    status            TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed', 'skipped', 'not-run')),
    exit_code         INTEGER,
    duration_ms       INTEGER NOT NULL CHECK (duration_ms >= 0),
    attempts          INTEGER NOT NULL CHECK (attempts >= 0),
    output_tail       TEXT    NOT NULL,          -- redacted, at most 4 KiB
    error             TEXT,
    fingerprint_after TEXT,
    finished_at       INTEGER NOT NULL
);
CREATE INDEX actions_by_run ON actions (run_id, id);

-- The last successful apply of each resource on each host.
CREATE TABLE last_applied (
    host        TEXT    NOT NULL,
    resource_id TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    task        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    fingerprint TEXT,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    applied_at  INTEGER NOT NULL,
    PRIMARY KEY (host, resource_id)
) WITHOUT ROWID;

-- The apply lock: at most one row.
CREATE TABLE apply_lock (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    token         TEXT    NOT NULL,              -- so a guard removes its own lock only
    pid           INTEGER NOT NULL,
    hostname      TEXT    NOT NULL,
    command       TEXT    NOT NULL,
    since         INTEGER NOT NULL,
    boot_id       TEXT,
    process_start INTEGER
);
