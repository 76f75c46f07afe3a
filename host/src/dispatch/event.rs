//! What happens to one claimed outbox row: the rules of SPEC section 5.
//!
//! Rule: processing a row decides its fate and returns it as [`Action`]s;
//! it writes nothing itself except a synchronous reply. The loop commits the
//! actions in batches, so the success path costs one share of a batched
//! delete. Every row ends in exactly one of: deleted after success, retried
//! with backoff, fanned out per failing trigger (and per ordered trigger,
//! whose runs keep their key's order from rows of their own), dead-lettered,
//! stopped by the recursion stop, postponed when the host's own storage
//! failed, or held
//! while its trigger is disabled. A row's fate is its own: one that cannot
//! be decoded is dead-lettered alone, without running.
//!
//! Every invocation, and every row not run for a reason of its own (removed
//! trigger, depth limit), yields its run record ([`crate::runs`]) inside
//! the action that settles the row, so the loop commits the two together.
//!
//! Infrastructure failures are not the script's (SPEC 14): an attempt that
//! failed because storage was unavailable, or whose row could not even be
//! looked at, is postponed with backoff and costs no attempt; only an event
//! older than the maximum event age is dead-lettered for it, and its dead
//! letter says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::OnceCell;
use tracing::Instrument;

use super::Shared;
use crate::inbox::{Delivery, ReplyMsg};
use crate::messages;
use crate::metrics::{AppMetrics, Metrics};
use crate::model::{
    AppId, Attempts, Cause, DeadLetterId, EventId, KvOp, NewDeadLetter, NewEvent, Order,
    OutboxEvent, Outcome, Script, ScriptId, Timestamp, Trigger, TriggerId, payload_order_key,
    source,
};
use crate::retry::{Resolved, RetryPolicy};
use crate::runs::{self, NewRun, RunOutcome};
use crate::runtime::{Failure, Invocation, InvokeError, LoadError, Success};
use crate::store::{self, NewAbandoned, Retry, StoredReply};

/// The run records that settle with an action (usually one; none when the
/// runs mode does not keep them).
pub(crate) type Runs = Vec<NewRun>;

/// The fate of a row, committed by the loop.
#[derive(Debug)]
pub(crate) enum Action {
    /// Succeeded (or nothing to do): delete the row.
    Complete(EventId, Runs),
    /// Succeeded and sent messages (queue, pubsub): delete the row, if
    /// any, and enqueue them in the same transaction.
    Send {
        id: Option<EventId>,
        events: Vec<NewEvent>,
        runs: Runs,
    },
    /// Failed with attempts left: record and reschedule.
    Retry(Retry, Runs),
    /// Failed for the host's reasons (storage unavailable): record and
    /// reschedule with the attempt count unchanged.
    Postpone(Retry, Runs),
    /// A raw event some of whose triggers failed: replace it by invocation
    /// rows; those at `exhausted` indexes have no attempts left and go
    /// straight on to their end (dead letter or recursion stop).
    FanOut {
        raw: EventId,
        invocations: Vec<NewEvent>,
        exhausted: Vec<usize>,
        /// How many of the rows (the last ones) are not retries: ordered
        /// triggers' runs, not yet attempted, and messages the runs sent.
        deferred: usize,
        /// How many of the rows failed for the host's reasons.
        postponed: usize,
        /// The first of those failures, for the log.
        storage_error: Option<String>,
        /// The raw event's runs, one per trigger.
        runs: Runs,
    },
    /// Out of attempts (or too deep): move to dead letters.
    DeadLetter {
        dead: NewDeadLetter,
        emit_event: bool,
        runs: Runs,
    },
    /// A dead-letter handler gave up: resolve its dead letter `handler_failed`.
    StopRecursion {
        event: EventId,
        dead_letter: Option<DeadLetterId>,
        runs: Runs,
    },
    /// A trigger or script was removed: drop the row.
    Skip(EventId, Runs),
    /// A retry or replay of a disabled trigger: hold it, not run and not
    /// counted, until the trigger is enabled again.
    Hold(EventId),
    /// Already settled (a reply was parked with its row deleted).
    Settled,
    /// Never started (the dispatcher is stopping): give the lease back, so
    /// the row runs soon, here or in another dispatcher.
    Release(EventId),
    /// The database failed while replying to a synchronous call: leave the
    /// row leased; it runs again when the lease expires.
    Leave(EventId),
    /// Beside the outcome of a row in a key's order (see
    /// `TriggerSpec::Kv::ordered`): once that outcome commits, the next row
    /// of the key may be claimable, so the loop claims again at once rather
    /// than at its next poll.
    Unblock,
}

