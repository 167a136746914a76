//! The user running nexus: login name and home directory, decided here once.
//!
//! `$HOME` and `$USER` win when set and not empty, so a run can be pointed at another home (CI
//! sandboxes, tests). Otherwise the user database answers through NSS (`getpwuid_r`), which sees
//! the same accounts as `ssh` and `id`: /etc/passwd, LDAP, SSSD, systemd-userdb.

use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};

/// The home directory: `$HOME`, else the current uid's home in the user database.
pub fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Some(PathBuf::from(h)),
        _ => account().map(|u| u.dir),
    }
}

/// The login name: `$USER`, else the current uid's name in the user database.
pub fn name() -> Option<String> {
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => account().map(|u| u.name),
    }
}

/// Expands a leading `~` or `~/` to `home`, as ssh does for its own paths; `~user` and paths
/// without a tilde are returned as they are.
pub fn expand_tilde(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h.to_path_buf(),
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(path),
    }
}

fn account() -> Option<User> {
    // An unknown uid (a container without an entry for it) is not an error here: the callers
    // report what they could not find.
    User::from_uid(Uid::current()).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_expansion() {
        let home = Some(Path::new("/home/u"));
        assert_eq!(
            expand_tilde("~/.ssh/x", home),
            PathBuf::from("/home/u/.ssh/x")
        );
        assert_eq!(expand_tilde("~", home), PathBuf::from("/home/u"));
        assert_eq!(expand_tilde("/abs", home), PathBuf::from("/abs"));
        assert_eq!(expand_tilde("~bob/x", home), PathBuf::from("~bob/x"));
        assert_eq!(expand_tilde("~/x", None), PathBuf::from("~/x"));
    }
}
