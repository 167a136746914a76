//! What nexus leaves behind, against hostile surroundings: `.nexus/` kept out of git whichever
//! command creates it. The real binary runs in temporary projects.

mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use harness::project::{Project, VAULT_KEY};

const LOCAL_TASK: &str = "task \"hello\" {\n    command \"echo hello\"\n}\n";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

// ---------------------------------------------------------------------------------------------
// .nexus/ and git

/// A command that creates `.nexus/`: what it is, its arguments, its environment.
type Creator = (
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

#[test]
fn nexus_dir_stays_out_of_git_whichever_command_creates_it() {
    let creators: [Creator; 3] = [
        (
            "secret init with a key file in .nexus",
            &["secret", "init", "--key-file", ".nexus/vault.key"],
            &[],
        ),
        (
            "secret init with the key in the environment",
            &["secret", "init"],
            &[("NEXUS_VAULT_KEY", VAULT_KEY)],
        ),
        ("run", &["run"], &[]),
    ];
    for (what, args, env) in creators {
        let p = Project::new();
        p.config(LOCAL_TASK);
        git(p.dir(), &["init", "-q"]);
        let r = p.nexus_with(args, "", env);
        assert_eq!(r.code, 0, "{what}: {r:?}");
        assert!(p.path(".nexus").is_dir(), "{what}: no .nexus");
        git(p.dir(), &["add", "-A"]);
        let status = git(p.dir(), &["status", "--porcelain"]);
        let committed: Vec<&str> = status.lines().filter(|l| l.contains(".nexus")).collect();
        assert!(
            committed.is_empty(),
            "{what}: git would commit {committed:?}"
        );
        assert!(status.contains("nexus.kdl"), "{what}: {status}");
        assert_eq!(mode(&p.path(".nexus")), 0o700, "{what}");
    }
}
