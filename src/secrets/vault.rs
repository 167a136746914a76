//! [`Vault`]: opening (key sources), reading, changing and atomically saving the vault file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::format::{self, Header, Kdf, ParseError};
use super::key::{self, Key, fill_random, hex_encode};
use super::{SecretError, check_name, redact};

/// Where the vault lives when the configuration has no `vault path=...`, relative to the directory
/// of the configuration file.
pub const DEFAULT_PATH: &str = ".nexus/secrets.vault";
/// The environment variable holding the vault key, unless the `vault` node's `key-env` names another.
pub const KEY_ENV: &str = "NEXUS_VAULT_KEY";
/// The environment variable holding the passphrase of a passphrase-protected vault.
pub const PASSPHRASE_ENV: &str = "NEXUS_VAULT_PASSPHRASE";
/// Shortest passphrase `secret init` accepts.
const MIN_PASSPHRASE_CHARS: usize = 8;

/// Where the vault file is and where its key may come from: the configuration's `vault` node,
/// with paths already resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub path: PathBuf,
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
}

impl Settings {
    /// The settings of the configuration's `vault` node, or the defaults (`.nexus/secrets.vault`
    /// under `base_dir`, key from `NEXUS_VAULT_KEY`) when there is none.
    pub fn from_config(cfg: Option<&Settings>, base_dir: &Path) -> Settings {
        match cfg {
            Some(v) => Settings {
                path: v.path.clone(),
                key_file: v.key_file.clone(),
                key_env: v.key_env.clone(),
            },
            None => Settings {
                path: base_dir.join(DEFAULT_PATH),
                key_file: None,
                key_env: None,
            },
        }
    }

    /// The environment variable that holds the key.
    pub fn key_env(&self) -> &str {
        self.key_env.as_deref().unwrap_or(KEY_ENV)
    }
}

/// Where the key of an open vault came from (named in errors; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    KeyFile(PathBuf),
    Env(String),
    /// A passphrase through argon2id; `env` names the variable it came from, if not a prompt.
    Passphrase {
        env: Option<String>,
    },
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::KeyFile(p) => write!(f, "key file {}", p.display()),
            KeySource::Env(v) => write!(f, "key in environment variable {v}"),
            KeySource::Passphrase { env: Some(v) } => write!(f, "passphrase from {v}"),
            KeySource::Passphrase { env: None } => write!(f, "passphrase typed at the prompt"),
        }
    }
}

/// Asks the user for a passphrase; gets the prompt text. Only the CLI supplies one.
pub type Prompt<'a> = &'a dyn Fn(&str) -> std::io::Result<Zeroizing<String>>;

/// What opening a vault may consult: the environment (a function, so callers and tests can pass
/// a fixed one) and, for interactive use only, a passphrase prompt.
pub struct Unlock<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub prompt: Option<Prompt<'a>>,
}

impl<'a> Unlock<'a> {
    /// Non-interactive: keys and passphrases come from the environment only.
    pub fn env(env: &'a dyn Fn(&str) -> Option<String>) -> Unlock<'a> {
        Unlock { env, prompt: None }
    }
}

/// The key a new vault is created with.
pub enum NewKey {
    /// Derive the key with argon2id from this passphrase and a new random salt; `env` names the
    /// variable the passphrase came from, if it was not typed at a prompt.
    Passphrase {
        passphrase: Zeroizing<String>,
        env: Option<String>,
    },
    /// Use the key in this file, generating a new random one (mode 0600) if the file does not exist.
    KeyFile(PathBuf),
    /// Use the key in the environment variable of [`Settings::key_env`].
    Env,
}

/// The plaintext inside the encryption.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    secrets: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ContentsRef<'a> {
    secrets: BTreeMap<&'a str, &'a str>,
}

