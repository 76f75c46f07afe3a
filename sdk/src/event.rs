//! The event a handler receives, and typed views of its payload.
//!
//! Rule: a typed view (`kv()`, `cron()`, `queue_message()`, ...) answers
//! only for its own source and op, and only when the payload has the shape
//! the contract (`wit/trigger.wit`, `event.payload`) gives it; otherwise it
//! is `None`, and [`Event::json`] reads the payload as you like.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::__private::bindings::picloud::trigger::types::Event as RawEvent;
use crate::{Error, Result, from_json};

/// One event, as delivered to your handler.
#[derive(Debug, Clone)]
pub struct Event {
    pub(crate) raw: RawEvent,
}

impl Event {
    pub(crate) fn from_raw(raw: RawEvent) -> Self {
        Event { raw }
    }

    /// The stable id of this event: the same on every retry and re-delivery.
    /// Delivery is at-least-once, so key side effects by it to stay idempotent.
    pub fn id(&self) -> &str {
        &self.raw.id
    }

    /// The app the event belongs to (your script's app).
    pub fn app_id(&self) -> &str {
        &self.raw.app_id
    }

    /// Where it came from: `kv`, `cron`, `pubsub`, `queue`, `email`, `http`
    /// or `dead_letter`.
    pub fn source(&self) -> &str {
        &self.raw.source
    }

    /// What happened: `set`/`delete` for kv, `tick` for cron, `message` or
    /// `batch` for queue, `publish` for pubsub, `invoke` for http, `created`
    /// for dead letters.
    pub fn op(&self) -> &str {
        &self.raw.op
    }

    /// What kind of event this is, as an enum to `match` on instead of
    /// comparing [`Event::source`] and [`Event::op`] text.
    ///
    /// ```no_run
    /// use picloud_sdk::{Event, EventKind, Result};
    ///
    /// fn handle(event: Event) -> Result<()> {
    ///     match event.kind() {
    ///         EventKind::KvSet | EventKind::KvDelete => { /* event.kv() */ }
    ///         EventKind::CronTick => { /* event.cron() */ }
    ///         EventKind::QueueMessage => { /* event.queue_message() */ }
    ///         EventKind::QueueBatch => { /* event.queue_batch() */ }
    ///         EventKind::Publish => { /* event.pubsub() */ }
    ///         EventKind::DeadLetter => { /* event.dead_letter() */ }
    ///         EventKind::Invoke => { /* event.json() */ }
    ///         _ => {} // `Other`, and kinds that later versions add
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn kind(&self) -> EventKind {
        match (self.raw.source.as_str(), self.raw.op.as_str()) {
            ("kv", "set") => EventKind::KvSet,
            ("kv", "delete") => EventKind::KvDelete,
            ("cron", "tick") => EventKind::CronTick,
            ("queue", "message") => EventKind::QueueMessage,
            ("queue", "batch") => EventKind::QueueBatch,
            ("pubsub", "publish") => EventKind::Publish,
            ("dead_letter", _) => EventKind::DeadLetter,
            ("http", "invoke") => EventKind::Invoke,
            _ => EventKind::Other,
        }
    }

    /// The payload as JSON text.
    pub fn payload(&self) -> &str {
        &self.raw.payload
    }

