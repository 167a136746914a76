//! The vault file format (version 1), three lines of text:
//!
//! ```text
//! nexus-vault 1
//! {"cipher":"aes-256-gcm","kdf":{"name":"none"},"key_check":"<64 hex>"}
//! <base64 of: 12-byte nonce || AES-256-GCM ciphertext || 16-byte tag>
//! ```
//!
//! The first two lines (each with its `\n`) are the associated data of the encryption, so an
//! edited header fails authentication just like an edited ciphertext. The plaintext is the JSON
//! object `{"secrets":{"NAME":"value",...}}`. docs/secrets.md documents the format for users.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::SecretError;
use super::key::{Key, fill_random, hex_decode, hex_encode};

pub const MAGIC: &str = "nexus-vault";
pub const VERSION: u32 = 1;
pub const CIPHER: &str = "aes-256-gcm";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Salt bytes created by `secret init` for a passphrase vault.
pub const SALT_LEN: usize = 16;
/// argon2id costs for new passphrase vaults: 64 MiB and 3 passes (RFC 9106's second recommended
/// option), one lane because the argon2 crate runs lanes one after another anyway. The costs are
/// stored in the header, so raising them later does not break existing vaults.
pub const ARGON2_M_COST: u32 = 64 * 1024;
pub const ARGON2_T_COST: u32 = 3;
pub const ARGON2_P_COST: u32 = 1;
// Upper bounds accepted when reading a header: an edited header must not be able to make nexus
// allocate gigabytes or spin for hours before it can say the file is wrong.
const MAX_M_COST: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;
const MAX_SALT_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub cipher: String,
    pub kdf: Kdf,
    /// Hex of [`Key::check_value`].
    pub key_check: String,
}

/// How the key is obtained: given as is (key file or environment), or derived from a passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Kdf {
    None,
    Argon2id {
        /// Standard base64.
        salt: String,
        /// KiB of memory.
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
    },
}

impl Kdf {
    /// A new argon2id setting with a fresh random salt: every `secret init` gets its own salt, so
    /// the same passphrase gives a different key for every vault.
    pub fn new_argon2id() -> Result<Kdf, SecretError> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        Ok(Kdf::Argon2id {
            salt: base64::engine::general_purpose::STANDARD.encode(salt),
            m_cost: ARGON2_M_COST,
            t_cost: ARGON2_T_COST,
            p_cost: ARGON2_P_COST,
        })
    }

    /// The key for `passphrase`; `None` for a vault that does not use a passphrase.
    pub fn derive(&self, passphrase: &str) -> Option<Result<Key, SecretError>> {
        match self {
            Kdf::None => None,
            Kdf::Argon2id {
                salt,
                m_cost,
                t_cost,
                p_cost,
            } => {
                // Validated by `parse`, and written by `new_argon2id`.
                let salt = base64::engine::general_purpose::STANDARD
                    .decode(salt)
                    .unwrap_or_default();
                Some(Key::from_passphrase(
                    passphrase, &salt, *m_cost, *t_cost, *p_cost,
                ))
            }
        }
    }

    fn validate(&self) -> Result<(), ParseError> {
        if let Kdf::Argon2id {
            salt,
            m_cost,
            t_cost,
            p_cost,
        } = self
        {
            let salt = base64::engine::general_purpose::STANDARD
                .decode(salt)
                .map_err(|_| ParseError::Corrupted("the header's salt is not base64".into()))?;
            if !(argon2::MIN_SALT_LEN..=MAX_SALT_LEN).contains(&salt.len()) {
                return Err(ParseError::Corrupted(format!(
                    "the header's salt has {} bytes",
                    salt.len()
                )));
            }
            if !(1..=MAX_P_COST).contains(p_cost)
                || !(1..=MAX_T_COST).contains(t_cost)
                || !(8 * p_cost..=MAX_M_COST).contains(m_cost)
            {
                return Err(ParseError::Corrupted(format!(
                    "the header's argon2id costs are out of range (m={m_cost}, t={t_cost}, p={p_cost})"
                )));
            }
        }
        Ok(())
    }
}

impl Header {
    pub fn new(kdf: Kdf, key: &Key) -> Header {
        Header {
            cipher: CIPHER.to_string(),
            kdf,
            key_check: hex_encode(key.check_value().as_bytes()),
        }
    }

    /// The first two lines of the file, exactly as written; also the associated data.
    pub fn text(&self) -> String {
        format!(
            "{MAGIC} {VERSION}\n{}\n",
            serde_json::to_string(self).expect("header serializes")
        )
    }

    /// Whether `key` is the key this header was written with (constant-time comparison).
    pub fn key_matches(&self, key: &Key) -> bool {
        hex_decode::<32>(&self.key_check)
            .is_some_and(|want| key.check_value() == blake3::Hash::from(*want))
    }
}

/// Why a file could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    NotAVault,
    Version(u32),
    Corrupted(String),
}

