//! The application layer: one function per use case (plan, apply, run, preflight). Each decides
//! every fact of its command once: the configuration and its inputs, the secrets it reads (one
//! resolver for resources, sudo, webhooks and preflight), the hosts' connections (derived into
//! the plan, used alike by apply and run), the state store and its lock, and notifications. It
//! returns typed results and typed errors; `cli/` only parses arguments and renders them.

pub mod apply;
mod error;
pub mod facts;
pub mod inputs;
pub mod journal;
pub mod live;
pub mod notify;
pub mod plan;
pub mod preflight;
pub mod record;
pub mod records;
pub mod rollback;
pub mod run;
pub mod secrets;
pub mod signature;
pub mod state;

pub use error::Error;
