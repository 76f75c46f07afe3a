//! The app's queues: send work to another script, and settle the messages
//! of a batch one by one.
//!
//! A queue has one consumer, the script of its `queue` trigger
//! (`picloud-host trigger add-queue APP --queue NAME --script S --as P`).
//! Each message reaches it as a `queue`/`message` event
//! ([`Event::queue_message`](crate::Event::queue_message)), or, for a
//! consumer registered with `--batch N`, up to N at a time as one
//! `queue`/`batch` event ([`Event::queue_batch`](crate::Event::queue_batch)).
//!
//! **Rule: a send is part of the invocation.** A message is sent only if
//! the handler that sent it succeeds; a failed attempt's sends are dropped
//! with it, and its retry sends them again. So a handler may send first
//! and fail later without duplicating work downstream. A sent message is an
//! event one level deeper than the one being handled
//! ([`Event::depth`](crate::Event::depth)), and counts against the
//! invocation's event budget. Sending needs write access.
//!
//! ```no_run
//! use std::time::Duration;
//! use picloud_sdk::{Event, Result, handler, queue};
//! use serde_json::json;
//!
//! #[handler]
//! fn on_signup(event: Event) -> Result<()> {
//!     let Some(change) = event.kv() else { return Ok(()) };
//!     queue::send("mail", &json!({"to": change.key, "template": "welcome"}))?;
//!     // A reminder, a day later.
//!     queue::send_after(
//!         "mail",
//!         &json!({"to": change.key, "template": "tips"}),
//!         Duration::from_secs(24 * 3600),
//!     )?;
//!     Ok(())
//! }
//! ```
//!
//! ## Batches: one message at a time
//!
//! In a `queue`/`batch` event, returning an error retries the whole batch.
//! To retry only some messages, call [`retry`] (or [`retry_after`]) with
//! their ids and return `Ok`: the others succeed, the ones named run again
//! after the trigger's backoff (or the delay you give), each with its own
//! attempt count, and become dead letters when their attempts run out.
//!
//! ```no_run
//! use picloud_sdk::{Event, Result, handler, kv, log, queue};
//!
//! #[handler]
//! fn consume(event: Event) -> Result<()> {
//!     let Some(batch) = event.queue_batch() else { return Ok(()) };
//!     for message in &batch.messages {
//!         match message.body["to"].as_str() {
//!             Some(to) => {
//!                 kv::set("outbox", &message.id, &message.body)?;
//!                 log::info!("queued mail to {to}");
//!             }
//!             None => queue::retry(&message.id)?,
//!         }
//!     }
//!     Ok(())
//! }
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::sys::queue as raw;
use crate::{HostError, millis};

/// Send `body` (serialized as JSON) to the app's queue `name`, for its
/// consumer to run as soon as it can. Sent only if this invocation
/// succeeds. Needs write access; a body that does not serialize, or is too
/// large, is [`HostError::InvalidArgument`].
pub fn send(name: &str, body: &impl Serialize) -> Result<(), HostError> {
    send_raw(name, body, None)
}

/// Send `body` to the queue `name`, delivered no sooner than `delay` from
/// now (rounded up to whole milliseconds). Otherwise like [`send`].
pub fn send_after(name: &str, body: &impl Serialize, delay: Duration) -> Result<(), HostError> {
    send_raw(name, body, Some(millis(delay)))
}

fn send_raw(name: &str, body: &impl Serialize, delay_ms: Option<u64>) -> Result<(), HostError> {
    let json = serde_json::to_string(body)
        .map_err(|e| HostError::InvalidArgument(format!("message body does not serialize: {e}")))?;
    Ok(raw::send(name, &json, delay_ms)?)
}

/// In a `queue`/`batch` event: retry the message `message_id` of the batch
/// alone, after the trigger's backoff, even though the handler succeeds.
/// An id that is not in the batch is [`HostError::NotFound`].
pub fn retry(message_id: &str) -> Result<(), HostError> {
    Ok(raw::retry(message_id, None)?)
}

/// Like [`retry`], but no sooner than `delay` from now (rounded up to whole
/// milliseconds) instead of after the backoff.
pub fn retry_after(message_id: &str, delay: Duration) -> Result<(), HostError> {
    Ok(raw::retry(message_id, Some(millis(delay)))?)
}
