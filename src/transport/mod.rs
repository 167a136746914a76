//! Transports run commands and write files on one host, locally or over SSH.
//!
//! The executor holds an `Arc<dyn Transport>` and never knows which kind it has: the local
//! transport spawns `sh -c` with tokio, the SSH transport multiplexes channels over one pooled
//! russh connection per host. Both build the remote command line with the same pure functions
//! in [`wrap`], so become/sudo and secret environment handling behave identically.

pub mod certificate;
pub mod ciphers;
mod feed;
pub mod known_hosts;
pub mod local;
pub mod sftp;
pub mod ssh;
pub mod ssh_config;
pub mod target;
pub mod wrap;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use local::LocalTransport;
pub use ssh::{SshPool, SshTransport};
pub use ssh_config::SshConfigSource;
pub use target::{AgentSource, HostKeyPolicy, ResolvedTarget, SshOptions, SshTarget};

/// A boxed future, so that [`Transport`] stays usable as `dyn Transport`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Builds the second command of [`Transport::run_chained`] from the first's output; `None` runs
/// nothing more.
pub type Then<'a> = Box<dyn FnOnce(&Output) -> Option<CommandSpec> + Send + 'a>;

/// What [`Transport::run_chained`] returns: the first command's output, and the second's when
/// one ran.
pub type Chained = (Output, Option<Output>);

/// Receives output while a command runs (see [`Transport::run_streaming`]).
pub type OutputSender = tokio::sync::mpsc::UnboundedSender<OutputChunk>;

/// What [`Transport::stage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// The content is in this new file on the host (mode 0600, owned by the login user).
    At(String),
    /// Nothing was staged and nothing was left behind: the content goes on a command's stdin.
    Unavailable,
}

/// What [`Transport::fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The whole file was read: this many bytes.
    Done(u64),
    /// Nothing was read: the file is to be printed by a command instead.
    Unavailable,
}

/// Runs commands and writes files on one host.
pub trait Transport: Send + Sync {
    /// How errors and events name this host, e.g. `web1 (deploy@10.0.0.5:22)`.
    fn label(&self) -> &str;

    /// Runs `cmd` and collects its output; chunks are also sent to `sink` as they arrive.
    ///
    /// A non-zero exit is not an error: it is reported in [`Output::exit`]. Errors are for
    /// what prevented the command from running or finishing (connection, timeout, sudo).
    fn run_streaming<'a>(
        &'a self,
        cmd: &'a CommandSpec,
        sink: Option<OutputSender>,
    ) -> BoxFuture<'a, Result<Output, TransportError>>;

    /// Number of commands started through this transport (each is one channel / one process).
    fn commands_run(&self) -> u64;

    /// Closes the connection cleanly, if there is one. Later commands reconnect.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Runs `cmd` and collects its output.
    fn run<'a>(&'a self, cmd: &'a CommandSpec) -> BoxFuture<'a, Result<Output, TransportError>> {
        self.run_streaming(cmd, None)
    }

    /// Runs `first`, then the command `then` builds from its output (facts, then the probe that
    /// depends on them). Over SSH both run in one session, which saves the host a session and
    /// the client a round trip; here, one after the other. `first` must not `exit` or `cd`: over
    /// SSH it runs in the session's own shell (one that exits ends the session after it).
    fn run_chained<'a>(
        &'a self,
        first: &'a CommandSpec,
        then: Then<'a>,
    ) -> BoxFuture<'a, Result<Chained, TransportError>> {
        Box::pin(async move {
            let out = self.run(first).await?;
            let second = match then(&out) {
                Some(cmd) => Some(self.run(&cmd).await?),
                None => None,
            };
            Ok((out, second))
        })
    }

    /// Puts `content` into a new file on the host, in `dir` or (`None`) the login user's home,
    /// by a way that streams it rather than through a command (SFTP). A host without one, or
    /// where the file cannot be created, answers [`Staged::Unavailable`]; an error means the
    /// transfer broke after it started (nothing is left behind then either).
    fn stage<'a>(
        &'a self,
        _dir: Option<&'a str>,
        _content: &'a mut (dyn tokio::io::AsyncRead + Unpin + Send),
        _progress: sftp::Progress<'a>,
    ) -> BoxFuture<'a, Result<Staged, TransportError>> {
        Box::pin(async { Ok(Staged::Unavailable) })
    }

    /// Streams the remote file `path` into `out` (SFTP). A host without a way to, or a file
    /// the login user cannot open, answers [`Fetched::Unavailable`] having written nothing.
    fn fetch<'a>(
        &'a self,
        _path: &'a str,
        _out: &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        _progress: sftp::Progress<'a>,
    ) -> BoxFuture<'a, Result<Fetched, TransportError>> {
        Box::pin(async { Ok(Fetched::Unavailable) })
    }
}

