//! Run a handler natively in `cargo test`, against an in-memory host
//! (feature `testing`).
//!
//! The handler is the plain function under `#[handler]`: call it with an
//! event built here, inside [`TestHost::run`], and every [`kv`](crate::kv),
//! [`dead_letters`](crate::dead_letters), [`queue`](crate::queue),
//! [`pubsub`](crate::pubsub), [`config`](crate::config) and
//! [`log`](crate::log) call it makes goes to that host: KV, variables and
//! dead letters you seeded; log lines, writes, sent and published messages
//! and retried batch messages it records for your assertions
//! ([`TestHost::writes`], [`TestHost::sent`], [`TestHost::published`],
//! [`TestHost::retried`]); and host errors you inject.
//!
//! ```toml
//! [dev-dependencies]
//! picloud-sdk = { path = "...", features = ["testing"] }
//! ```
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use picloud_sdk::testing::{TestHost, kv_set};
//! use picloud_sdk::{Event, HostError, Result, kv, log};
//! use serde_json::json;
//!
//! fn greet(event: Event) -> Result<()> {       // your #[handler] fn
//!     let change = event.kv().expect("a kv event");
//!     kv::set("greeted", &change.key, &json!("hello"))?;
//!     log::info!("greeted {}", change.key);
//!     Ok(())
//! }
//!
//! let host = TestHost::new();
//! host.run(|| greet(kv_set("people", "ada", json!({"name": "Ada"})))).unwrap();
//! assert_eq!(host.kv("greeted", "ada"), Some(json!("hello")));
//! assert_eq!(host.logs(), ["info: greeted ada"]);
//!
//! // The same write, refused: the handler's error is the host's.
//! host.fail_next("kv.set", HostError::Unavailable("down".into()));
//! let e = host.run(|| greet(kv_set("people", "bo", json!({})))).unwrap_err();
//! assert_eq!(e.host_error(), Some(&HostError::Unavailable("down".into())));
//! # }
//! ```
//!
//! A queue consumer, with a batch and a message retried alone:
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use picloud_sdk::testing::{TestHost, batch_message, queue_batch};
//! use picloud_sdk::{Event, Result, pubsub, queue};
//! use serde_json::json;
//!
//! fn consume(event: Event) -> Result<()> {       // your #[handler] fn
//!     for m in event.queue_batch().expect("a batch").messages {
//!         match m.body["order"].as_str() {
//!             Some(order) => pubsub::publish("orders.paid", &json!({"order": order}))?,
//!             None => queue::retry(&m.id)?,
//!         }
//!     }
//!     Ok(())
//! }
//!
//! let host = TestHost::new();
//! let batch = queue_batch("payments", [
//!     batch_message("m-1", json!({"order": "o-1"})),
//!     batch_message("m-2", json!({})),
//! ]);
//! host.run(|| consume(batch)).unwrap();
//! assert_eq!(host.published()[0].topic, "orders.paid");
//! assert_eq!(host.published()[0].body, json!({"order": "o-1"}));
//! assert_eq!(host.retried()[0].message_id, "m-2");
//! # }
//! ```
//!
//! What it is not: the sandbox. Limits, budgets, permissions, the events
//! that writes enqueue, and the rule that a failed attempt's sends and
//! publishes are dropped are the real host's (here every call is recorded
//! as it is made); try a built component there with `picloud-host run
//! FILE.wasm --event EVENT.json`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::__private::bindings::picloud::trigger::types::{
    Event as RawEvent, HostError as RawHostError,
};
use crate::{BatchMessage, Event, HostError, KvOp};

/// One KV write a handler made, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Set or delete.
    pub op: KvOp,
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The value written; `None` for a delete.
    pub value: Option<Value>,
}

/// One message a handler sent to a queue ([`crate::queue::send`]), in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The queue.
    pub queue: String,
    /// The body.
    pub body: Value,
    /// The delay it asked for ([`crate::queue::send_after`]), in whole
    /// milliseconds.
    pub delay: Option<Duration>,
}

