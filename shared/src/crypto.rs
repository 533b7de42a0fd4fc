//! Encryption of account tokens at rest, and the digests used to name and compare secrets.
//!
//! Tokens are sealed with AES-256-GCM, a random 96-bit nonce per value and the token's id as
//! associated data (so a sealed value cannot be swapped onto another record). The sealed
//! form names the key it was sealed with, `v1.<key id>.<base64 nonce+ciphertext>`, so a new
//! key can be introduced while values sealed with the old one still open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Secret;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed with unknown key id {0}")]
    UnknownKey(String),
    #[error("sealed value failed authentication")]
    Tampered,
}

/// SHA-256 hex of a token: its stable id.
pub fn token_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time independent of where they differ. Both sides are hashed
/// first, so the comparison does not reveal the length either.
pub fn secrets_match(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// A fresh random secret, URL-safe, with `bytes` bytes of entropy.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A fresh encryption key in the base64 form the config expects.
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    STANDARD.encode(key)
}

#[derive(Clone)]
struct KeyEntry {
    id: String,
    cipher: Aes256Gcm,
}

/// Seals with the current key; opens with the current key or any older one.
#[derive(Clone)]
pub struct TokenCipher {
    current: KeyEntry,
    previous: Vec<KeyEntry>,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCipher")
            .field("key_id", &self.current.id)
            .finish_non_exhaustive()
    }
}

fn entry(key_b64: &str) -> Result<KeyEntry, CryptoError> {
    let raw = STANDARD
        .decode(key_b64.trim())
        .map_err(|_| CryptoError::BadKey)?;
    if raw.len() != 32 {
        return Err(CryptoError::BadKey);
    }
    // The key id is a short digest of the key, so it needs no separate configuration.
    let id = hex::encode(&Sha256::digest(&raw)[..4]);
    Ok(KeyEntry {
        id,
        cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&raw)),
    })
}

impl TokenCipher {
    /// `current` seals; `previous` keys still open values sealed before a rotation.
    pub fn new(current: &Secret, previous: &[Secret]) -> Result<Self, CryptoError> {
        Ok(Self {
            current: entry(current.expose())?,
            previous: previous
                .iter()
                .map(|k| entry(k.expose()))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    pub fn seal(&self, id: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("v1.{}.{}", self.current.id, STANDARD.encode(blob))
    }

    pub fn open(&self, id: &str, sealed: &str) -> Result<Secret, CryptoError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Malformed);
        };
        let key = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == kid)
            .ok_or_else(|| CryptoError::UnknownKey(kid.to_owned()))?;
        let blob = STANDARD.decode(body).map_err(|_| CryptoError::Malformed)?;
        if blob.len() < 12 + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ct) = blob.split_at(12);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| CryptoError::Malformed)
    }

    /// True when `sealed` was sealed with an older key and should be re-sealed.
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) != Some(self.current.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let c = TokenCipher::new(&Secret::new(generate_key()), &[]).unwrap();
        let sealed = c.seal("id-a", "eyJtoken");
        assert!(!sealed.contains("eyJtoken"));
        assert_eq!(c.open("id-a", &sealed).unwrap().expose(), "eyJtoken");
        // Bound to its id: moving it onto another record fails.
        assert!(matches!(
            c.open("id-b", &sealed),
            Err(CryptoError::Tampered)
        ));
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, c.seal("id-a", "eyJtoken"));
    }

    #[test]
    fn rotation_opens_old_values() {
        let old = Secret::new(generate_key());
        let new = Secret::new(generate_key());
        let before = TokenCipher::new(&old, &[]).unwrap();
        let sealed = before.seal("id", "tok");
        let after = TokenCipher::new(&new, &[old]).unwrap();
        assert!(after.needs_reseal(&sealed));
        assert_eq!(after.open("id", &sealed).unwrap().expose(), "tok");
        let only_new = TokenCipher::new(&new, &[]).unwrap();
        assert!(matches!(
            only_new.open("id", &sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_keys_and_secret_compare() {
        assert!(TokenCipher::new(&Secret::new("short"), &[]).is_err());
        assert!(secrets_match("abc", "abc"));
        assert!(!secrets_match("abc", "abd"));
        assert!(!secrets_match("abc ", "abc"));
        assert_eq!(token_id("x").len(), 64);
    }
}
