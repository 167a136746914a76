//! File contents over the host's SFTP subsystem (russh-sftp on one channel per transfer).
//!
//! SFTP only carries bytes: a staged file on the host, or a remote file read into a local
//! writer. Where a file lands, its checks, mode, owner and rename stay with
//! `plan::file_write`, whose script then takes the staged file instead of its stdin.

use russh::ChannelMsg;
use russh::client::Msg;
use russh_sftp::client::{Config, SftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reports bytes moved so far, as they move.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Why a transfer did not happen, told apart because the caller's answer differs.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was moved and nothing is left on the host (the file could not be opened or
    /// created there): the caller may take the stdin path, whose script words the refusal.
    NotStarted(String),
    /// Bytes had started to move; whatever was staged has been removed, if the host let us.
    Broken(String),
}

/// Starts SFTP on a fresh session channel; `None` when the host refuses the subsystem.
pub async fn start(mut channel: russh::Channel<Msg>) -> Result<Option<SftpSession>, String> {
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => break,
            // OpenSSH answers a subsystem it has no `Subsystem` line for with a failure.
            Some(ChannelMsg::Failure) | Some(ChannelMsg::Close) | Some(ChannelMsg::Eof) => {
                let _ = channel.close().await;
                return Ok(None);
            }
            None => return Err("the channel closed before the subsystem answered".into()),
            Some(_) => {}
        }
    }
    // Larger and more requests in flight than the crate's defaults: on a fast link the round
    // trip per 32 KiB, not the bandwidth, bounds a transfer. Memory stays at 32 × 128 KiB.
    let cfg = Config {
        max_write_packet_len: 128 * 1024,
        max_concurrent_writes: 32,
        max_concurrent_reads: 32,
        request_timeout_secs: 60,
        ..Config::default()
    };
    SftpSession::new_with_config(channel.into_stream(), cfg)
        .await
        .map(Some)
        .map_err(|e| format!("SFTP did not start: {e}"))
}

/// Bytes handed to SFTP per write call; the file pipelines them into requests.
const CHUNK: usize = 256 * 1024;

/// Creates `path` (which must not exist) readable by its owner only, and writes what `content`
/// gives into it, a chunk at a time. On a failure after it was created, it is removed again.
pub async fn put(
    sftp: &SftpSession,
    path: &str,
    content: &mut (dyn AsyncRead + Unpin + Send),
    progress: Progress<'_>,
) -> Result<(), Failure> {
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..FileAttributes::empty()
    };
    let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
    let mut file = sftp
        .open_with_flags_and_attributes(path, flags, attrs)
        .await
        .map_err(|e| Failure::NotStarted(e.to_string()))?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let written = async {
        loop {
            let n = read_full(content, &mut buf).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read the local content: {e}"))
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).await?;
            sent += n as u64;
            progress(sent);
        }
        file.shutdown().await
    }
    .await;
    if let Err(e) = written {
        let _ = sftp.remove_file(path).await;
        return Err(Failure::Broken(e.to_string()));
    }
    Ok(())
}

/// Fills `buf` from `r` as far as it goes: whole chunks keep SFTP's requests full.
async fn read_full(
    r: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads the remote `path` into `out`, a chunk at a time; returns the bytes read.
pub async fn get(
    sftp: &SftpSession,
    path: &str,
    out: &mut (dyn AsyncWrite + Unpin + Send),
    progress: Progress<'_>,
) -> Result<u64, Failure> {
    let mut file = sftp
        .open(path)
        .await
        .map_err(|e| Failure::NotStarted(e.to_string()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Failure::Broken(e.to_string()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| Failure::Broken(format!("cannot write locally: {e}")))?;
        got += n as u64;
        progress(got);
    }
    out.flush()
        .await
        .map_err(|e| Failure::Broken(format!("cannot write locally: {e}")))?;
    Ok(got)
}

/// The login user's home directory as the SFTP server resolves `.`.
pub async fn home(sftp: &SftpSession) -> Result<String, Failure> {
    sftp.canonicalize(".")
        .await
        .map_err(|e| Failure::NotStarted(e.to_string()))
}