/// One message a handler published ([`crate::pubsub::publish`]), in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// The body.
    pub body: Value,
}

/// One batch message a handler retried alone ([`crate::queue::retry`]), in
/// order.
#[derive(Debug, Clone, PartialEq)]
pub struct Retried {
    /// The message's id.
    pub message_id: String,
    /// The delay it asked for ([`crate::queue::retry_after`]), in whole
    /// milliseconds.
    pub delay: Option<Duration>,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<(String, String), (String, u64)>,
    dead_letters: Vec<host::dead_letters::DeadLetter>,
    writes: Vec<Write>,
    sent: Vec<Sent>,
    published: Vec<Published>,
    retried: Vec<Retried>,
    logs: Vec<String>,
    failures: HashMap<String, VecDeque<HostError>>,
    vars: HashMap<String, String>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

/// An in-memory host for one test: KV, dead letters, a log and injected
/// failures. Cheap to make; one per test.
#[derive(Default)]
pub struct TestHost(Rc<RefCell<State>>);

impl TestHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seed one of the app's variables or secrets, for
    /// [`config::get`](crate::config::get).
    pub fn seed_var(&self, name: &str, value: &str) -> &Self {
        self.0.borrow_mut().vars.insert(name.into(), value.into());
        self
    }

    /// Seed a KV entry at version 1 (not recorded as a write).
    pub fn seed_kv(&self, collection: &str, key: &str, value: &impl Serialize) -> &Self {
        let text = serde_json::to_string(value).expect("a seed value serializes");
        self.0
            .borrow_mut()
            .kv
            .insert((collection.into(), key.into()), (text, 1));
        self
    }

    /// Seed an unresolved dead letter of a `source`/`op` event with
    /// `payload` that failed with `last_error`; its id (`dl-1`, `dl-2`, ...).
    pub fn seed_dead_letter(
        &self,
        source: &str,
        op: &str,
        payload: Value,
        last_error: &str,
    ) -> String {
        let mut state = self.0.borrow_mut();
        let id = format!("dl-{}", state.dead_letters.len() + 1);
        state.dead_letters.push(host::dead_letters::DeadLetter {
            id: id.clone(),
            original_event_id: format!("event-of-{id}"),
            source: source.into(),
            op: op.into(),
            trigger_id: None,
            script_id: None,
            payload: payload.to_string(),
            attempt_count: 5,
            first_attempt_at: 0,
            last_attempt_at: 0,
            last_error: last_error.into(),
            created_at: 0,
            resolved_at: None,
            resolution: None,
        });
        id
    }

    /// Make the next call named `call` fail with `error`, once: `kv.get`,
    /// `kv.set`, `kv.delete`, `kv.list-keys`, `kv.set-if-version`,
    /// `kv.delete-if-version`, `kv.increment`, `dead-letters.get`,
    /// `dead-letters.list-unresolved`, `dead-letters.resolve`,
    /// `queue.send`, `queue.retry`, `pubsub.publish`, `config.get`. Calls
    /// queue. A refused call records nothing.
    pub fn fail_next(&self, call: &str, error: HostError) -> &Self {
        self.0
            .borrow_mut()
            .failures
            .entry(call.into())
            .or_default()
            .push_back(error);
        self
    }

    /// Run `f` (your handler, called with an event) with this host answering
    /// every host call made on this thread.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.0.clone()));
        struct Restore(Option<Rc<RefCell<State>>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(previous);
        f()
    }

    /// A KV value now.
    pub fn kv(&self, collection: &str, key: &str) -> Option<Value> {
        let state = self.0.borrow();
        let (text, _) = state.kv.get(&(collection.into(), key.into()))?;
        serde_json::from_str(text).ok()
    }

    /// A KV entry's version now (0: absent).
    pub fn version(&self, collection: &str, key: &str) -> u64 {
        self.0
            .borrow()
            .kv
            .get(&(collection.into(), key.into()))
            .map_or(0, |(_, v)| *v)
    }

