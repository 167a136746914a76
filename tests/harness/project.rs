//! A nexus project in a temporary directory and the real binary run against it: the one CLI
//! runner the integration tests share.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{SshHost, TEST_USER};

/// A vault key (hex) for tests that keep secrets; never a real key.
pub const VAULT_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// What one run of `nexus` gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A project directory holding `nexus.kdl`, and the environment nexus runs with there.
pub struct Project {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Default for Project {
    fn default() -> Self {
        Project::new()
    }
}

impl Project {
    /// An empty project (write its `nexus.kdl` with [`Project::config`]).
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("project dir"),
            env: Vec::new(),
        }
    }

    /// A project whose config trusts `hosts` (known_hosts, an empty ssh config) and names each as
    /// a host logging in as [`TEST_USER`], followed by `rest`.
    pub fn over(hosts: &[&SshHost], extra_defaults: &str, rest: &str) -> Project {
        let p = Project::new();
        let head = super::project_config(p.dir.path(), hosts, extra_defaults);
        p.config(&format!("{head}{rest}"));
        p
    }

    /// Sets an environment variable for every later run.
    pub fn env(mut self, key: &str, value: &str) -> Project {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes `nexus.kdl`.
    pub fn config(&self, text: &str) {
        self.write("nexus.kdl", text);
    }

    /// Writes a file of the project.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write project file");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `nexus -c nexus.kdl ARGS` in the project, stdin empty.
    pub fn nexus(&self, args: &[&str]) -> Run {
        self.nexus_with_stdin(args, "")
    }

    /// Runs nexus with `input` on stdin (a pipe, never a terminal). The machine's agent, vault
    /// key and colours are left out; the project's own environment is added.
    pub fn nexus_with_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        cmd.current_dir(self.dir.path())
            .args(["-c", "nexus.kdl"])
            .args(args)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("NEXUS_CONFIG")
            .env_remove("NEXUS_STATE")
            .env_remove("NEXUS_VAULT_KEY")
            .env_remove("NEXUS_VAULT_PASSPHRASE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run nexus");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait for nexus");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Creates the vault (key [`VAULT_KEY`], which later runs get too) and stores `secrets`.
    pub fn with_vault(self, secrets: &[(&str, &str)]) -> Project {
        let p = self.env("NEXUS_VAULT_KEY", VAULT_KEY);
        let r = p.nexus(&["secret", "init"]);
        assert_eq!(r.code, 0, "{r:?}");
        for (name, value) in secrets {
            let r = p.nexus_with_stdin(&["secret", "set", name], value);
            assert_eq!(r.code, 0, "{r:?}");
        }
        p
    }
}

/// The login user the harness hosts accept, for configs written by hand.
pub fn login(h: &SshHost) -> String {
    format!("{TEST_USER}@{}:{}", h.ip, h.port)
}