    /// The payload parsed into your own type.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        from_json(&self.raw.payload)
    }

    /// How deep this event is: 0 for events from outside, one more for each
    /// script write that led to it. Events past the host's limit never run.
    pub fn depth(&self) -> u32 {
        self.raw.depth
    }

    /// 1 on the first attempt, 2 on the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.raw.attempt
    }

    /// The trigger that matched, if the event came through one (synchronous
    /// invocations do not).
    pub fn trigger_id(&self) -> Option<&str> {
        self.raw.trigger_id.as_deref()
    }

    /// This script's id.
    pub fn script_id(&self) -> &str {
        &self.raw.script_id
    }

    /// The principal the script runs as: every host call is checked against it.
    pub fn principal(&self) -> &str {
        &self.raw.principal
    }

    /// The KV change, if this is a `kv` event.
    pub fn kv(&self) -> Option<KvEvent> {
        KvEvent::from_parts(&self.raw.source, &self.raw.op, &self.parsed()?)
    }

    /// The dead letter, if this is a `dead_letter` event (a dead-letter
    /// trigger's handler). See [`DeadLetterEvent`] for the recursion stop.
    pub fn dead_letter(&self) -> Option<DeadLetterEvent> {
        if self.raw.source != "dead_letter" {
            return None;
        }
        let p = self.parsed()?;
        let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(DeadLetterEvent {
            dead_letter_id: text("dead_letter_id")?,
            source: text("source").unwrap_or_default(),
            op: text("op").unwrap_or_default(),
            trigger_id: text("trigger_id"),
            script_id: text("script_id"),
            attempt_count: p.get("attempt_count").and_then(Value::as_u64).unwrap_or(0) as u32,
            last_error: text("last_error").unwrap_or_default(),
            payload: p.get("payload").cloned().unwrap_or(Value::Null),
        })
    }

    /// The tick, if this is a `cron`/`tick` event (a cron trigger's
    /// handler).
    pub fn cron(&self) -> Option<CronTick> {
        CronTick::from_parts(&self.raw.source, &self.raw.op, &self.parsed()?)
    }

    /// The message, if this is a `queue`/`message` event (a queue
    /// consumer's handler, one message at a time).
    pub fn queue_message(&self) -> Option<QueueMessage> {
        QueueMessage::from_parts(&self.raw.source, &self.raw.op, &self.parsed()?)
    }

    /// The messages, if this is a `queue`/`batch` event (a queue consumer
    /// registered with `--batch N`). Settle single messages with
    /// [`queue::retry`](crate::queue::retry).
    pub fn queue_batch(&self) -> Option<QueueBatch> {
        let mut p = self.payload_of("queue", "batch")?;
        let messages = match p.get_mut("messages").map(Value::take) {
            Some(Value::Array(messages)) => messages,
            _ => return None,
        };
        let messages = messages
            .into_iter()
            .map(|mut m| {
                Some(BatchMessage {
                    id: text(&m, "id")?,
                    attempt: m.get("attempt").and_then(Value::as_u64).unwrap_or(1) as u32,
                    body: m.get_mut("body").map(Value::take).unwrap_or(Value::Null),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(QueueBatch {
            queue: text(&p, "queue")?,
            messages,
        })
    }

    /// The message, if this is a `pubsub`/`publish` event (a pubsub
    /// trigger's handler).
    pub fn pubsub(&self) -> Option<PubsubMessage> {
        PubsubMessage::from_parts(&self.raw.source, &self.raw.op, &self.parsed()?)
    }

    /// The payload as JSON, if it is JSON.
    fn parsed(&self) -> Option<Value> {
        serde_json::from_str(&self.raw.payload).ok()
    }

    /// The payload as JSON, if the event is `source`/`op`.
    fn payload_of(&self, source: &str, op: &str) -> Option<Value> {
        if self.raw.source != source || self.raw.op != op {
            return None;
        }
        self.parsed()
    }
}

/// A string field of a JSON object.
fn text(object: &Value, field: &str) -> Option<String> {
    object.get(field)?.as_str().map(str::to_owned)
}

/// What kind of event a handler got ([`Event::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A key was written (`kv`/`set`): see [`Event::kv`].
    KvSet,
    /// A key was deleted (`kv`/`delete`): see [`Event::kv`].
    KvDelete,
    /// A cron schedule fired (`cron`/`tick`): see [`Event::cron`].
    CronTick,
    /// One message of a queue (`queue`/`message`): see
    /// [`Event::queue_message`].
    QueueMessage,
    /// Messages of a queue, for a batch consumer (`queue`/`batch`): see
    /// [`Event::queue_batch`].
    QueueBatch,
    /// A message published on a topic (`pubsub`/`publish`): see
    /// [`Event::pubsub`].
    Publish,
    /// An event ran out of retries (`dead_letter`): see
    /// [`Event::dead_letter`].
    DeadLetter,
    /// A synchronous invocation (`http`/`invoke`): its payload is the
    /// caller's, and the handler's value is the reply.
    Invoke,
    /// A source or op this SDK version does not know; read
    /// [`Event::source`] and [`Event::op`].
    Other,
}

/// A KV write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// A key was written.
    Set,
    /// A key was deleted.
    Delete,
}

/// The change behind a `kv` event.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEvent {
    /// Set or delete.
    pub op: KvOp,
    /// The collection written.
    pub collection: String,
    /// The key written.
    pub key: String,
    /// The new value; `None` on delete.
    pub value: Option<Value>,
    /// The key's version after the change.
    pub version: u64,
}