    /// Every KV write made so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.0.borrow().writes.clone()
    }

    /// Every message sent to a queue so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.0.borrow().sent.clone()
    }

    /// Every message published so far, in order.
    pub fn published(&self) -> Vec<Published> {
        self.0.borrow().published.clone()
    }

    /// Every batch message retried alone so far, in order.
    pub fn retried(&self) -> Vec<Retried> {
        self.0.borrow().retried.clone()
    }

    /// Every log line so far, as `level: message`.
    pub fn logs(&self) -> Vec<String> {
        self.0.borrow().logs.clone()
    }

    /// A dead letter's resolution now (`None`: unresolved or unknown).
    pub fn resolution(&self, id: &str) -> Option<crate::dead_letters::Resolution> {
        use crate::dead_letters::Resolution as R;
        use host::dead_letters::Resolution as Raw;
        let state = self.0.borrow();
        let dl = state.dead_letters.iter().find(|d| d.id == id)?;
        dl.resolution.map(|r| match r {
            Raw::Replayed => R::Replayed,
            Raw::Ignored => R::Ignored,
            Raw::HandledByScript => R::HandledByScript,
            Raw::HandlerFailed => R::HandlerFailed,
        })
    }
}

fn event(source: &str, op: &str, payload: Value) -> Event {
    Event::from_raw(RawEvent {
        id: "test-event".into(),
        app_id: "test-app".into(),
        source: source.into(),
        op: op.into(),
        payload: payload.to_string(),
        depth: 0,
        attempt: 1,
        trigger_id: Some("test-trigger".into()),
        script_id: "test-script".into(),
        principal: "test-principal".into(),
    })
}

/// A `kv`/`set` event: `key` of `collection` was written with `value`.
pub fn kv_set(collection: &str, key: &str, value: Value) -> Event {
    event(
        "kv",
        "set",
        json!({"collection": collection, "key": key, "value": value, "version": 1}),
    )
}

/// A `kv`/`delete` event: `key` of `collection` was deleted.
pub fn kv_delete(collection: &str, key: &str) -> Event {
    event(
        "kv",
        "delete",
        json!({"collection": collection, "key": key, "version": 2}),
    )
}

/// A `cron`/`tick` event of `schedule` (in UTC) due at `scheduled_at`
/// (RFC 3339 text), after `missed` skipped ticks.
pub fn cron_tick(schedule: &str, scheduled_at: &str, missed: u64) -> Event {
    event(
        "cron",
        "tick",
        json!({"schedule": schedule, "timezone": "UTC", "scheduled_at": scheduled_at,
               "missed": missed}),
    )
}

/// A `queue`/`message` event: one message of `queue` with `body`.
pub fn queue_message(queue: &str, body: Value) -> Event {
    event("queue", "message", json!({"queue": queue, "body": body}))
}

/// A `queue`/`batch` event: `messages` of `queue` (build them with
/// [`batch_message`]).
pub fn queue_batch(queue: &str, messages: impl IntoIterator<Item = BatchMessage>) -> Event {
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|m| json!({"id": m.id, "body": m.body, "attempt": m.attempt}))
        .collect();
    event(
        "queue",
        "batch",
        json!({"queue": queue, "messages": messages}),
    )
}

/// A message of a batch, on its first attempt (set
/// [`BatchMessage::attempt`] for a retried one).
pub fn batch_message(id: &str, body: Value) -> BatchMessage {
    BatchMessage {
        id: id.into(),
        body,
        attempt: 1,
    }
}

/// A `pubsub`/`publish` event: `body` published on `topic`.
pub fn pubsub_publish(topic: &str, body: Value) -> Event {
    event("pubsub", "publish", json!({"topic": topic, "body": body}))
}

/// `event` as its `attempt`th delivery (1 is the first), for a handler
/// that behaves differently on a retry.
pub fn at_attempt(mut event: Event, attempt: u32) -> Event {
    event.raw.attempt = attempt;
    event
}

