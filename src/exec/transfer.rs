//! Which way a large content travels, decided at apply time so that plans stay as they are:
//! a file write whose content is over [`SFTP_OVER`] bytes is staged on the host by the
//! transport (SFTP) and its script takes the staged file; a download is read by the transport
//! straight into the local file. A host without SFTP, or where the transport cannot start the
//! transfer, gets the stdin path (the step as planned) without a word: its script then says
//! what is wrong in the words it always has.
//!
//! A content the plan pins but does not carry ([`crate::plan::StreamedContent`]) is read from
//! its local file as it is sent, and hashed on the way: bytes other than the plan's are never
//! renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::{Step, StreamedContent};
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
    #[error(transparent)]
    Pinned(#[from] PinnedError),
}

/// Why the local file of a streamed content cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("{source_file}: {reason}")]
pub struct PinnedError {
    /// As the plan names it.
    pub source_file: String,
    pub reason: String,
}

impl PinnedError {
    fn changed(s: &StreamedContent) -> PinnedError {
        PinnedError {
            source_file: s.source.clone(),
            reason: format!(
                "changed since the plan (it pinned {} bytes with sha256 {}…)",
                s.size,
                &s.sha256[..s.sha256.len().min(12)]
            ),
        }
    }

    fn unreadable(s: &StreamedContent, e: &std::io::Error) -> PinnedError {
        PinnedError {
            source_file: s.source.clone(),
            reason: format!("cannot be read: {}", crate::syntax::files::io_reason(e)),
        }
    }
}

/// A content the plan pins but does not carry, with where its local file is.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    pub blake3: &'a str,
    pub content: &'a StreamedContent,
    /// The directory the plan's local paths are relative to.
    pub base: &'a Path,
}

impl Pinned<'_> {
    fn path(&self) -> PathBuf {
        self.base.join(&self.content.source)
    }

    /// Opens the local file, which must be a regular file (a plan naming `/dev/zero` or a FIFO
    /// would otherwise be read forever).
    fn open(&self) -> Result<std::fs::File, PinnedError> {
        let not_regular = |kind: &str| PinnedError {
            source_file: self.content.source.clone(),
            reason: format!("cannot be read: it is {kind}, not a regular file"),
        };
        // Checked before opening too: opening a FIFO waits for a writer.
        let meta = std::fs::metadata(self.path())
            .map_err(|e| PinnedError::unreadable(self.content, &e))?;
        if let Some(kind) = crate::syntax::files::irregular_kind(&meta) {
            return Err(not_regular(kind));
        }
        let file = std::fs::File::open(self.path())
            .map_err(|e| PinnedError::unreadable(self.content, &e))?;
        let meta = file
            .metadata()
            .map_err(|e| PinnedError::unreadable(self.content, &e))?;
        match crate::syntax::files::irregular_kind(&meta) {
            Some(kind) => Err(not_regular(kind)),
            None => Ok(file),
        }
    }
}

/// Checks every local file a plan streams against what the plan pins, before anything runs:
/// a release rebuilt since planning is refused, not sent.
pub fn check_pinned(base: &Path, streamed: &BTreeMap<String, StreamedContent>) -> Vec<PinnedError> {
    streamed
        .iter()
        .filter_map(|(blake3, content)| {
            let p = Pinned {
                blake3,
                content,
                base,
            };
            let file = match p.open() {
                Ok(f) => f,
                Err(e) => return Some(e),
            };
            // One byte past the pinned size tells a grown file without reading all of it.
            let mut hasher = blake3::Hasher::new();
            if let Err(e) = hasher.update_reader(std::io::Read::take(file, content.size + 1)) {
                return Some(PinnedError::unreadable(content, &e));
            }
            (hasher.count() != content.size || hasher.finalize().to_hex().as_str() != blake3)
                .then(|| PinnedError::changed(content))
        })
        .collect()
}

/// Contents up to this size go on stdin (and may share a command: exec/batch.rs takes its
/// bound from here); larger ones by SFTP, where a channel and a subsystem per transfer cost
/// less than what they save. The same bound as the one above which a copied local file is
/// streamed rather than carried in the plan.
pub const SFTP_OVER: usize = crate::plan::STREAM_OVER as usize;

/// Reports (bytes moved, bytes in all when known) during a transfer.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Sync);

