//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per secret, bound to the record id
//! as associated data. The key comes from configuration (`external.secretkey`, base64 of 32
//! bytes) or from `<data dir>/external.key`, generated at first start with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{ExternalError, Result};

/// File name of the generated key in the data directory.
pub const KEY_FILE: &str = "external.key";

/// Seals and opens secrets with one key.
pub struct SecretBox {
    key: LessSafeKey,
    fingerprint: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key redacted>)")
    }
}

fn decode_key(b64: &str) -> Result<[u8; 32]> {
    let raw = B64
        .decode(b64.trim())
        .map_err(|e| ExternalError::Crypto(format!("the key is not base64: {e}")))?;
    raw.try_into().map_err(|v: Vec<u8>| {
        ExternalError::Crypto(format!("the key has {} bytes, not 32", v.len()))
    })
}

impl SecretBox {
    /// A box for a raw 32-byte key.
    pub fn new(key: &[u8; 32]) -> Result<SecretBox> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| ExternalError::Crypto("invalid AES-256 key".into()))?;
        // A one-way tag of the key (domain-separated SHA-256), to compare keys across
        // replicas without revealing them.
        let mut tagged = b"hyperregistry external.secretkey fingerprint\0".to_vec();
        tagged.extend_from_slice(key);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &tagged);
        let fingerprint = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(SecretBox {
            key: LessSafeKey::new(unbound),
            fingerprint,
            rng: SystemRandom::new(),
        })
    }

    /// A one-way fingerprint of the key: equal fingerprints, equal keys.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The configured key (base64), else the key file in `data_dir`, created when absent.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<SecretBox> {
        if let Some(k) = configured.filter(|k| !k.trim().is_empty()) {
            return SecretBox::new(&decode_key(k)?);
        }
        let path = data_dir.join(KEY_FILE);
        let io = |context: String| move |source| ExternalError::Io { context, source };
        if !path.exists() {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| ExternalError::Crypto("no randomness for a new key".into()))?;
            let tmp = data_dir.join(format!("{KEY_FILE}.tmp-{}", uuid::Uuid::new_v4().simple()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(format!("creating {}", tmp.display())))?;
            f.write_all(B64.encode(key).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(io(format!("writing {}", tmp.display())))?;
            // A hard link never replaces an existing file: a concurrent first start keeps
            // whichever key won, and both processes read that one below.
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if let Ok(dir) = std::fs::File::open(data_dir) {
                        let _ = dir.sync_all();
                    }
                    tracing::info!(path = %path.display(), "generated the key for external registry secrets");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(format!("creating {}", path.display()))(e)),
            }
        }
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        SecretBox::new(&decode_key(&text)?)
    }

    /// Encrypt `plain`, bound to `context` (the record id): nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| ExternalError::Crypto("no randomness for a nonce".into()))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| ExternalError::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypt what [`seal`](Self::seal) produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<String> {
        if sealed.len() < NONCE_LEN {
            return Err(ExternalError::Crypto("sealed secret too short".into()));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| ExternalError::Crypto("bad nonce".into()))?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| {
                ExternalError::Crypto("cannot decrypt a stored secret (wrong key?)".into())
            })?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| ExternalError::Crypto("decrypted secret is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_generated_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load(None, dir.path()).unwrap();
        let sealed = a.seal("id-1", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let mode = std::os::unix::fs::MetadataExt::mode(
            &std::fs::metadata(dir.path().join(KEY_FILE)).unwrap(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // The same key is read back on the next start.
        let b = SecretBox::load(None, dir.path()).unwrap();
        assert_eq!(b.open("id-1", &sealed).unwrap(), "hunter2");
        // Bound to its record, and nonces differ.
        assert!(b.open("id-2", &sealed).is_err());
        assert_ne!(a.seal("id-1", b"hunter2").unwrap(), sealed);
    }

    #[test]
    fn configured_key_must_be_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SecretBox::load(Some(&B64.encode([7u8; 16])), dir.path()).is_err());
        let k = B64.encode([7u8; 32]);
        let s = SecretBox::load(Some(&k), dir.path()).unwrap();
        assert!(!dir.path().join(KEY_FILE).exists());
        let sealed = s.seal("x", b"p").unwrap();
        assert_eq!(
            SecretBox::load(Some(&k), dir.path())
                .unwrap()
                .open("x", &sealed)
                .unwrap(),
            "p"
        );
    }
}
