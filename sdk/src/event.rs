//! The event a handler receives, and typed views of its payload.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::__private::bindings::picloud::trigger::types::Event as RawEvent;
use crate::{Error, Result, from_json};

/// One event, as delivered to your handler.
#[derive(Debug, Clone)]
pub struct Event {
    raw: RawEvent,
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

    /// What happened: `set`/`delete` for kv, `invoke` for http, `created` for
    /// dead letters.
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
        let payload: Value = serde_json::from_str(&self.raw.payload).ok()?;
        KvEvent::from_parts(&self.raw.source, &self.raw.op, &payload)
    }

    /// The dead letter, if this is a `dead_letter` event (a dead-letter
    /// trigger's handler). See [`DeadLetterEvent`] for the recursion stop.
    pub fn dead_letter(&self) -> Option<DeadLetterEvent> {
        if self.raw.source != "dead_letter" {
            return None;
        }
        let p: Value = serde_json::from_str(&self.raw.payload).ok()?;
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
}

/// What kind of event a handler got ([`Event::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A key was written (`kv`/`set`): see [`Event::kv`].
    KvSet,
    /// A key was deleted (`kv`/`delete`): see [`Event::kv`].
    KvDelete,
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
        assert_eq!(event("cron", "tick", "{}").kind(), EventKind::Other);
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
    fn json_payload_errors_name_the_problem() {
        let e = event("http", "invoke", "not json");
        let err = e.json::<serde_json::Value>().unwrap_err();
        assert!(err.to_string().starts_with("invalid JSON"), "{err}");
    }
}
