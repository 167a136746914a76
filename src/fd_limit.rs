//! Open-file limits. nexus holds one SSH connection (one socket) per host, and one per jump host,
//! for the whole run, so a fleet of a few thousand hosts needs more descriptors than the usual
//! soft limit of 1024. The hard limit is usually far higher: nexus raises its soft limit to it
//! when it needs more, and refuses clearly, before contacting anything, when even the hard limit
//! is too low.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors nexus uses besides its connections: standard streams, the async runtime, the
/// state store and its journal, pipes of local commands, the known_hosts and key files it reads.
pub const BASE: u64 = 32;

/// The hard limit is below what the run needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this run needs about {needed} open files ({connections} SSH connections, one per host and \
     jump host, plus {BASE} for nexus itself), but the process may open at most {hard} \
     (ulimit -Hn): raise the hard limit, or run fewer hosts at once (--target, or split the \
     inventory)"
)]
pub struct TooFewFiles {
    pub needed: u64,
    pub connections: u64,
    pub hard: u64,
}

/// Makes room for `connections` connections: raises the soft RLIMIT_NOFILE to the hard limit
/// when the soft one is too low. A limit that cannot be read or set is left as it is: the
/// connections then fail with the system's own error.
pub fn ensure(connections: u64) -> Result<(), TooFewFiles> {
    let needed = BASE + connections;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(());
    };
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(TooFewFiles {
            needed,
            connections,
            hard,
        });
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    Ok(())
}
