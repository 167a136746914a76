//! Reading the local files a configuration names: the configuration itself, its imports, and the
//! `source`, `template` and `upload` files. Only regular files are read, and configuration and
//! template files only up to [`MAX_TEXT_BYTES`]: `/dev/zero` was read until memory ran out, and a
//! FIFO blocked forever. The type is checked before opening (opening a FIFO for reading blocks
//! until a writer comes) and again on the open handle, and the read stops one byte past the limit
//! whatever the size claimed.

use std::fmt;
use std::fs::Metadata;
use std::io::Read;
use std::path::Path;

/// Largest configuration, imported file or template: far beyond any real one, far below memory.
pub const MAX_TEXT_BYTES: u64 = 64 * 1024 * 1024;

/// Why a local file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// A directory, FIFO, device or socket: what it is, with its article ("a FIFO").
    NotRegular(&'static str),
    TooLarge {
        limit: u64,
    },
    Io(std::io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            ReadError::TooLarge { limit } => write!(
                f,
                "it is larger than the limit of {} MiB",
                limit / (1024 * 1024)
            ),
            ReadError::Io(e) => f.write_str(&io_reason(e)),
        }
    }
}

impl std::error::Error for ReadError {}

impl ReadError {
    /// A sentence about `what` (a path as shown to the user): "x.kdl is a FIFO, not a regular file".
    pub fn about(&self, what: &str) -> String {
        match self {
            ReadError::Io(_) => format!("cannot read {what}: {self}"),
            _ => format!("{what} {}", self.to_string().trim_start_matches("it ")),
        }
    }

    /// The diagnostic code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::NotRegular(_) => "config::not-a-file",
            ReadError::TooLarge { .. } => "config::too-large",
            ReadError::Io(_) => "config::not-found",
        }
    }
}

/// An I/O error in the words messages use.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// What a file that is not a regular file is, for messages; `None` for a regular file.
pub fn irregular_kind(meta: &Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Checks that `path` (following symlinks) is a regular file no larger than `limit`, without
/// opening it.
pub fn check_regular(path: &Path, limit: Option<u64>) -> Result<Metadata, ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if let Some(kind) = irregular_kind(&meta) {
        return Err(ReadError::NotRegular(kind));
    }
    match limit {
        Some(limit) if meta.len() > limit => Err(ReadError::TooLarge { limit }),
        _ => Ok(meta),
    }
}

/// Opens a regular file no larger than `limit`, checked before opening and on the handle.
fn open_regular(path: &Path, limit: Option<u64>) -> Result<(std::fs::File, Metadata), ReadError> {
    check_regular(path, limit)?;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    // The path may have been replaced between the check and the open.
    let meta = file.metadata().map_err(ReadError::Io)?;
    if let Some(kind) = irregular_kind(&meta) {
        return Err(ReadError::NotRegular(kind));
    }
    Ok((file, meta))
}

/// A file copied byte for byte: held whole, or when large, only what pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    Whole(Vec<u8>),
    Large(Digest),
}

/// What pins a content without holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    /// Lower-case hex, as the plan keys contents.
    pub blake3: String,
    /// Lower-case hex, as `sha256sum` prints it.
    pub sha256: String,
}

/// Reads a regular file copied byte for byte: whole up to `over` bytes, digested a chunk at a
/// time above (a release archive must not be held in memory, nor in the plan).
pub fn read_copied(path: &Path, over: u64) -> Result<Copied, ReadError> {
    let (mut file, meta) = open_regular(path, None)?;
    if meta.len() <= over {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(ReadError::Io)?;
        return Ok(Copied::Whole(bytes));
    }
    digest(&mut file).map(Copied::Large).map_err(ReadError::Io)
}

/// Bytes read at a time when digesting, and buffers in use at most: reading runs ahead of the
/// two hashes by up to that many chunks, and memory stays at their sum (8 MiB).
const DIGEST_CHUNK: usize = 2 << 20;
const DIGEST_BUFFERS: usize = 4;

