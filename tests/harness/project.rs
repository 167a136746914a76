//! A nexus project (a temporary directory, or an existing one) and the real binary run against
//! it: the one CLI runner the integration tests share. By default nexus runs in the project with
//! `-c nexus.kdl`, an empty stdin and a clean environment; a project can change the `-c`
//! argument, the working directory and the environment.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{SshHost, TEST_USER};

/// A vault key (hex) for tests that keep secrets; never a real key.
pub const VAULT_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// What one run of `nexus` gave. Its output must be UTF-8; a run ended by a signal has code -1.
#[derive(Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
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

/// A project directory, and how nexus runs there: the `-c` argument, the working directory and
/// the environment.
pub struct Project {
    dir: ProjectDir,
    /// Set (`Some`) or removed (`None`) for every run, after the defaults.
    env: Vec<(String, Option<String>)>,
    /// Passed as `-c` before the arguments, unless `None`.
    config_arg: Option<PathBuf>,
    /// Where nexus runs; the project directory unless set.
    workdir: Option<PathBuf>,
}

enum ProjectDir {
    Temporary(tempfile::TempDir),
    Existing(PathBuf),
}

impl Default for Project {
    fn default() -> Self {
        Project::new()
    }
}

impl Project {
    /// An empty project in a new temporary directory (write its `nexus.kdl` with
    /// [`Project::config`]).
    pub fn new() -> Project {
        Project::in_dir(ProjectDir::Temporary(
            tempfile::tempdir().expect("project dir"),
        ))
    }

    /// A project in an existing directory, which is left in place afterwards.
    pub fn at(dir: &Path) -> Project {
        Project::in_dir(ProjectDir::Existing(dir.to_path_buf()))
    }

    fn in_dir(dir: ProjectDir) -> Project {
        Project {
            dir,
            env: Vec::new(),
            config_arg: Some("nexus.kdl".into()),
            workdir: None,
        }
    }

    /// A project whose config trusts `hosts` (known_hosts, an empty ssh config) and names each as
    /// a host logging in as [`TEST_USER`], followed by `rest`.
    pub fn over(hosts: &[&SshHost], extra_defaults: &str, rest: &str) -> Project {
        let logins: Vec<(&SshHost, &str)> = hosts.iter().map(|h| (*h, TEST_USER)).collect();
        Project::over_logins(&logins, hosts, extra_defaults, rest)
    }

    /// Like [`Project::over`], with each host's login user given, and known_hosts trusting only
    /// `trusted`.
    pub fn over_logins(
        logins: &[(&SshHost, &str)],
        trusted: &[&SshHost],
        extra_defaults: &str,
        rest: &str,
    ) -> Project {
        let p = Project::new();
        let head = super::project_config_logins(p.dir(), logins, trusted, extra_defaults);
        p.config(&format!("{head}{rest}"));
        p
    }

    /// Sets an environment variable for every later run.
    pub fn env(mut self, key: &str, value: &str) -> Project {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable for every later run (one the runner would set, too).
    pub fn env_remove(mut self, key: &str) -> Project {
        self.env.push((key.into(), None));
        self
    }

    /// Runs with `-c path` instead of `-c nexus.kdl`.
    pub fn config_arg(mut self, path: impl Into<PathBuf>) -> Project {
        self.config_arg = Some(path.into());
        self
    }

    /// Runs without `-c`: nexus finds its config itself, or the arguments name it.
    pub fn no_config_arg(mut self) -> Project {
        self.config_arg = None;
        self
    }

    /// Runs nexus in `dir` instead of the project directory.
    pub fn run_in(mut self, dir: impl Into<PathBuf>) -> Project {
        self.workdir = Some(dir.into());
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
        self.dir().join(rel)
    }

    pub fn dir(&self) -> &Path {
        match &self.dir {
            ProjectDir::Temporary(t) => t.path(),
            ProjectDir::Existing(p) => p,
        }
    }

    /// Runs `nexus -c nexus.kdl ARGS` in the project (or as configured), stdin empty.
    pub fn nexus(&self, args: &[&str]) -> Run {
        self.nexus_with(args, "", &[])
    }

    /// Runs nexus with `input` on stdin.
    pub fn nexus_with_stdin(&self, args: &[&str], input: &str) -> Run {
        self.nexus_with(args, input, &[])
    }

    /// Runs nexus with `input` on stdin (a pipe, never a terminal) and `env` on top of the
    /// project's environment. The machine's agent, config and state paths, vault key and colours
    /// are left out unless the project or `env` sets them.
    pub fn nexus_with(&self, args: &[&str], input: &str, env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run nexus");
        // nexus may refuse its input and exit before reading stdin (a corrupted vault): the
        // pipe is then closed, which is its answer, not the test's failure.
        match child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
        {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
            _ => {}
        }
        let out = child.wait_with_output().expect("wait for nexus");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("nexus printed UTF-8 on stdout"),
            stderr: String::from_utf8(out.stderr).expect("nexus printed UTF-8 on stderr"),
        }
    }

    /// The `nexus ARGS` command as [`Project::nexus`] runs it, for tests that spawn it
    /// themselves (to signal or kill it mid-run).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        cmd.current_dir(self.workdir.as_deref().unwrap_or(self.dir()));
        if let Some(config) = &self.config_arg {
            cmd.arg("-c").arg(config);
        }
        cmd.args(args)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("NEXUS_CONFIG")
            .env_remove("NEXUS_STATE")
            .env_remove("NEXUS_VAULT_KEY")
            .env_remove("NEXUS_VAULT_PASSPHRASE")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
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
