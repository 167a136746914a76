-- nexus state schema, version 3 (docs/state.md): whether the content a change left on the host
-- holds vault values. Planning reads it from last_applied so that a file written with a secret is
-- never diffed or hashed in clear later, even after that secret was rotated out of the vault.
ALTER TABLE actions ADD COLUMN holds_secrets INTEGER NOT NULL DEFAULT 0;
ALTER TABLE last_applied ADD COLUMN holds_secrets INTEGER NOT NULL DEFAULT 0;