impl Action {
    /// What went wrong, when this outcome comes from the host's storage
    /// failing (the dispatcher's circuit breaker listens for these).
    pub(crate) fn infrastructure_failure(&self) -> Option<String> {
        match self {
            Action::Postpone(r, _) => Some(r.last_error.clone()),
            Action::Leave(_) => Some("storage failed while replying to a synchronous call".into()),
            Action::FanOut {
                invocations,
                postponed,
                storage_error,
                ..
            } if *postponed > 0 => Some(format!(
                "{postponed} of {} triggers failed for the store's reasons: {}",
                invocations.len(),
                storage_error.as_deref().unwrap_or("unknown")
            )),
            _ => None,
        }
    }
}

/// Per-claim-batch memo of the matching and script lookups, so a batch of
/// events for the same collection costs one query, not one per event.
/// Matching still happens at dispatch time: the memo lives for one batch.
#[derive(Default)]
pub(crate) struct BatchCache {
    kv: Mutex<HashMap<(AppId, String, KvOp), Arc<OnceCell<Vec<Trigger>>>>>,
    named: Mutex<HashMap<(AppId, &'static str, String), Arc<OnceCell<Vec<Trigger>>>>>,
    triggers: Mutex<HashMap<TriggerId, Arc<OnceCell<Option<Trigger>>>>>,
    scripts: Mutex<HashMap<ScriptId, Arc<OnceCell<Option<Script>>>>>,
}

fn cell<K: std::hash::Hash + Eq, V>(
    map: &Mutex<HashMap<K, Arc<OnceCell<V>>>>,
    key: K,
) -> Arc<OnceCell<V>> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone()
}

/// Missing rows are `None`; other errors propagate.
fn optional<T>(r: store::Result<T>) -> store::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

impl BatchCache {
    async fn kv(
        &self,
        s: &Shared,
        app: AppId,
        collection: &str,
        op: KvOp,
    ) -> store::Result<Vec<Trigger>> {
        let c = cell(&self.kv, (app, collection.to_owned(), op));
        c.get_or_try_init(|| s.store.list_matching_kv(app, collection, op))
            .await
            .cloned()
    }

    /// The triggers of `kind` for `name` (see `TriggerRepo::list_matching`).
    pub(crate) async fn named(
        &self,
        s: &Shared,
        app: AppId,
        kind: &'static str,
        name: &str,
    ) -> store::Result<Vec<Trigger>> {
        let c = cell(&self.named, (app, kind, name.to_owned()));
        c.get_or_try_init(|| s.store.list_matching(app, kind, name))
            .await
            .cloned()
    }

    async fn trigger(&self, s: &Shared, id: TriggerId) -> store::Result<Option<Trigger>> {
        let c = cell(&self.triggers, id);
        c.get_or_try_init(|| async { optional(s.store.get_trigger(id).await) })
            .await
            .cloned()
    }

    async fn script(&self, s: &Shared, id: ScriptId) -> store::Result<Option<Script>> {
        let c = cell(&self.scripts, id);
        c.get_or_try_init(|| async { optional(s.store.get_script(id).await) })
            .await
            .cloned()
    }
}

/// Decide the fate of one claimed row.
pub(crate) async fn process(
    s: Arc<Shared>,
    batch: Arc<BatchCache>,
    ev: OutboxEvent,
) -> Vec<Action> {
    let span = tracing::info_span!(
        "picloud.dispatch.event",
        event.id = %ev.id,
        app.id = %ev.app_id,
        source = %ev.source,
        op = %ev.op,
        trigger.id = tracing::field::Empty,
        script.id = tracing::field::Empty,
    );
    if let Some(t) = ev.trigger_id {
        span.record("trigger.id", tracing::field::display(t));
    }
    if let Some(sc) = ev.script_id {
        span.record("script.id", tracing::field::display(sc));
    }
    async move {
        let app = s.metrics.app(ev.app_id);
        Metrics::add(&app.claimed, 1);
        let actions = match decide(&s, &batch, &ev).await {
            Ok(actions) => actions,
            // A synchronous call is never retried: its row waits for its
            // lease, and its caller has its own timeout.
            Err(e) if ev.reply_to.is_some() => {
                tracing::debug!(error = %e, "database error while replying; the row runs again after its lease");
                vec![Action::Leave(ev.id)]
            }
            Err(e) => {
                // Said once by the circuit breaker, not once per event.
                tracing::debug!(error = %e, "database error while dispatching; postponed");
                let error = InvokeError::Infrastructure(e.to_string());
                let policy = RetryPolicy::default().resolve(&s.config);
                vec![after_failure(&s, &ev, Timestamp::now(), &error, &policy, Vec::new())]
            }
        };
        count(&app, &actions);
        actions
    }
    .instrument(span)
    .await
}

