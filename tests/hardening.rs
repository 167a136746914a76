//! What nexus leaves behind and what it prints, against hostile surroundings: `.nexus/` kept out of
//! git whichever command creates it, file modes under a permissive umask, and terminal escape
//! sequences from hosts and configuration shown as text instead of reaching the terminal.
//! The real binary runs in temporary projects; the escape tests use a real sshd host.

mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use harness::SshHost;
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

// ---------------------------------------------------------------------------------------------
// Terminal escapes

/// Sets the terminal title and clears the screen, then fails so that its output is shown.
const HOSTILE: &str = r"printf '\033]0;X\007\033[2J'; exit 3";
const HOSTILE_OUTPUT: &str = "\u{1b}]0;X\u{7}\u{1b}[2J";
const SHOWN_OUTPUT: &str = r"\x1b]0;X\x07\x1b[2J";

fn no_raw_escape(what: &str, text: &str) {
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{what} printed a raw control character:\n{text:?}"
    );
}

#[test]
fn escapes_from_hosts_and_labels_are_shown_not_sent() {
    let host = SshHost::builder("esc").private_srv().start();
    let p = Project::over(
        &[&host],
        "",
        &format!(
            "task \"t\" on=\"esc\" {{\n    file \"/srv/esc.txt\" content=\"a\\u{{1b}}[2Jb\\n\"\n    command \"true\" {{\n        label \"blink\\u{{1b}}[5mlabel\"\n    }}\n    command \"{}\"\n}}\n",
            HOSTILE.replace('\\', "\\\\").replace('"', "\\\"")
        ),
    );
    let plan = p.nexus(&["plan", "-o", "plan.lock"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    no_raw_escape("plan", &plan.stdout);
    assert!(plan.stdout.contains(r"blink\x1b[5mlabel"), "{plan:?}");

    // With colours (a terminal), only the renderer's own sequences are raw.
    let decoded = nexus::plan::lockfile::read(&p.path("plan.lock")).expect("plan.lock");
    let coloured = nexus::render::text::plan(
        &decoded.plan,
        &nexus::render::TextOptions {
            color: true,
            width: 100,
            verbose: 2,
        },
    );
    let mut ours_removed = coloured.clone();
    for palette in ["[32m", "[33m", "[31m", "[36m", "[1m", "[2m", "[0m"] {
        ours_removed = ours_removed.replace(&format!("\u{1b}{palette}"), "");
    }
    no_raw_escape("the coloured plan", &ours_removed);
    assert!(coloured.contains(r"blink\x1b[5mlabel"), "{coloured}");
    assert!(coloured.contains(r"a\x1b[2Jb"), "{coloured}");
    assert!(coloured.contains("\u{1b}[0m"), "{coloured}");

    let show = p.nexus(&["-v", "show", "plan.lock"]);
    no_raw_escape("show", &show.stdout);
    assert!(show.stdout.contains(r"blink\x1b[5mlabel"), "{show:?}");

    let apply = p.nexus(&["apply", "plan.lock"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    no_raw_escape("apply", &apply.stdout);
    no_raw_escape("apply (stderr)", &apply.stderr);
    assert!(apply.stdout.contains(SHOWN_OUTPUT), "{apply:?}");
    assert!(apply.stdout.contains(r"blink\x1b[5mlabel"), "{apply:?}");

    let run = p.nexus(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    no_raw_escape("run", &run.stdout);
    assert!(run.stdout.contains(SHOWN_OUTPUT), "{run:?}");

    let history = p.nexus(&["history", "1"]);
    assert_eq!(history.code, 0, "{history:?}");
    no_raw_escape("history", &history.stdout);
    assert!(history.stdout.contains(SHOWN_OUTPUT), "{history:?}");

    // JSON keeps the exact strings: serde escapes control characters itself.
    let json = p.nexus(&["history", "1", "--format", "json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let tails: Vec<&str> = v["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["output_tail"].as_str())
        .collect();
    assert!(
        tails.iter().any(|t| t.contains(HOSTILE_OUTPUT)),
        "{tails:?}"
    );
    let labels: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["label"].as_str())
        .collect();
    assert!(labels.contains(&"blink\u{1b}[5mlabel"), "{labels:?}");
    let show_json = p.nexus(&["show", "plan.lock", "--format", "json"]);
    assert!(
        show_json.stdout.contains(r"blink\u001b[5mlabel"),
        "{show_json:?}"
    );
}