/// A parsed vault file, not yet decrypted.
pub struct Sealed {
    pub header: Header,
    /// The associated data: the first two lines as read (without any `\r`), each with `\n`.
    pub aad: String,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

/// Splits a vault file into header and ciphertext and checks everything that can be checked
/// without the key.
pub fn parse(bytes: &[u8]) -> Result<Sealed, ParseError> {
    let corrupted = |d: &str| ParseError::Corrupted(d.to_string());
    if bytes.is_empty() {
        return Err(corrupted("the file is empty"));
    }
    // Tolerate CRLF line ends (a checkout that converted them) by reading lines without `\r`;
    // the associated data is rebuilt from the lines, so it is the same as when written.
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let version = std::str::from_utf8(first)
        .ok()
        .and_then(|l| l.strip_prefix(MAGIC))
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or(ParseError::NotAVault)?;
    let version: u32 = version.trim().parse().map_err(|_| ParseError::NotAVault)?;
    if version != VERSION {
        return Err(ParseError::Version(version));
    }
    let header_line = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| corrupted("the file is truncated: no header"))?;
    let header_line =
        std::str::from_utf8(header_line).map_err(|_| corrupted("the header is not UTF-8 text"))?;
    let header: Header = serde_json::from_str(header_line)
        .map_err(|e| ParseError::Corrupted(format!("the header is not valid: {e}")))?;
    if header.cipher != CIPHER {
        return Err(ParseError::Corrupted(format!(
            "unknown cipher `{}` in the header",
            header.cipher
        )));
    }
    if hex_decode::<32>(&header.key_check).is_none() {
        return Err(corrupted(
            "the header's key check value is not 64 hex digits",
        ));
    }
    header.kdf.validate()?;
    let body = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| corrupted("the file is truncated: no ciphertext"))?;
    if lines.any(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        return Err(corrupted("unexpected text after the ciphertext"));
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| corrupted("the ciphertext is not valid base64"))?;
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(corrupted("the ciphertext is truncated"));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&body[..NONCE_LEN]);
    let aad = format!(
        "{}\n{header_line}\n",
        std::str::from_utf8(first).expect("checked above")
    );
    Ok(Sealed {
        header,
        aad,
        nonce,
        ciphertext: body[NONCE_LEN..].to_vec(),
    })
}

impl Sealed {
    /// Decrypts and authenticates; `None` when the key is wrong or anything was modified.
    pub fn open(&self, key: &Key) -> Option<Zeroizing<Vec<u8>>> {
        let cipher =
            aes_gcm::Aes256Gcm::new_from_slice(key.encryption_key().as_ref()).expect("32-byte key");
        cipher
            .decrypt(
                &self.nonce.into(),
                Payload {
                    msg: &self.ciphertext,
                    aad: self.aad.as_bytes(),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// Encrypts `plaintext` under a fresh random nonce and returns the whole file.
pub fn seal(key: &Key, header_text: &str, plaintext: &[u8]) -> Result<String, SecretError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let cipher =
        aes_gcm::Aes256Gcm::new_from_slice(key.encryption_key().as_ref()).expect("32-byte key");
    let ciphertext = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: header_text.as_bytes(),
            },
        )
        // Only possible beyond 64 GiB of plaintext.
        .map_err(|_| SecretError::Random("encryption failed: the vault is too large".into()))?;
    let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&ciphertext);
    Ok(format!(
        "{header_text}{}\n",
        base64::engine::general_purpose::STANDARD.encode(body)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes([7; 32])
    }

    #[test]
    fn round_trip_and_fresh_nonce() {
        let k = key();
        let h = Header::new(Kdf::None, &k).text();
        let a = seal(&k, &h, b"{\"secrets\":{}}").unwrap();
        let b = seal(&k, &h, b"{\"secrets\":{}}").unwrap();
        assert_ne!(a, b, "a fresh nonce for every write");
        for file in [&a, &b] {
            let s = parse(file.as_bytes()).unwrap();
            assert!(s.header.key_matches(&k));
            assert_eq!(&**s.open(&k).unwrap(), b"{\"secrets\":{}}");
        }
        // CRLF line ends still authenticate.
        let crlf = a.replace('\n', "\r\n");
        assert!(parse(crlf.as_bytes()).unwrap().open(&k).is_some());
    }

    #[test]
    fn header_is_authenticated() {
        let k = key();
        let h = Header::new(Kdf::None, &k).text();
        let file = seal(&k, &h, b"{}").unwrap();
        let edited = file.replacen("{\"cipher\"", "{ \"cipher\"", 1);
        let s = parse(edited.as_bytes()).unwrap();
        assert!(s.header.key_matches(&k));
        assert!(s.open(&k).is_none());
    }

    #[test]
    fn refuses_bad_files() {
        assert!(matches!(parse(b"hello\n"), Err(ParseError::NotAVault)));
        assert!(matches!(
            parse(b"nexus-vault 2\n{}\nAAAA\n"),
            Err(ParseError::Version(2))
        ));
        assert!(matches!(parse(b""), Err(ParseError::Corrupted(_))));
        assert!(matches!(
            parse(b"nexus-vault 1\n"),
            Err(ParseError::Corrupted(_))
        ));
        let k = key();
        let kdf = Kdf::Argon2id {
            salt: base64::engine::general_purpose::STANDARD.encode([0u8; 16]),
            m_cost: u32::MAX,
            t_cost: 1,
            p_cost: 1,
        };
        let h = Header::new(kdf, &k).text();
        let file = seal(&k, &h, b"{}").unwrap();
        assert!(matches!(
            parse(file.as_bytes()),
            Err(ParseError::Corrupted(d)) if d.contains("out of range")
        ));
    }
}
