//! Counters an operator can read: what the dispatcher did since start, in
//! total ([`MetricsSnapshot`]) and per app ([`AppMetrics`]), and their
//! Prometheus text ([`crate::TriggerHost::prometheus`]).
//!
//! Rule: counters only go up and are cheap enough for the hot path (relaxed
//! atomics; one map read per row for the per-app series). The totals are
//! bumped where an outcome is committed; the per-app series where it is
//! decided (a decision whose commit fails is committed again, never decided
//! twice). The Prometheus text is written by `prometheus-client`, never by
//! hand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::model::AppId;

/// The bucket bounds of the invocation duration histograms, in seconds:
/// from 50 µs (a no-op) to the sandbox's longest timeouts.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    5.0, 30.0,
];

/// What one app's events did in this process since it started.
#[derive(Debug)]
pub struct AppMetrics {
    pub(crate) claimed: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) stopped: AtomicU64,
    pub(crate) invoked: AtomicU64,
    pub(crate) duration: Histogram,
}

impl Default for AppMetrics {
    fn default() -> Self {
        AppMetrics {
            claimed: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            invoked: AtomicU64::new(0),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

/// A point-in-time copy of one app's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppSnapshot {
    /// Rows of the app claimed from the outbox.
    pub claimed: u64,
    /// Rows that succeeded.
    pub succeeded: u64,
    /// Invocations that failed (each attempt counts).
    pub failed: u64,
    /// Rows rescheduled for another attempt.
    pub retried: u64,
    /// Rows that became dead letters.
    pub dead_lettered: u64,
    /// Dead-letter handlers stopped by the recursion stop.
    pub stopped: u64,
    /// Invocations run (the duration histogram's count).
    pub invocations: u64,
}

impl AppMetrics {
    /// Read the counters.
    pub fn snapshot(&self) -> AppSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AppSnapshot {
            claimed: r(&self.claimed),
            succeeded: r(&self.succeeded),
            failed: r(&self.failed),
            retried: r(&self.retried),
            dead_lettered: r(&self.dead_lettered),
            stopped: r(&self.stopped),
            invocations: r(&self.invoked),
        }
    }

    /// The invocation duration histogram (seconds).
    pub fn duration(&self) -> &Histogram {
        &self.duration
    }
}

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
    apps: RwLock<HashMap<AppId, Arc<AppMetrics>>>,
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

    /// The counters of `app`, made at its first event.
    pub(crate) fn app(&self, app: AppId) -> Arc<AppMetrics> {
        if let Some(m) = self
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&app)
        {
            return m.clone();
        }
        self.apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app)
            .or_default()
            .clone()
    }

    /// Record one invocation of `app` that took `elapsed`.
    pub(crate) fn invocation(&self, app: AppId, elapsed: Duration, failed: bool) {
        let m = self.app(app);
        m.duration.observe(elapsed.as_secs_f64());
        Metrics::add(&m.invoked, 1);
        if failed {
            Metrics::add(&m.failed, 1);
        }
    }

    /// Every app this process has seen events of, with its counters.
    pub fn apps(&self) -> Vec<(AppId, Arc<AppMetrics>)> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = apps.iter().map(|(a, m)| (*a, m.clone())).collect();
        list.sort_by_key(|(a, _)| *a);
        list
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

/// What a scrape reads from the store and the runtime, beside the counters.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Rows in the outbox, of every app.
    pub outbox_depth: i64,
    /// Rows in the outbox per app shown.
    pub outbox_depth_by_app: Vec<(AppId, i64)>,
    /// Seconds since the oldest due row became due (0 when none is late).
    pub oldest_due_age_seconds: f64,
    /// Unresolved dead letters per app shown.
    pub unresolved_dead_letters: Vec<(AppId, i64)>,
    /// The apps shown, with their names (`picloud_app_info`).
    pub app_names: Vec<(AppId, String)>,
    /// Sandbox instances running now.
    pub instances_in_use: i64,
    /// Sandbox instances that may run at once.
    pub instances_max: i64,
}

