//! Password hashing with argon2id on a few dedicated, idle-priority threads,
//! bounded by a semaphore and a queue limit, so a burst of sign-ins takes
//! only CPU time that proxied traffic leaves over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PasswordConfig;
use crate::sync;

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The configured argon2 parameters were rejected.
    #[error("argon2 parameters: {0}")]
    Params(#[source] argon2::Error),
    /// argon2 could not hash the input.
    #[error("argon2: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    /// Too many password checks are already waiting for a slot.
    #[error("too many password checks in progress")]
    Busy,
    /// The hashing threads are gone (they only stop with the process).
    #[error("password hashing threads stopped")]
    PoolGone,
}

type Job = Box<dyn FnOnce() + Send>;

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it gets CPU time
/// only when nothing else wants it (nice 19 would still claim a share of a
/// busy core). Elsewhere, or if that is refused, nice 19.
fn lower_own_priority() {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle).is_ok() {
            return;
        }
    }
    if let Err(e) = set_current_thread_priority(ThreadPriority::Min) {
        tracing::warn!(error = ?e, "could not lower the password-hashing thread's priority");
    }
}

/// Threads that run argon2 at the lowest scheduling priority, so the
/// runtime's threads — which serve proxied requests — always go first.
struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl HashPool {
    fn start(threads: usize) -> HashPool {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("gatehouse-hash-{i}"))
                .spawn(move || {
                    lower_own_priority();
                    loop {
                        // The sender is gone only at shutdown.
                        let Ok(job) = sync::lock(&queue).recv() else {
                            return;
                        };
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-hashing thread");
            }
        }
        HashPool { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .map_err(|_| PasswordError::PoolGone)?;
        result.await.map_err(|_| PasswordError::PoolGone)
    }
}

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    pool: Arc<HashPool>,
    /// Callers waiting for a permit, bounded by `max_queued`.
    waiting: Arc<AtomicUsize>,
    max_queued: usize,
    /// A real hash of a random password: unknown-email sign-ins verify
    /// against it so they cost the same as real ones.
    decoy_hash: Arc<str>,
}

impl Passwords {
    pub fn new(cfg: &PasswordConfig, max_queued: usize) -> Result<Passwords, PasswordError> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(PasswordError::Params)?;
        let concurrency = match cfg.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let mut decoy = [0u8; 24];
        crate::random::random_bytes(&mut decoy);
        let decoy_hash = hash_blocking(&params, &crate::random::base64url(&decoy))?;
        Ok(Passwords {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            pool: Arc::new(HashPool::start(concurrency)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_queued,
            decoy_hash: decoy_hash.into(),
        })
    }

    /// A hashing slot; waits in a bounded queue, so a flood of sign-ins is
    /// refused quickly instead of piling up.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, PasswordError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(PasswordError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        Ok(permit.expect("semaphore never closed"))
    }

    /// Returns the PHC string (argon2id, random salt) for `password`.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self.slot().await?;
        let params = self.params.clone();
        self.pool
            .run(move || hash_blocking(&params, &password))
            .await?
    }

    /// Checks `password` against `stored`, or against the decoy when there is
    /// no account, so both paths do the same work. A malformed stored hash
    /// never matches.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let _permit = self.slot().await?;
        let has_account = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.decoy_hash.to_string());
        let ok = self
            .pool
            .run(move || {
                Argon2::default()
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok()
            })
            .await?;
        Ok(ok && has_account)
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, PasswordError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(
            &PasswordConfig {
                min_length: 8,
                max_length: 128,
                argon2_memory_kib: 64,
                argon2_iterations: 1,
                argon2_parallelism: 1,
                max_concurrent_hashes: 1,
            },
            8,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let p = cheap();
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(
            p.verify("correct horse".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!p.verify("wrong horse".into(), Some(h)).await.unwrap());
        assert!(!p.verify("anything".into(), None).await.unwrap());
        assert!(
            !p.verify("x".into(), Some("not a hash".into()))
                .await
                .unwrap()
        );
    }
}
