//! Process exit codes, documented in docs/cli.md. Scripts depend on these: never renumber.

/// Why nexus stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `plan --detailed-exitcode`, success with no changes.
    Ok = 0,
    /// A runtime failure: a command failed, a file could not be written, an apply failed.
    Failed = 1,
    /// `plan --detailed-exitcode` found changes (drift).
    Changes = 2,
    /// The configuration is invalid; nothing was contacted.
    InvalidConfig = 3,
    /// A host could not be reached, authenticated or verified (preflight/facts failures).
    Unreachable = 4,
    /// A plan file was refused: tampered, truncated or of an unknown format version.
    PlanRefused = 5,
    /// A plan file is stale (the hosts changed since planning) or was already applied.
    PlanStale = 6,
    /// The state database is locked by another apply.
    Locked = 7,
    /// Wrong command-line usage (unknown flag, unknown task name).
    Usage = 64,
    /// Interrupted by Ctrl-C (SIGINT): what was in flight finished, nothing new started.
    Interrupted = 130,
    /// Stopped by SIGTERM, likewise.
    Terminated = 143,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}
