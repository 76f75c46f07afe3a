//! The `queue` and `pubsub` imports: what a script sends.
//!
//! Rule: nothing a script sends leaves the invocation until it succeeds.
//! Sends are checked (arguments, then the principal's `KvWrite`), charged
//! to the invocation's call and event budgets, and kept in [`Sent`]; the
//! dispatcher writes them in the transaction that settles the event, so a
//! failed attempt's messages are dropped with it (a transactional outbox
//! for scripts). In a batch of queue messages, `queue.retry` marks single
//! messages to retry; the dispatcher settles each message by that mark.

use std::time::Duration;

use serde_json::Value;

use super::host::picloud::trigger::{pubsub as wit_pubsub, queue as wit_queue};
use super::host::{HostError, State};
use crate::auth::Capability;
use crate::messages;
use crate::model::NewEvent;

/// What one invocation sent and marked.
#[derive(Debug, Default)]
pub struct Sent {
    /// Messages and publications, in the order the script sent them.
    pub events: Vec<NewEvent>,
    /// The ids of the batch being handled (empty for other events).
    pub batch: Vec<String>,
    /// Batch messages marked for retry, with the delay asked for.
    pub retries: Vec<(String, Option<Duration>)>,
}

impl Sent {
    /// What a batch event's payload holds: its message ids.
    pub(super) fn for_event(source: &str, op: &str, payload: &str) -> Sent {
        let mut sent = Sent::default();
        if source == crate::model::source::QUEUE && op == messages::BATCH {
            let payload: Value = serde_json::from_str(payload).unwrap_or_default();
            sent.batch = payload
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| Some(m.get("id")?.as_str()?.to_owned()))
                .collect();
        }
        sent
    }
}

fn refused(e: crate::store::Error) -> HostError {
    HostError::InvalidArgument(e.to_string())
}

fn body(text: &str) -> Result<Value, HostError> {
    crate::store::validate_kv_value_len(text.len()).map_err(refused)?;
    serde_json::from_str(text)
        .map_err(|e| HostError::InvalidArgument(format!("body is not valid JSON: {e}")))
}

impl State {
    /// Check and keep one outgoing event built by `build`.
    async fn keep_outgoing(
        &mut self,
        build: impl FnOnce() -> Result<NewEvent, HostError>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        self.budget.call()?;
        self.budget.enqueue()?;
        let event = match build() {
            Ok(event) => event.caused_by(&self.call.cause),
            Err(e) => return Ok(Err(e)),
        };
        let this = self.call();
        if let Err(e) = this.check(Capability::KvWrite(this.app_id())).await {
            return Ok(Err(e));
        }
        self.sent.events.push(event);
        Ok(Ok(()))
    }
}

impl wit_queue::Host for State {
    async fn send(
        &mut self,
        name: String,
        text: String,
        delay_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let app = self.call.app_id;
        self.keep_outgoing(|| {
            messages::queue_message(app, &name, body(&text)?, delay_ms.unwrap_or(0))
                .map_err(refused)
        })
        .await
    }

    async fn retry(
        &mut self,
        message_id: String,
        delay_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        self.budget.call()?;
        if !self.sent.batch.contains(&message_id) {
            return Ok(Err(HostError::NotFound(format!(
                "message '{message_id}' is not in this batch"
            ))));
        }
        if delay_ms.is_some_and(|ms| ms > messages::MAX_DELAY_MS) {
            return Ok(Err(HostError::InvalidArgument(format!(
                "delay is over the limit of {} ms (a week)",
                messages::MAX_DELAY_MS
            ))));
        }
        let delay = delay_ms.map(Duration::from_millis);
        self.sent.retries.retain(|(id, _)| *id != message_id);
        self.sent.retries.push((message_id, delay));
        Ok(Ok(()))
    }
}

impl wit_pubsub::Host for State {
    async fn publish(
        &mut self,
        topic: String,
        text: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let app = self.call.app_id;
        self.keep_outgoing(|| messages::publication(app, &topic, body(&text)?).map_err(refused))
            .await
    }
}