/// A synchronous invocation with `payload`.
pub fn invoke(payload: Value) -> Event {
    event("http", "invoke", payload)
}

/// A `dead_letter` event for the dead letter `id` (seed it with
/// [`TestHost::seed_dead_letter`]) of a `source`/`op` event with `payload`.
pub fn dead_letter(id: &str, source: &str, op: &str, payload: Value, last_error: &str) -> Event {
    event(
        "dead_letter",
        "created",
        json!({"dead_letter_id": id, "source": source, "op": op, "attempt_count": 5,
               "last_error": last_error, "payload": payload}),
    )
}

/// The state of the thread's current test host, or a panic that says how
/// to get one.
fn with<R>(
    call: &str,
    f: impl FnOnce(&mut State) -> Result<R, RawHostError>,
) -> Result<R, RawHostError> {
    let state = CURRENT.with(|c| c.borrow().clone()).unwrap_or_else(|| {
        panic!("{call} called outside TestHost::run: run the handler inside `host.run(|| ...)`")
    });
    let mut state = state.borrow_mut();
    if let Some(error) = state.failures.get_mut(call).and_then(VecDeque::pop_front) {
        return Err(raw_error(error));
    }
    f(&mut state)
}

fn raw_error(e: HostError) -> RawHostError {
    match e {
        HostError::PermissionDenied => RawHostError::PermissionDenied,
        HostError::NotFound(m) => RawHostError::NotFound(m),
        HostError::InvalidArgument(m) => RawHostError::InvalidArgument(m),
        HostError::Conflict(m) => RawHostError::Conflict(m),
        HostError::Unavailable(m) => RawHostError::Unavailable(m),
    }
}

fn names(collection: &str, key: &str) -> Result<(String, String), RawHostError> {
    for (what, v) in [("collection", collection), ("key", key)] {
        if v.is_empty() {
            return Err(RawHostError::InvalidArgument(format!(
                "empty {what}: give a non-empty name"
            )));
        }
    }
    Ok((collection.into(), key.into()))
}

/// The host side, with the bindings' signatures (see `crate::sys`).
pub(crate) mod host {
    pub(crate) mod config {
        use super::super::{HostError, with};

        pub(crate) fn get(name: &str) -> Result<Option<String>, crate::Error> {
            with("config.get", |s| Ok(s.vars.get(name).cloned()))
                .map_err(|e| crate::Error::from(HostError::from(e)))
        }
    }

    pub(crate) mod kv {
        use serde_json::Value;

        use super::super::{State, Write, names, with};
        pub(crate) use crate::__private::bindings::picloud::trigger::kv::Entry;
        use crate::__private::bindings::picloud::trigger::types::HostError;
        use crate::KvOp;

        fn parse(value: &str) -> Result<Value, HostError> {
            serde_json::from_str(value)
                .map_err(|e| HostError::InvalidArgument(format!("value is not valid JSON: {e}")))
        }

        fn conflict(collection: &str, key: &str, expected: u64, found: u64) -> HostError {
            let at = |v: u64| match v {
                0 => "absent".to_owned(),
                v => format!("at version {v}"),
            };
            HostError::Conflict(format!(
                "{collection}/{key} is {}, not {}: read it again and retry, or fail the attempt",
                at(found),
                at(expected)
            ))
        }

        fn write(s: &mut State, c: String, k: String, value: Value) -> u64 {
            let version = s.kv.get(&(c.clone(), k.clone())).map_or(0, |(_, v)| *v) + 1;
            s.kv.insert((c.clone(), k.clone()), (value.to_string(), version));
            s.writes.push(Write {
                op: KvOp::Set,
                collection: c,
                key: k,
                value: Some(value),
            });
            version
        }

        fn remove(s: &mut State, c: String, k: String) -> bool {
            let existed = s.kv.remove(&(c.clone(), k.clone())).is_some();
            if existed {
                s.writes.push(Write {
                    op: KvOp::Delete,
                    collection: c,
                    key: k,
                    value: None,
                });
            }
            existed
        }