/// Count a row's decided fate in its app's series.
fn count(app: &AppMetrics, actions: &[Action]) {
    for action in actions {
        let counter = match action {
            Action::Complete(..) | Action::Send { id: Some(_), .. } => &app.succeeded,
            Action::Retry(..) => &app.retried,
            Action::DeadLetter { .. } => &app.dead_lettered,
            Action::StopRecursion { .. } => &app.stopped,
            Action::FanOut {
                invocations,
                exhausted,
                postponed,
                deferred,
                ..
            } => {
                let failed = invocations.len() - deferred;
                Metrics::add(&app.retried, (failed - exhausted.len() - postponed) as u64);
                for i in exhausted {
                    let ended = match invocations[*i].source == source::DEAD_LETTER {
                        true => &app.stopped,
                        false => &app.dead_lettered,
                    };
                    Metrics::add(ended, 1);
                }
                continue;
            }
            _ => continue,
        };
        Metrics::add(counter, 1);
    }
}

async fn decide(s: &Shared, batch: &BatchCache, ev: &OutboxEvent) -> store::Result<Vec<Action>> {
    if let Some(why) = &ev.undecodable {
        // Nothing can run it; it must not hold up the rows claimed with it.
        let now = Timestamp::now();
        let first = ev.first_attempt_at.unwrap_or(now);
        let error = format!("{why}: dead-lettered without running");
        let run = not_run(s, ev, RunOutcome::Failed, Some(error.clone()));
        return Ok(vec![exhausted(
            ev.id,
            ev,
            ev.attempt_count,
            first,
            now,
            error,
            run.into_iter().collect(),
        )]);
    }
    let max_depth = s.config.max_trigger_depth;
    if ev.depth > max_depth {
        return Ok(vec![too_deep(
            s,
            ev,
            depth_error(max_depth, None, &ev.chain),
        )]);
    }
    if let Some(inbox) = &ev.reply_to {
        return direct(s, batch, ev, inbox).await;
    }
    if let Some(trigger_id) = ev.trigger_id {
        return invocation(s, batch, ev, trigger_id).await;
    }
    if let Some(script_id) = ev.script_id {
        return script_run(s, batch, ev, script_id).await;
    }
    raw(s, batch, ev).await
}

/// A direct run of one script without a caller waiting
/// (`NewEvent::invocation`): run it as the principal that asked, retried
/// and dead-lettered like a trigger's run.
async fn script_run(
    s: &Shared,
    batch: &BatchCache,
    ev: &OutboxEvent,
    script_id: ScriptId,
) -> store::Result<Vec<Action>> {
    let started = Timestamp::now();
    let Some(principal) = ev.principal.as_deref() else {
        // Refused at enqueue; a row written by hand can still lack it.
        let error = "a direct run of a script without a principal: dead-lettered without running";
        let run = not_run(s, ev, RunOutcome::Failed, Some(error.to_owned()));
        let first = ev.first_attempt_at.unwrap_or(started);
        return Ok(vec![exhausted(
            ev.id,
            ev,
            ev.attempt_count,
            first,
            started,
            error.to_owned(),
            run.into_iter().collect(),
        )]);
    };
    let ran = run(s, batch, ev, None, script_id, principal).await?;
    Ok(vec![settle(s, ev, started, ran, &RetryPolicy::default())])
}

/// The end of `ev`'s run, started at `started`: completed with what it
/// sent, or what its failure leads to under `policy` (resolved against the
/// host's defaults only then).
fn settle(
    s: &Shared,
    ev: &OutboxEvent,
    started: Timestamp,
    ran: Ran,
    policy: &RetryPolicy,
) -> Action {
    let runs = ran.run.into_iter().collect();
    match ran.result {
        Ok(ok) => succeeded(ev.id, ok.sent, runs),
        Err(failure) => {
            let policy = policy.resolve(&s.config);
            after_failure(s, ev, started, &failure.error, &policy, runs)
        }
    }
}

/// The end of a row whose run succeeded, with what the run sent.
pub(super) fn succeeded(id: EventId, sent: Vec<NewEvent>, runs: Runs) -> Action {
    match sent.is_empty() {
        true => Action::Complete(id, runs),
        false => Action::Send {
            id: Some(id),
            events: sent,
            runs,
        },
    }
}

