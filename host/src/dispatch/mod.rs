//! The dispatch loop: turns outbox rows into script runs.
//!
//! Rule: one loop per host selects over cancellation, store signals
//! (LISTEN/NOTIFY on PostgreSQL, an in-process wake-up on SQLite), a polling
//! tick, and finished tasks (`running`). It claims no more rows than the
//! instance pool can run, so excess events wait in the outbox and never fail
//! for lack of capacity; while invocations are short it keeps a few rows per
//! instance claimed ahead ([`claim_ahead`]: a claimed row needs no instance
//! until it runs, and the runtime's own semaphore bounds the instances), so
//! that claims come in large batches. Finished rows are deleted in the same
//! round trip as the next claim. Claims and
//! completions are batched; a database error or a failing script never ends
//! the loop: an action that could not be committed is kept and tried again,
//! and a row whose outcome was lost runs again when its lease expires. While
//! the store is unreachable a circuit breaker (`breaker`) stops claiming
//! and backs off; it resumes by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{self, ConfigError, TriggerConfig};
use crate::inbox::Inbox;
use crate::metrics::Metrics;
use crate::model::{EventId, NewEvent, Timestamp};
use crate::runs::NewRun;
use crate::runtime::Runtime;
use crate::store::{self, Signal, Store, Subscription};

mod breaker;
mod event;
mod queue;
mod running;

use breaker::Breaker;
use event::{Action, BatchCache};
use running::Running;

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct DispatchOptions {
    /// Identifies this process in `locked_by`.
    pub worker_id: String,
    /// Most rows claimed at once (also bounded by free slots).
    pub batch_size: u32,
    /// How often to look for due rows without a signal.
    pub poll_interval: Duration,
    /// How long a claim holds a row; longer than the sandbox timeout.
    /// `PICLOUD_DISPATCH_LEASE_MS` [sandbox timeout * 3 + 10 s].
    pub lease: Duration,
    /// When set, each event's insert-to-start latency is recorded here
    /// (the benchmark's probe; off in production).
    pub start_latencies: Option<Arc<StartLatencies>>,
}

/// Insert-to-start latencies recorded by the dispatcher when asked to.
#[derive(Debug, Default)]
pub struct StartLatencies(std::sync::Mutex<Vec<Duration>>);

impl StartLatencies {
    fn record(&self, created_at: Timestamp) {
        let d = (Timestamp::now().0 - created_at.0)
            .to_std()
            .unwrap_or_default();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(d);
    }

    /// Take what was recorded so far.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl DispatchOptions {
    /// Sensible options for a sandbox `timeout`.
    pub fn for_timeout(timeout: Duration) -> Self {
        DispatchOptions {
            worker_id: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            batch_size: 256,
            poll_interval: Duration::from_millis(500),
            lease: timeout * 3 + Duration::from_secs(10),
            start_latencies: None,
        }
    }
}

/// The variable that sets [`DispatchOptions::lease`].
pub const LEASE_VAR: &str = "PICLOUD_DISPATCH_LEASE_MS";

impl DispatchOptions {
    /// [`DispatchOptions::for_timeout`] with the lease from the process
    /// environment (`PICLOUD_DISPATCH_LEASE_MS`).
    pub fn from_env(timeout: Duration) -> Result<Self, ConfigError> {
        Self::from_source(&config::Env, timeout)
    }

    /// [`DispatchOptions::for_timeout`] with the lease from any source. The
    /// lease must be longer than the sandbox `timeout`: a row whose lease ran
    /// out while its script still runs would be claimed and run again.
    pub fn from_source(src: &dyn config::Source, timeout: Duration) -> Result<Self, ConfigError> {
        let mut options = Self::for_timeout(timeout);
        let min = timeout.as_millis() as u64 + 1;
        let default = options.lease.as_millis() as u64;
        let max = 7 * 24 * 60 * 60 * 1000;
        options.lease = Duration::from_millis(config::int(src, LEASE_VAR, default, min, max)?);
        Ok(options)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// When the loop stops by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Until cancelled.
    Forever,
    /// When nothing is due now and nothing is running.
    UntilIdle,
    /// When the outbox is empty and nothing is running (waits for retries).
    UntilEmpty,
}

/// Finished rows to delete, and their runs, taken out of the pending
/// actions to ride with the next claim (or committed by themselves).
#[derive(Debug, Default)]
struct Done {
    completed: Vec<EventId>,
    skipped: Vec<EventId>,
    runs: Vec<NewRun>,
}

impl Done {
    /// Move the completions (and skips) out of `pending`.
    fn take(pending: &mut Vec<Action>) -> Done {
        let mut done = Done::default();
        let mut rest = Vec::with_capacity(pending.len());
        for action in pending.drain(..) {
            match action {
                Action::Complete(id, runs) => {
                    done.completed.push(id);
                    done.runs.extend(runs);
                }
                Action::Skip(id, runs) => {
                    done.skipped.push(id);
                    done.runs.extend(runs);
                }
                other => rest.push(other),
            }
        }
        *pending = rest;
        done
    }

