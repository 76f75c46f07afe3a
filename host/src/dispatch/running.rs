//! The invocations a dispatcher has started and not yet collected.
//!
//! Rule: every started row ends here exactly once, as its actions or, if its
//! task panicked, as nothing (the row stays leased and runs again after its
//! lease). Finished tasks do not wake the loop one by one: the loop is woken
//! once the running tasks are down to its threshold (it may claim again) or
//! when nothing runs any more (it may flush and go idle); between those it
//! collects on its own flush tick. At tens of thousands of events a second,
//! a wake-up per task was a thread hand-off per event.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::event::Action;

/// Started tasks and their results.
pub(crate) struct Running {
    count: AtomicUsize,
    /// Wake the loop when the count falls to this (and at zero).
    wake_at: AtomicUsize,
    done: Mutex<Vec<Action>>,
    notify: Notify,
}

impl Running {
    /// An empty set.
    pub(crate) fn new() -> Arc<Running> {
        Arc::new(Running {
            count: AtomicUsize::new(0),
            wake_at: AtomicUsize::new(0),
            done: Mutex::new(Vec::new()),
            notify: Notify::new(),
        })
    }

    /// Start `work`, holding `permit` (its claim slot) until it is done.
    pub(crate) fn spawn<F>(self: &Arc<Self>, permit: OwnedSemaphorePermit, work: F)
    where
        F: Future<Output = Vec<Action>> + Send + 'static,
    {
        self.count.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        tokio::spawn(async move {
            let actions = AssertUnwindSafe(work).catch_unwind().await;
            let actions = actions.unwrap_or_else(|_| {
                tracing::error!("dispatch task panicked; its row runs again after its lease");
                Vec::new()
            });
            this.done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(actions);
            drop(permit);
            let left = this.count.fetch_sub(1, Ordering::AcqRel) - 1;
            // Once, when the count crosses the threshold; the loop sets the
            // threshold before it waits, when it has just claimed what it may.
            if left == 0 || left == this.wake_at.load(Ordering::Relaxed) {
                this.notify.notify_one();
            }
        });
    }

    /// Wake the loop when the running tasks fall to `n` (and at zero).
    pub(crate) fn wake_at(&self, n: usize) {
        self.wake_at.store(n, Ordering::Relaxed);
    }

    /// How many are still running.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Take the actions of the tasks that finished since the last call.
    pub(crate) fn take(&self) -> Vec<Action> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wait until woken (see the module rule).
    pub(crate) async fn woken(&self) {
        self.notify.notified().await;
    }
}
