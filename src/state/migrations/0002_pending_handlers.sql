-- nexus state schema, version 2 (docs/state.md): handlers a change notified that have not yet
-- succeeded on their host. A row is written when a change notifies the handler and deleted only
-- when the handler succeeds there, so a failed handler, a stopped rollout or an interrupted run
-- leaves it for the next plan to show and the next apply to run.
CREATE TABLE pending_handlers (
    host        TEXT    NOT NULL,
    handler     TEXT    NOT NULL,
    since_run   INTEGER NOT NULL REFERENCES runs (id),
    notified_by TEXT    NOT NULL,              -- label of the first change that notified it
    notified_at INTEGER NOT NULL,
    PRIMARY KEY (host, handler)
);
