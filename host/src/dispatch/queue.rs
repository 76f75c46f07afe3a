//! Batches of queue messages, for consumers registered with `--batch N`.
//!
//! Rule: the messages of one queue claimed together are handed to its
//! consumer in invocations of at most N (`queue`/`batch` events), and every
//! message is still settled on its own: it succeeds with the invocation
//! unless the script marked it with `queue.retry`, and a failed invocation
//! fails each of its messages. A message's attempts, backoff, dead letter
//! and recursion stop are those of a single message; only the run record
//! is shared (it goes with the first message). Messages a batch can't take
//! (too deep for the host or the consumer, or of a consumer without
//! `--batch`) are processed one by one as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Shared;
use super::event::{self, Action, BatchCache, after_failure, succeeded};
use crate::messages;
use crate::model::{OutboxEvent, Timestamp, Trigger, TriggerSpec, source};
use crate::runtime::InvokeError;

/// Whether `row` may travel in a batch: a queue message not yet bound to a
/// trigger.
pub(super) fn batchable(row: &OutboxEvent) -> Option<&str> {
    if row.source != source::QUEUE || row.trigger_id.is_some() || row.reply_to.is_some() {
        return None;
    }
    if row.undecodable.is_some() {
        return None;
    }
    messages::queue_of(&row.payload)
}

/// Process the claimed messages `rows` of one queue (of one app).
pub(super) async fn process(
    s: Arc<Shared>,
    cache: Arc<BatchCache>,
    rows: Vec<OutboxEvent>,
) -> Vec<Action> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let queue = messages::queue_of(&first.payload)
        .unwrap_or_default()
        .to_owned();
    let consumer = cache
        .named(&s, first.app_id, "queue", &queue)
        .await
        .ok()
        .and_then(|t| t.into_iter().next());
    let size = match &consumer {
        Some(Trigger {
            spec: TriggerSpec::Queue { batch, .. },
            ..
        }) => *batch as usize,
        _ => 1,
    };
    let max_depth = consumer
        .as_ref()
        .and_then(|t| t.max_depth)
        .map_or(s.config.max_trigger_depth, |d| {
            (d as i32).min(s.config.max_trigger_depth)
        });
    let (batched, single): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|r| size > 1 && r.depth <= max_depth);
    let mut work: Vec<futures_util::future::BoxFuture<'_, Vec<Action>>> = Vec::new();
    for row in single {
        work.push(Box::pin(event::process(s.clone(), cache.clone(), row)));
    }
    if let Some(consumer) = consumer.as_ref().filter(|_| !batched.is_empty()) {
        let mut batched = batched.into_iter().peekable();
        while batched.peek().is_some() {
            let chunk: Vec<_> = batched.by_ref().take(size).collect();
            work.push(Box::pin(run_batch(&s, &cache, consumer, &queue, chunk)));
        }
    }
    futures_util::future::join_all(work)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One invocation of `consumer` with the messages `rows`.
async fn run_batch(
    s: &Shared,
    cache: &BatchCache,
    consumer: &Trigger,
    queue: &str,
    rows: Vec<OutboxEvent>,
) -> Vec<Action> {
    let policy = consumer.retry.resolve(&s.config);
    let started = Timestamp::now();
    let mut ev = rows[0].clone();
    ev.op = messages::BATCH.to_owned();
    ev.depth = rows.iter().map(|r| r.depth).max().unwrap_or(0);
    ev.attempt_count = rows.iter().map(|r| r.attempt_count).max().unwrap_or(0);
    ev.payload = json!({
        "queue": queue,
        "messages": rows.iter().map(|r| json!({
            "id": r.event_id.to_string(),
            "body": r.payload.get("body").cloned().unwrap_or(Value::Null),
            "attempt": r.attempt_count.max(0) + 1,
        })).collect::<Vec<_>>(),
    });
    let ran = event::run(
        s,
        cache,
        &ev,
        Some(consumer),
        consumer.script_id,
        &consumer.registered_by_principal,
    )
    .await;
    let ran = match ran {
        Ok(ran) => ran,
        Err(e) => {
            // The store failed before the script ran: postponed, not spent.
            let error = InvokeError::Infrastructure(e.to_string());
            return rows
                .iter()
                .map(|r| after_failure(s, r, started, &error, &policy, Vec::new()))
                .collect();
        }
    };
    let mut runs = ran.run.into_iter().collect::<Vec<_>>();
    let ok = match ran.result {
        Ok(ok) => ok,
        Err(failure) => {
            return rows
                .iter()
                .map(|r| {
                    let runs = std::mem::take(&mut runs);
                    after_failure(s, r, started, &failure.error, &policy, runs)
                })
                .collect();
        }
    };
    let retries: HashMap<String, Option<Duration>> = ok.retries.into_iter().collect();
    let mut actions = Vec::new();
    let mut sent = Some(ok.sent);
    for row in &rows {
        match retries.get(&row.event_id.to_string()) {
            Some(delay) => {
                let message = "retried by its batch consumer".to_owned();
                let error = match delay {
                    Some(d) => InvokeError::RetryAfter {
                        message,
                        after_ms: d.as_millis() as u64,
                    },
                    None => InvokeError::Handler(message),
                };
                let runs = std::mem::take(&mut runs);
                actions.push(after_failure(s, row, started, &error, &policy, runs));
            }
            None => {
                let sent = sent.take().unwrap_or_default();
                actions.push(succeeded(row.id, sent, std::mem::take(&mut runs)));
            }
        }
    }
    // Every message was retried: what the invocation sent still goes.
    if let Some(events) = sent.filter(|e| !e.is_empty()) {
        actions.push(Action::Send {
            id: None,
            events,
            runs,
        });
    }
    actions
}