/// An open, decrypted vault. Values, the key and derived keys are wiped from memory on drop.
pub struct Vault {
    path: PathBuf,
    /// The first two lines of the file (the associated data), kept byte for byte across saves so
    /// the salt, costs and key check value never change after `secret init`.
    header_text: String,
    key: Key,
    fingerprint_key: Zeroizing<[u8; key::KEY_LEN]>,
    source: KeySource,
    secrets: BTreeMap<String, Zeroizing<String>>,
    /// Held from opening for update until drop, so concurrent `secret set`s do not lose writes.
    _lock: Option<File>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("source", &self.source)
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the configured vault read-only and non-interactively: the key comes from the key
    /// file or the environment, a passphrase from `NEXUS_VAULT_PASSPHRASE`. This is what the
    /// planner and the executor use. Nothing is written.
    pub fn open(
        cfg: Option<&Settings>,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vault, SecretError> {
        Vault::open_at(&Settings::from_config(cfg, base_dir), &Unlock::env(env))
    }

    /// Opens the vault of `settings` read-only.
    pub fn open_at(settings: &Settings, unlock: &Unlock<'_>) -> Result<Vault, SecretError> {
        Vault::open_inner(settings, unlock, None)
    }

    /// Opens the vault to change it: takes an exclusive lock (a `.lock` file beside the vault) that
    /// is held until the returned vault is dropped, then reads the vault.
    pub fn open_for_update(settings: &Settings, unlock: &Unlock<'_>) -> Result<Vault, SecretError> {
        if !settings.path.exists() {
            return Err(SecretError::NotFound {
                path: settings.path.clone(),
            });
        }
        let lock = lock(&settings.path)?;
        Vault::open_inner(settings, unlock, Some(lock))
    }

    fn open_inner(
        settings: &Settings,
        unlock: &Unlock<'_>,
        lock: Option<File>,
    ) -> Result<Vault, SecretError> {
        let path = &settings.path;
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SecretError::NotFound { path: path.clone() }
            } else {
                SecretError::Io {
                    action: "read the vault",
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let corrupted = |detail: String| SecretError::Corrupted {
            path: path.clone(),
            detail,
        };
        let sealed = format::parse(&bytes).map_err(|e| match e {
            ParseError::NotAVault => SecretError::NotAVault { path: path.clone() },
            ParseError::Version(found) => SecretError::UnsupportedVersion {
                path: path.clone(),
                found,
            },
            ParseError::Corrupted(d) => corrupted(d),
        })?;
        let (key, source) = match &sealed.header.kdf {
            Kdf::None => raw_key(settings, unlock)?,
            kdf @ Kdf::Argon2id { .. } => {
                let (passphrase, source) = passphrase(settings, unlock)?;
                let key = kdf.derive(&passphrase).expect("argon2id derives")?;
                (key, source)
            }
        };
        // The key check value tells a wrong key from a damaged file, so each gets its own message.
        if !sealed.header.key_matches(&key) {
            return Err(SecretError::WrongKey {
                path: path.clone(),
                used: source,
            });
        }
        let plaintext = sealed.open(&key).ok_or_else(|| {
            corrupted("authentication failed: the ciphertext or the header was changed".into())
        })?;
        let contents: Contents = serde_json::from_slice(&plaintext)
            .map_err(|e| corrupted(format!("the decrypted contents are not valid: {e}")))?;
        let mut secrets = BTreeMap::new();
        for (name, value) in contents.secrets {
            let value = Zeroizing::new(value);
            if check_name(&name).is_err() || value.is_empty() {
                return Err(corrupted(format!(
                    "the decrypted contents hold an invalid entry `{}`",
                    name.escape_debug()
                )));
            }
            secrets.insert(name, value);
        }
        Ok(Vault {
            path: path.clone(),
            header_text: sealed.aad.clone(),
            fingerprint_key: key.fingerprint_key(),
            key,
            source,
            secrets,
            _lock: lock,
        })
    }

    /// Creates a new, empty vault at `settings.path`, refusing to replace an existing file.
    pub fn create(
        settings: &Settings,
        new_key: NewKey,
        unlock: &Unlock<'_>,
    ) -> Result<Vault, SecretError> {
        let path = &settings.path;
        let exists = || SecretError::Exists { path: path.clone() };
        if path.exists() {
            return Err(exists());
        }
        // The key first: a refused key (unsafe key file, short passphrase) leaves no trace.
        let (key, kdf, source) = match new_key {
            NewKey::Passphrase { passphrase: p, env } => {
                if p.chars().count() < MIN_PASSPHRASE_CHARS {
                    return Err(SecretError::WeakPassphrase {
                        min: MIN_PASSPHRASE_CHARS,
                    });
                }
                // The salt is created here, once, and stored in the header: every later open
                // derives the same key from it.
                let kdf = Kdf::new_argon2id()?;
                let key = kdf.derive(&p).expect("argon2id derives")?;
                (key, kdf, KeySource::Passphrase { env })
            }
            NewKey::KeyFile(file) => {
                let key = if file.exists() {
                    key::read_key_file(&file)?
                } else {
                    key::generate_key_file(&file)?
                };
                (key, Kdf::None, KeySource::KeyFile(file))
            }
            NewKey::Env => {
                let var = settings.key_env();
                let key = env_key(var, unlock)?.ok_or_else(|| SecretError::NoKey {
                    path: path.clone(),
                    env: var.to_string(),
                })?;
                (key, Kdf::None, KeySource::Env(var.to_string()))
            }
        };
        if let Some(dir) = path.parent() {
            crate::nexus_dir::create(dir).map_err(|source| SecretError::Io {
                action: "create the directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let lock = lock(path)?;
        if path.exists() {
            return Err(exists());
        }
        let header_text = Header::new(kdf, &key).text();
        let vault = Vault {
            path: path.clone(),
            header_text,
            fingerprint_key: key.fingerprint_key(),
            key,
            source,
            secrets: BTreeMap::new(),
            _lock: Some(lock),
        };
        vault.write(false)?;
        Ok(vault)
    }

    /// The vault file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the key came from.
    pub fn key_source(&self) -> &KeySource {
        &self.source
    }

    /// The value of secret `name`. Borrowed, so no copy of the value is left behind unwiped.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(|v| v.as_str())
    }

    /// Secret names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.secrets.keys().map(String::as_str).collect()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Sets secret `name` in memory (call [`Vault::save`] to write); returns whether it replaced a value.
    pub fn set(&mut self, name: &str, value: Zeroizing<String>) -> Result<bool, SecretError> {
        check_name(name)?;
        if value.is_empty() {
            return Err(SecretError::EmptyValue {
                name: name.to_string(),
            });
        }
        Ok(self.secrets.insert(name.to_string(), value).is_some())
    }

    /// Removes secret `name` in memory (call [`Vault::save`] to write); returns whether it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        self.secrets.remove(name).is_some()
    }

    /// Encrypts the secrets under a fresh random nonce and atomically replaces the vault file
    /// (temporary file in the same directory, mode 0600, fsync, rename, fsync of the directory).
    pub fn save(&self) -> Result<(), SecretError> {
        self.write(true)
    }

    fn write(&self, replace: bool) -> Result<(), SecretError> {
        let contents = ContentsRef {
            secrets: self
                .secrets
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        // Sized up front so the buffer is not reallocated while it grows, which would leave
        // unwiped copies of the plaintext in freed memory (escaping may still exceed the guess).
        let estimate = 32
            + self
                .secrets
                .iter()
                .map(|(k, v)| 2 * (k.len() + v.len()) + 8)
                .sum::<usize>();
        let mut plaintext = Zeroizing::new(Vec::with_capacity(estimate));
        serde_json::to_writer(&mut *plaintext, &contents).expect("serializes");
        let text = format::seal(&self.key, &self.header_text, &plaintext)?;
        write_atomic(&self.path, text.as_bytes(), replace)
    }

    /// A keyed fingerprint of `value` as the value of secret `name`: 64 hex digits of blake3 keyed
    /// with a subkey of the vault key. A changed value gives a changed fingerprint; without the
    /// vault key the fingerprint reveals nothing and cannot be used to test guesses. The name is
    /// hashed too, so two secrets with the same value cannot be seen to be equal.
    pub fn fingerprint(&self, name: &str, value: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.fingerprint_key);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(value.as_bytes());
        h.finalize().to_hex().to_string()
    }

    /// The key that seals hashes of contents holding this vault's secrets.
    pub fn seal_key(&self) -> super::SealKey {
        super::SealKey::derive(&self.fingerprint_key)
    }

    /// The key that encrypts host contents holding this vault's secrets at rest.
    pub fn content_key(&self) -> super::ContentKey {
        self.key.content_key()
    }

    /// [`Vault::fingerprint`] of the stored value of `name`.
    pub fn fingerprint_of(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| self.fingerprint(name, v))
    }

    /// [`super::redact`] with every secret in the vault.
    pub fn redact(&self, text: &str) -> String {
        let pairs: Vec<(&str, &str)> = self
            .secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        redact(text, &pairs)
    }
}

/// The key of a vault that does not use a passphrase: the key file if it is configured and exists,
/// otherwise the environment variable. A key file that exists but is unsafe or unreadable is an
/// error, never a reason to try the environment.
fn raw_key(settings: &Settings, unlock: &Unlock<'_>) -> Result<(Key, KeySource), SecretError> {
    let var = settings.key_env();
    let mut missing_file = None;
    if let Some(file) = &settings.key_file {
        match key::read_key_file(file) {
            Ok(k) => return Ok((k, KeySource::KeyFile(file.clone()))),
            Err(e @ SecretError::KeyFileMissing { .. }) => missing_file = Some(e),
            Err(e) => return Err(e),
        }
    }
    match env_key(var, unlock)? {
        Some(k) => Ok((k, KeySource::Env(var.to_string()))),
        None => Err(missing_file.unwrap_or_else(|| SecretError::NoKey {
            path: settings.path.clone(),
            env: var.to_string(),
        })),
    }
}

/// The key in environment variable `var`, if it is set and not empty.
fn env_key(var: &str, unlock: &Unlock<'_>) -> Result<Option<Key>, SecretError> {
    let Some(text) = (unlock.env)(var)
        .filter(|v| !v.is_empty())
        .map(Zeroizing::new)
    else {
        return Ok(None);
    };
    Key::parse_text(&text)
        .map(Some)
        .ok_or_else(|| SecretError::BadKey {
            origin: format!("environment variable {var}"),
        })
}

fn passphrase(
    settings: &Settings,
    unlock: &Unlock<'_>,
) -> Result<(Zeroizing<String>, KeySource), SecretError> {
    if let Some(p) = (unlock.env)(PASSPHRASE_ENV).filter(|p| !p.is_empty()) {
        return Ok((
            Zeroizing::new(p),
            KeySource::Passphrase {
                env: Some(PASSPHRASE_ENV.to_string()),
            },
        ));
    }
    let Some(prompt) = unlock.prompt else {
        return Err(SecretError::NeedPassphrase {
            path: settings.path.clone(),
        });
    };
    let p = prompt(&format!(
        "Passphrase for the vault {}: ",
        settings.path.display()
    ))
    .map_err(|source| SecretError::Prompt {
        what: "passphrase",
        source,
    })?;
    Ok((p, KeySource::Passphrase { env: None }))
}

/// Takes an exclusive lock on `<vault>.lock`, waiting for another nexus that holds it.
fn lock(vault: &Path) -> Result<File, SecretError> {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let path = vault.with_file_name(name);
    let io = |source| SecretError::Io {
        action: "lock",
        path: path.clone(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(&path).map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a mix, and a
/// crash leaves one of them: a temporary file (mode 0600) in the same directory, fsync, then a
/// rename over the old file (`replace`) or a hard link that fails if the file exists (creation).
fn write_atomic(path: &Path, bytes: &[u8], replace: bool) -> Result<(), SecretError> {
    let io = |source| SecretError::Io {
        action: "write the vault",
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        hex_encode(&suffix)
    ));
    let result = (|| {
        let mut f = crate::nexus_dir::new_private_file().open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => std::fs::remove_file(&tmp),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
                // A filesystem without hard links: the lock that `create` holds keeps other nexus
                // processes out between this check and the rename.
                Err(_) if !path.exists() => std::fs::rename(&tmp, path),
                Err(_) => Err(std::io::ErrorKind::AlreadyExists.into()),
            }
        }
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        if !replace && e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(SecretError::Exists {
                path: path.to_path_buf(),
            });
        }
        return Err(io(e));
    }
    // Make the rename itself durable; not every platform can open a directory, hence no error.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
