//! The app's topics: publish a message to every script that subscribes.
//!
//! Every `pubsub` trigger whose topic pattern matches gets each message
//! published on a topic (`picloud-host trigger add-pubsub APP --topic
//! 'orders.*' --script S --as P`), as a `pubsub`/`publish` event
//! ([`Event::pubsub`](crate::Event::pubsub)). Unlike a [`queue`](crate::queue),
//! which has one consumer, a topic may have none or many.
//!
//! **Rule: a publish is part of the invocation.** The message is published
//! only if the handler that published it succeeds, one level deeper than
//! the event being handled ([`Event::depth`](crate::Event::depth)), and
//! counts against the invocation's event budget. Publishing needs write
//! access.
//!
//! ```no_run
//! use picloud_sdk::{Event, Result, handler, pubsub};
//! use serde_json::json;
//!
//! #[handler]
//! fn on_order(event: Event) -> Result<()> {
//!     let Some(change) = event.kv() else { return Ok(()) };
//!     pubsub::publish("orders.created", &json!({"order": change.key}))?;
//!     Ok(())
//! }
//! ```

use serde::Serialize;

use crate::HostError;
use crate::sys::pubsub as raw;

/// Publish `body` (serialized as JSON) on `topic`, if this invocation
/// succeeds. Needs write access; a body that does not serialize, or is too
/// large, is [`HostError::InvalidArgument`].
pub fn publish(topic: &str, body: &impl Serialize) -> Result<(), HostError> {
    let json = serde_json::to_string(body)
        .map_err(|e| HostError::InvalidArgument(format!("message body does not serialize: {e}")))?;
    Ok(raw::publish(topic, &json)?)
}
