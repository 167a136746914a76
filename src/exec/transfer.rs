//! Which way a large content travels, decided at apply time so that plans stay as they are:
//! a file write whose content is over [`SFTP_OVER`] bytes is staged on the host by the
//! transport (SFTP) and its script takes the staged file; a download is read by the transport
//! straight into the local file. A host without SFTP, or where the transport cannot start the
//! transfer, gets the stdin path (the step as planned) without a word: its script then says
//! what is wrong in the words it always has.

use std::path::Path;

use crate::plan::Step;
use crate::transport::{CommandSpec, Fetched, Staged, Transport};

/// Why a transfer failed: the transport's error, or the local file's.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("cannot write {}: {source}", .path.display())]
    Local {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Contents up to this size go on stdin (and may share a command: exec/batch.rs takes its
/// bound from here); larger ones by SFTP, where a channel and a subsystem per transfer cost
/// less than what they save.
pub const SFTP_OVER: usize = 1 << 20;

/// Reports (bytes moved, bytes in all when known) during a transfer.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Sync);

/// For one attempt of a write step, `cmd` with its content staged on the host instead of on
/// its stdin, when that is worth it and the host can; otherwise `cmd` unchanged. Each attempt
/// stages again: the script removes the staged file however it ends.
pub async fn staged_write(
    t: &dyn Transport,
    step: &Step,
    cmd: &CommandSpec,
    progress: Progress<'_>,
) -> Result<CommandSpec, TransferError> {
    let (Some(write), Some(content)) = (&step.write, &cmd.stdin) else {
        return Ok(cmd.clone());
    };
    // Contents with secrets keep the stdin path: they are never put in a file of their own.
    if content.len() <= SFTP_OVER || !step.stdin_secrets.is_empty() || step.stdin_sealed {
        return Ok(cmd.clone());
    }
    // The script's user is not the login user under sudo: its temporary file is made as for
    // stdin and the staged bytes copied in, so owner rules do not depend on the way.
    let copy = cmd.sudo.is_some();
    let dir = (!copy).then(|| crate::plan::file_write::parent_dir(&write.path));
    let total = content.len() as u64;
    let report = |done: u64| progress(done, Some(total));
    match t.stage(dir, content, &report).await? {
        Staged::Unavailable => Ok(cmd.clone()),
        Staged::At(path) => {
            let script = step.in_cwd(write.script_from_staged(&write.sha256, &path, copy));
            Ok(CommandSpec {
                script: script.into(),
                stdin: None,
                ..cmd.clone()
            })
        }
    }
}

/// Reads the remote `source` into the local `dest` through the transport, atomically as the
/// stdin path writes it; `Ok(false)` when the transport cannot (then nothing was written).
pub async fn download(
    t: &dyn Transport,
    source: &str,
    dest: &Path,
    progress: Progress<'_>,
) -> Result<bool, TransferError> {
    let local = |source| TransferError::Local {
        path: dest.to_path_buf(),
        source,
    };
    let tmp = local_temp(dest).map_err(local)?;
    let file = crate::nexus_dir::new_private_file()
        .open(&tmp)
        .map_err(local)?;
    let mut file = tokio::fs::File::from_std(file);
    let report = |done: u64| progress(done, None);
    let got = t.fetch(source, &mut file, &report).await;
    drop(file);
    let kept = match got {
        Ok(Fetched::Done(_)) => std::fs::rename(&tmp, dest).map(|()| true).map_err(local),
        Ok(Fetched::Unavailable) => Ok(false),
        Err(e) => Err(e.into()),
    };
    // Nothing is left behind but the file itself.
    if !matches!(kept, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
    }
    kept
}

/// The temporary file a download of `dest` is written to before its rename, its directory
/// made and any leftover of an interrupted download removed.
pub(super) fn local_temp(path: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("nexus-tmp");
    // A leftover of an interrupted download may have any mode; create_new must make it anew.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(tmp)
}
