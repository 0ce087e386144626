//! Sealing credentials at rest (XChaCha20-Poly1305 with the backend's secrets key). A sealed
//! value is `v1.<base64 nonce||ciphertext>`; opening checks the tag, so a tampered or foreign
//! value is refused rather than decrypted to garbage.

use base64::{engine::general_purpose::STANDARD_NO_PAD as B64, Engine as _};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng},
    XChaCha20Poly1305, XNonce,
};

pub struct Secrets {
    cipher: XChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
#[error("sealed value does not open with this key")]
pub struct OpenError;

impl Secrets {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// The key beside a SQLite database file (`data/secrets_key` by default), or in `data/`
    /// for PostgreSQL; a random one for an in-memory database.
    pub fn for_database(database_url: &str) -> anyhow::Result<Self> {
        let file = database_url
            .strip_prefix("sqlite://")
            .or_else(|| database_url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or_default());
        match file {
            Some(f) if f.is_empty() || f.contains(":memory:") => Ok(Self::random()),
            Some(f) => {
                let dir = std::path::Path::new(f)
                    .parent()
                    .unwrap_or(std::path::Path::new("."));
                Self::load_or_create(&dir.join("secrets_key"))
            }
            None => Self::load_or_create(std::path::Path::new("data/secrets_key")),
        }
    }

    /// The key in `path` (32 random bytes, hex), created on first start with mode 0600.
    pub fn load_or_create(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Ok(text) = std::fs::read_to_string(path) {
            let bytes = hex::decode(text.trim()).context("secrets key: not hex")?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("secrets key: must be 32 bytes"))?;
            return Ok(Self::new(&key));
        }
        let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).context("creating the secrets key's directory")?;
        }
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(hex::encode(key).as_bytes())?;
        Ok(Self::new(&key))
    }

    /// A key for tests.
    pub fn random() -> Self {
        Self::new(&XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    pub fn encrypt_str(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("encryption of a short value cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("v1.{}", B64.encode(bytes))
    }

    pub fn decrypt_str(&self, sealed: &str) -> Result<String, OpenError> {
        let bytes = sealed
            .strip_prefix("v1.")
            .and_then(|b| B64.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or(OpenError)?;
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}
