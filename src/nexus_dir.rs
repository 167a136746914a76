//! The directories nexus creates for its own files: the state database, the vault, its lock and
//! generated key files. `.nexus/` next to the configuration is the default home of all of them.
//!
//! Every such directory is created by [`create`], so that what a new `.nexus/` looks like is
//! decided here whichever command happens to create it first (plan, apply, run, `secret init`).

use std::io;
use std::path::Path;

/// The name of the directory next to the configuration that holds nexus's own files.
pub const NAME: &str = ".nexus";

/// What `.nexus/.gitignore` holds: everything in the directory is ignored, since it holds command
/// output, the apply lock and possibly the vault key, none of which belongs in version control.
const GITIGNORE: &str = "*\n";

/// Creates `dir` and its missing parents. The directories created are 0700, whatever the umask:
/// they hold state, vaults and keys, and a directory that others may write would let them swap
/// those files. A created directory named [`NAME`] gets a `.gitignore` ignoring all of it; a
/// directory that already exists is left as it is (its owner may have chosen to commit it).
pub fn create(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    for d in missing {
        if d.file_name().is_some_and(|n| n == NAME) {
            write_gitignore(d)?;
        }
    }
    Ok(())
}

/// Options that create a new file (failing if it exists) that only this user may read or write:
/// mode 0600, which a umask can only narrow. Every file nexus writes for itself and every download
/// is created this way.
pub fn new_private_file() -> std::fs::OpenOptions {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

fn write_gitignore(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    // Another nexus process may create the same directory at the same moment; its file is the
    // same as this one.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(".gitignore"))
    {
        Ok(mut f) => f.write_all(GITIGNORE.as_bytes()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_created_nexus_dir_gets_a_gitignore_and_mode_0700() {
        let t = tempfile::tempdir().unwrap();
        let keys = t.path().join("project/.nexus/keys");
        create(&keys).unwrap();
        let dot = t.path().join("project/.nexus");
        assert_eq!(
            std::fs::read_to_string(dot.join(".gitignore")).unwrap(),
            "*\n"
        );
        assert!(!keys.join(".gitignore").exists());
        assert!(!t.path().join("project/.gitignore").exists());
        #[cfg(unix)]
        for d in [&keys, &dot] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
    }

    #[test]
    fn an_existing_dir_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let dot = t.path().join(".nexus");
        std::fs::create_dir(&dot).unwrap();
        create(&dot).unwrap();
        assert!(!dot.join(".gitignore").exists());
        // Other names never get one.
        create(&t.path().join("state")).unwrap();
        assert!(!t.path().join("state/.gitignore").exists());
    }
}
