//! The TTL sweeper: removes expired sessions (and stale music rooms) every
//! [`Config::sweep_period`](crate::config::Config::sweep_period). It runs under a supervisor:
//! if it panics, the panic is logged at `error` and the sweeper is restarted after
//! [`RESTART_DELAY`], so sessions keep expiring. (A panic while it held the registry lock
//! poisons that lock, and the next lock brings the server down loudly: see [`super`].)

use super::AppState;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Pause before a panicked background task is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Spawns the sweeper under its supervisor; abort the handle to stop both.
pub fn spawn_sweeper(state: Arc<AppState>) -> JoinHandle<()> {
    supervise("session sweeper", RESTART_DELAY, move || {
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(state.config().sweep_period());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let removed = state.sweep();
                if removed > 0 {
                    tracing::debug!(removed, "expired sessions removed");
                }
            }
        }
    })
}

/// Runs the task `make` returns, again after `delay` whenever it panics (logged at `error`
/// with the panic message), until it returns or the returned handle is aborted (which aborts
/// the running task too).
pub(crate) fn supervise<F, Fut>(name: &'static str, delay: Duration, make: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let task = tokio::spawn(make());
            // Aborting the supervisor drops this guard, which aborts the task.
            let abort = AbortOnDrop(task.abort_handle());
            let result = task.await;
            drop(abort);
            match result {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(
                        task = name,
                        panic = msg,
                        "background task panicked; restarting it"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(_) => return,
            }
        }
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_restarted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = supervise("test task", Duration::from_millis(1), move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the supervisor ends once the task returns")
            .expect("the supervisor itself does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, two restarts");
    }
}
