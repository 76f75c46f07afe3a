//! Queues and topics: messages that travel through the outbox.
//!
//! Rule: a message is an ordinary outbox row, so retries, dead letters, the
//! recursion stop, runs and the depth limit apply to it unchanged. A queue
//! message (source `queue`, op `message`) goes to the one consumer trigger
//! of its queue (`trigger add-queue`), which may take them in batches; a
//! published message (source `pubsub`, op `publish`) goes to every trigger
//! whose topic pattern matches, each with its own retries, as a kv event
//! does. Matching happens when the row is dispatched, like every other
//! source. Names are checked here, once, for every sender (scripts, the
//! embedding application, the CLI, the HTTP API).

use serde_json::{Value, json};

use crate::model::{AppId, NewEvent, Timestamp, source};
use crate::store::{self, MAX_KV_NAME_BYTES};

/// The op of a queue message.
pub const MESSAGE: &str = "message";
/// The op of a batch of queue messages, as a batch consumer gets them.
pub const BATCH: &str = "batch";
/// The op of a published message.
pub const PUBLISH: &str = "publish";

/// Longest delay a queue message may ask for: a week.
pub const MAX_DELAY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Refuse a queue or topic name that is empty, too long, not printable, or
/// holds a `*` (which only patterns may).
pub fn validate_name(what: &str, name: &str) -> store::Result<()> {
    if name.is_empty() {
        return Err(store::Error::Invalid(format!(
            "empty {what}: give a non-empty name"
        )));
    }
    if name.len() > MAX_KV_NAME_BYTES {
        return Err(store::Error::Invalid(format!(
            "{what} of {} bytes is over the limit of {MAX_KV_NAME_BYTES} bytes",
            name.len()
        )));
    }
    if name.contains('*') {
        return Err(store::Error::Invalid(format!(
            "{what} '{name}' has a '*': only trigger patterns may, name one {what}"
        )));
    }
    store::validate_printable(what, name)
}

/// Check a message body: JSON no deeper than the host accepts and no larger
/// than a KV value.
pub fn validate_body(body: &Value) -> store::Result<()> {
    store::validate_json_depth("message body", body)?;
    store::validate_kv_value_len(body.to_string().len())
}

/// A message for `queue` of `app`, due after `delay_ms` (0: now). The
/// caller's own transaction may enqueue it ([`crate::store::Conn::enqueue`]).
pub fn queue_message(
    app: AppId,
    queue: &str,
    body: Value,
    delay_ms: u64,
) -> store::Result<NewEvent> {
    validate_name("queue", queue)?;
    validate_body(&body)?;
    if delay_ms > MAX_DELAY_MS {
        return Err(store::Error::Invalid(format!(
            "delay of {delay_ms} ms is over the limit of {MAX_DELAY_MS} ms (a week)"
        )));
    }
    let event = NewEvent::raw(
        app,
        source::QUEUE,
        MESSAGE,
        json!({"queue": queue, "body": body}),
    );
    Ok(match delay_ms {
        0 => event,
        ms => event.due_at(Timestamp::now().plus(std::time::Duration::from_millis(ms))),
    })
}

/// A message published on `topic` of `app`.
pub fn publication(app: AppId, topic: &str, body: Value) -> store::Result<NewEvent> {
    validate_name("topic", topic)?;
    validate_body(&body)?;
    Ok(NewEvent::raw(
        app,
        source::PUBSUB,
        PUBLISH,
        json!({"topic": topic, "body": body}),
    ))
}

/// The queue a queue row's payload names.
pub fn queue_of(payload: &Value) -> Option<&str> {
    payload.get("queue")?.as_str()
}

/// The topic a published row's payload names.
pub fn topic_of(payload: &Value) -> Option<&str> {
    payload.get("topic")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_for_every_sender() {
        assert!(validate_name("queue", "mail").is_ok());
        for bad in ["", "a*", "tab\there"] {
            let e = validate_name("queue", bad).unwrap_err().to_string();
            assert!(e.contains("queue"), "{e}");
        }
        let app = AppId::new();
        assert!(queue_message(app, "q", json!(1), MAX_DELAY_MS + 1).is_err());
        let m = queue_message(app, "q", json!({"a": 1}), 0).unwrap();
        assert_eq!(m.payload(), &json!({"queue": "q", "body": {"a": 1}}));
        assert_eq!(queue_of(m.payload()), Some("q"));
        let p = publication(app, "orders.eu", json!(null)).unwrap();
        assert_eq!(topic_of(p.payload()), Some("orders.eu"));
        assert_eq!(p.source(), source::PUBSUB);
    }
}