impl KvEvent {
    /// The change a `kv` event of `op` with `payload` describes.
    fn from_parts(source: &str, op: &str, payload: &Value) -> Option<KvEvent> {
        if source != "kv" {
            return None;
        }
        let op = match op {
            "set" => KvOp::Set,
            "delete" => KvOp::Delete,
            _ => return None,
        };
        Some(KvEvent {
            op,
            collection: payload.get("collection")?.as_str()?.to_owned(),
            key: payload.get("key")?.as_str()?.to_owned(),
            value: payload.get("value").filter(|v| !v.is_null()).cloned(),
            version: payload.get("version").and_then(Value::as_u64).unwrap_or(0),
        })
    }

    /// The new value parsed into your type; `None` on delete.
    pub fn value_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match &self.value {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| Error::msg(format!("invalid {}/{}: {e}", self.collection, self.key))),
        }
    }
}

/// The tick behind a `cron` event.
///
/// Ticks are delivered at least once, like every event: key what a tick
/// does by [`CronTick::scheduled_at`] (or [`Event::id`]) to stay idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronTick {
    /// The trigger's schedule, as registered (e.g. `0 3 * * *`).
    pub schedule: String,
    /// The timezone the schedule is read in (e.g. `UTC`, `Europe/Paris`).
    pub timezone: String,
    /// When this tick was due, as RFC 3339 text
    /// (`2025-01-31T03:00:00Z`); it may run later than that.
    pub scheduled_at: String,
    /// How many earlier ticks were skipped while no dispatcher ran. After
    /// a gap the host runs one tick, the newest, not one per missed time
    /// (`--catch-up last`, the default; `skip` runs none of them).
    pub missed: u64,
}

impl CronTick {
    /// The tick a `cron`/`tick` event with `payload` describes.
    fn from_parts(source: &str, op: &str, payload: &Value) -> Option<CronTick> {
        if (source, op) != ("cron", "tick") {
            return None;
        }
        Some(CronTick {
            schedule: text(payload, "schedule")?,
            timezone: text(payload, "timezone").unwrap_or_default(),
            scheduled_at: text(payload, "scheduled_at")?,
            missed: payload.get("missed").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// One message of a queue, for a consumer that takes them one at a time
/// (`queue`/`message`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMessage {
    /// The queue it was sent to.
    pub queue: String,
    /// The body it was sent with.
    pub body: Value,
}

impl QueueMessage {
    /// The message a `queue`/`message` event with `payload` carries.
    fn from_parts(source: &str, op: &str, payload: &Value) -> Option<QueueMessage> {
        if (source, op) != ("queue", "message") {
            return None;
        }
        Some(QueueMessage {
            queue: text(payload, "queue")?,
            body: payload.get("body").cloned().unwrap_or(Value::Null),
        })
    }

    /// The body parsed into your type.
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T> {
        body_as(&self.body, &self.queue)
    }
}

/// Messages of a queue, for a consumer registered with `--batch N`
/// (`queue`/`batch`): at most N of them.
///
/// Returning an error retries every message of the batch; to retry only
/// some, call [`queue::retry`](crate::queue::retry) with their ids and
/// return `Ok`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueBatch {
    /// The queue they were sent to.
    pub queue: String,
    /// The messages, oldest first.
    pub messages: Vec<BatchMessage>,
}

/// One message of a [`QueueBatch`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMessage {
    /// The message's id, for [`queue::retry`](crate::queue::retry); stable
    /// across its retries.
    pub id: String,
    /// The body it was sent with.
    pub body: Value,
    /// 1 the first time this message is delivered, one more after each
    /// retry (of the message alone or of its whole batch).
    pub attempt: u32,
}

impl BatchMessage {
    /// The body parsed into your type.
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T> {
        body_as(&self.body, &self.id)
    }
}

/// A message published on a topic (`pubsub`/`publish`).
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubMessage {
    /// The topic it was published on (not the trigger's pattern).
    pub topic: String,
    /// The body it was published with.
    pub body: Value,
}

impl PubsubMessage {
    /// The message a `pubsub`/`publish` event with `payload` carries.
    fn from_parts(source: &str, op: &str, payload: &Value) -> Option<PubsubMessage> {
        if (source, op) != ("pubsub", "publish") {
            return None;
        }
        Some(PubsubMessage {
            topic: text(payload, "topic")?,
            body: payload.get("body").cloned().unwrap_or(Value::Null),
        })
    }