/// Why an event was stopped for its depth: the limit, whose it is (the
/// host's, or the named trigger's), and the triggers that led to it.
fn depth_error(limit: i32, trigger: Option<&str>, chain: &[String]) -> String {
    let mut error = match trigger {
        None => format!("max trigger depth {limit} exceeded"),
        Some(name) => format!("trigger '{name}': its max depth {limit} exceeded"),
    };
    if !chain.is_empty() {
        error.push_str("; caused by triggers (newest first): ");
        error.push_str(&chain.join(" <- "));
    }
    error
}

/// SPEC 5.8: an event deeper than the limit (the host's, or its trigger's
/// own) is never executed.
fn too_deep(s: &Shared, ev: &OutboxEvent, error: String) -> Action {
    let runs: Runs = not_run(s, ev, RunOutcome::DepthExceeded, Some(error.clone()))
        .into_iter()
        .collect();
    if ev.source == source::DEAD_LETTER {
        return Action::StopRecursion {
            event: ev.id,
            dead_letter: dead_letter_id(&ev.payload),
            runs,
        };
    }
    let now = Timestamp::now();
    Action::DeadLetter {
        dead: NewDeadLetter {
            original_event_id: ev.id,
            app_id: ev.app_id,
            source: ev.source.clone(),
            op: ev.op.clone(),
            trigger_id: ev.trigger_id,
            script_id: ev.script_id,
            payload: ev.payload.clone(),
            depth: ev.depth,
            attempt_count: ev.attempt_count,
            first_attempt_at: ev.first_attempt_at.unwrap_or(now),
            last_attempt_at: ev.last_attempt_at.unwrap_or(now),
            last_error: error,
        },
        emit_event: false,
        runs,
    }
}

fn dead_letter_id(payload: &Value) -> Option<DeadLetterId> {
    payload.get("dead_letter_id")?.as_str()?.parse().ok()
}

/// A run record of `ev` with no timings yet.
fn new_run(
    ev: &OutboxEvent,
    trigger_id: Option<TriggerId>,
    script_id: Option<ScriptId>,
    principal: &str,
    started_at: Timestamp,
    outcome: RunOutcome,
) -> NewRun {
    NewRun {
        id: crate::model::RunId::new(),
        app_id: ev.app_id,
        trigger_id,
        script_id,
        event_id: ev.event_id,
        source: ev.source.clone(),
        op: ev.op.clone(),
        attempt: ev.attempt_count.max(0) + 1,
        principal: principal.to_owned(),
        started_at,
        duration_us: 0,
        outcome,
        limit: None,
        error: None,
        reply_bytes: None,
        logs: Vec::new(),
    }
}

/// The record of a row that is not run (`outcome` says why), if kept.
fn not_run(
    s: &Shared,
    ev: &OutboxEvent,
    outcome: RunOutcome,
    error: Option<String>,
) -> Option<NewRun> {
    s.config.runs.keeps(outcome).then(|| NewRun {
        error,
        ..new_run(
            ev,
            ev.trigger_id,
            ev.script_id,
            ev.principal.as_deref().unwrap_or_default(),
            Timestamp::now(),
            outcome,
        )
    })
}

/// One invocation's result and its run record (if the runs mode keeps it).
/// The record takes the logs.
pub(super) struct Ran {
    pub(super) result: Result<Success, Failure>,
    pub(super) run: Option<NewRun>,
}

/// Run `script_id` for `ev` as `principal`, for `trigger` if a trigger
/// matched.
pub(super) async fn run(
    s: &Shared,
    batch: &BatchCache,
    ev: &OutboxEvent,
    trigger: Option<&Trigger>,
    script_id: ScriptId,
    principal: &str,
) -> store::Result<Ran> {
    let started = Timestamp::now();
    let trigger_id = trigger.map(|t| t.id);
    let result = invoke(s, batch, ev, trigger, script_id, principal).await?;
    Ok(record(
        s, ev, trigger_id, script_id, principal, started, result,
    ))
}