/// The digest of everything `r` gives, read a chunk at a time. The calling thread reads while
/// two others hash what it read before (blake3 on one, sha256 on the other), so a large file
/// costs about its slower hash (sha256) alone, not the read and the hashes in a row.
pub fn digest(r: &mut dyn Read) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    use std::sync::{Arc, mpsc};
    type Chunk = Arc<Vec<u8>>;
    // Each hasher drops its share of a chunk and then says so: the reader waits for that to
    // reuse the oldest buffer once all of them are out.
    let (released_tx, released) = mpsc::channel::<()>();
    let (sha_tx, sha_rx) = mpsc::sync_channel::<Chunk>(DIGEST_BUFFERS);
    let (b3_tx, b3_rx) = mpsc::sync_channel::<Chunk>(DIGEST_BUFFERS);
    std::thread::scope(|s| {
        let sha_released = released_tx.clone();
        let sha = s.spawn(move || {
            let mut h = sha2::Sha256::new();
            hash_each(sha_rx, &sha_released, |c| h.update(c));
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        let b3 = s.spawn(move || {
            let mut h = blake3::Hasher::new();
            hash_each(b3_rx, &released_tx, |c| {
                h.update(c);
            });
            h.finalize().to_hex().to_string()
        });
        let read = (|| {
            let mut out: std::collections::VecDeque<Chunk> = Default::default();
            let mut size = 0u64;
            loop {
                let mut buf = if out.len() < DIGEST_BUFFERS {
                    vec![0u8; DIGEST_CHUNK]
                } else {
                    let mut oldest = out.pop_front().expect("buffers are out");
                    loop {
                        match Arc::try_unwrap(oldest) {
                            Ok(b) => break b,
                            Err(still_shared) => {
                                oldest = still_shared;
                                // Both hashers gone (one panicked): the join below says so.
                                if released.recv().is_err() {
                                    return Ok(size);
                                }
                            }
                        }
                    }
                };
                buf.resize(DIGEST_CHUNK, 0);
                let n = read_full(r, &mut buf)?;
                if n == 0 {
                    return Ok(size);
                }
                buf.truncate(n);
                size += n as u64;
                let chunk = Arc::new(buf);
                if sha_tx.send(chunk.clone()).is_err() || b3_tx.send(chunk.clone()).is_err() {
                    return Ok(size);
                }
                out.push_back(chunk);
            }
        })();
        drop((sha_tx, b3_tx));
        let sha256 = sha.join().expect("the sha256 thread panicked");
        let blake3 = b3.join().expect("the blake3 thread panicked");
        read.map(|size| Digest {
            size,
            blake3,
            sha256,
        })
    })
}

/// Gives each chunk `chunks` brings to `update`, then lets it go and says so on `released`.
fn hash_each(
    chunks: std::sync::mpsc::Receiver<std::sync::Arc<Vec<u8>>>,
    released: &std::sync::mpsc::Sender<()>,
    mut update: impl FnMut(&[u8]),
) {
    for chunk in chunks {
        update(&chunk);
        drop(chunk);
        let _ = released.send(());
    }
}

/// Fills `buf` from `r` as far as it goes (short only at the end).
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a regular file, at most `limit` bytes of it when given.
pub fn read_regular(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, ReadError> {
    let (file, _) = open_regular(path, limit)?;
    let mut bytes = Vec::new();
    let cap = limit.map_or(u64::MAX, |l| l + 1);
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    match limit {
        Some(limit) if bytes.len() as u64 > limit => Err(ReadError::TooLarge { limit }),
        _ => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives `bytes` in reads of odd sizes, then fails if told to.
    struct Dribble<'a> {
        bytes: &'a [u8],
        at: usize,
        fail_at: Option<usize>,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.at >= f) {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(777_777).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_digest_over_many_buffers_is_of_the_whole_content() {
        // More chunks than buffers, the last one short, read in odd pieces.
        let len = DIGEST_CHUNK * (DIGEST_BUFFERS * 2 + 1) + 12_345;
        let bytes: Vec<u8> = (0..len as u64).map(|i| (i * 31 % 251) as u8).collect();
        let mut r = Dribble {
            bytes: &bytes,
            at: 0,
            fail_at: None,
        };
        let d = digest(&mut r).unwrap();
        assert_eq!(d.size, len as u64);
        assert_eq!(d.blake3, blake3::hash(&bytes).to_hex().as_str());
        assert_eq!(d.sha256, crate::plan::file_write::sha256_hex(&bytes));
        assert_eq!(
            digest(&mut &b""[..]).unwrap().sha256,
            crate::plan::file_write::sha256_hex(b"")
        );
        // A read that fails half way fails the digest.
        let mut r = Dribble {
            bytes: &bytes,
            at: 0,
            fail_at: Some(DIGEST_CHUNK * 5),
        };
        assert_eq!(digest(&mut r).unwrap_err().to_string(), "disk on fire");
    }

    #[test]
    fn copied_files_are_held_up_to_the_threshold_and_digested_above() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(
            read_copied(&f, 10).unwrap(),
            Copied::Whole(b"0123456789".to_vec())
        );
        let Copied::Large(d) = read_copied(&f, 9).unwrap() else {
            panic!("not digested");
        };
        assert_eq!(d.size, 10);
        assert_eq!(d.blake3, blake3::hash(b"0123456789").to_hex().as_str());
        assert_eq!(d.sha256, crate::plan::file_write::sha256_hex(b"0123456789"));
        assert!(matches!(
            read_copied(Path::new("/dev/zero"), 9),
            Err(ReadError::NotRegular("a device"))
        ));
    }

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, "abc").unwrap();
        assert_eq!(read_regular(&f, Some(3)).unwrap(), b"abc");
        assert!(matches!(
            read_regular(&f, Some(2)),
            Err(ReadError::TooLarge { limit: 2 })
        ));
        assert!(matches!(
            read_regular(dir.path(), None),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read_regular(Path::new("/dev/null"), None),
            Err(ReadError::NotRegular("a device"))
        ));
        let e = read_regular(&dir.path().join("missing"), None).unwrap_err();
        assert_eq!(e.to_string(), "no such file");
    }
}
