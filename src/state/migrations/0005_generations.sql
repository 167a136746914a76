-- nexus state schema, version 5 (docs/state.md, docs/rollback.md): generations and pre-images.
-- The plan each apply executed (to rebuild probes, handlers and connections for a rollback),
-- what each changed resource was before the apply changed it, and the contents it held, stored
-- once by hash (encrypted with the vault key when they hold a secret).
CREATE TABLE run_plans (
    run_id      INTEGER PRIMARY KEY REFERENCES runs(id),
    plan        TEXT    NOT NULL,                -- the plan's JSON (plans never hold secrets)
    rollback_of INTEGER                          -- the run this one rolled back to, if any
);

CREATE TABLE preimages (
    run_id            INTEGER NOT NULL REFERENCES runs(id),
    host              TEXT    NOT NULL,
    key               TEXT    NOT NULL,          -- the plan's TASK#N
    seq               INTEGER NOT NULL,          -- its place in the host's plan
    resource_id       TEXT    NOT NULL,
    image             TEXT    NOT NULL,          -- JSON: what the resource was before the run
    blob              TEXT,                      -- its content's hash in `blobs`
    fingerprint_after TEXT,                      -- set when the run changed it and re-probed it
    PRIMARY KEY (run_id, host, key)
);
CREATE INDEX preimages_by_host ON preimages (host, run_id);

CREATE TABLE blobs (
    hash   TEXT    PRIMARY KEY,                  -- blake3 of the stored bytes
    sealed INTEGER NOT NULL,                     -- 1: AES-256-GCM with the vault key
    data   BLOB    NOT NULL
);