    /// The body parsed into your type.
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T> {
        body_as(&self.body, &self.topic)
    }
}

/// A message body parsed into `T`, its error naming `what` it came from.
fn body_as<T: DeserializeOwned>(body: &Value, what: &str) -> Result<T> {
    serde_json::from_value(body.clone())
        .map_err(|e| Error::msg(format!("invalid message body of {what}: {e}")))
}

/// The dead letter behind a `dead_letter` event.
///
/// **The recursion stop:** if your dead-letter handler returns an error on
/// every attempt, the host resolves this dead letter `handler_failed` and
/// does *not* create a dead letter for the failed handler. To give up at
/// once, resolve it yourself with
/// [`Resolution::HandlerFailed`](crate::dead_letters::Resolution::HandlerFailed).
/// To settle it, resolve it `HandledByScript` or `Ignored`; a dead letter
/// your handler leaves unresolved stays on the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterEvent {
    /// The dead letter's id, for [`crate::dead_letters::resolve`].
    pub dead_letter_id: String,
    /// The original event's source.
    pub source: String,
    /// The original event's op.
    pub op: String,
    /// The trigger that failed, if any.
    pub trigger_id: Option<String>,
    /// The script that failed, if any.
    pub script_id: Option<String>,
    /// How many attempts were made.
    pub attempt_count: u32,
    /// The last attempt's error, e.g. `payment declined: ...` or
    /// `timeout after 5000 ms`.
    pub last_error: String,
    /// The original event's payload.
    pub payload: Value,
}

