//! Console passwords, stored as Argon2id PHC strings.
//!
//! Argon2 is expensive on purpose (~19 MiB of memory and tens of milliseconds of one core per
//! hash), so every hash and check goes through [`Hasher`]: at most `max_concurrent` run at once,
//! and an attempt that cannot get a turn within `max_wait` is refused (`503 server_busy` with
//! `Retry-After`) instead of queueing without bound.
//!
//! They run on `max_concurrent` threads of their own, each reusing one Argon2 memory buffer
//! (`hash_password_into_with_memory`). With a fresh 19 MiB allocation per hash on tokio's
//! blocking pool (up to 512 threads), the allocator kept a freed buffer per thread that ever
//! hashed and the backend's resident memory grew with every burst; this way it is bounded by
//! `max_concurrent` buffers, whatever the volume of logins.

use std::{
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use argon2::{
    password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::{config::PasswordHashingConfig, error::ApiError};

/// Longest accepted password, in bytes (longer ones are refused before any work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// One piece of work for a hashing thread, given that thread's Argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Runs Argon2 with bounded concurrency and memory.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    max_wait: Duration,
    jobs: mpsc::Sender<Job>,
    /// Checked against when the email is unknown, so that an unknown email costs what a known
    /// one does and timing does not tell which emails exist.
    decoy: Arc<str>,
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
    /// Starts the hashing threads; they end when the last clone of the `Hasher` is dropped.
    pub fn new(config: &PasswordHashingConfig) -> Self {
        let threads = match config.max_concurrent {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = queue.lock().expect("job queue").recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                })
                .expect("starting a password hashing thread");
        }
        // A PHC string with the parameters of every new hash, a random salt and a random value.
        let decoy = format!(
            "${}$v={}${}${}${}",
            Algorithm::Argon2id.ident(),
            u32::from(Version::default()),
            ParamsString::try_from(&Params::default()).expect("default parameters"),
            SaltString::generate(&mut OsRng).as_str(),
            Output::new(&rand::random::<[u8; 32]>()).expect("a 32-byte output"),
        );
        Self {
            permits: Arc::new(Semaphore::new(threads)),
            max_wait: config.max_wait,
            jobs,
            decoy: decoy.into(),
        }
    }

    /// A new PHC string for `password`.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = password.to_owned();
        self.run(move |memory| hash_with(&password, memory)).await
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown user) a decoy is checked
    /// at the same cost and the answer is `false`.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let password = password.to_owned();
        let known = stored.is_some();
        let stored: Arc<str> = stored.map_or_else(|| self.decoy.clone(), Arc::from);
        let matches = self
            .run(move |memory| Ok(verify_with(&password, &stored, memory)))
            .await?;
        Ok(known && matches)
    }

    /// Waits at most `max_wait` for a turn, then runs `work` on a hashing thread. The permit
    /// goes with the work: if the caller gives up (client gone), the hash still counts until it
    /// ends.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit: OwnedSemaphorePermit =
            tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| HashError::Busy)?
                .expect("the semaphore is never closed");
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = reply.send(work(memory));
            drop(permit);
        });
        self.jobs
            .send(job)
            .map_err(|_| HashError::Failed(anyhow::anyhow!("password hashing threads are gone")))?;
        answer
            .await
            .map_err(|_| HashError::Failed(anyhow::anyhow!("password hashing thread failed")))?
    }
}

/// Hashes `password` with the default parameters and a fresh salt, in `memory`.
fn hash_with(password: &str, memory: &mut Vec<Block>) -> Result<String, HashError> {
    let failed =
        |e: &dyn std::fmt::Display| HashError::Failed(anyhow::anyhow!("hashing password: {e}"));
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::default(), params.clone());
    let output = compute(
        &argon2,
        &params,
        password,
        salt_bytes,
        Params::DEFAULT_OUTPUT_LEN,
        memory,
    )
    .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored` (any Argon2 variant and parameters it
/// names), computed in `memory`; the comparison is constant-time (`Output`'s `PartialEq`).
fn verify_with(password: &str, stored: &str, memory: &mut Vec<Block>) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(stored).ok()?;
        let (salt, expected) = (parsed.salt?, parsed.hash?);
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .ok()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).ok()?;
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes).ok()?;
        let computed = compute(
            &argon2,
            &params,
            password,
            salt_bytes,
            expected.len(),
            memory,
        )
        .ok()?;
        Some(computed == expected)
    };
    check().unwrap_or(false)
}

/// Argon2 of `password` into an output of `len` bytes, reusing `memory` (grown to the
/// parameters' block count on first use, then kept).
fn compute(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &str,
    salt: &[u8],
    len: usize,
    memory: &mut Vec<Block>,
) -> Result<Output, argon2::password_hash::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    Output::init_with(len, |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
            .map_err(argon2::password_hash::Error::from)
    })
}

#[cfg(test)]
mod tests {
    use argon2::PasswordHasher;

    use super::*;

    #[test]
    fn round_trip() {
        let stored = hash_with("correct horse", &mut Vec::new()).unwrap();
        assert!(stored.starts_with("$argon2id$"));
        let mut memory = Vec::new();
        assert!(verify_with("correct horse", &stored, &mut memory));
        assert!(!verify_with("wrong", &stored, &mut memory));
        assert!(!verify_with("x", "not a hash", &mut memory));
        // Hashes made by the argon2 crate's own API (as stored before) still verify.
        let legacy = Argon2::default()
            .hash_password(b"legacy", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_with("legacy", &legacy, &mut memory));
        assert!(!verify_with("legacy!", &legacy, &mut memory));
        // The decoy parses and costs a full check, and nothing matches it.
        let hasher = Hasher::new(&PasswordHashingConfig::default());
        assert!(PasswordHash::new(&hasher.decoy).is_ok(), "{}", hasher.decoy);
        assert!(!verify_with("", &hasher.decoy, &mut memory));
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
