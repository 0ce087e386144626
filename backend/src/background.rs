//! One lifecycle for every background task of the backend (messaging workers, webhook fan-out,
//! delivery worker, gauges): started together, told to stop together, and each one finishes
//! what it is doing before it exits, so a graceful restart hands no half-done claim to the
//! lease timeouts. Dropping a `Background` aborts everything at once, which is what a crash looks
//! like to the database (and what tests use to simulate one).

use std::{future::Future, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

/// The stop request as a task sees it.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the `Background` is gone, which is a stop as well.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration` unless a stop comes first; true if it did.
    pub async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.wait() => true,
            _ = tokio::time::sleep(duration) => false,
        }
    }

    /// The receiver itself, for tasks written against `watch` directly.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}

pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}

impl Background {
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Runs `task` until it returns; it should return soon after its `Stop` is requested.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Stop(self.stop.subscribe());
        let handle = tokio::spawn(task(stop));
        self.tasks.push((name, handle));
    }

    /// Asks every task to stop and waits up to `grace` for them; the ones still running then
    /// are aborted (and named in the log).
    pub async fn stop(mut self, grace: Duration) {
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut handle) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Err(e)) if e.is_panic() => {
                    tracing::error!(task = name, "background task panicked")
                }
                Ok(_) => tracing::debug!(task = name, "background task stopped"),
                Err(_) => {
                    tracing::warn!(
                        task = name,
                        "background task still busy at the deadline; aborted"
                    );
                    handle.abort();
                }
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for (_, handle) in &self.tasks {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    use super::*;

    #[tokio::test]
    async fn stop_lets_tasks_finish_and_aborts_laggards() {
        let finished = Arc::new(AtomicBool::new(false));
        let mut background = Background::new();
        background.spawn("polite", {
            let finished = finished.clone();
            |mut stop| async move {
                while !stop.sleep(Duration::from_secs(60)).await {}
                finished.store(true, Ordering::SeqCst);
            }
        });
        background.spawn("stubborn", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let started = std::time::Instant::now();
        background.stop(Duration::from_millis(200)).await;
        assert!(finished.load(Ordering::SeqCst));
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn dropping_aborts_at_once() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut background = Background::new();
        background.spawn("sleeper", {
            let flag = flag.clone();
            |_| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                flag.store(true, Ordering::SeqCst);
            }
        });
        drop(background);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!flag.load(Ordering::SeqCst));
    }
}