        pub(crate) fn get(collection: &str, key: &str) -> Result<Option<Entry>, HostError> {
            with("kv.get", |s| {
                let name = names(collection, key)?;
                Ok(s.kv.get(&name).map(|(value, version)| Entry {
                    key: key.into(),
                    value: value.clone(),
                    version: *version,
                }))
            })
        }

        pub(crate) fn set(collection: &str, key: &str, value: &str) -> Result<u64, HostError> {
            with("kv.set", |s| {
                let (c, k) = names(collection, key)?;
                let value = parse(value)?;
                Ok(write(s, c, k, value))
            })
        }

        pub(crate) fn delete(collection: &str, key: &str) -> Result<bool, HostError> {
            with("kv.delete", |s| {
                let (c, k) = names(collection, key)?;
                Ok(remove(s, c, k))
            })
        }

        pub(crate) fn list_keys(
            collection: &str,
            after: Option<&str>,
            limit: u32,
        ) -> Result<Vec<String>, HostError> {
            with("kv.list-keys", |s| {
                names(collection, after.unwrap_or("-"))?;
                Ok(s.kv
                    .keys()
                    .filter(|(c, k)| c == collection && after.is_none_or(|a| k.as_str() > a))
                    .take(limit.min(1000) as usize)
                    .map(|(_, k)| k.clone())
                    .collect())
            })
        }

        pub(crate) fn set_if_version(
            collection: &str,
            key: &str,
            value: &str,
            expected: u64,
        ) -> Result<u64, HostError> {
            with("kv.set-if-version", |s| {
                let (c, k) = names(collection, key)?;
                let value = parse(value)?;
                let found = s.kv.get(&(c.clone(), k.clone())).map_or(0, |(_, v)| *v);
                if found != expected {
                    return Err(conflict(collection, key, expected, found));
                }
                Ok(write(s, c, k, value))
            })
        }

        pub(crate) fn delete_if_version(
            collection: &str,
            key: &str,
            expected: u64,
        ) -> Result<(), HostError> {
            with("kv.delete-if-version", |s| {
                let (c, k) = names(collection, key)?;
                let found = s.kv.get(&(c.clone(), k.clone())).map_or(0, |(_, v)| *v);
                if found != expected {
                    return Err(conflict(collection, key, expected, found));
                }
                remove(s, c, k);
                Ok(())
            })
        }

        pub(crate) fn increment(collection: &str, key: &str, delta: i64) -> Result<i64, HostError> {
            with("kv.increment", |s| {
                let (c, k) = names(collection, key)?;
                let base = match s.kv.get(&(c.clone(), k.clone())) {
                    None => 0,
                    Some((text, _)) => serde_json::from_str::<Value>(text)
                        .ok()
                        .and_then(|v| v.as_i64())
                        .ok_or_else(|| {
                            HostError::InvalidArgument(format!(
                                "{collection}/{key} holds {text}, not an integer: increment only integers, or set the key first"
                            ))
                        })?,
                };
                let sum = base.checked_add(delta).ok_or_else(|| {
                    HostError::InvalidArgument(format!(
                        "{collection}/{key}: {base} + {delta} is outside the signed 64-bit range"
                    ))
                })?;
                write(s, c, k, Value::from(sum));
                Ok(sum)
            })
        }
    }

    pub(crate) mod dead_letters {
        use super::super::with;
        pub(crate) use crate::__private::bindings::picloud::trigger::dead_letters::{
            DeadLetter, Resolution,
        };
        use crate::__private::bindings::picloud::trigger::types::HostError;

        pub(crate) fn get(id: &str) -> Result<Option<DeadLetter>, HostError> {
            with("dead-letters.get", |s| {
                Ok(s.dead_letters.iter().find(|d| d.id == id).cloned())
            })
        }

