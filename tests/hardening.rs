//! What nexus leaves behind, against hostile surroundings: `.nexus/` kept out of git whichever
//! command creates it, and file modes under a permissive umask. The real binary runs in
//! temporary projects.

mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use harness::project::{Project, Run, VAULT_KEY};

const LOCAL_TASK: &str = "task \"hello\" {\n    command \"echo hello\"\n}\n";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `nexus ARGS` in `p` as [`Project::nexus`] does, under umask 000: whatever nexus creates
/// is as open as nexus itself asks for.
fn nexus_umask_000(p: &Project, args: &[&str]) -> Run {
    let inner = p.command(args);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null());
    if let Some(dir) = inner.get_current_dir() {
        cmd.current_dir(dir);
    }
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run nexus under sh");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
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

// ---------------------------------------------------------------------------------------------
// File modes under umask 000

#[test]
fn state_database_and_its_companions_are_0600_under_umask_000() {
    let p = Project::new();
    let nexus = p.path(".nexus");
    let modes = p.path("modes.txt");
    // The -wal and -shm files exist only while nexus has the database open: the task looks at
    // them from inside the run.
    p.config(&format!(
        "task \"look\" {{\n    command \"stat -c '%n %a' {dir}/state.db {dir}/state.db-wal {dir}/state.db-shm > {out}\"\n}}\n",
        dir = nexus.display(),
        out = modes.display()
    ));
    let r = nexus_umask_000(&p, &["run"]);
    assert_eq!(r.code, 0, "{r:?}");
    let seen = std::fs::read_to_string(&modes).unwrap();
    assert_eq!(seen.lines().count(), 3, "{seen}");
    for line in seen.lines() {
        assert!(line.ends_with(" 600"), "{seen}");
    }
    assert_eq!(mode(&nexus.join("state.db")), 0o600);
    assert_eq!(mode(&nexus), 0o700);
}

#[test]
fn downloads_are_0600_under_umask_000() {
    let p = Project::new();
    let source = p.path("remote/secret.txt");
    p.write("remote/secret.txt", "s3cret\n");
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A destination that already exists with a wider mode is replaced, not written into.
    p.write("out/old.txt", "old\n");
    std::fs::set_permissions(
        p.path("out/old.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    p.config(&format!(
        "task \"fetch\" {{\n    download \"{src}\" \"out/new/copy.txt\"\n    download \"{src}\" \"out/old.txt\"\n}}\n",
        src = source.display()
    ));
    let r = nexus_umask_000(&p, &["run"]);
    assert_eq!(r.code, 0, "{r:?}");
    for dest in ["out/new/copy.txt", "out/old.txt"] {
        assert_eq!(
            std::fs::read_to_string(p.path(dest)).unwrap(),
            "s3cret\n",
            "{dest}"
        );
        assert_eq!(mode(&p.path(dest)), 0o600, "{dest}");
    }
}

#[test]
fn vault_lock_and_generated_key_are_0600_under_umask_000() {
    let p = Project::new();
    p.config(LOCAL_TASK);
    let r = nexus_umask_000(&p, &["secret", "init", "--key-file", ".nexus/vault.key"]);
    assert_eq!(r.code, 0, "{r:?}");
    for f in ["vault.key", "secrets.vault", "secrets.vault.lock"] {
        assert_eq!(mode(&p.path(".nexus").join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&p.path(".nexus")), 0o700);
}
