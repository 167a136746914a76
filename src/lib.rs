//! nexus: deploy applications and converge hosts over SSH with a reviewable plan/apply workflow.

pub mod cli;
pub mod config;
pub mod dag;
pub mod exit;
pub mod facts;
pub mod inventory;
pub mod preflight;
pub mod transport;
