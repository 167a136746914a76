//! Planning: selection, the pure planner around one probe round trip per host, the plan model,
//! and (in `lockfile`) its canonical, hashed encoding.

pub mod connection;
pub mod diff_check;
pub mod lockfile;
pub mod model;
pub mod planner;
pub mod probe;
pub mod secret_guard;

pub use model::*;
pub use planner::{
    PlanError, PreparedHost, Selected, assemble, plan_offline, prepare_host, select,
};