    /// Put them back (the claim they rode with failed). The runs go back
    /// with the first of their rows: all of them commit together again.
    fn restore(&mut self, pending: &mut Vec<Action>) {
        let first = pending.len();
        pending.extend(
            self.completed
                .drain(..)
                .map(|id| Action::Complete(id, Vec::new())),
        );
        pending.extend(
            self.skipped
                .drain(..)
                .map(|id| Action::Skip(id, Vec::new())),
        );
        match pending.get_mut(first) {
            Some(Action::Complete(_, runs) | Action::Skip(_, runs)) => runs.append(&mut self.runs),
            _ => debug_assert!(self.runs.is_empty(), "runs without their rows"),
        }
    }

    fn len(&self) -> usize {
        self.completed.len() + self.skipped.len()
    }

    fn ids(&self) -> Vec<EventId> {
        self.completed
            .iter()
            .chain(&self.skipped)
            .copied()
            .collect()
    }

    /// They were committed: count them.
    fn count(&self, m: &Metrics) {
        Metrics::add(&m.succeeded, self.completed.len() as u64);
        Metrics::add(&m.skipped, self.skipped.len() as u64);
    }
}

/// Everything a task needs.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) config: TriggerConfig,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Shared {
    pub(crate) fn count_reply(&self) {
        Metrics::add(&self.metrics.replied, 1);
    }
    pub(crate) fn count_abandoned(&self) {
        Metrics::add(&self.metrics.abandoned, 1);
    }
}

/// The dispatcher of one process.
pub struct Dispatcher {
    shared: Arc<Shared>,
    options: DispatchOptions,
}

/// Invocations shorter than this on average make the dispatcher claim
/// ahead, as long as at least half the instances are idle. Longer ones gain
/// nothing from it (the pool, not the claim, is the bottleneck), and with
/// CPU-bound guests a pool kept full to the brim leaves each guest a
/// thinner slice of the cores before its deadline.
pub const CLAIM_AHEAD_BELOW: Duration = Duration::from_millis(1);

/// Rows kept claimed per instance of the pool while invocations are short:
/// as many as the lease covers.
/// A row claimed `n`-th for an instance waits at most `n - 1` deadlines for
/// it and then runs for at most one, so `n` deadlines must fit in the lease:
/// 4 with the defaults (lease 25 s, deadline 5 s), at least 1, at most 4.
pub fn claim_ahead(lease: Duration, timeout: Duration) -> u32 {
    let fits = lease.as_millis() / timeout.as_millis().max(1);
    fits.saturating_sub(1).clamp(1, 4) as u32
}

/// What a row's lease must still cover beyond its deadline when it starts:
/// the commit of its outcome.
const START_MARGIN: Duration = Duration::from_secs(1);

/// A claim that takes longer than this counts as the store failing (the
/// breaker's probe must not hang on a dead pool). Rows a late claim leased
/// run after their lease.
const CLAIM_LIMIT: Duration = Duration::from_secs(3);

/// How often a running dispatcher sweeps for parked rows nothing holds
/// back any more ([`store::OutboxRepo::release_parked`]).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How often a dispatcher looks for due cron ticks.
const CRON_EVERY: Duration = Duration::from_millis(200);

/// Turn due cron ticks into rows every [`CRON_EVERY`] until `stop` (see
/// `crate::cron`: each tick once, whichever dispatcher gets there first).
/// Each look runs on a task of its own, so it always completes (a write
/// dropped mid-way could hold SQLite's write lock), and a look still
/// running when the next is due is not doubled.
async fn schedule_cron(store: Arc<dyn Store>, stop: CancellationToken) {
    let mut every = tokio::time::interval(CRON_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if running.as_ref().is_some_and(|job| !job.is_finished()) {
            continue;
        }
        let store = store.clone();
        running = Some(tokio::spawn(async move {
            if let Err(e) = store.schedule_cron().await {
                // The claim loop's breaker says when the store is down.
                tracing::debug!(error = %e, "cannot schedule cron ticks");
            }
        }));
    }
}

