//! nexus: deploy applications and converge hosts over SSH with a reviewable plan/apply workflow.

pub mod app;
pub mod cli;
pub mod config;
pub mod dag;
pub mod discovery;
pub mod exec;
pub mod exit;
pub mod facts;
pub mod fd_limit;
pub mod inputs;
pub mod inventory;
pub mod local_user;
pub mod nexus_dir;
pub mod notify;
pub mod pattern;
pub mod pins;
pub mod plan;
pub mod planner;
pub mod preflight;
pub mod render;
pub mod resources;
pub mod secrets;
pub mod shell;
pub mod signing;
pub mod state;
pub mod transport;
