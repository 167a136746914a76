//! What a use case can fail with, typed, and the exit code each failure means. The CLI renders
//! these; it never decides an exit code of its own for them.

use std::path::PathBuf;

use crate::exit::Exit;
use crate::plan::lockfile::LockfileError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every diagnostic of an invalid configuration; the CLI renders them (text or JSON).
    #[error("the configuration is invalid")]
    Config(crate::config::ConfigErrors),

    #[error("unknown task `{name}`{hint}")]
    UnknownTask { name: String, hint: String },

    #[error("unknown target `{0}` (--target takes a host or group)")]
    UnknownTarget(String),

    #[error("unknown host or group `{name}`{hint}")]
    UnknownHostOrGroup { name: String, hint: String },

    #[error("this command does not support --format {format}; supported: {}", supported.join(", "))]
    UnsupportedFormat {
        format: String,
        supported: Vec<String>,
    },

    #[error("{} already exists; pass --force to overwrite it", .0.display())]
    ConfigExists(PathBuf),

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot read stdin: {0}")]
    Stdin(std::io::Error),

    /// A vault operation (`nexus secret ...`) failed.
    #[error("{0}")]
    Vault(crate::secrets::SecretError),

    #[error("no secret `{name}` in the vault {}{hint}", vault.display())]
    NoSuchSecret {
        name: String,
        vault: PathBuf,
        hint: String,
    },

    #[error("the value for `{name}` is larger than {max} bytes")]
    SecretTooLarge { name: String, max: usize },

    #[error(
        "the `vault` node names the key file {}, which does not exist, and {env} holds a key: \
         pass `--key-file {}` to write a new key to the file, or put the key from {env} in the \
         file (mode 0600)",
        file.display(),
        file.display()
    )]
    VaultKeyAmbiguous { file: PathBuf, env: String },

    #[error(
        "choose where the vault key is kept: `nexus secret init --passphrase`, \
         `nexus secret init --key-file FILE` (a new random key is written to FILE), \
         key-file=\"FILE\" on the configuration's `vault` node, or a key in {env} \
         (64 hex digits, e.g. from `openssl rand -hex 32`)"
    )]
    VaultKeyUnspecified { env: String },

    #[error("nothing to roll back: {reason}")]
    NothingToRollBack { reason: String },

    #[error("no run {id} in {database}{hint}")]
    NoSuchRun {
        id: i64,
        database: String,
        hint: String,
    },

    #[error("{0}")]
    Inputs(#[from] crate::inputs::InputError),

    /// nexus.lock could not be read, refreshed or (with `--locked`) would change.
    #[error("{0}")]
    Pins(#[from] crate::pins::PinsError),

    /// A secret the command needs could not be read.
    #[error("{0}")]
    Secrets(#[from] super::secrets::SecretsError),

    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),

    /// A host's transport could not be set up (a bad ssh config, an unreadable identity).
    #[error("{0}")]
    Transport(Box<crate::transport::TransportError>),

    /// Planning failed on one or more hosts; `wrote` is whether a plan file was asked for.
    #[error("{}", plan_failed(errors, *asked_for_file))]
    PlanFailed {
        errors: Vec<crate::planner::PlanError>,
        asked_for_file: bool,
    },

    /// A plan file that `apply` refused before executing anything.
    #[error("{source}\nNothing was executed.")]
    PlanFile { source: LockfileError },

    /// A signature was required and this plan file's did not pass.
    #[error("refusing {file}: {refusal}\nNothing was executed.")]
    Unverified {
        file: String,
        refusal: crate::signing::Refusal,
    },

    /// `run` where plans must be signed: it executes a plan nobody signed, so it is refused.
    #[error(
        "refusing to run: plans for this project must be signed ({by}); `nexus run` applies a \
         plan no one signed.\nNothing was executed. Plan, sign and apply instead: nexus plan -o \
         plan.lock --sign KEY, then nexus apply plan.lock (or nexus run --dry-run to only look)"
    )]
    SignedPlansRequired { by: String },

    /// Signatures are required, but the allowed_signers file cannot be read.
    #[error("{reason}\nNothing was executed.")]
    AllowedSigners { reason: String },

    /// `plan --sign` could not load its key or sign.
    #[error("{0}")]
    Sign(crate::signing::SignError),

    /// A plan file that could not be read for showing.
    #[error("{0}")]
    ReadPlan(LockfileError),

    #[error("{0}")]
    WritePlan(LockfileError),

    #[error(
        "{file} was already applied (run {run}, {started}, {status}); a saved plan runs once.\n\
         Nothing was executed. Make a new plan: nexus plan -o {file}"
    )]
    AlreadyApplied {
        file: String,
        run: i64,
        started: String,
        status: String,
    },

    /// A local file the plan streams is not what it pinned; nothing was executed.
    #[error(
        "{file} is stale: {}\nNothing was executed. Plan again: nexus plan -o {file}",
        .problems.iter().map(|p| format!("local file {p}")).collect::<Vec<_>>().join("\n")
    )]
    PinnedChanged {
        file: String,
        problems: Vec<crate::exec::transfer::PinnedError>,
    },

    /// The hosts changed since planning (or could not be re-probed); nothing was executed.
    #[error("{}", stale(file, &check.drift, &check.unreachable))]
    Stale {
        file: String,
        check: crate::exec::stale::Check,
    },

    #[error("{0}\nIf that process is gone for good, run `nexus state --force-unlock`.")]
    Locked(StateError),

    #[error("{0}")]
    State(StateError),

    #[error("recording to the state database failed: {0}")]
    Record(StateError),

    #[error(
        "the state store became unreachable during run {run}: {error}\nNothing new was started \
         after that. {count} result(s) could not be recorded; they are kept in {}.\nOnce the \
         store is reachable again, run `nexus state --recover` to record them; apply and run \
         refuse to start until then.",
        journal.display()
    )]
    Unrecorded {
        run: crate::state::RunId,
        error: StateError,
        count: usize,
        journal: PathBuf,
    },

    #[error(
        "results of an earlier run could not be recorded and are kept in {}; run `nexus state \
         --recover` to write them into the state store first",
        journals.iter().map(|j| j.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    UnrecordedPending { journals: Vec<PathBuf> },

    #[error("{0}")]
    StateSetting(#[from] super::state::StateSettingError),

    /// A signal stopped the command before it executed anything; the exit it means (130, 143).
    #[error("interrupted before anything was executed; nothing was changed")]
    Interrupted(Exit),
}

impl Error {
    /// The documented exit code (docs/cli.md) of this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::InvalidConfig,
            Error::UnknownTask { .. }
            | Error::UnknownTarget(_)
            | Error::UnknownHostOrGroup { .. }
            | Error::UnsupportedFormat { .. }
            | Error::VaultKeyAmbiguous { .. }
            | Error::VaultKeyUnspecified { .. }
            | Error::Vault(crate::secrets::SecretError::InvalidName { .. }) => Exit::Usage,
            Error::Secrets(e) => e.exit(),
            Error::Transport(_) => Exit::Unreachable,
            // Tampered or unreadable plan files are refused; a missing file is a plain failure.
            Error::PlanFile { source } | Error::ReadPlan(source) => match source {
                LockfileError::Read { .. } | LockfileError::Write { .. } => Exit::Failed,
                _ => Exit::PlanRefused,
            },
            Error::Unverified { .. }
            | Error::AllowedSigners { .. }
            | Error::SignedPlansRequired { .. } => Exit::PlanRefused,
            Error::AlreadyApplied { .. } => Exit::PlanStale,
            Error::PinnedChanged { .. } => Exit::PlanStale,
            // Unreachable hosts are a connection problem, not drift; report them as such.
            Error::Stale { check, .. } if check.drift.is_empty() => Exit::Unreachable,
            Error::Stale { .. } => Exit::PlanStale,
            Error::Locked(_) => Exit::Locked,
            Error::Interrupted(exit) => *exit,
            Error::Inputs(_)
            | Error::Pins(_)
            | Error::Runtime(_)
            | Error::PlanFailed { .. }
            | Error::WritePlan(_)
            | Error::Sign(_)
            | Error::State(_)
            | Error::StateSetting(_)
            | Error::Record(_)
            | Error::Unrecorded { .. }
            | Error::UnrecordedPending { .. }
            | Error::ConfigExists(_)
            | Error::Io { .. }
            | Error::Stdin(_)
            | Error::Vault(_)
            | Error::NoSuchSecret { .. }
            | Error::SecretTooLarge { .. }
            | Error::NoSuchRun { .. }
            | Error::NothingToRollBack { .. } => Exit::Failed,
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        self.exit().code()
    }
}