/// A command to run on a host: a POSIX `sh` script plus its inputs.
#[derive(Clone, Default)]
pub struct CommandSpec {
    /// Script run by `sh -c` on the host. Borrowed when it is a constant (the facts script):
    /// every host waiting on its connection holds its command, and a fleet waits by the thousand.
    pub script: Cow<'static, str>,
    /// Bytes for the script's stdin; `None` gives it an immediately closed stdin.
    pub stdin: Option<Vec<u8>>,
    /// Exported to the script. Values travel over stdin, never on a command line, so they may
    /// hold secrets. Names must be valid shell identifiers; values must not contain NUL.
    pub env: Vec<(String, String)>,
    /// Run as another user through `sudo`.
    pub sudo: Option<Become>,
    /// Fail with [`TransportError::CommandTimeout`] if the command has not finished by then.
    pub timeout: Option<Duration>,
}

impl CommandSpec {
    /// A command running `script` with no stdin, no extra environment, as the login user.
    pub fn new(script: impl Into<Cow<'static, str>>) -> Self {
        CommandSpec {
            script: script.into(),
            ..CommandSpec::default()
        }
    }

    /// Sets the bytes fed to the script's stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Adds one exported environment variable (passed over stdin).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the command through sudo.
    pub fn sudo(mut self, become_: Become) -> Self {
        self.sudo = Some(become_);
        self
    }

    /// Sets the command timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl fmt::Debug for CommandSpec {
    // Env values and stdin may be secrets: show their names and sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSpec")
            .field("script", &self.script)
            .field("stdin_bytes", &self.stdin.as_ref().map(Vec::len))
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("sudo", &self.sudo)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Privilege escalation through sudo (`become` in the config).
#[derive(Clone, PartialEq, Eq)]
pub struct Become {
    /// Target user, usually `root`.
    pub user: String,
    /// Sudo password. Sent over stdin (`sudo -S`), never on a command line. Without it,
    /// `sudo -n` is used and a sudo that asks for a password fails with
    /// [`TransportError::SudoPasswordRequired`].
    pub password: Option<String>,
}

impl Become {
    /// Become root without a password (`sudo -n`).
    pub fn root() -> Self {
        Become::user("root")
    }

    /// Become `user` without a password (`sudo -n -u user`).
    pub fn user(user: impl Into<String>) -> Self {
        Become {
            user: user.into(),
            password: None,
        }
    }

    /// Adds the sudo password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }
}

impl fmt::Debug for Become {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Become")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (name without `SIG`, e.g. `KILL`).
    Signal(String),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The result of a command that ran to completion.
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit code or signal.
    pub exit: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// Wall time from starting the command to its end.
    pub duration: Duration,
}

impl Output {
    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.exit == ExitStatus::Code(0)
    }

    /// The exit code, if the command was not killed by a signal.
    pub fn code(&self) -> Option<i32> {
        match self.exit {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// One line for error messages: the exit status and the last line of stderr.
    pub fn failure_summary(&self) -> String {
        let stderr = self.stderr_str();
        match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!("{}: {}", self.exit, line.trim()),
            None => self.exit.to_string(),
        }
    }
}

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of output, as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    /// Which stream.
    pub stream: OutputStream,
    /// The bytes (not necessarily whole lines).
    pub data: Vec<u8>,
}