/// For one attempt of a write step, `cmd` with its content staged on the host instead of on
/// its stdin, when that is worth it and the host can; otherwise `cmd` unchanged. Each attempt
/// stages again: the script removes the staged file however it ends.
pub async fn staged_write(
    t: &dyn Transport,
    step: &Step,
    cmd: &CommandSpec,
    pinned: Option<Pinned<'_>>,
    progress: Progress<'_>,
) -> Result<CommandSpec, TransferError> {
    if let (Some(_), Some(p)) = (&step.write, pinned) {
        return staged_pinned(t, step, cmd, p, progress).await;
    }
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
    match t.stage(dir, &mut content.as_slice(), &report).await? {
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

/// A write of a pinned content: staged from its local file, hashed as it is read. Without
/// SFTP the file is read whole (checked against the plan) and sent on stdin as planned.
async fn staged_pinned(
    t: &dyn Transport,
    step: &Step,
    cmd: &CommandSpec,
    p: Pinned<'_>,
    progress: Progress<'_>,
) -> Result<CommandSpec, TransferError> {
    let Some(write) = &step.write else {
        return Ok(cmd.clone());
    };
    let file = tokio::fs::File::from_std(p.open()?);
    // Never more than the plan pinned, plus the byte that tells it grew.
    let mut reader = Hashing {
        inner: tokio::io::AsyncReadExt::take(file, p.content.size + 1),
        hasher: blake3::Hasher::new(),
    };
    let copy = cmd.sudo.is_some();
    let dir = (!copy).then(|| crate::plan::file_write::parent_dir(&write.path));
    let total = p.content.size;
    let report = |done: u64| progress(done, Some(total));
    match t.stage(dir, &mut reader, &report).await? {
        Staged::Unavailable => {
            let mut bytes = Vec::new();
            let file = tokio::fs::File::from_std(p.open()?);
            tokio::io::AsyncReadExt::read_to_end(
                &mut tokio::io::AsyncReadExt::take(file, p.content.size + 1),
                &mut bytes,
            )
            .await
            .map_err(|e| PinnedError::unreadable(p.content, &e))?;
            if blake3::hash(&bytes).to_hex().as_str() != p.blake3 {
                return Err(PinnedError::changed(p.content).into());
            }
            Ok(cmd.clone().stdin(bytes))
        }
        Staged::At(path) => {
            if reader.hasher.count() != total
                || reader.hasher.finalize().to_hex().as_str() != p.blake3
            {
                // Never renamed into place: the staged bytes are not the plan's.
                let rm = CommandSpec::new(format!("rm -f -- {}", crate::shell::quote(&path)));
                let _ = t.run(&rm).await;
                return Err(PinnedError::changed(p.content).into());
            }
            let script = step.in_cwd(write.script_from_staged(&write.sha256, &path, copy));
            Ok(CommandSpec {
                script: script.into(),
                stdin: None,
                ..cmd.clone()
            })
        }
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            self.hasher.update(fresh);
        }
        polled
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(bytes: &[u8], source: &str) -> (String, StreamedContent) {
        let d = crate::syntax::files::digest(&mut &bytes[..]).unwrap();
        (
            d.blake3,
            StreamedContent {
                source: source.into(),
                size: d.size,
                sha256: d.sha256,
            },
        )
    }

    #[test]
    fn pinned_files_are_checked_against_the_plan_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same.bin"), b"release 1").unwrap();
        std::fs::write(dir.path().join("rebuilt.bin"), b"release 2").unwrap();
        std::fs::write(dir.path().join("grown.bin"), b"release 1+").unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.path().join("fifo.bin"))
            .status()
            .unwrap();
        assert!(made.success());
        // One content under several names: a plan keeps one source per content, so each apart.
        for source in [
            "same.bin",
            "rebuilt.bin",
            "grown.bin",
            "gone.bin",
            "/dev/zero",
            "fifo.bin",
        ] {
            let (key, content) = pin(b"release 1", source);
            let one: BTreeMap<_, _> = [(key, content.clone())].into();
            let problems: Vec<String> = check_pinned(dir.path(), &one)
                .iter()
                .map(ToString::to_string)
                .collect();
            let want: &[&str] = match content.source.as_str() {
                "same.bin" => &[],
                "gone.bin" => &["gone.bin: cannot be read: no such file"],
                // Read to its end, it would never end.
                "/dev/zero" => &["/dev/zero: cannot be read: it is a device, not a regular file"],
                // Opened, it would wait for a writer.
                "fifo.bin" => &["fifo.bin: cannot be read: it is a FIFO, not a regular file"],
                other => &[&format!(
                    "{other}: changed since the plan (it pinned 9 bytes"
                )],
            };
            assert_eq!(problems.len(), want.len(), "{source}: {problems:?}");
            for (p, w) in problems.iter().zip(want) {
                assert!(p.starts_with(w), "{p} / {w}");
            }
        }
    }

    #[tokio::test]
    async fn what_is_sent_is_hashed_on_the_way() {
        use tokio::io::AsyncReadExt as _;
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = Hashing {
            inner: &bytes[..],
            hasher: blake3::Hasher::new(),
        };
        let mut buf = [0u8; 7_000];
        while r.read(&mut buf).await.unwrap() > 0 {}
        assert_eq!(r.hasher.count(), bytes.len() as u64);
        assert_eq!(r.hasher.finalize(), blake3::hash(&bytes));
    }
}