/// Make the run record of an invocation's `result`.
fn record(
    s: &Shared,
    ev: &OutboxEvent,
    trigger_id: Option<TriggerId>,
    script_id: ScriptId,
    principal: &str,
    started: Timestamp,
    mut result: Result<Success, Failure>,
) -> Ran {
    let outcome = match &result {
        Ok(_) => RunOutcome::Succeeded,
        Err(f) if runs::limit_name(&f.error).is_some() => RunOutcome::Limit,
        Err(f) if f.denied => RunOutcome::Denied,
        Err(_) => RunOutcome::Failed,
    };
    let elapsed = match &result {
        Ok(ok) => ok.elapsed,
        Err(f) => f.elapsed,
    };
    s.metrics
        .invocation(ev.app_id, elapsed, outcome != RunOutcome::Succeeded);
    if !s.config.runs.keeps(outcome) {
        return Ran { result, run: None };
    }
    let mut run = new_run(ev, trigger_id, Some(script_id), principal, started, outcome);
    let logs = match &mut result {
        Ok(ok) => {
            if ev.reply_to.is_some() {
                run.reply_bytes = Some(ok.reply.as_ref().map_or(0, |r| r.len() as i64));
            }
            &mut ok.logs
        }
        Err(f) => {
            run.error = Some(f.error.to_string());
            run.limit = runs::limit_name(&f.error).map(str::to_owned);
            &mut f.logs
        }
    };
    run.duration_us = i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
    run.logs = std::mem::take(logs);
    Ran {
        result,
        run: Some(run),
    }
}

async fn invoke(
    s: &Shared,
    batch: &BatchCache,
    ev: &OutboxEvent,
    trigger: Option<&Trigger>,
    script_id: ScriptId,
    principal: &str,
) -> store::Result<Result<Success, Failure>> {
    let trigger_id = trigger.map(|t| t.id);
    let Some(script) = batch.script(s, script_id).await? else {
        return Ok(Err(LoadError::Code(format!(
            "script {script_id} was removed"
        ))
        .into()));
    };
    let input = Invocation {
        event_id: ev.event_id,
        app_id: ev.app_id,
        source: ev.source.clone(),
        op: ev.op.clone(),
        payload: ev.payload.to_string(),
        depth: ev.depth,
        attempt: (ev.attempt_count.max(0) + 1) as u32,
        trigger_id,
        script_id,
        principal: principal.to_owned(),
        chain: Cause::of_run(ev.depth, trigger.map(|t| t.name.as_str()), &ev.chain).chain,
    };
    let span = tracing::debug_span!("picloud.runtime.invoke", script.id = %script_id, trigger.id = ?trigger_id);
    Ok(s.runtime.invoke(&script, input).instrument(span).await)
}

/// SPEC 5.4 and 7: run, reply, never retry.
async fn direct(
    s: &Shared,
    batch: &BatchCache,
    ev: &OutboxEvent,
    inbox: &str,
) -> store::Result<Vec<Action>> {
    let principal = ev.principal.clone().unwrap_or_default();
    let (result, runs): (_, Runs) = match ev.script_id {
        Some(script_id) => {
            let trigger = match ev.trigger_id {
                Some(id) => batch.trigger(s, id).await?,
                None => None,
            };
            let ran = run(s, batch, ev, trigger.as_ref(), script_id, &principal).await?;
            (ran.result, ran.run.into_iter().collect())
        }
        None => {
            let error = LoadError::Code("direct invocation without a script".into());
            (Err(Failure::from(error)), Vec::new())
        }
    };
    let mut sent = Vec::new();
    let (msg, outcome, body) = match result {
        Ok(ok) => {
            sent = ok.sent;
            let body = ok.reply.clone().unwrap_or_default();
            (ReplyMsg::Ok(ok.reply), Outcome::Ok, body)
        }
        Err(f) => {
            let text = f.error.to_string();
            (
                ReplyMsg::Err(text.clone()),
                Outcome::Error,
                text.into_bytes(),
            )
        }
    };
    match s.inbox.deliver(inbox, msg) {
        Delivery::Delivered => {
            s.count_reply();
            Ok(vec![succeeded(ev.id, sent, runs)])
        }
        Delivery::Gone => {
            record_abandoned(s, ev, inbox, outcome, &body).await?;
            Ok(vec![succeeded(ev.id, sent, runs)])
        }
        Delivery::NotOurs if s.store.backend() == store::Backend::Sqlite => {
            // One process on SQLite: an inbox that is not ours has no owner left.
            record_abandoned(s, ev, inbox, outcome, &body).await?;
            Ok(vec![succeeded(ev.id, sent, runs)])
        }
        Delivery::NotOurs => {
            let reply = StoredReply {
                inbox: inbox.to_owned(),
                app_id: ev.app_id,
                outbox_event_id: ev.id,
                script_id: ev.script_id.unwrap_or(ScriptId(uuid::Uuid::nil())),
                outcome,
                body,
                created_at: Timestamp::now(),
            };
            s.store.put_reply(&reply, &runs).await?;
            match sent.is_empty() {
                true => Ok(vec![Action::Settled]),
                false => Ok(vec![Action::Send {
                    id: None,
                    events: sent,
                    runs: Vec::new(),
                }]),
            }
        }
    }
}

