//! The dispatcher's circuit breaker over the store.
//!
//! Rule: while the store is unreachable the loop stops claiming and backs
//! off, doubling the pause from [`MIN_PAUSE`] up to [`MAX_PAUSE`]; after
//! each pause one claim probes the store, and the first claim that succeeds
//! closes the breaker. An outage is said once in the log when it starts and
//! once when it ends, never once per event, and the time spent paused is
//! counted in [`Metrics`].

use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// The first pause after the store failed.
pub(crate) const MIN_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between probes.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(5);

/// An open outage.
#[derive(Debug)]
struct Outage {
    since: Instant,
    /// Time up to here is already counted in the metrics.
    counted: Instant,
    pause: Duration,
    probe_at: Instant,
}

/// Open (paused) while the store is unreachable, closed otherwise.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    outage: Option<Outage>,
}

impl Breaker {
    /// The store failed (`why`): open, or back off further if already open.
    pub(crate) fn trip(&mut self, why: &dyn std::fmt::Display, metrics: &Metrics) {
        let now = Instant::now();
        match &mut self.outage {
            None => {
                tracing::warn!(error = %why, "store unreachable: pausing claims until it answers");
                Metrics::add(&metrics.store_outages, 1);
                self.outage = Some(Outage {
                    since: now,
                    counted: now,
                    pause: MIN_PAUSE,
                    probe_at: now + MIN_PAUSE,
                });
            }
            Some(o) => {
                tracing::debug!(error = %why, pause = ?o.pause, "store still unreachable");
                o.pause = (o.pause * 2).min(MAX_PAUSE);
                o.probe_at = now + o.pause;
            }
        }
        self.count(metrics);
    }

    /// A claim succeeded: close, saying how long the outage lasted.
    pub(crate) fn close(&mut self, metrics: &Metrics) {
        self.count(metrics);
        if let Some(o) = self.outage.take() {
            tracing::warn!(outage = ?o.since.elapsed(), "store reachable again: claiming resumes");
        }
    }

    /// Whether the loop may claim now: closed, or open and due for a probe.
    pub(crate) fn may_claim(&self) -> bool {
        self.outage
            .as_ref()
            .is_none_or(|o| Instant::now() >= o.probe_at)
    }

    /// Whether an outage is open.
    pub(crate) fn is_open(&self) -> bool {
        self.outage.is_some()
    }

    /// How long the loop should sleep at most before looking again: until the
    /// next probe while open.
    pub(crate) fn pause(&self) -> Option<Duration> {
        self.outage
            .as_ref()
            .map(|o| o.probe_at.saturating_duration_since(Instant::now()))
    }

    /// Add the paused time not yet counted to the metrics.
    pub(crate) fn count(&mut self, metrics: &Metrics) {
        if let Some(o) = &mut self.outage {
            let now = Instant::now();
            let ms = now.duration_since(o.counted).as_millis() as u64;
            Metrics::add(&metrics.store_paused_ms, ms);
            o.counted += Duration::from_millis(ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_backs_off_and_closes() {
        let m = Metrics::default();
        let mut b = Breaker::default();
        assert!(b.may_claim() && !b.is_open());
        b.trip(&"down", &m);
        assert!(b.is_open() && !b.may_claim());
        let first = b.pause().unwrap();
        assert!(first <= MIN_PAUSE);
        b.trip(&"still down", &m);
        b.trip(&"still down", &m);
        let later = b.pause().unwrap();
        assert!(later > MIN_PAUSE * 3 && later <= MIN_PAUSE * 4, "{later:?}");
        for _ in 0..20 {
            b.trip(&"still down", &m);
        }
        assert!(b.pause().unwrap() <= MAX_PAUSE);
        std::thread::sleep(Duration::from_millis(20));
        b.close(&m);
        assert!(!b.is_open() && b.may_claim() && b.pause().is_none());
        let s = m.snapshot();
        assert_eq!(s.store_outages, 1, "one outage, however many trips");
        assert!(s.store_paused_ms >= 20, "{}", s.store_paused_ms);
    }
}