/// The Prometheus collector of a host: the counters of [`Metrics`] (only
/// of the apps in `apps`, when set) and the [`Gauges`] read for this
/// scrape. Register it in a `prometheus_client` registry of your own, or
/// let [`crate::TriggerHost::prometheus`] write the text.
#[derive(Debug)]
pub struct Collector {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) apps: Option<std::collections::HashSet<AppId>>,
    pub(crate) gauges: Gauges,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AppLabel {
    app_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AppInfo {
    app_id: String,
    app: String,
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let apps: Vec<(AppId, Arc<AppMetrics>)> = self
            .metrics
            .apps()
            .into_iter()
            .filter(|(a, _)| self.apps.as_ref().is_none_or(|shown| shown.contains(a)))
            .collect();
        let label = |a: &AppId| AppLabel {
            app_id: a.to_string(),
        };
        type Pick = fn(&AppMetrics) -> &AtomicU64;
        let counters: [(&str, &str, Pick); 6] = [
            ("events_claimed", "Outbox rows claimed, per app.", |m| {
                &m.claimed
            }),
            (
                "events_succeeded",
                "Outbox rows whose every trigger succeeded, per app.",
                |m| &m.succeeded,
            ),
            (
                "invocations_failed",
                "Invocations that failed (each attempt), per app.",
                |m| &m.failed,
            ),
            (
                "events_retried",
                "Failed rows rescheduled for another attempt, per app.",
                |m| &m.retried,
            ),
            (
                "events_dead_lettered",
                "Rows that became dead letters, per app.",
                |m| &m.dead_lettered,
            ),
            (
                "events_recursion_stopped",
                "Dead-letter handlers whose last attempt failed, resolved handler_failed, per app.",
                |m| &m.stopped,
            ),
        ];
        for (name, help, pick) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (a, m) in &apps {
                let l = label(a);
                ConstCounter::new(pick(m).load(Ordering::Relaxed))
                    .encode(family.encode_family(&l)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "invocation_duration_seconds",
            "How long invocations ran, per app.",
            None,
            MetricType::Histogram,
        )?;
        for (a, m) in &apps {
            let l = label(a);
            m.duration.encode(family.encode_family(&l)?)?;
        }
        let g = &self.gauges;
        for (name, help, values) in [
            (
                "outbox_depth_by_app",
                "Rows waiting in the outbox, per app.",
                &g.outbox_depth_by_app,
            ),
            (
                "dead_letters_unresolved",
                "Unresolved dead letters, per app (the dashboard badge).",
                &g.unresolved_dead_letters,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (a, v) in values {
                let l = label(a);
                ConstGauge::new(*v).encode(family.encode_family(&l)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "app",
            "The name of each app shown (value 1), to join on app_id.",
            None,
            MetricType::Info,
        )?;
        for (a, name) in &g.app_names {
            family.encode_info(&AppInfo {
                app_id: a.to_string(),
                app: name.clone(),
            })?;
        }
        for (name, help, value) in [
            (
                "outbox_depth",
                "Rows waiting in the outbox, of every app.",
                g.outbox_depth,
            ),
            (
                "instances_in_use",
                "Sandbox instances running now.",
                g.instances_in_use,
            ),
            (
                "instances_max",
                "Sandbox instances that may run at once.",
                g.instances_max,
            ),
        ] {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstGauge::new(g.oldest_due_age_seconds).encode(encoder.encode_descriptor(
            "outbox_oldest_due_age_seconds",
            "How long the oldest due row has waited past its due time.",
            None,
            MetricType::Gauge,
        )?)?;
        let total = self.metrics.snapshot();
        for (name, help, value) in [
            (
                "store_paused_seconds",
                "Time claiming was paused by the circuit breaker because the store was unreachable.",
                total.store_paused_ms as f64 / 1000.0,
            ),
            (
                "store_outages",
                "Times the circuit breaker opened because the store was unreachable.",
                total.store_outages as f64,
            ),
        ] {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}