async fn record_abandoned(
    s: &Shared,
    ev: &OutboxEvent,
    inbox: &str,
    outcome: Outcome,
    body: &[u8],
) -> store::Result<()> {
    let detail = match outcome {
        Outcome::Ok => format!("reply of {} bytes, caller gone", body.len()),
        Outcome::Error => String::from_utf8_lossy(body).into_owned(),
    };
    s.store
        .record_abandoned(&NewAbandoned {
            app_id: ev.app_id,
            outbox_event_id: ev.id,
            script_id: ev.script_id.unwrap_or(ScriptId(uuid::Uuid::nil())),
            trigger_id: ev.trigger_id,
            reply_to: inbox.to_owned(),
            outcome,
            detail,
        })
        .await?;
    s.count_abandoned();
    Ok(())
}

/// SPEC 5.3: an invocation row runs its own trigger's script.
async fn invocation(
    s: &Shared,
    batch: &BatchCache,
    ev: &OutboxEvent,
    trigger_id: TriggerId,
) -> store::Result<Vec<Action>> {
    let Some(trigger) = batch.trigger(s, trigger_id).await? else {
        tracing::info!("trigger was removed; dropping its pending invocation");
        let error = format!("trigger {trigger_id} was removed");
        let run = not_run(s, ev, RunOutcome::Skipped, Some(error));
        return Ok(vec![Action::Skip(ev.id, run.into_iter().collect())]);
    };
    if !trigger.enabled {
        tracing::debug!("trigger is disabled; holding its pending invocation until it is enabled");
        return Ok(vec![Action::Hold(ev.id)]);
    }
    if let Some(limit) = trigger.max_depth.map(|d| d as i32)
        && ev.depth > limit
    {
        let error = depth_error(limit, Some(&trigger.name), &ev.chain);
        return Ok(vec![too_deep(s, ev, error)]);
    }
    let script_id = ev.script_id.unwrap_or(trigger.script_id);
    let started = Timestamp::now();
    let ran = run(
        s,
        batch,
        ev,
        Some(&trigger),
        script_id,
        &trigger.registered_by_principal,
    )
    .await?;
    Ok(vec![settle(s, ev, started, ran, &trigger.retry)])
}

/// What a failed attempt leads to.
enum Next {
    /// Try again at `due_at`; `attempt_count` attempts are spent so far.
    Retry {
        attempt_count: i32,
        due_at: Timestamp,
        postponed: bool,
    },
    /// No more attempts: the row ends (dead letter or recursion stop).
    Exhausted { attempt_count: i32, error: String },
}

/// How one failed attempt of `ev` counts under `policy`. The script's own
/// failure spends an attempt and backs off by the policy (or by the delay
/// the script asked for); a permanent error or an event older than the
/// policy's maximum age is not tried again. The host's failure (storage
/// unavailable) spends none and backs off by the event's age, until the
/// event is older than the maximum event age.
fn next_after(s: &Shared, ev: &OutboxEvent, error: &InvokeError, policy: &Resolved) -> Next {
    let spent = ev.attempt_count.max(0);
    let born = ev
        .first_attempt_at
        .unwrap_or(ev.created_at)
        .min(ev.created_at);
    let age = (Timestamp::now().0 - born.0).to_std().unwrap_or_default();
    if error.is_infrastructure() {
        let max = policy
            .max_age
            .map_or(s.config.max_event_age, |m| m.min(s.config.max_event_age));
        if age > max {
            return Next::Exhausted {
                attempt_count: spent,
                error: format!(
                    "{error}; gave up: the event is older than the maximum event age of {} s ({})",
                    max.as_secs(),
                    crate::config::MAX_EVENT_AGE_VAR
                ),
            };
        }
        return Next::Retry {
            attempt_count: spent,
            due_at: Timestamp::now().plus(s.config.infrastructure_backoff(age)),
            postponed: true,
        };
    }
    let attempts = spent + 1;
    if let Some(max) = policy.max_age
        && age > max
        && error.is_retryable()
    {
        return Next::Exhausted {
            attempt_count: attempts,
            error: format!(
                "{error}; gave up: the event is older than its trigger's maximum age of {} ms",
                max.as_millis()
            ),
        };
    }
    if attempts < policy.max_attempts && error.is_retryable() {
        let delay = error
            .retry_after()
            .unwrap_or_else(|| policy.delay(attempts));
        return Next::Retry {
            attempt_count: attempts,
            due_at: Timestamp::now().plus(delay),
            postponed: false,
        };
    }
    Next::Exhausted {
        attempt_count: attempts,
        error: error.to_string(),
    }
}