/// Everything that can go wrong reaching a host or running a command on it.
///
/// Every message starts with the host label (`name (user@address:port)`), so that a report
/// about many hosts says which one failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Nothing listens on the SSH port.
    #[error("{host}: connection refused by {addr}")]
    ConnectionRefused {
        /// Host label.
        host: String,
        /// Address that refused.
        addr: String,
    },
    /// The address could not be resolved or reached.
    #[error("{host}: cannot reach {addr}: {reason}")]
    Unreachable {
        /// Host label.
        host: String,
        /// Address tried.
        addr: String,
        /// Operating system's reason.
        reason: String,
    },
    /// Connecting (TCP, key exchange and authentication) took longer than the connect timeout.
    #[error("{host}: connection timed out after {}", humantime::format_duration(*after))]
    ConnectTimeout {
        /// Host label.
        host: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The SSH protocol failed before a session was established.
    #[error("{host}: SSH handshake failed: {reason}")]
    Handshake {
        /// Host label.
        host: String,
        /// What failed.
        reason: String,
    },
    /// The server accepted none of our credentials.
    #[error(
        "{host}: authentication failed for user {user:?}; tried: {}",
        if tried.is_empty() { "no usable key (configure an identity file or load a key into ssh-agent)".to_string() } else { tried.join(", ") }
    )]
    AuthFailed {
        /// Host label.
        host: String,
        /// User we tried to log in as.
        user: String,
        /// The methods and keys tried, in order.
        tried: Vec<String>,
    },
    /// The only usable key is encrypted and no passphrase is available.
    #[error(
        "{host}: the private key {} is encrypted and no passphrase is available; load it into ssh-agent (`ssh-add {}`) or configure a passphrase",
        path.display(), path.display()
    )]
    EncryptedKeyNoPassphrase {
        /// Host label.
        host: String,
        /// The encrypted key file.
        path: std::path::PathBuf,
    },
    /// A configured identity file could not be read or parsed.
    #[error("{host}: cannot load private key {}: {reason}", path.display())]
    KeyLoad {
        /// Host label.
        host: String,
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The host's key is in no known_hosts file and strict checking is on.
    #[error(
        "{host}: unknown host key {key} for {lookup}; not in {known_hosts}.\n  \
         Verify the fingerprint out of band, then accept it with --accept-new-host-keys \
         (or `StrictHostKeyChecking accept-new` for this host in ~/.ssh/config), which records it in {record_file}"
    )]
    UnknownHostKey {
        /// Host label.
        host: String,
        /// Name looked up in known_hosts (`host` or `[host]:port`).
        lookup: String,
        /// The presented key: algorithm and `SHA256:` fingerprint, e.g. `ssh-ed25519 SHA256:...`.
        key: String,
        /// The files searched.
        known_hosts: String,
        /// Where accepting records the key.
        record_file: String,
    },
    /// The host presented a different key than the one recorded. Always refused.
    #[error(
        "{host}: HOST KEY CHANGED for {lookup}! The host presented {presented}, but {location} records {expected}. \
         This may be a man-in-the-middle attack, or the host was reinstalled. Connection refused; \
         if the change is expected, remove the old entry (ssh-keygen -R '{lookup}' -f {}) and connect again",
        file_of(location)
    )]
    ChangedHostKey {
        /// Host label.
        host: String,
        /// Name looked up in known_hosts.
        lookup: String,
        /// The presented key: algorithm and fingerprint.
        presented: String,
        /// The recorded key(s): algorithm and fingerprint.
        expected: String,
        /// `file:line` of the recorded entries, comma-separated.
        location: String,
    },
    /// The presented key is marked `@revoked`.
    #[error("{host}: host key {fingerprint} is marked @revoked in {location}; connection refused")]
    RevokedHostKey {
        /// Host label.
        host: String,
        /// Fingerprint of the presented key.
        fingerprint: String,
        /// `file:line` of the revocation.
        location: String,
    },
    /// The host presented a certificate that known_hosts does not let it vouch for (expired,
    /// not naming the host, from an untrusted or revoked CA...), and its key is not recorded
    /// plainly either. Refused under every host key policy.
    #[error("{host}: host certificate for {lookup} refused: {reason}")]
    HostCertificate {
        /// Host label.
        host: String,
        /// Name looked up in known_hosts (`host` or `[host]:port`).
        lookup: String,
        /// Why, e.g. `it expired at 2026-01-01 00:00:00 UTC (now ...)`.
        reason: String,
    },
    /// A known_hosts file could not be read or the new key could not be recorded.
    #[error("{host}: known_hosts {path}: {reason}")]
    KnownHosts {
        /// Host label.
        host: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Reaching the host through its jump host failed.
    #[error("{host}: via jump host: {source}")]
    Jump {
        /// Host label of the target.
        host: String,
        /// The jump host's own error (it names the jump host).
        source: Box<TransportError>,
    },
    /// The connection dropped while a command was running or being started.
    #[error("{host}: connection lost {during}")]
    Disconnected {
        /// Host label.
        host: String,
        /// What was happening, e.g. `while running a command`.
        during: String,
    },
    /// The command did not finish within its timeout; it was signalled and its channel closed.
    #[error("{host}: command timed out after {}", humantime::format_duration(*after))]
    CommandTimeout {
        /// Host label.
        host: String,
        /// The timeout.
        after: Duration,
    },
    /// The server refused to open a session channel.
    #[error("{host}: cannot open a channel: {reason}")]
    Channel {
        /// Host label.
        host: String,
        /// Why.
        reason: String,
    },
    /// sudo asked for a password and none is configured.
    #[error(
        "{host}: sudo requires a password to become {user:?} and none is configured; configure a become password or allow NOPASSWD for this user"
    )]
    SudoPasswordRequired {
        /// Host label.
        host: String,
        /// Target user.
        user: String,
    },
    /// sudo rejected the configured password.
    #[error("{host}: sudo rejected the configured password to become {user:?}")]
    SudoPasswordIncorrect {
        /// Host label.
        host: String,
        /// Target user.
        user: String,
    },
    /// sudo refused: the login user may not run commands as the target user.
    #[error("{host}: sudo refused to run commands as {user:?}: {detail}")]
    SudoNotAllowed {
        /// Host label.
        host: String,
        /// Target user.
        user: String,
        /// sudo's message.
        detail: String,
    },
    /// The command cannot be sent as specified (bad env name, NUL byte...).
    #[error("{host}: invalid command: {reason}")]
    InvalidCommand {
        /// Host label.
        host: String,
        /// Why.
        reason: wrap::WrapError,
    },
    /// A file transfer (SFTP) broke after it started; nothing it staged was kept.
    #[error("{host}: transfer of {path} failed: {detail}")]
    Transfer {
        /// Host label.
        host: String,
        /// The remote path.
        path: String,
        /// Why.
        detail: String,
    },
    /// The local process could not be started or waited for.
    #[error("{host}: cannot run local command: {reason}")]
    Spawn {
        /// Host label.
        host: String,
        /// Why.
        reason: String,
    },
    /// The SSH settings for this host are invalid (bad ProxyJump, jump loop...).
    #[error("{host}: invalid SSH settings: {reason}")]
    Config {
        /// Host label.
        host: String,
        /// Why.
        reason: String,
    },
    /// The ssh_config file could not be read or parsed.
    #[error("ssh config {path}: {reason}")]
    SshConfig {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not enough file descriptors for one connection per host, even at the hard limit.
    #[error(transparent)]
    FileLimit(#[from] crate::fd_limit::TooFewFiles),
}

/// The file of the first `file:line` in a location list.
fn file_of(location: &str) -> &str {
    let first = location.split(", ").next().unwrap_or(location);
    first.rsplit_once(':').map_or(first, |(file, _)| file)
}

impl TransportError {
    /// The label of the host this error is about (`None` for an unreadable ssh_config and for
    /// the process's file limit).
    pub fn host(&self) -> Option<&str> {
        use TransportError::*;
        match self {
            ConnectionRefused { host, .. }
            | Unreachable { host, .. }
            | ConnectTimeout { host, .. }
            | Handshake { host, .. }
            | AuthFailed { host, .. }
            | EncryptedKeyNoPassphrase { host, .. }
            | KeyLoad { host, .. }
            | UnknownHostKey { host, .. }
            | ChangedHostKey { host, .. }
            | RevokedHostKey { host, .. }
            | HostCertificate { host, .. }
            | KnownHosts { host, .. }
            | Jump { host, .. }
            | Disconnected { host, .. }
            | CommandTimeout { host, .. }
            | Channel { host, .. }
            | SudoPasswordRequired { host, .. }
            | SudoPasswordIncorrect { host, .. }
            | SudoNotAllowed { host, .. }
            | InvalidCommand { host, .. }
            | Transfer { host, .. }
            | Spawn { host, .. }
            | Config { host, .. } => Some(host),
            SshConfig { .. } | FileLimit(_) => None,
        }
    }

    /// True for errors about reaching the host at all (as opposed to one command failing):
    /// an executor stops sending work to a host after one of these.
    pub fn is_connection_error(&self) -> bool {
        use TransportError::*;
        matches!(
            self,
            ConnectionRefused { .. }
                | Unreachable { .. }
                | ConnectTimeout { .. }
                | Handshake { .. }
                | AuthFailed { .. }
                | EncryptedKeyNoPassphrase { .. }
                | KeyLoad { .. }
                | UnknownHostKey { .. }
                | ChangedHostKey { .. }
                | RevokedHostKey { .. }
                | HostCertificate { .. }
                | KnownHosts { .. }
                | Jump { .. }
                | Disconnected { .. }
                | Config { .. }
                | SshConfig { .. }
        )
    }
}

/// Maps sudo's own failure messages to errors, so callers get "password required" rather
/// than exit code 1 and a line of stderr.
pub(crate) fn check_sudo_failure(
    host: &str,
    cmd: &CommandSpec,
    out: &Output,
) -> Result<(), TransportError> {
    let Some(become_) = &cmd.sudo else {
        return Ok(());
    };
    if out.exit != ExitStatus::Code(1) {
        return Ok(());
    }
    let stderr = out.stderr_str();
    let user = become_.user.clone();
    let host = host.to_string();
    // Only sudo's own fixed wording counts, so a script that fails with exit code 1 is not
    // mistaken for sudo refusing.
    for line in stderr.lines() {
        let line = line.trim();
        let from_sudo = line.starts_with("sudo:") || line.starts_with("Sorry, user ");
        if !from_sudo && !line.contains("is not in the sudoers file") {
            continue;
        }
        if line.contains("a password is required") || line.contains("no password was provided") {
            return Err(if become_.password.is_some() {
                TransportError::SudoPasswordIncorrect { host, user }
            } else {
                TransportError::SudoPasswordRequired { host, user }
            });
        }
        if line.contains("incorrect password") {
            return Err(TransportError::SudoPasswordIncorrect { host, user });
        }
        if line.contains("is not in the sudoers file")
            || line.contains("is not allowed to execute")
            || line.contains("not allowed to run sudo")
        {
            return Err(TransportError::SudoNotAllowed {
                host,
                user,
                detail: line.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stderr: &str) -> Output {
        Output {
            exit: ExitStatus::Code(code),
            stdout: vec![],
            stderr: stderr.as_bytes().to_vec(),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn sudo_messages_become_errors() {
        let cmd = CommandSpec::new("true").sudo(Become::root());
        let err = check_sudo_failure("web1", &cmd, &out(1, "sudo: a password is required\n"))
            .unwrap_err();
        assert!(matches!(err, TransportError::SudoPasswordRequired { .. }));
        assert!(
            err.to_string()
                .starts_with("web1: sudo requires a password")
        );

        let cmd = CommandSpec::new("true").sudo(Become::root().with_password("x"));
        let err = check_sudo_failure(
            "web1",
            &cmd,
            &out(1, "Sorry, try again.\nsudo: 1 incorrect password attempt\n"),
        )
        .unwrap_err();
        assert!(matches!(err, TransportError::SudoPasswordIncorrect { .. }));

        let err = check_sudo_failure(
            "web1",
            &cmd,
            &out(
                1,
                "Sorry, user app is not allowed to execute '/bin/sh -c id' as root on web1.\n",
            ),
        )
        .unwrap_err();
        assert!(matches!(err, TransportError::SudoNotAllowed { .. }));

        // The script's own failure is not sudo's.
        let cmd = CommandSpec::new("false").sudo(Become::root());
        assert!(check_sudo_failure("web1", &cmd, &out(1, "grep: nothing\n")).is_ok());
        let plain = CommandSpec::new("false");
        assert!(
            check_sudo_failure("web1", &plain, &out(1, "sudo: a password is required")).is_ok()
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cmd = CommandSpec::new("echo")
            .env("TOKEN", "s3cret")
            .stdin(b"hunter2".to_vec())
            .sudo(Become::root().with_password("pw"));
        let shown = format!("{cmd:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2") && !shown.contains("\"pw\"")
        );
        assert!(shown.contains("TOKEN"));
    }

    #[test]
    fn changed_host_key_message_says_how_to_fix_it() {
        let err = TransportError::ChangedHostKey {
            host: "web1 (deploy@10.0.0.5:22)".into(),
            lookup: "10.0.0.5".into(),
            presented: "ssh-ed25519 SHA256:new".into(),
            expected: "ssh-ed25519 SHA256:old".into(),
            location: "/home/u/.ssh/known_hosts:7, /etc/ssh/ssh_known_hosts:2".into(),
        };
        let msg = err.to_string();
        assert!(msg.starts_with("web1 (deploy@10.0.0.5:22): HOST KEY CHANGED for 10.0.0.5!"));
        assert!(msg.contains("ssh-keygen -R '10.0.0.5' -f /home/u/.ssh/known_hosts)"));
        assert_eq!(err.host(), Some("web1 (deploy@10.0.0.5:22)"));
    }

    #[test]
    fn failure_summary_uses_last_stderr_line() {
        assert_eq!(
            out(2, "warning\nerror: boom\n\n").failure_summary(),
            "exit code 2: error: boom"
        );
        assert_eq!(out(3, "").failure_summary(), "exit code 3");
    }
}
