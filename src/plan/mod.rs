//! The plan: what a plan file holds (the model, the steps as data, how a file write and a
//! directory creation are rendered for the host) and, in `lockfile`, its canonical, hashed
//! encoding. This is what the executor consumes; `crate::planner` makes it.

pub mod diff_check;
pub mod file_write;
pub mod host_hash;
pub mod lockfile;
pub mod make_dir;
pub mod model;
pub mod observed;
pub mod probe;
pub mod step;
pub mod vocab;

pub use model::*;
pub use observed::{Observed, UnexpectedLine};
pub use step::{Action, EnvValue, FieldChange, ProbeBatch, ProbeExists, Retry, Step};
pub use vocab::{
    BatchSize, HostKeyChecking, NotifyEvent, NotifyTemplate, OnFailure, Percent, ResourceType,
    Strategy, Value,
};
