//! The dispatcher's circuit breaker over the store.
//!
//! Rule: while the store is unreachable the loop stops claiming and backs
//! off, doubling the pause from [`MIN_PAUSE`] up to [`MAX_PAUSE`]; after
//! each pause one claim probes the store, and the first claim that succeeds
//! closes the breaker. An outage is said once in the log when it starts and
//! once when it ends, never once per event, and the time spent paused is
//! counted in [`Metrics`].
//!
//! Two kinds of evidence open it. The dispatcher's own store call failing
//! (a claim, a commit) is an outage: [`Breaker::trip`] says so at once. A
//! script's host call failing for storage reasons is only a suspicion
//! ([`Breaker::suspect`]): claims pause the same, but the outage is said
//! only if the probe claim fails too. A script whose write failed just
//! before the store came back, or one that met a passing error, costs a
//! short pause and no log line: one outage is said once, however its
//! stragglers land.

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
    /// Whether the outage is confirmed (the dispatcher's own call failed)
    /// and was said; a suspected one closes without a word.
    said: bool,
}

/// Open (paused) while the store is unreachable, closed otherwise.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    outage: Option<Outage>,
}

impl Breaker {
    /// The dispatcher's own store call failed (`why`): open and say so, or
    /// back off further if already open.
    pub(crate) fn trip(&mut self, why: &dyn std::fmt::Display, metrics: &Metrics) {
        self.open(why, true, metrics);
    }

    /// A script's host call failed for storage reasons (`why`): pause
    /// claims until a probe claim tells whether the store is away, and say
    /// nothing unless it is.
    pub(crate) fn suspect(&mut self, why: &dyn std::fmt::Display, metrics: &Metrics) {
        self.open(why, false, metrics);
    }

    fn open(&mut self, why: &dyn std::fmt::Display, confirmed: bool, metrics: &Metrics) {
        let now = Instant::now();
        let outage = self.outage.get_or_insert(Outage {
            since: now,
            counted: now,
            pause: MIN_PAUSE / 2,
            probe_at: now,
            said: false,
        });
        if confirmed && !outage.said {
            tracing::warn!(error = %why, "store unreachable: pausing claims until it answers");
            Metrics::add(&metrics.store_outages, 1);
            outage.said = true;
        } else {
            tracing::debug!(error = %why, confirmed, pause = ?outage.pause, "store failed: pausing claims");
        }
        outage.pause = (outage.pause * 2).min(MAX_PAUSE);
        outage.probe_at = now + outage.pause;
        self.count(metrics);
    }

    /// A claim succeeded: close, saying how long the outage lasted when it
    /// was said.
    pub(crate) fn close(&mut self, metrics: &Metrics) {
        self.count(metrics);
        match self.outage.take() {
            Some(o) if o.said => {
                tracing::warn!(outage = ?o.since.elapsed(), "store reachable again: claiming resumes");
            }
            Some(o) => {
                tracing::debug!(paused = ?o.since.elapsed(), "the store answered the probe: claiming resumes");
            }
            None => {}
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

    #[test]
    fn a_suspicion_pauses_and_counts_an_outage_only_when_a_probe_fails() {
        let m = Metrics::default();
        let mut b = Breaker::default();
        b.suspect(&"a script's write failed", &m);
        assert!(b.is_open() && !b.may_claim());
        assert!(b.pause().unwrap() <= MIN_PAUSE);
        b.close(&m);
        assert!(!b.is_open());
        assert_eq!(
            m.snapshot().store_outages,
            0,
            "the probe answered: no outage"
        );

        b.suspect(&"a script's write failed", &m);
        b.trip(&"the probe claim failed", &m);
        b.suspect(&"another script's write failed", &m);
        b.trip(&"the next probe failed", &m);
        b.close(&m);
        assert_eq!(
            m.snapshot().store_outages,
            1,
            "confirmed once, counted once"
        );
    }
}