/// A failed attempt of an invocation row (its `runs`): retry, postpone,
/// dead-letter, or stop.
pub(super) fn after_failure(
    s: &Shared,
    ev: &OutboxEvent,
    started: Timestamp,
    error: &InvokeError,
    policy: &Resolved,
    runs: Runs,
) -> Action {
    let first = ev.first_attempt_at.unwrap_or(started);
    match next_after(s, ev, error, policy) {
        Next::Retry {
            attempt_count,
            due_at,
            postponed,
        } => {
            let retry = Retry {
                id: ev.id,
                attempt_count,
                first_attempt_at: first,
                last_attempt_at: started,
                last_error: error.to_string(),
                due_at,
            };
            if postponed {
                Action::Postpone(retry, runs)
            } else {
                Action::Retry(retry, runs)
            }
        }
        Next::Exhausted {
            attempt_count,
            error,
        } => exhausted(ev.id, ev, attempt_count, first, started, error, runs),
    }
}

/// The end of a row with no attempts left (SPEC 5.6 and 5.7); `runs` are
/// its last attempt's.
fn exhausted(
    id: EventId,
    ev: &OutboxEvent,
    attempts: i32,
    first: Timestamp,
    last: Timestamp,
    error: String,
    mut runs: Runs,
) -> Action {
    if ev.source == source::DEAD_LETTER {
        stopped(&mut runs);
        return Action::StopRecursion {
            event: id,
            dead_letter: dead_letter_id(&ev.payload),
            runs,
        };
    }
    Action::DeadLetter {
        dead: NewDeadLetter {
            original_event_id: id,
            app_id: ev.app_id,
            source: ev.source.clone(),
            op: ev.op.clone(),
            trigger_id: ev.trigger_id,
            script_id: ev.script_id,
            payload: ev.payload.clone(),
            depth: ev.depth,
            attempt_count: attempts,
            first_attempt_at: first,
            last_attempt_at: last,
            last_error: error,
        },
        emit_event: true,
        runs,
    }
}

/// The last attempt of a dead-letter handler that failed ended in the
/// recursion stop: its runs say so (a limit stays named in `limit`).
fn stopped(runs: &mut [NewRun]) {
    for run in runs {
        if run.outcome.is_failure() {
            run.outcome = RunOutcome::RecursionStopped;
        }
    }
}