        pub(crate) fn list_unresolved(limit: u32) -> Result<Vec<DeadLetter>, HostError> {
            with("dead-letters.list-unresolved", |s| {
                Ok(s.dead_letters
                    .iter()
                    .filter(|d| d.resolution.is_none())
                    .take(limit as usize)
                    .cloned()
                    .collect())
            })
        }

        pub(crate) fn resolve(id: &str, resolution: Resolution) -> Result<(), HostError> {
            with("dead-letters.resolve", |s| {
                let Some(dl) = s.dead_letters.iter_mut().find(|d| d.id == id) else {
                    return Err(HostError::NotFound(format!("dead letter '{id}'")));
                };
                if dl.resolution.is_some() {
                    return Err(HostError::Conflict(format!(
                        "dead letter {id} is already resolved"
                    )));
                }
                dl.resolution = Some(resolution);
                dl.resolved_at = Some(1);
                Ok(())
            })
        }
    }

    pub(crate) mod queue {
        use std::time::Duration;

        use super::super::{Retried, Sent, with};
        use crate::__private::bindings::picloud::trigger::types::HostError;

        pub(crate) fn send(name: &str, body: &str, delay_ms: Option<u64>) -> Result<(), HostError> {
            with("queue.send", |s| {
                if name.is_empty() {
                    return Err(HostError::InvalidArgument(
                        "empty queue: give a non-empty name".into(),
                    ));
                }
                let body = serde_json::from_str(body).map_err(|e| {
                    HostError::InvalidArgument(format!("message body is not valid JSON: {e}"))
                })?;
                s.sent.push(Sent {
                    queue: name.into(),
                    body,
                    delay: delay_ms.map(Duration::from_millis),
                });
                Ok(())
            })
        }

        pub(crate) fn retry(message_id: &str, delay_ms: Option<u64>) -> Result<(), HostError> {
            with("queue.retry", |s| {
                s.retried.push(Retried {
                    message_id: message_id.into(),
                    delay: delay_ms.map(Duration::from_millis),
                });
                Ok(())
            })
        }
    }

    pub(crate) mod pubsub {
        use super::super::{Published, with};
        use crate::__private::bindings::picloud::trigger::types::HostError;

        pub(crate) fn publish(topic: &str, body: &str) -> Result<(), HostError> {
            with("pubsub.publish", |s| {
                if topic.is_empty() {
                    return Err(HostError::InvalidArgument(
                        "empty topic: give a non-empty name".into(),
                    ));
                }
                let body = serde_json::from_str(body).map_err(|e| {
                    HostError::InvalidArgument(format!("message body is not valid JSON: {e}"))
                })?;
                s.published.push(Published {
                    topic: topic.into(),
                    body,
                });
                Ok(())
            })
        }
    }

    pub(crate) mod log {
        pub(crate) use crate::__private::bindings::picloud::trigger::log::Level;

