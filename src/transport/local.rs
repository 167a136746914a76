//! The local transport: runs commands on this machine with `sh -c` through tokio::process.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::feed::Feeder;
use super::{
    BoxFuture, CommandSpec, ExitStatus, Output, OutputChunk, OutputSender, OutputStream, Transport,
    TransportError, check_sudo_failure, wrap,
};

/// Runs commands on the machine nexus runs on (tasks without `on`, or hosts that are local).
#[derive(Debug)]
pub struct LocalTransport {
    label: String,
    commands: AtomicU64,
}

impl LocalTransport {
    /// A local transport whose errors name the host `name` (e.g. `localhost`).
    pub fn new(name: impl Into<String>) -> Self {
        LocalTransport {
            label: format!("{} (local)", name.into()),
            commands: AtomicU64::new(0),
        }
    }

    async fn run_inner(
        &self,
        cmd: &CommandSpec,
        sink: Option<OutputSender>,
    ) -> Result<Output, TransportError> {
        // Under the watchdog, as on SSH hosts: when nexus is killed, or drops this command (a
        // task timeout, a second Ctrl-C), its stdin closes and everything it started is killed.
        let wrapped =
            wrap::wrap_watched_local(cmd).map_err(|reason| TransportError::InvalidCommand {
                host: self.label.clone(),
                reason,
            })?;
        self.commands.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();

        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&wrapped.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group (nexus's session and terminal stay out of reach): what the
            // watchdog and a timeout kill.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Spawn {
                host: self.label.clone(),
                reason: e.to_string(),
            })?;
        let pid = child.id();

        let stdin = child.stdin.take().expect("stdin was piped");
        let writer = Feeder::start(stdin, wrapped.stdin);
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");

        let work = async {
            let (out, err, status) = tokio::join!(
                pump(stdout, OutputStream::Stdout, sink.clone()),
                pump(stderr, OutputStream::Stderr, sink.clone()),
                child.wait()
            );
            (out, err, status)
        };
        let result = match cmd.timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => {
                    drop(writer);
                    if let Some(pid) = pid {
                        kill_group(pid);
                    }
                    let _ = child.kill().await;
                    return Err(TransportError::CommandTimeout {
                        host: self.label.clone(),
                        after: limit,
                    });
                }
            },
            None => work.await,
        };
        drop(writer);
        let (stdout, stderr, status) = result;
        let status = status.map_err(|e| TransportError::Spawn {
            host: self.label.clone(),
            reason: e.to_string(),
        })?;
        let output = Output {
            exit: exit_status(status),
            stdout,
            stderr,
            duration: started.elapsed(),
        };
        check_sudo_failure(&self.label, cmd, &output)?;
        Ok(output)
    }
}

impl Transport for LocalTransport {
    fn label(&self) -> &str {
        &self.label
    }

    fn run_streaming<'a>(
        &'a self,
        cmd: &'a CommandSpec,
        sink: Option<OutputSender>,
    ) -> BoxFuture<'a, Result<Output, TransportError>> {
        Box::pin(self.run_inner(cmd, sink))
    }

    fn commands_run(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

async fn pump(
    mut reader: impl AsyncRead + Unpin,
    stream: OutputStream,
    sink: Option<OutputSender>,
) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if let Some(sink) = &sink {
                    let _ = sink.send(OutputChunk {
                        stream,
                        data: buf[..n].to_vec(),
                    });
                }
            }
        }
    }
    all
}

fn kill_group(pid: u32) {
    // The command leads its own process group.
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(signal_name(sig)),
        (None, None) => ExitStatus::Code(-1),
    }
}

/// Signal names as SSH reports them (RFC 4254 section 6.10), so both transports agree.
pub(crate) fn signal_name(sig: i32) -> String {
    match sig {
        1 => "HUP",
        2 => "INT",
        3 => "QUIT",
        4 => "ILL",
        6 => "ABRT",
        8 => "FPE",
        9 => "KILL",
        10 => "USR1",
        11 => "SEGV",
        13 => "PIPE",
        14 => "ALRM",
        15 => "TERM",
        _ => return sig.to_string(),
    }
    .to_string()
}