impl DeadLetterEvent {
    /// The KV change whose handling failed, when the original event was a
    /// `kv` event: its collection, key and value, without guessing at
    /// `payload["key"]`.
    ///
    /// ```no_run
    /// # use picloud_sdk::{Event, Result, log};
    /// # fn triage(event: Event) -> Result<()> {
    /// if let Some(change) = event.dead_letter().and_then(|d| d.kv()) {
    ///     log::warn!("giving up on {}/{} (version {})", change.collection, change.key, change.version);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn kv(&self) -> Option<KvEvent> {
        KvEvent::from_parts(&self.source, &self.op, &self.payload)
    }

    /// The tick whose handling failed, when the original event was a
    /// `cron`/`tick` event.
    pub fn cron(&self) -> Option<CronTick> {
        CronTick::from_parts(&self.source, &self.op, &self.payload)
    }

    /// The queue message whose handling failed, when the original event was
    /// a `queue` message. A batch consumer's messages are dead-lettered one
    /// by one, so this is the view for those too.
    ///
    /// ```no_run
    /// # use picloud_sdk::{Event, Result, log};
    /// # fn triage(event: Event) -> Result<()> {
    /// if let Some(message) = event.dead_letter().and_then(|d| d.queue_message()) {
    ///     log::warn!("queue {} gave up on {}", message.queue, message.body);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn queue_message(&self) -> Option<QueueMessage> {
        QueueMessage::from_parts(&self.source, &self.op, &self.payload)
    }

    /// The publication whose handling failed, when the original event was
    /// a `pubsub`/`publish` event (one subscriber's; each subscriber's
    /// failures are its own).
    pub fn pubsub(&self) -> Option<PubsubMessage> {
        PubsubMessage::from_parts(&self.source, &self.op, &self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, op: &str, payload: &str) -> Event {
        Event::from_raw(RawEvent {
            id: "e-1".into(),
            app_id: "app".into(),
            source: source.into(),
            op: op.into(),
            payload: payload.into(),
            depth: 0,
            attempt: 1,
            trigger_id: None,
            script_id: "s".into(),
            principal: "alice".into(),
        })
    }

    #[test]
    fn kv_set_and_delete() {
        let set = event(
            "kv",
            "set",
            r#"{"collection":"orders","key":"o1","value":{"n":1},"version":3}"#,
        );
        let change = set.kv().expect("a kv event");
        assert_eq!(change.op, KvOp::Set);
        assert_eq!(
            (change.collection.as_str(), change.key.as_str()),
            ("orders", "o1")
        );
        assert_eq!(change.value, Some(serde_json::json!({"n": 1})));
        assert_eq!(change.version, 3);

        let delete = event(
            "kv",
            "delete",
            r#"{"collection":"orders","key":"o1","value":null,"version":4}"#,
        );
        let change = delete.kv().expect("a kv event");
        assert_eq!((change.op, change.value), (KvOp::Delete, None));
        assert!(event("http", "invoke", "{}").kv().is_none());
    }

    #[test]
    fn kinds() {
        assert_eq!(event("kv", "set", "{}").kind(), EventKind::KvSet);
        assert_eq!(event("kv", "delete", "{}").kind(), EventKind::KvDelete);
        assert_eq!(
            event("dead_letter", "created", "{}").kind(),
            EventKind::DeadLetter
        );
        assert_eq!(event("http", "invoke", "{}").kind(), EventKind::Invoke);
        assert_eq!(event("cron", "tick", "{}").kind(), EventKind::CronTick);
        assert_eq!(
            event("queue", "message", "{}").kind(),
            EventKind::QueueMessage
        );
        assert_eq!(event("queue", "batch", "{}").kind(), EventKind::QueueBatch);
        assert_eq!(event("pubsub", "publish", "{}").kind(), EventKind::Publish);
        assert_eq!(event("email", "received", "{}").kind(), EventKind::Other);
    }

    #[test]
    fn dead_letter_payload() {
        let e = event(
            "dead_letter",
            "created",
            r#"{"dead_letter_id":"d1","source":"kv","op":"set","trigger_id":"t1",
                "script_id":null,"attempt_count":5,"last_error":"payment declined",
                "payload":{"value":{"poison":true}}}"#,
        );
        let dead = e.dead_letter().expect("a dead-letter event");
        assert_eq!(dead.dead_letter_id, "d1");
        assert_eq!(dead.trigger_id.as_deref(), Some("t1"));
        assert_eq!(dead.script_id, None);
        assert_eq!(dead.attempt_count, 5);
        assert_eq!(dead.payload["value"]["poison"], serde_json::json!(true));
        assert!(e.kv().is_none());
        // This payload has no collection or key: no typed KV view.
        assert!(dead.kv().is_none());

        let e = event(
            "dead_letter",
            "created",
            r#"{"dead_letter_id":"d2","source":"kv","op":"set","attempt_count":5,
                "last_error":"boom","payload":{"collection":"orders","key":"o-1",
                "value":{"qty":2},"version":3}}"#,
        );
        let change = e
            .dead_letter()
            .unwrap()
            .kv()
            .expect("the original kv change");
        assert_eq!(change.op, KvOp::Set);
        assert_eq!(
            (change.collection.as_str(), change.key.as_str()),
            ("orders", "o-1")
        );
        assert_eq!(change.value, Some(serde_json::json!({"qty": 2})));
        assert_eq!(change.version, 3);
    }

    #[test]
    fn dead_letters_of_ticks_and_messages() {
        let dead = |source: &str, op: &str, payload: &str| {
            event(
                "dead_letter",
                "created",
                &format!(
                    r#"{{"dead_letter_id":"d","source":"{source}","op":"{op}",
                        "attempt_count":1,"last_error":"permanent error: no","payload":{payload}}}"#
                ),
            )
            .dead_letter()
            .expect("a dead-letter event")
        };
        let tick = dead(
            "cron",
            "tick",
            r#"{"schedule":"* * * * *","timezone":"UTC","scheduled_at":"2026-01-01T00:00:00Z","missed":0}"#,
        );
        assert_eq!(tick.cron().unwrap().scheduled_at, "2026-01-01T00:00:00Z");
        assert!(tick.kv().is_none() && tick.queue_message().is_none() && tick.pubsub().is_none());

        let message = dead(
            "queue",
            "message",
            r#"{"queue":"mail","body":{"to":"ada"}}"#,
        );
        let m = message.queue_message().expect("the original queue message");
        assert_eq!(
            (m.queue.as_str(), &m.body),
            ("mail", &serde_json::json!({"to": "ada"}))
        );
        assert!(message.cron().is_none() && message.pubsub().is_none());

        let publication = dead("pubsub", "publish", r#"{"topic":"orders.eu","body":7}"#);
        let p = publication.pubsub().expect("the original publication");
        assert_eq!(
            (p.topic.as_str(), &p.body),
            ("orders.eu", &serde_json::json!(7))
        );
        assert!(publication.queue_message().is_none());
    }

    #[test]
    fn cron_tick() {
        let e = event(
            "cron",
            "tick",
            r#"{"schedule":"0 3 * * *","timezone":"UTC","scheduled_at":"2025-01-31T03:00:00Z","missed":2}"#,
        );
        let tick = e.cron().expect("a cron tick");
        assert_eq!(tick.schedule, "0 3 * * *");
        assert_eq!(tick.timezone, "UTC");
        assert_eq!(tick.scheduled_at, "2025-01-31T03:00:00Z");
        assert_eq!(tick.missed, 2);
        assert!(e.kv().is_none() && e.queue_message().is_none());
        assert!(event("kv", "set", "{}").cron().is_none());
        // A tick without its time is not a tick this SDK can describe.
        assert!(
            event("cron", "tick", r#"{"schedule":"x"}"#)
                .cron()
                .is_none()
        );
    }

    #[test]
    fn queue_message_and_batch() {
        let e = event(
            "queue",
            "message",
            r#"{"queue":"mail","body":{"to":"ada@example.com"}}"#,
        );
        let m = e.queue_message().expect("a queue message");
        assert_eq!(m.queue, "mail");
        assert_eq!(m.body, serde_json::json!({"to": "ada@example.com"}));
        #[derive(serde::Deserialize)]
        struct Mail {
            to: String,
        }
        assert_eq!(m.body_as::<Mail>().unwrap().to, "ada@example.com");
        let err = m.body_as::<u64>().unwrap_err();
        assert!(
            err.message().starts_with("invalid message body of mail"),
            "{err}"
        );
        assert!(e.queue_batch().is_none() && e.pubsub().is_none());

        let e = event(
            "queue",
            "batch",
            r#"{"queue":"mail","messages":[{"id":"m1","body":1,"attempt":1},
                {"id":"m2","body":{"x":true},"attempt":3}]}"#,
        );
        let batch = e.queue_batch().expect("a batch");
        assert_eq!(batch.queue, "mail");
        assert_eq!(
            batch.messages,
            [
                BatchMessage {
                    id: "m1".into(),
                    body: serde_json::json!(1),
                    attempt: 1
                },
                BatchMessage {
                    id: "m2".into(),
                    body: serde_json::json!({"x": true}),
                    attempt: 3
                },
            ]
        );
        assert!(e.queue_message().is_none());
        // A message without an id cannot be retried alone: no typed view.
        assert!(
            event("queue", "batch", r#"{"queue":"q","messages":[{"body":1}]}"#)
                .queue_batch()
                .is_none()
        );
    }

    #[test]
    fn pubsub_message() {
        let e = event(
            "pubsub",
            "publish",
            r#"{"topic":"orders.created","body":["o-1"]}"#,
        );
        let m = e.pubsub().expect("a published message");
        assert_eq!(m.topic, "orders.created");
        assert_eq!(m.body, serde_json::json!(["o-1"]));
        assert!(
            event("queue", "message", r#"{"queue":"q","body":1}"#)
                .pubsub()
                .is_none()
        );
    }

    #[test]
    fn json_payload_errors_name_the_problem() {
        let e = event("http", "invoke", "not json");
        let err = e.json::<serde_json::Value>().unwrap_err();
        assert!(err.to_string().starts_with("invalid JSON"), "{err}");
    }
}
