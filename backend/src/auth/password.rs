//! Console passwords, stored as Argon2id PHC strings.
//!
//! Argon2 is expensive on purpose (~19 MiB of memory and tens of milliseconds of one core per
//! hash), so every hash and check goes through [`Hasher`]: at most `max_concurrent` run at once,
//! on blocking threads, and an attempt that cannot get a turn within `max_wait` is refused
//! (`503 server_busy` with `Retry-After`) instead of queueing without bound. That caps the
//! memory and CPU any volume of logins can take.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use tokio::sync::Semaphore;

use crate::{config::PasswordHashingConfig, error::ApiError};

/// Longest accepted password, in bytes (longer ones are refused before any work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Runs Argon2 with bounded concurrency.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    max_wait: Duration,
    /// Checked against when the email is unknown, so that an unknown email costs what a known
    /// one does and timing does not tell which emails exist.
    decoy: Arc<OnceLock<Arc<str>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks are running")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError::Unavailable {
                code: "server_busy",
                message: "too many logins are being checked right now; retry shortly".into(),
                retry_after_secs: 1,
            },
            HashError::Failed(e) => ApiError::Internal(e),
        }
    }
}

impl Hasher {
    pub fn new(config: &PasswordHashingConfig) -> Self {
        let permits = match config.max_concurrent {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            max_wait: config.max_wait,
            decoy: Arc::default(),
        }
    }

    /// A new PHC string for `password`.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = password.to_owned();
        self.run(move || hash_now(&password).map_err(HashError::Failed))
            .await
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown user) a decoy is checked
    /// at the same cost and the answer is `false`.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let password = password.to_owned();
        let stored: Option<Arc<str>> = stored.map(Arc::from);
        let decoy = self.decoy.clone();
        self.run(move || {
            Ok(match stored {
                Some(stored) => verify_now(&password, &stored),
                None => {
                    // Made once, on the first unknown email (a command-line run never needs it).
                    let decoy = decoy.get_or_init(|| {
                        hash_now("decoy password, never anyone's")
                            .expect("hashing a constant")
                            .into()
                    });
                    let _ = verify_now(&password, decoy);
                    false
                }
            })
        })
        .await
    }

    /// Waits at most `max_wait` for a permit, then runs `work` on a blocking thread. The permit
    /// goes with the work: if the caller gives up (client gone), the hash still counts until it
    /// ends.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|e| HashError::Failed(anyhow::anyhow!("password hashing task: {e}")))?
    }
}

/// Hashes on the calling thread: for the command line, which runs one hash and exits.
pub fn hash_now(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

fn verify_now(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let stored = hash_now("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify_now("correct horse", &stored));
        assert!(!verify_now("wrong", &stored));
        assert!(!verify_now("x", "not a hash"));
    }

    #[tokio::test]
    async fn at_most_max_concurrent_run_and_the_rest_are_refused_after_max_wait() {
        let hasher = Hasher::new(&PasswordHashingConfig {
            max_concurrent: 1,
            max_wait: Duration::from_millis(50),
        });
        let stored = hasher.hash("pw").await.unwrap();
        assert!(hasher.verify("pw", Some(&stored)).await.unwrap());
        assert!(!hasher.verify("pw", None).await.unwrap());
        // Hold the only permit: the next attempt waits 50 ms, then is refused.
        let held = hasher.permits.clone().acquire_owned().await.unwrap();
        let started = std::time::Instant::now();
        let refused = hasher.verify("pw", Some(&stored)).await;
        assert!(matches!(refused, Err(HashError::Busy)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let api: ApiError = refused.unwrap_err().into();
        assert_eq!(api.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.code(), "server_busy");
        drop(held);
        assert!(hasher.verify("pw", Some(&stored)).await.unwrap());
    }
}