        pub(crate) fn log(level: Level, message: &str) {
            let level = match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            // Outside `run` a log line has nowhere to go: print it.
            let state = super::super::CURRENT.with(|c| c.borrow().clone());
            match state {
                Some(state) => state.borrow_mut().logs.push(format!("{level}: {message}")),
                None => eprintln!("{level}: {message}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::{Error, Result, pubsub, queue};

    /// Sends what each `send` item asks, publishes what each `publish`
    /// item asks, and retries the batch messages that ask to be.
    fn relay(event: Event) -> Result<()> {
        if let Some(batch) = event.queue_batch() {
            for m in batch.messages {
                match m.body["retry_ms"].as_u64() {
                    Some(0) => queue::retry(&m.id)?,
                    Some(ms) => queue::retry_after(&m.id, Duration::from_millis(ms))?,
                    None => {}
                }
            }
            return Ok(());
        }
        let body = event
            .queue_message()
            .map(|m| m.body)
            .or_else(|| event.pubsub().map(|m| m.body))
            .unwrap_or(Value::Null);
        for item in body["send"].as_array().into_iter().flatten() {
            let queue = item["queue"].as_str().unwrap_or_default();
            match item["delay_ms"].as_u64() {
                Some(ms) => queue::send_after(queue, &item["body"], Duration::from_millis(ms))?,
                None => queue::send(queue, &item["body"])?,
            }
        }
        for item in body["publish"].as_array().into_iter().flatten() {
            pubsub::publish(item["topic"].as_str().unwrap_or_default(), &item["body"])?;
        }
        Ok(())
    }

    #[test]
    fn sends_and_publishes_are_recorded_in_order() {
        let host = TestHost::new();
        let event = queue_message(
            "in",
            json!({
                "send": [{"queue": "mail", "body": {"to": "ada"}},
                         {"queue": "mail", "body": 2, "delay_ms": 1500}],
                "publish": [{"topic": "orders.created", "body": ["o-1"]}],
            }),
        );
        host.run(|| relay(event)).unwrap();
        assert_eq!(
            host.sent(),
            [
                Sent {
                    queue: "mail".into(),
                    body: json!({"to": "ada"}),
                    delay: None
                },
                Sent {
                    queue: "mail".into(),
                    body: json!(2),
                    delay: Some(Duration::from_millis(1500))
                },
            ]
        );
        assert_eq!(
            host.published(),
            [Published {
                topic: "orders.created".into(),
                body: json!(["o-1"])
            }]
        );
        assert!(host.retried().is_empty() && host.writes().is_empty());
    }

    #[test]
    fn batch_messages_retried_alone_are_recorded() {
        let host = TestHost::new();
        let batch = queue_batch(
            "mail",
            [
                batch_message("m-1", json!({})),
                batch_message("m-2", json!({"retry_ms": 0})),
                batch_message("m-3", json!({"retry_ms": 250})),
            ],
        );
        assert_eq!(batch.queue_batch().unwrap().messages.len(), 3);
        host.run(|| relay(batch)).unwrap();
        assert_eq!(
            host.retried(),
            [
                Retried {
                    message_id: "m-2".into(),
                    delay: None
                },
                Retried {
                    message_id: "m-3".into(),
                    delay: Some(Duration::from_millis(250))
                },
            ]
        );
    }

    #[test]
    fn a_refused_send_records_nothing_and_is_the_handlers_error() {
        let host = TestHost::new();
        host.fail_next("queue.send", HostError::PermissionDenied);
        let event = pubsub_publish("t", json!({"send": [{"queue": "q", "body": 1}]}));
        let e: Error = host.run(|| relay(event)).unwrap_err();
        assert_eq!(e.host_error(), Some(&HostError::PermissionDenied));
        assert!(host.sent().is_empty());

        host.fail_next("pubsub.publish", HostError::Unavailable("down".into()));
        let event = pubsub_publish("t", json!({"publish": [{"topic": "x", "body": 1}]}));
        let e = host.run(|| relay(event)).unwrap_err();
        assert!(matches!(e.host_error(), Some(HostError::Unavailable(_))));
        assert!(host.published().is_empty());

        let e = host.run(|| queue::send("", &1)).unwrap_err();
        assert!(matches!(e, HostError::InvalidArgument(_)), "{e}");
    }

    #[test]
    fn event_builders_have_the_contracts_shapes() {
        let tick = cron_tick("*/5 * * * *", "2025-01-31T03:05:00Z", 3)
            .cron()
            .unwrap();
        assert_eq!(
            (
                tick.schedule.as_str(),
                tick.scheduled_at.as_str(),
                tick.missed
            ),
            ("*/5 * * * *", "2025-01-31T03:05:00Z", 3)
        );
        let m = queue_message("q", json!(1)).queue_message().unwrap();
        assert_eq!((m.queue.as_str(), m.body), ("q", json!(1)));
        let p = pubsub_publish("t", json!(2)).pubsub().unwrap();
        assert_eq!((p.topic.as_str(), p.body), ("t", json!(2)));
        let retried = at_attempt(invoke(json!({})), 3);
        assert_eq!(retried.attempt(), 3);
    }
}
