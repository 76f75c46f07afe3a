//! Counters an operator can read: what the dispatcher did since start.
//!
//! Rule: counters only go up, are bumped where the outcome is committed (not
//! where it is decided), and are cheap enough for the hot path (relaxed
//! atomics).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The live counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) claimed: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) recursion_stopped: AtomicU64,
    pub(crate) depth_exceeded: AtomicU64,
    pub(crate) fanned_out: AtomicU64,
    pub(crate) replied: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) postponed: AtomicU64,
    pub(crate) store_outages: AtomicU64,
    pub(crate) store_paused_ms: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Rows claimed from the outbox.
    pub claimed: u64,
    /// Rows finished successfully (deleted).
    pub succeeded: u64,
    /// Failed attempts rescheduled with backoff.
    pub retried: u64,
    /// Rows moved to dead letters.
    pub dead_lettered: u64,
    /// Dead-letter handlers that gave up: their dead letter resolved `handler_failed`.
    pub recursion_stopped: u64,
    /// Events refused for exceeding the maximum trigger depth.
    pub depth_exceeded: u64,
    /// Raw events whose failing triggers continued as invocation rows.
    pub fanned_out: u64,
    /// Synchronous replies delivered.
    pub replied: u64,
    /// Synchronous replies whose caller had gone.
    pub abandoned: u64,
    /// Invocation rows dropped because their trigger or script was removed.
    pub skipped: u64,
    /// Retries and replays of disabled triggers put on hold until their
    /// trigger is enabled again.
    pub held: u64,
    /// Attempts that failed for the host's reasons (storage unavailable),
    /// rescheduled without spending an attempt.
    pub postponed: u64,
    /// Times the dispatcher found the store unreachable and paused claiming
    /// (its circuit breaker opened).
    pub store_outages: u64,
    /// Milliseconds spent with claiming paused because the store was
    /// unreachable.
    pub store_paused_ms: u64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Read all counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            claimed: r(&self.claimed),
            succeeded: r(&self.succeeded),
            retried: r(&self.retried),
            dead_lettered: r(&self.dead_lettered),
            recursion_stopped: r(&self.recursion_stopped),
            depth_exceeded: r(&self.depth_exceeded),
            fanned_out: r(&self.fanned_out),
            replied: r(&self.replied),
            abandoned: r(&self.abandoned),
            skipped: r(&self.skipped),
            held: r(&self.held),
            postponed: r(&self.postponed),
            store_outages: r(&self.store_outages),
            store_paused_ms: r(&self.store_paused_ms),
        }
    }
}