/// Commit finished rows once this many outcomes have gathered...
const FLUSH_AT: usize = 128;
/// ...or once the oldest has waited this long.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

impl Dispatcher {
    pub(crate) fn with_shared(shared: Arc<Shared>, options: DispatchOptions) -> Self {
        Dispatcher { shared, options }
    }

    /// Run the loop until `cancel` fires or `mode` says it is done. On
    /// cancellation it stops claiming, gives back the leases of rows claimed
    /// ahead that have not started, and lets running invocations finish
    /// (they are bounded by the sandbox deadline).
    pub async fn run(&self, cancel: CancellationToken, mode: RunMode) -> store::Result<()> {
        let s = &self.shared;
        let instances = s.runtime.ceiling().max_instances;
        // Claimed rows not finished yet: a few per instance.
        let ahead = claim_ahead(self.options.lease, s.runtime.ceiling().timeout);
        let most = instances * ahead;
        let slots = Arc::new(Semaphore::new(most as usize));
        let tasks = Running::new();
        // Instances the claimed rows take turns on. A row claimed ahead
        // waits here; if the dispatcher stops first, its lease is given back.
        let starts = Arc::new(Semaphore::new(instances as usize));
        let mut pending: Vec<Action> = Vec::new();
        let mut breaker = Breaker::default();
        let mut subscription = self.subscribe(&mut breaker).await;
        let mut last_flush = Instant::now();
        let mut last_sweep = Instant::now();
        // Cron ticks become rows on a task of their own, so the loop never
        // waits for it; the rows it writes wake the loop like any others.
        let cron = cancel.child_token();
        let _stop_cron = cron.clone().drop_guard();
        tokio::spawn(schedule_cron(s.store.clone(), cron));
        // Whether there may be rows to claim: at start, on a signal, on the
        // poll tick, and when running tasks free half the slots.
        let mut look = true;

        loop {
            self.collect(&tasks, &mut pending, &mut breaker);
            // Rows claimed and not finished may be `in_flight`: the pool, or
            // a few per instance while invocations are short and the pool is
            // not busy with long ones.
            let short = s.runtime.recent_run_time() < CLAIM_AHEAD_BELOW
                && s.runtime.available_instances() * 2 >= instances as usize;
            let in_flight = if short { most } else { instances };
            let used = most - slots.available_permits() as u32;
            let free = in_flight.saturating_sub(used);
            // Claim again once half of them are free: batches of at least half.
            let low_water = (in_flight / 2).max(1);
            tasks.wake_at((in_flight - low_water) as usize);
            let idle = tasks.count() == 0;
            // Claim in batches: wait for half the slots to be free unless
            // nothing is running (an idle dispatcher starts at once). While
            // the store is away, only when the breaker is due for a probe.
            let claim_limit = (look
                && !cancel.is_cancelled()
                && breaker.may_claim()
                && free > 0
                && (free >= low_water || idle))
                .then(|| free.min(self.options.batch_size));
            // Commit outcomes in batches: when enough have gathered, when
            // nothing else is running, or when the oldest has waited long
            // enough. Completions ride with the claim when one follows.
            let flush_due = pending.len() >= FLUSH_AT
                || idle
                || cancel.is_cancelled()
                || last_flush.elapsed() >= FLUSH_EVERY;
            let mut done = Done::default();
            let mut unblocked = false;
            if !pending.is_empty() && (flush_due || claim_limit.is_some()) && breaker.may_claim() {
                last_flush = Instant::now();
                if claim_limit.is_some() {
                    done = Done::take(&mut pending);
                }
                // Like a claim, a commit that gets no answer within
                // CLAIM_LIMIT means the store is away: the breaker opens
                // (and says so) while the commit keeps waiting, so an
                // outage that only commits meet is said too.
                let applied = self.apply(&mut pending, &mut unblocked);
                tokio::pin!(applied);
                let applied = tokio::select! {
                    result = &mut applied => result,
                    _ = tokio::time::sleep(CLAIM_LIMIT) => {
                        let late = format!("a commit got no answer within {CLAIM_LIMIT:?}");
                        breaker.trip(&late, &s.metrics);
                        applied.await
                    }
                };
                if let Err(e) = applied {
                    breaker.trip(&e, &s.metrics);
                }
            }

            let mut claimed_full = false;
            let mut claimed_any = false;
            // Claim even when committing failed: one outcome that cannot be
            // committed must not stop the others (it is retried each round).
            // A store that is down fails the claim too, and the breaker opens.
            if let Some(limit) = claim_limit.filter(|_| breaker.may_claim()) {
                look = false;
                match self.claim(limit, &mut done).await {
                    Ok(rows) => {
                        breaker.close(&s.metrics);
                        claimed_any = !rows.is_empty();
                        claimed_full = rows.len() as u32 == limit;
                        let batch = Arc::new(BatchCache::default());
                        if let Some(probe) = &self.options.start_latencies {
                            rows.iter().for_each(|row| probe.record(row.created_at));
                        }
                        let (rows, queues) = group_queues(rows);
                        for group in queues {
                            let mut permit = slots
                                .clone()
                                .try_acquire_many_owned(group.len() as u32)
                                .expect("claimed within free slots");
                            let (s, batch) = (self.shared.clone(), batch.clone());
                            let (starts, cancel) = (starts.clone(), cancel.clone());
                            let ids: Vec<EventId> = group.iter().map(|r| r.id).collect();
                            let release = move || ids.into_iter().map(Action::Release).collect();
                            // One slot per message: the running count stays by row.
                            let first = permit.split(1).expect("at least one row");
                            tasks.spawn(first, async move {
                                let _rest = permit;
                                let start = tokio::select! {
                                    biased;
                                    _ = cancel.cancelled() => return release(),
                                    start = starts.acquire_owned() => start,
                                };
                                let needed = s.runtime.ceiling().timeout + START_MARGIN;
                                if group[0]
                                    .locked_until
                                    .is_some_and(|l| l < Timestamp::now().plus(needed))
                                {
                                    return release();
                                }
                                let actions = queue::process(s, batch, group).await;
                                drop(start);
                                actions
                            });
                        }
                        for row in rows {
                            let permit = slots
                                .clone()
                                .try_acquire_owned()
                                .expect("claimed within free slots");
                            let (s, batch) = (self.shared.clone(), batch.clone());
                            let (starts, cancel) = (starts.clone(), cancel.clone());
                            tasks.spawn(permit, async move {
                                let start = tokio::select! {
                                    biased;
                                    _ = cancel.cancelled() => return vec![Action::Release(row.id)],
                                    start = starts.acquire_owned() => start,
                                };
                                // A row starts only while its lease still covers
                                // its run; one that waited too long is given back.
                                let needed = s.runtime.ceiling().timeout + START_MARGIN;
                                if row
                                    .locked_until
                                    .is_some_and(|l| l < Timestamp::now().plus(needed))
                                {
                                    return vec![Action::Release(row.id)];
                                }
                                let ordered = row.order_key.is_some();
                                let mut actions = event::process(s, batch, row).await;
                                drop(start);
                                if ordered {
                                    actions.push(Action::Unblock);
                                }
                                actions
                            });
                        }
                    }
                    Err(e) => {
                        done.restore(&mut pending);
                        breaker.trip(&e, &s.metrics);
                        look = true;
                    }
                }
            } else {
                done.restore(&mut pending);
            }
            // The safety net of ordered triggers' parked rows (see
            // `OutboxRepo::release_parked`).
            // Like every store call of the loop, bounded: a store that went
            // away mid-sweep trips the breaker instead of holding the loop.
            if last_sweep.elapsed() >= SWEEP_EVERY && !breaker.is_open() {
                last_sweep = Instant::now();
                let store = s.store.clone();
                let sweep = tokio::spawn(async move { store.release_parked().await });
                match tokio::time::timeout(CLAIM_LIMIT, sweep).await {
                    Ok(Ok(Ok(0))) => {}
                    Ok(Ok(Ok(_))) => look = true,
                    Ok(Ok(Err(e))) => tracing::debug!(error = %e, "cannot sweep parked rows"),
                    Ok(Err(e)) => tracing::debug!(error = %e, "the sweep task failed"),
                    Err(_) => breaker.trip(
                        &format!("a sweep of parked rows got no answer within {CLAIM_LIMIT:?}"),
                        &s.metrics,
                    ),
                }
            }
            if claimed_full || unblocked {
                // More may be due (or the rows behind an ordered row just
                // settled): look again as soon as slots allow.
                look = true;
                if slots.available_permits() > 0 {
                    continue;
                }
            }

            if tasks.count() == 0 {
                // Whatever finished since the top of the loop.
                self.collect(&tasks, &mut pending, &mut breaker);
                if !pending.is_empty() && breaker.may_claim() {
                    continue;
                }
                if pending.is_empty() {
                    if cancel.is_cancelled() {
                        break;
                    }
                    if !claimed_any && !breaker.is_open() && mode != RunMode::Forever {
                        match self.idle(mode).await {
                            Ok(true) => break,
                            Ok(false) => look = true,
                            Err(e) => breaker.trip(&e, &s.metrics),
                        }
                    }
                }
                if cancel.is_cancelled() && breaker.is_open() {
                    // Shutting down with outcomes the store will not take:
                    // their rows run again after their leases (at-least-once).
                    tracing::warn!(
                        outcomes = pending.len(),
                        "stopping while the store is unreachable; those rows run again after their leases"
                    );
                    break;
                }
            }

            let pause = breaker.pause().unwrap_or(self.options.poll_interval);
            let flush_at = (last_flush + FLUSH_EVERY).max(Instant::now() + FLUSH_EVERY / 5);
            tokio::select! {
                _ = cancel.cancelled(), if !cancel.is_cancelled() => {}
                // Collect and commit what finished while tasks run: they wake
                // the loop only at the thresholds (see `running`).
                _ = tokio::time::sleep_until(flush_at.into()), if tasks.count() > 0 && !breaker.is_open() => {}
                _ = tasks.woken() => look = true,
                signal = next_signal(&mut subscription) => {
                    match signal {
                        Ok(Signal::Outbox) => look = true,
                        Ok(Signal::Reply(inbox)) => self.reply_arrived(&inbox).await,
                        // Not listened for here.
                        Ok(Signal::Runs) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "store subscription broke; polling until it is back");
                            subscription = None;
                        }
                    }
                }
                _ = tokio::time::sleep(pause) => {
                    look = true;
                    breaker.count(&s.metrics);
                    if subscription.is_none() && breaker.may_claim() {
                        subscription = self.subscribe(&mut breaker).await;
                    }
                }
            }
        }
        breaker.close(&s.metrics);
        Ok(())
    }

    /// Keep the actions of the tasks that finished for the next commit. A
    /// row that failed for the store's reasons makes the breaker suspect an
    /// outage (the next claim tells).
    fn collect(&self, tasks: &Running, pending: &mut Vec<Action>, breaker: &mut Breaker) {
        let actions = tasks.take();
        if !breaker.is_open()
            && let Some(why) = actions.iter().find_map(Action::infrastructure_failure)
        {
            breaker.suspect(&why, &self.shared.metrics);
        }
        pending.extend(actions);
    }

    /// Listen for store signals, waiting at most [`CLAIM_LIMIT`]: a store
    /// that does not answer trips the breaker (and is said) instead of
    /// holding the loop while tasks finish and nothing claims or commits.
    async fn subscribe(&self, breaker: &mut Breaker) -> Option<Box<dyn Subscription>> {
        let subscribed =
            match tokio::time::timeout(CLAIM_LIMIT, self.shared.store.subscribe()).await {
                Ok(subscribed) => subscribed,
                Err(_) => {
                    let late =
                        format!("subscribing to its signals got no answer within {CLAIM_LIMIT:?}");
                    breaker.trip(&late, &self.shared.metrics);
                    return None;
                }
            };
        match subscribed {
            Ok(sub) => Some(sub),
            Err(e) if breaker.is_open() => {
                tracing::debug!(error = %e, "cannot subscribe to store signals yet; polling");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to store signals; polling");
                None
            }
        }
    }

    /// Commit `done` and claim up to `limit` rows, in one round trip. The
    /// store call runs on its own task and is waited for at most
    /// [`CLAIM_LIMIT`]: a dead pool cannot hang the loop, and a transaction
    /// is never dropped half-begun (a late claim's rows run after their lease).
    async fn claim(
        &self,
        limit: u32,
        done: &mut Done,
    ) -> store::Result<Vec<crate::model::OutboxEvent>> {
        let span = tracing::debug_span!(
            "picloud.dispatch.claim",
            limit,
            completed = done.len(),
            claimed = tracing::field::Empty
        );
        async {
            let store = self.shared.store.clone();
            let ids = done.ids();
            // Shared with the claim's task: if the claim fails, the runs go
            // back to `done`, to be restored with their rows.
            let runs = Arc::new(std::mem::take(&mut done.runs));
            let (worker, lease) = (self.options.worker_id.clone(), self.options.lease);
            let claim = tokio::spawn({
                let runs = runs.clone();
                async move {
                    store
                        .complete_and_claim(&ids, &runs, &worker, limit, lease)
                        .await
                }
            });
            let failed = match tokio::time::timeout(CLAIM_LIMIT, claim).await {
                Ok(Ok(Ok(rows))) => Ok(rows),
                Ok(Ok(Err(e))) => Err(e),
                Ok(Err(e)) => Err(store::Error::Unreachable {
                    url: "the store".into(),
                    reason: format!("the claim task failed: {e}"),
                }),
                Err(_) => Err(store::Error::Unreachable {
                    url: "the store".into(),
                    reason: format!("a claim got no answer within {CLAIM_LIMIT:?}"),
                }),
            };
            let rows = match failed {
                Ok(rows) => rows,
                Err(e) => {
                    // A late claim may still commit them: recording a run
                    // twice is harmless (its id makes the insert a no-op).
                    done.runs = Arc::try_unwrap(runs).unwrap_or_else(|shared| (*shared).clone());
                    return Err(e);
                }
            };
            done.count(&self.shared.metrics);
            tracing::Span::current().record("claimed", rows.len());
            Metrics::add(&self.shared.metrics.claimed, rows.len() as u64);
            Ok(rows)
        }
        .instrument(span)
        .await
    }

    /// Whether the loop may stop in `mode`; sleeps until the next due row in
    /// `UntilEmpty`.
    async fn idle(&self, mode: RunMode) -> store::Result<bool> {
        // A parked row whose release never ran runs now.
        if self.shared.store.release_parked().await? > 0 {
            return Ok(false);
        }
        // Held and parked rows are never due: they do not keep the loop
        // waiting.
        let next = self
            .shared
            .store
            .next_due_at()
            .await?
            .filter(|due| *due < Timestamp::held());
        Ok(match (mode, next) {
            (_, None) => true,
            (RunMode::UntilIdle, Some(due)) => due > Timestamp::now(),
            (RunMode::UntilEmpty, Some(due)) => {
                let wait = (due.0 - Timestamp::now().0).to_std().unwrap_or_default();
                tokio::time::sleep(wait.min(self.options.poll_interval)).await;
                false
            }
            (RunMode::Forever, Some(_)) => false,
        })
    }

    /// A reply was parked in the store for some inbox; take it if it is ours.
    async fn reply_arrived(&self, inbox: &str) {
        if !self.shared.inbox.owns(inbox) {
            return;
        }
        crate::service::collect_reply(&self.shared, inbox).await;
    }

    /// Commit the actions: one batched delete, one batched reschedule, and the
    /// rare per-row transactions. What fails stays in `pending`, and the
    /// first failure is returned (the breaker says it, once).
    async fn apply(&self, pending: &mut Vec<Action>, unblocked: &mut bool) -> store::Result<()> {
        let s = &self.shared;
        let m = &s.metrics;
        let mut finished = Done::take(pending);
        let mut retries = (Vec::new(), Vec::new());
        let mut postponed = (Vec::new(), Vec::new());
        let mut released = Vec::new();
        let mut held = Vec::new();
        let mut fan_outs = FanOuts::default();
        let mut rest = Vec::new();
        for action in pending.drain(..) {
            match action {
                Action::Retry(r, runs) => {
                    retries.0.push(r);
                    retries.1.extend(runs);
                }
                Action::Postpone(r, runs) => {
                    postponed.0.push(r);
                    postponed.1.extend(runs);
                }
                Action::Release(id) => released.push(id),
                Action::Hold(id) => held.push(id),
                Action::Settled => {}
                Action::Unblock => *unblocked = true,
                Action::Leave(id) => {
                    tracing::debug!(event.id = %id, "left leased for a later attempt")
                }
                Action::FanOut {
                    raw,
                    invocations,
                    exhausted,
                    postponed,
                    deferred,
                    runs,
                    ..
                } if exhausted.is_empty() => {
                    fan_outs.add(raw, invocations, postponed, deferred, runs)
                }
                other => rest.push(other),
            }
        }
        let mut failed = None;
        if !fan_outs.raws.is_empty() {
            match s
                .store
                .fan_out(&fan_outs.raws, &fan_outs.rows, &fan_outs.runs)
                .await
            {
                Ok(_) => fan_outs.count(m),
                Err(e) => {
                    tracing::debug!(error = %e, rows = fan_outs.raws.len(), "batched fan-out failed; will retry");
                    pending.extend(fan_outs.into_actions());
                    failed.get_or_insert(e);
                }
            }
        }
        if finished.len() > 0 {
            match s.store.complete(&finished.ids(), &finished.runs).await {
                Ok(_) => finished.count(m),
                Err(e) => {
                    tracing::debug!(error = %e, rows = finished.len(), "batched delete failed; will retry");
                    finished.restore(pending);
                    failed.get_or_insert(e);
                }
            }
        }
        if !released.is_empty() {
            match s.store.release(&released).await {
                Ok(()) => {
                    tracing::debug!(rows = released.len(), "gave back rows that never started")
                }
                Err(e) => {
                    tracing::debug!(error = %e, rows = released.len(), "giving back leases failed; will retry");
                    pending.extend(released.into_iter().map(Action::Release));
                    failed.get_or_insert(e);
                }
            }
        }
        if !held.is_empty() {
            match s.store.hold(&held).await {
                Ok(()) => Metrics::add(&m.held, held.len() as u64),
                Err(e) => {
                    tracing::debug!(error = %e, rows = held.len(), "holding rows failed; will retry");
                    pending.extend(held.into_iter().map(Action::Hold));
                    failed.get_or_insert(e);
                }
            }
        }
        for ((rows, runs), counter, wrap) in [
            (
                retries,
                &m.retried,
                Action::Retry as fn(store::Retry, event::Runs) -> Action,
            ),
            (postponed, &m.postponed, Action::Postpone),
        ] {
            if rows.is_empty() {
                continue;
            }
            match s.store.reschedule(&rows, &runs).await {
                Ok(()) => Metrics::add(counter, rows.len() as u64),
                Err(e) => {
                    tracing::debug!(error = %e, rows = rows.len(), "batched reschedule failed; will retry");
                    // The runs go back with the first row: they commit together again.
                    let mut runs = Some(runs);
                    pending.extend(
                        rows.into_iter()
                            .map(|r| wrap(r, runs.take().unwrap_or_default())),
                    );
                    failed.get_or_insert(e);
                }
            }
        }
        for action in rest {
            if let Err((e, action)) = self.apply_one(action).await {
                tracing::debug!(error = %e, "could not commit a dispatch outcome; will retry");
                pending.push(action);
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn apply_one(&self, action: Action) -> Result<(), (store::Error, Action)> {
        let s = &self.shared;
        let m = &s.metrics;
        match action {
            Action::DeadLetter {
                dead,
                emit_event,
                runs,
            } => match s.store.dead_letter(&dead, emit_event, &runs).await {
                Ok(dl) => {
                    tracing::info!(dead_letter.id = %dl.id, event.id = %dead.original_event_id, error = %dead.last_error, "dead-lettered");
                    Metrics::add(&m.dead_lettered, 1);
                    if !emit_event {
                        Metrics::add(&m.depth_exceeded, 1);
                    }
                    Ok(())
                }
                Err(e) => Err((
                    e,
                    Action::DeadLetter {
                        dead,
                        emit_event,
                        runs,
                    },
                )),
            },
            Action::StopRecursion {
                event,
                dead_letter,
                runs,
            } => {
                let result = match dead_letter {
                    Some(dl) => s.store.stop_recursion(event, dl, &runs).await,
                    None => s.store.complete(&[event], &runs).await.map(|_| ()),
                };
                match result {
                    Ok(()) => {
                        tracing::info!(event.id = %event, dead_letter.id = ?dead_letter, "dead-letter handler gave up: resolved handler_failed");
                        Metrics::add(&m.recursion_stopped, 1);
                        Ok(())
                    }
                    Err(e) => Err((
                        e,
                        Action::StopRecursion {
                            event,
                            dead_letter,
                            runs,
                        },
                    )),
                }
            }
            Action::FanOut {
                raw,
                invocations,
                exhausted,
                postponed,
                storage_error,
                deferred,
                runs,
            } => match s.store.fan_out(&[raw], &invocations, &runs).await {
                Ok(ids) => {
                    count_fan_out(m, invocations.len(), exhausted.len(), postponed, deferred);
                    for i in exhausted {
                        // Committed next round with the rest of the dead letters.
                        let next = event::exhausted_invocation(ids[i], &invocations[i]);
                        if let Err((e, a)) = Box::pin(self.apply_one(next)).await {
                            // The invocation row exists now; it would run again
                            // rather than be lost, but keep trying to end it.
                            return Err((e, a));
                        }
                    }
                    Ok(())
                }
                Err(e) => Err((
                    e,
                    Action::FanOut {
                        raw,
                        invocations,
                        exhausted,
                        postponed,
                        storage_error,
                        deferred,
                        runs,
                    },
                )),
            },
            Action::Send { id, events, runs } => {
                match s.store.fan_out(id.as_slice(), &events, &runs).await {
                    Ok(_) => {
                        Metrics::add(&m.succeeded, u64::from(id.is_some()));
                        Ok(())
                    }
                    Err(e) => Err((e, Action::Send { id, events, runs })),
                }
            }
            other => {
                debug_assert!(false, "batched action reached apply_one: {other:?}");
                Ok(())
            }
        }
    }
}

/// Split claimed rows into those processed one by one and the messages
/// of each queue claimed together, which a batch consumer takes at once
/// (see `queue`).
fn group_queues(
    rows: Vec<crate::model::OutboxEvent>,
) -> (
    Vec<crate::model::OutboxEvent>,
    Vec<Vec<crate::model::OutboxEvent>>,
) {
    let mut singles = Vec::with_capacity(rows.len());
    let mut groups: std::collections::HashMap<(crate::model::AppId, String), Vec<_>> =
        std::collections::HashMap::new();
    for row in rows {
        match queue::batchable(&row).map(str::to_owned) {
            Some(q) => groups.entry((row.app_id, q)).or_default().push(row),
            None => singles.push(row),
        }
    }
    (singles, groups.into_values().collect())
}

/// Count one committed fan-out of `rows` invocation rows: `exhausted` of
/// them end at once, `postponed` failed for the host's reasons, and the last
/// `deferred` are ordered triggers' first runs, which are not retries.
fn count_fan_out(m: &Metrics, rows: usize, exhausted: usize, postponed: usize, deferred: usize) {
    let failed = rows - deferred;
    Metrics::add(&m.fanned_out, u64::from(failed > 0));
    Metrics::add(&m.postponed, postponed as u64);
    Metrics::add(&m.retried, (failed - exhausted - postponed) as u64);
}

/// The fan-outs of a commit with no row that ends at once (most are the
/// ordered triggers' rows of raw kv events), written in one transaction.
#[derive(Default)]
struct FanOuts {
    raws: Vec<EventId>,
    rows: Vec<NewEvent>,
    runs: Vec<NewRun>,
    /// Per fan-out: how many rows and runs, `postponed` and `deferred`.
    parts: Vec<(usize, usize, usize, usize)>,
}

impl FanOuts {
    fn add(
        &mut self,
        raw: EventId,
        rows: Vec<NewEvent>,
        postponed: usize,
        deferred: usize,
        runs: Vec<NewRun>,
    ) {
        self.raws.push(raw);
        self.parts
            .push((rows.len(), runs.len(), postponed, deferred));
        self.rows.extend(rows);
        self.runs.extend(runs);
    }

    fn count(&self, m: &Metrics) {
        for &(rows, _, postponed, deferred) in &self.parts {
            count_fan_out(m, rows, 0, postponed, deferred);
        }
    }

    /// The fan-outs again, to commit later.
    fn into_actions(self) -> Vec<Action> {
        let (mut rows, mut runs) = (self.rows.into_iter(), self.runs.into_iter());
        self.raws
            .into_iter()
            .zip(self.parts)
            .map(
                |(raw, (n_rows, n_runs, postponed, deferred))| Action::FanOut {
                    raw,
                    invocations: rows.by_ref().take(n_rows).collect(),
                    exhausted: Vec::new(),
                    postponed,
                    // Said (or not) when the fan-out was collected.
                    storage_error: None,
                    deferred,
                    runs: runs.by_ref().take(n_runs).collect(),
                },
            )
            .collect()
    }
}

async fn next_signal(sub: &mut Option<Box<dyn Subscription>>) -> store::Result<Signal> {
    match sub {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(var, _)| *var == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn claims_ahead_only_what_the_lease_covers() {
        let s = Duration::from_secs;
        assert_eq!(claim_ahead(s(25), s(5)), 4, "the defaults");
        assert_eq!(claim_ahead(s(3), s(1)), 2);
        assert_eq!(claim_ahead(Duration::from_millis(1001), s(1)), 1);
        assert_eq!(claim_ahead(s(3600), s(1)), 4);
    }

    #[test]
    fn lease_defaults_to_three_timeouts_and_ten_seconds() {
        let o = DispatchOptions::from_source(&src(&[]), Duration::from_millis(500)).unwrap();
        assert_eq!(o.lease, Duration::from_millis(11_500));
    }

    #[test]
    fn lease_is_read_and_must_outlast_the_sandbox_timeout() {
        let t = Duration::from_millis(500);
        let o = DispatchOptions::from_source(&src(&[(LEASE_VAR, "2000")]), t).unwrap();
        assert_eq!(o.lease, Duration::from_millis(2000));
        let e = DispatchOptions::from_source(&src(&[(LEASE_VAR, "500")]), t).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid PICLOUD_DISPATCH_LEASE_MS='500': expected a whole number from 501 to 604800000"
        );
        let e = DispatchOptions::from_source(&src(&[(LEASE_VAR, "2s")]), t).unwrap_err();
        assert_eq!((e.var, e.value.as_str()), (LEASE_VAR, "2s"));
    }
}