/// SPEC 5.2: a raw event runs every matching trigger; each failing trigger
/// continues as its own invocation row.
async fn raw(s: &Shared, batch: &BatchCache, ev: &OutboxEvent) -> store::Result<Vec<Action>> {
    let triggers = match ev.source.as_str() {
        source::KV => {
            let Ok(op) = ev.op.parse::<KvOp>() else {
                return Ok(vec![Action::Complete(ev.id, Vec::new())]);
            };
            match ev.payload.get("collection").and_then(Value::as_str) {
                Some(collection) => batch.kv(s, ev.app_id, collection, op).await?,
                None => Vec::new(),
            }
        }
        source::DEAD_LETTER => match ev.payload.get("source").and_then(Value::as_str) {
            Some(src) => batch.named(s, ev.app_id, "dead_letter", src).await?,
            None => Vec::new(),
        },
        source::PUBSUB => match messages::topic_of(&ev.payload) {
            Some(topic) => batch.named(s, ev.app_id, "pubsub", topic).await?,
            None => Vec::new(),
        },
        source::QUEUE => match messages::queue_of(&ev.payload) {
            Some(queue) => batch.named(s, ev.app_id, "queue", queue).await?,
            None => Vec::new(),
        },
        // No trigger kinds for the other sources: nothing matches.
        _ => Vec::new(),
    };
    if triggers.is_empty() && ev.source == source::QUEUE {
        // A queue keeps its messages until it has a consumer: registering
        // one makes them due again.
        return Ok(vec![Action::Hold(ev.id)]);
    }
    if triggers.is_empty() {
        return Ok(vec![Action::Complete(ev.id, Vec::new())]);
    }
    // Ordered triggers run later, from rows of their own that keep the
    // key's order (see `TriggerSpec::Kv::ordered`); the others run now.
    let key = ev
        .order_key
        .clone()
        .or_else(|| payload_order_key(&ev.payload));
    let (ordered, triggers): (Vec<_>, Vec<_>) = match &key {
        Some(_) => triggers.into_iter().partition(Trigger::is_ordered),
        None => (Vec::new(), triggers),
    };
    // Triggers whose own depth limit the event is past get a row of their
    // own, which ends as their depth stop (see `invocation`).
    let (too_deep, triggers): (Vec<_>, Vec<_>) = triggers
        .into_iter()
        .partition(|t| t.max_depth.is_some_and(|d| ev.depth > d as i32));
    let mut deferred: Vec<NewEvent> = ordered
        .iter()
        .map(|t| {
            let mut row =
                NewEvent::for_trigger(ev, t.id, t.script_id, Attempts::default(), Timestamp::now());
            row.order = Order::Fixed(key.clone().unwrap_or_default(), ev.order_seq.unwrap_or(0));
            row
        })
        .collect();
    deferred.extend(too_deep.iter().map(|t| {
        NewEvent::for_trigger(ev, t.id, t.script_id, Attempts::default(), Timestamp::now())
    }));
    let started = Timestamp::now();
    let runs = triggers.iter().map(|t| async move {
        let r = run(
            s,
            batch,
            ev,
            Some(t),
            t.script_id,
            &t.registered_by_principal,
        )
        .await;
        (t, r)
    });
    let results = futures_util::future::join_all(runs).await;
    let mut invocations = Vec::new();
    let mut exhausted_idx = Vec::new();
    let mut postponed = 0;
    let mut storage_error = None;
    let mut runs = Vec::new();
    let mut sent = Vec::new();
    for (trigger, ran) in results {
        let ran = ran?;
        let mut run = ran.run;
        let failure = match ran.result {
            Ok(ok) => {
                sent.extend(ok.sent);
                runs.extend(run);
                continue;
            }
            Err(failure) => failure,
        };
        let policy = trigger.retry.resolve(&s.config);
        let (attempts, due_at, error) = match next_after(s, ev, &failure.error, &policy) {
            Next::Retry {
                attempt_count,
                due_at,
                postponed: infra,
            } => {
                postponed += usize::from(infra);
                let error = failure.error.to_string();
                if infra && storage_error.is_none() {
                    storage_error = Some(error.clone());
                }
                (attempt_count, due_at, error)
            }
            Next::Exhausted {
                attempt_count,
                error,
            } => {
                exhausted_idx.push(invocations.len());
                if ev.source == source::DEAD_LETTER {
                    stopped(run.as_mut().map_or(&mut [], std::slice::from_mut));
                }
                (attempt_count, Timestamp::now(), error)
            }
        };
        runs.extend(run);
        invocations.push(NewEvent::for_trigger(
            ev,
            trigger.id,
            trigger.script_id,
            Attempts {
                count: attempts,
                first_at: Some(ev.first_attempt_at.unwrap_or(started)),
                last_at: Some(started),
                last_error: Some(error),
            },
            due_at,
        ));
    }
    if invocations.is_empty() && deferred.is_empty() {
        return Ok(vec![succeeded(ev.id, sent, runs)]);
    }
    // Ordered triggers' first runs and the messages the runs sent: rows
    // that are not retries.
    let deferred_count = deferred.len() + sent.len();
    invocations.extend(deferred);
    invocations.extend(sent);
    Ok(vec![Action::FanOut {
        raw: ev.id,
        invocations,
        exhausted: exhausted_idx,
        postponed,
        storage_error,
        deferred: deferred_count,
        runs,
    }])
}

/// The end of a fanned-out invocation row that had no attempts left (its
/// run went with the fan-out).
pub(crate) fn exhausted_invocation(id: EventId, row: &NewEvent) -> Action {
    let now = Timestamp::now();
    let ev = OutboxEvent {
        id,
        event_id: row.event_id.unwrap_or(id),
        app_id: row.app_id,
        source: row.source.clone(),
        op: row.op.clone(),
        trigger_id: row.trigger_id,
        script_id: row.script_id,
        principal: row.principal.clone(),
        payload: row.payload.clone(),
        undecodable: None,
        depth: row.depth,
        attempt_count: row.attempt_count,
        first_attempt_at: row.first_attempt_at,
        last_attempt_at: row.last_attempt_at,
        last_error: row.last_error.clone(),
        due_at: now,
        locked_until: None,
        locked_by: None,
        reply_to: None,
        created_at: now,
        order_key: None,
        order_seq: None,
        chain: row.chain.clone(),
    };
    exhausted(
        id,
        &ev,
        row.attempt_count,
        row.first_attempt_at.unwrap_or(now),
        row.last_attempt_at.unwrap_or(now),
        row.last_error.clone().unwrap_or_default(),
        Vec::new(),
    )
}
