//! Secrets at rest: values the backend must be able to read back (webhook signing secrets, a
//! channel's access tokens) are stored encrypted with XChaCha20-Poly1305 under a key derived from
//! `secrets_key`. A database dump alone reveals none of them.
//!
//! Stored form: `enc:v1:<base64url(24-byte random nonce ‖ ciphertext ‖ tag)>`. The version in the
//! prefix lets a later key or algorithm live beside this one. Losing `secrets_key` loses every
//! value sealed with it (README, "Secrets at rest").

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::Context;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng},
    XChaCha20Poly1305, XNonce,
};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

pub const PREFIX: &str = "enc:v1:";
const KEY_LABEL: &str = "wiz secrets at rest v1";
const NONCE_LEN: usize = 24;
pub const MIN_KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("the stored value is not sealed (no `{PREFIX}` prefix)")]
    NotSealed,
    #[error("the stored value is malformed")]
    Malformed,
    #[error("the stored value does not open with this secrets_key (lost or replaced key?)")]
    WrongKey,
}

pub struct Secrets {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

impl Secrets {
    /// From the configured key material (at least `MIN_KEY_LEN` characters; any text, e.g. the
    /// random base64 the backend generates). HKDF spreads it into a 256-bit key.
    pub fn new(key_material: &str) -> Self {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, key_material.as_bytes())
            .expand(KEY_LABEL.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `plaintext` with a fresh random nonce (192 bits: no practical risk of reuse).
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext)
            .expect("encryption of an in-memory buffer does not fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    pub fn decrypt(&self, stored: &str) -> Result<Vec<u8>, SecretsError> {
        let body = stored.strip_prefix(PREFIX).ok_or(SecretsError::NotSealed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SecretsError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretsError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| SecretsError::WrongKey)
    }

    pub fn encrypt_str(&self, plaintext: &str) -> String {
        self.encrypt(plaintext.as_bytes())
    }

    pub fn decrypt_str(&self, stored: &str) -> Result<String, SecretsError> {
        String::from_utf8(self.decrypt(stored)?).map_err(|_| SecretsError::Malformed)
    }

    /// Whether a stored value is already sealed (used to migrate plaintext rows).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

/// The key material: `secrets_key` when configured, else the content of `key_file`, created on
/// first start with 32 random bytes (base64), mode 0600 from creation, in a 0700 directory.
pub fn load_or_create_key(configured: &str, key_file: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    match std::fs::read_to_string(key_file) {
        Ok(text) => {
            let key = text.trim().to_string();
            anyhow::ensure!(
                key.len() >= MIN_KEY_LEN,
                "{} holds fewer than {MIN_KEY_LEN} characters",
                key_file.display()
            );
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", key_file.display())),
    }
    if let Some(dir) = key_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = URL_SAFE_NO_PAD.encode(bytes);
    // create_new: two processes starting at once cannot both write a key; the loser reads it.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)
    {
        Ok(mut file) => {
            file.write_all(key.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", key_file.display()))?;
            tracing::warn!(
                path = %key_file.display(),
                "generated a new secrets key; back it up: without it, stored webhook secrets cannot be read"
            );
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key("", key_file),
        Err(e) => Err(e).with_context(|| format!("creating {}", key_file.display())),
    }
}

/// Creates `dir` (and missing parents) as 0700: the data directory holds the database and key
/// files, which nobody but the service user should list or open. An existing directory is left
/// as it is (it may be shared, like /tmp) but a readable one is reported.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the data directory is open to other users; `chmod 700` it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let secrets = Secrets::new(&"k".repeat(32));
        let sealed = secrets.encrypt_str("whsec_abc");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            secrets.encrypt_str("whsec_abc"),
            "fresh nonce each time"
        );
        assert_eq!(secrets.decrypt_str(&sealed).unwrap(), "whsec_abc");
        assert_eq!(
            Secrets::new(&"j".repeat(32)).decrypt(&sealed),
            Err(SecretsError::WrongKey)
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(secrets
            .decrypt(std::str::from_utf8(&tampered).unwrap())
            .is_err());
        assert_eq!(secrets.decrypt("whsec_abc"), Err(SecretsError::NotSealed));
        assert_eq!(secrets.decrypt("enc:v1:AAAA"), Err(SecretsError::Malformed));
        assert!(Secrets::is_sealed(&sealed));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let file = data.join("secrets-key");
        let key = load_or_create_key("", &file).unwrap();
        assert!(key.len() >= MIN_KEY_LEN);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(load_or_create_key("", &file).unwrap(), key);
        assert_eq!(
            load_or_create_key(&"c".repeat(40), &file).unwrap(),
            "c".repeat(40)
        );
    }
}
