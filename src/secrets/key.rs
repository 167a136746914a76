//! Vault keys: parsing them from key files and environment variables, generating them, deriving
//! them from a passphrase with argon2id, and the independent subkeys derived from them.

use std::io::{Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::SecretError;

/// Bytes in a vault key (AES-256).
pub const KEY_LEN: usize = 32;

// blake3 `derive_key` contexts: one subkey per purpose, so the encryption key, the key check value
// stored in the header and the fingerprint key reveal nothing about each other. Never change these:
// existing vaults and the fingerprints in existing plans depend on them.
const CONTEXT_ENCRYPT: &str = "nexus vault 2025-01 aes-256-gcm encryption key v1";
const CONTEXT_CHECK: &str = "nexus vault 2025-01 key check value v1";
const CONTEXT_FINGERPRINT: &str = "nexus vault 2025-01 secret fingerprint key v1";
const CONTEXT_CONTENT: &str = "nexus vault 2026-12 pre-image content aes-256-gcm key v1";

/// A 256-bit vault key, wiped from memory when dropped.
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn random() -> Result<Key, SecretError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(k.as_mut())?;
        Ok(Key(k))
    }

    /// Parses the contents of a key file: exactly 32 raw bytes, or what [`Key::parse_text`] takes.
    pub fn parse(material: &[u8]) -> Option<Key> {
        if material.len() == KEY_LEN {
            let mut k = Zeroizing::new([0u8; KEY_LEN]);
            k.copy_from_slice(material);
            return Some(Key(k));
        }
        Key::parse_text(std::str::from_utf8(material).ok()?)
    }

    /// Parses a key written as text (an environment variable): 64 hex digits or standard base64
    /// of 32 bytes, ignoring surrounding whitespace. Raw bytes are not accepted here: a 32-character
    /// password in a variable would otherwise pass for a key.
    pub fn parse_text(text: &str) -> Option<Key> {
        let text = text.trim();
        if text.len() == 2 * KEY_LEN {
            return hex_decode(text).map(Key);
        }
        use base64::Engine;
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD_NO_PAD_INDIFFERENT
                .decode(text)
                .ok()?,
        );
        (decoded.len() == KEY_LEN).then(|| {
            let mut k = Zeroizing::new([0u8; KEY_LEN]);
            k.copy_from_slice(&decoded);
            Key(k)
        })
    }

    /// Derives a key from a passphrase with argon2id.
    pub fn from_passphrase(
        passphrase: &str,
        salt: &[u8],
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
    ) -> Result<Key, SecretError> {
        let params = argon2::Params::new(m_cost, t_cost, p_cost, Some(KEY_LEN))
            .map_err(|e| SecretError::Kdf(e.to_string()))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase.as_bytes(), salt, k.as_mut())
            .map_err(|e| SecretError::Kdf(e.to_string()))?;
        Ok(Key(k))
    }

    /// The key AES-256-GCM uses.
    pub(crate) fn encryption_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(blake3::derive_key(CONTEXT_ENCRYPT, self.0.as_ref()))
    }

    /// The value stored in the vault header to tell a wrong key from a corrupted file. It is a
    /// one-way function of the key, so it reveals nothing about the key; see docs/secrets.md for
    /// why it does not make guessing a passphrase any cheaper.
    pub(crate) fn check_value(&self) -> blake3::Hash {
        blake3::Hash::from(blake3::derive_key(CONTEXT_CHECK, self.0.as_ref()))
    }

    /// The key for [`super::Vault::fingerprint`].
    pub(crate) fn fingerprint_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(blake3::derive_key(CONTEXT_FINGERPRINT, self.0.as_ref()))
    }

    /// The key that encrypts host contents kept at rest (pre-images).
    pub(crate) fn content_key(&self) -> super::ContentKey {
        super::ContentKey::new(blake3::derive_key(CONTEXT_CONTENT, self.0.as_ref()))
    }

    /// The key as 64 lowercase hex digits (what generated key files hold).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex_encode(self.0.as_ref()))
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), SecretError> {
    getrandom::fill(buf).map_err(|e| SecretError::Random(e.to_string()))
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub(crate) fn hex_decode<const N: usize>(text: &str) -> Option<Zeroizing<[u8; N]>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = Zeroizing::new([0u8; N]);
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Reads a key file, refusing one that group or others may read or write.
///
/// The mode is checked on the opened file (not on the path before opening) so that the file
/// checked is the file read.
pub fn read_key_file(path: &Path) -> Result<Key, SecretError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SecretError::KeyFileMissing {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(SecretError::Io {
                action: "read the key file",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let io = |source| SecretError::Io {
        action: "read the key file",
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::KeyFileMode {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let bad = || SecretError::BadKey {
        origin: format!("key file {}", path.display()),
    };
    // A key file is tiny; refusing large files keeps a mistaken path from being read whole.
    if !meta.is_file() || meta.len() > 1024 {
        return Err(bad());
    }
    let mut material = Zeroizing::new(Vec::with_capacity(128));
    file.read_to_end(&mut material).map_err(io)?;
    Key::parse(&material).ok_or_else(bad)
}

/// Writes a new random key to `path` as hex, mode 0600, refusing to replace an existing file.
pub fn generate_key_file(path: &Path) -> Result<Key, SecretError> {
    let key = Key::random()?;
    let io = |source| SecretError::Io {
        action: "create the key file",
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::nexus_dir::create(dir).map_err(io)?;
    }
    let mut file = crate::nexus_dir::new_private_file()
        .open(path)
        .map_err(io)?;
    let mut text = key.to_hex();
    text.push('\n');
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A half-written key file would later be refused as "not a key"; better none at all.
        let _ = std::fs::remove_file(path);
        return Err(io(e));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_base64_and_raw() {
        let raw: [u8; KEY_LEN] = std::array::from_fn(|i| i as u8 * 7);
        let hex = hex_encode(&raw);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let want = Key::from_bytes(raw).check_value();
        for material in [
            raw.to_vec(),
            hex.clone().into_bytes(),
            format!("{}\n", hex.to_uppercase()).into_bytes(),
            b64.clone().into_bytes(),
            b64.trim_end_matches('=').as_bytes().to_vec(),
        ] {
            let k = Key::parse(&material).expect("parses");
            assert_eq!(k.check_value(), want);
        }
        for bad in [&b"short"[..], &[b'z'; 64][..], &[0u8; 31][..], b""] {
            assert!(Key::parse(bad).is_none());
        }
        assert!(Key::parse_text("a 32-character password, really!").is_none());
        assert!(Key::parse_text(&hex).is_some());
    }

    #[test]
    fn subkeys_differ() {
        let k = Key::from_bytes([1; KEY_LEN]);
        assert_ne!(*k.encryption_key(), *k.fingerprint_key());
        assert_ne!(k.check_value().as_bytes(), &*k.encryption_key());
    }

    #[test]
    fn passphrase_depends_on_salt() {
        let a = Key::from_passphrase("correct horse", &[1; 16], 64, 1, 1).unwrap();
        let b = Key::from_passphrase("correct horse", &[2; 16], 64, 1, 1).unwrap();
        let c = Key::from_passphrase("correct horse", &[1; 16], 64, 1, 1).unwrap();
        assert_ne!(a.check_value(), b.check_value());
        assert_eq!(a.check_value(), c.check_value());
    }
}
