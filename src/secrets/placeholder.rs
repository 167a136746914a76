//! Secrets inside file contents. The planner renders contents with a placeholder standing for
//! each secret, so the plan file can carry the content (and show that it holds secrets) without
//! the values; the executor substitutes the values into the bytes it sends over stdin. Hashes of
//! contents that hold secrets are sealed with a key derived from the vault key, so a plan never
//! holds a plain hash that a dictionary could be tried against.

use zeroize::Zeroizing;

/// Bytes no configuration value or template output contains by accident (NUL is refused in
/// every configuration value): `\0nexus-secret:NAME\0`.
const OPEN: &str = "\0nexus-secret:";
const CLOSE: char = '\0';

/// The placeholder for secret `name`.
pub fn placeholder(name: &str) -> String {
    format!("{OPEN}{name}{CLOSE}")
}

/// Whether `bytes` hold any placeholder.
pub fn has_placeholders(bytes: &[u8]) -> bool {
    bytes.windows(OPEN.len()).any(|w| w == OPEN.as_bytes())
}

/// The secret names whose placeholders `bytes` hold, sorted and deduplicated.
pub fn names_in(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = bytes;
    while let Some(at) = find(rest, OPEN.as_bytes()) {
        rest = &rest[at + OPEN.len()..];
        let Some(end) = rest.iter().position(|b| *b == CLOSE as u8) else {
            break;
        };
        names.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end + 1..];
    }
    names.sort();
    names.dedup();
    names
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Why placeholders could not be replaced by values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    #[error("content holds an unterminated secret placeholder")]
    Unterminated,
    #[error("secret {name:?} was not read from the vault")]
    NotRead { name: String },
}

/// `bytes` with every placeholder replaced by its value. A placeholder without a value is an
/// error naming the secret; the result is wiped from memory when dropped.
pub fn substitute(
    bytes: &[u8],
    value: &dyn Fn(&str) -> Option<String>,
) -> Result<Zeroizing<Vec<u8>>, SubstituteError> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut rest = bytes;
    while let Some(at) = find(rest, OPEN.as_bytes()) {
        out.extend_from_slice(&rest[..at]);
        let tail = &rest[at + OPEN.len()..];
        let Some(end) = tail.iter().position(|b| *b == CLOSE as u8) else {
            return Err(SubstituteError::Unterminated);
        };
        let name = String::from_utf8_lossy(&tail[..end]);
        let v = Zeroizing::new(value(&name).ok_or_else(|| SubstituteError::NotRead {
            name: name.to_string(),
        })?);
        out.extend_from_slice(v.as_bytes());
        rest = &tail[end + 1..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// A key for sealing hashes of contents that hold secrets: derived from the vault key, so only
/// someone who can open the vault can tell which content a sealed hash stands for.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl SealKey {
    pub(super) fn derive(fingerprint_key: &[u8; 32]) -> SealKey {
        SealKey(Zeroizing::new(
            *blake3::keyed_hash(fingerprint_key, b"nexus content seal v1").as_bytes(),
        ))
    }

    /// `sealed:` and the keyed blake3 of a content hash (as hex text).
    pub fn seal(&self, sha256_hex: &str) -> String {
        format!(
            "sealed:{}",
            blake3::keyed_hash(&self.0, sha256_hex.as_bytes()).to_hex()
        )
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_round_trip() {
        let text = format!(
            "user=app\npassword={}\ntoken={}{}\n",
            placeholder("DB_PASSWORD"),
            placeholder("API"),
            placeholder("DB_PASSWORD")
        );
        assert!(has_placeholders(text.as_bytes()));
        assert!(!has_placeholders(b"plain\0text"));
        assert_eq!(names_in(text.as_bytes()), ["API", "DB_PASSWORD"]);
        let lookup = |n: &str| match n {
            "DB_PASSWORD" => Some("s3cr3t".to_string()),
            "API" => Some("k-1".to_string()),
            _ => None,
        };
        let out = substitute(text.as_bytes(), &lookup).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "user=app\npassword=s3cr3t\ntoken=k-1s3cr3t\n"
        );
        let err = substitute(placeholder("NOPE").as_bytes(), &lookup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret \"NOPE\" was not read from the vault"
        );
        let cut = placeholder("API");
        assert_eq!(
            substitute(&cut.as_bytes()[..cut.len() - 1], &lookup).unwrap_err(),
            SubstituteError::Unterminated
        );
    }

    #[test]
    fn seals_depend_on_the_key() {
        let a = SealKey::derive(&[1; 32]);
        let b = SealKey::derive(&[2; 32]);
        assert_eq!(a.seal("abc"), a.seal("abc"));
        assert_ne!(a.seal("abc"), b.seal("abc"));
        assert_ne!(a.seal("abc"), a.seal("abd"));
        assert!(a.seal("abc").starts_with("sealed:"));
    }
}