impl From<crate::transport::TransportError> for Error {
    fn from(e: crate::transport::TransportError) -> Error {
        Error::Transport(Box::new(e))
    }
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Error {
        match e {
            e @ StateError::Locked { .. } => Error::Locked(e),
            e => Error::State(e),
        }
    }
}

fn plan_failed(errors: &[crate::planner::PlanError], asked_for_file: bool) -> String {
    let mut msg: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    msg.push(format!(
        "plan failed: {} error(s){}",
        errors.len(),
        if asked_for_file {
            "; no plan file was written"
        } else {
            ""
        }
    ));
    msg.join("\nerror: ")
}

fn stale(
    file: &str,
    drift: &[crate::exec::stale::Drift],
    unreachable: &[(String, String)],
) -> String {
    let mut msg = format!("{file} is stale: the hosts changed since it was planned.\n");
    for d in drift {
        match &d.why {
            Some(why) => msg.push_str(&format!(
                "  refused: {}: {} ({}): {why}\n",
                d.host,
                d.label,
                d.keys()
            )),
            None => msg.push_str(&format!(
                "  changed: {}: {} ({})\n",
                d.host,
                d.label,
                d.keys()
            )),
        }
    }
    for (h, e) in unreachable {
        msg.push_str(&format!("  cannot check {h}: {e}\n"));
    }
    msg.push_str(&format!(
        "Nothing was executed. Plan again: nexus plan -o {file}"
    ));
    msg
}
