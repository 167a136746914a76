//! Flags shared by every command that contacts hosts, and the async runtime those commands use.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::Failure;
use crate::inventory::Overrides;

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// SSH identity file, tried first on every host (repeatable)
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// SSH login user for every host (overrides the configuration and ~/.ssh/config)
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Record the keys of hosts not yet in known_hosts (a changed key is still refused)
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// How long to wait for each connection, e.g. 5s
    #[arg(long, value_name = "DURATION", value_parser = crate::syntax::values::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// How many hosts to work on at once
    #[arg(short = 'j', long = "parallel", value_name = "N", default_value_t = 32)]
    pub parallel: usize,
}

impl ConnectArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            identity: self.identity.clone(),
            user: self.user.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: self.connect_timeout,
        }
    }
}

/// A runtime for one command (the application layer's).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    crate::app::plan::runtime()
}
