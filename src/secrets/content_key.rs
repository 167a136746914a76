//! Host contents that hold secrets, kept at rest (pre-images in the state store): AES-256-GCM
//! under a subkey of the vault key, a fresh random nonce per content. Stored as
//! `nonce (12 bytes) || ciphertext || tag (16 bytes)`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

use super::SecretError;
use super::key::{KEY_LEN, fill_random};

const NONCE_LEN: usize = 12;
/// Binds ciphertexts to their purpose: a pre-image cannot be passed off as anything else.
const AAD: &[u8] = b"nexus pre-image content v1";

/// The key that encrypts contents at rest; wiped on drop.
pub struct ContentKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

/// A stored content that does not decrypt: another vault's key, or a damaged record.
#[derive(Debug, thiserror::Error)]
#[error(
    "a stored content does not decrypt with this vault's key (another vault, or a damaged record)"
)]
pub struct Undecryptable;

impl ContentKey {
    pub(super) fn new(key: [u8; KEY_LEN]) -> ContentKey {
        ContentKey(Zeroizing::new(key))
    }

    fn cipher(&self) -> aes_gcm::Aes256Gcm {
        aes_gcm::Aes256Gcm::new_from_slice(self.0.as_ref()).expect("32-byte key")
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: AAD,
                },
            )
            .map_err(|_| {
                SecretError::Random("encryption failed: the content is too large".into())
            })?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    pub fn decrypt(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Undecryptable> {
        if sealed.len() < NONCE_LEN {
            return Err(Undecryptable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Undecryptable)?;
        self.cipher()
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: AAD,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_fresh_nonce_and_wrong_key() {
        let k = ContentKey::new([3; 32]);
        let a = k.encrypt(b"password=hunter22").unwrap();
        let b = k.encrypt(b"password=hunter22").unwrap();
        assert_ne!(a, b);
        assert!(!a.windows(8).any(|w| w == b"hunter22"));
        assert_eq!(&*k.decrypt(&a).unwrap(), b"password=hunter22");
        assert!(ContentKey::new([4; 32]).decrypt(&a).is_err());
        let mut tampered = a.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.decrypt(&tampered).is_err());
        assert!(k.decrypt(b"short").is_err());
    }
}
