//! The app's key-value store: JSON values in named collections.
//!
//! Reads need read access, writes need write access, checked against the
//! principal the script runs as at the moment of the call. Every write
//! enqueues a `kv` event (one level deeper than the event being handled) in
//! the same transaction as the write, so triggers on the written collection
//! fire too.
//!
//! ## Concurrent handlers
//!
//! Handlers run concurrently, at least once, and in no particular order. A
//! [`get`] followed by a [`set`] is a lost update when two handlers do it to
//! the same key at once: both read the same value and the second write
//! erases the first. Write conditionally instead:
//!
//! - [`set_if_version`] / [`delete_if_version`] write only if the key is
//!   still at the version you read (0: only if absent), and fail with
//!   [`HostError::Conflict`] otherwise; read again and retry, which
//!   [`update`] does for you;
//! - [`increment`] adds to an integer atomically.
//!
//! ```no_run
//! use picloud_sdk::kv;
//!
//! # fn main() -> Result<(), picloud_sdk::Error> {
//! // Take one item from stock, or record a backorder: never both, never lost.
//! let mut taken = false;
//! kv::update("stock", "widget", |left: Option<i64>| {
//!     let left = left.unwrap_or(0);
//!     taken = left > 0;
//!     if taken { left - 1 } else { left }
//! })?;
//! if !taken {
//!     kv::increment("backorders", "widget", 1)?;
//! }
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sys::kv as raw;
use crate::{Error, HostError};

/// A stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its key.
    pub key: String,
    /// The value.
    pub value: serde_json::Value,
    /// 1 after the first write, one more after each.
    pub version: u64,
}

/// Read a key: `None` if it does not exist. Needs read access.
pub fn get(collection: &str, key: &str) -> Result<Option<Entry>, HostError> {
    let entry = raw::get(collection, key)?;
    Ok(entry.map(|e| Entry {
        key: e.key,
        value: serde_json::from_str(&e.value).unwrap_or(serde_json::Value::Null),
        version: e.version,
    }))
}

/// Read a key and parse its value into your type; a value that does not
/// fit `T` is an error naming the problem.
pub fn get_json<T: DeserializeOwned>(collection: &str, key: &str) -> Result<Option<T>, Error> {
    match get(collection, key)? {
        Some(e) => Ok(Some(serde_json::from_value(e.value)?)),
        None => Ok(None),
    }
}

/// Write a key (its value serialized as JSON); returns its new version.
///
/// The write and its `kv`/`set` event (one level deeper than the event being
/// handled) commit together, so triggers on `collection` run next, this
/// script's own included. Needs write access; an empty key or an oversized
/// value is [`HostError::InvalidArgument`].
pub fn set(collection: &str, key: &str, value: &impl Serialize) -> Result<u64, HostError> {
    let json = serde_json::to_string(value)
        .map_err(|e| HostError::InvalidArgument(format!("value does not serialize: {e}")))?;
    Ok(raw::set(collection, key, &json)?)
}

/// Delete a key; returns whether it existed. Deleting an existing key
/// enqueues its `kv`/`delete` event like [`set`]. Needs write access.
pub fn delete(collection: &str, key: &str) -> Result<bool, HostError> {
    Ok(raw::delete(collection, key)?)
}

/// Write a key only if it is still at version `expected`: the
/// [`Entry::version`] you read, or 0 for "only if the key does not exist".
/// Returns the new version.
///
/// When another write got there first nothing is written and the call fails
/// with [`HostError::Conflict`] (see [`HostError::is_conflict`]): read the
/// key again and retry ([`update`] does), or return the error to fail the
/// attempt and let the host retry the event. Enqueues the `kv`/`set` event
/// like [`set`]. Needs write access.
pub fn set_if_version(
    collection: &str,
    key: &str,
    value: &impl Serialize,
    expected: u64,
) -> Result<u64, HostError> {
    let json = serde_json::to_string(value)
        .map_err(|e| HostError::InvalidArgument(format!("value does not serialize: {e}")))?;
    Ok(raw::set_if_version(collection, key, &json, expected)?)
}

/// Delete a key only if it is still at version `expected` (0: succeed only
/// if it does not exist, deleting nothing); otherwise
/// [`HostError::Conflict`]. Enqueues the `kv`/`delete` event like
/// [`delete`]. Needs write access.
pub fn delete_if_version(collection: &str, key: &str, expected: u64) -> Result<(), HostError> {
    Ok(raw::delete_if_version(collection, key, expected)?)
}

/// Add `delta` (negative to subtract) to a key holding an integer,
/// atomically, creating it from 0 if it does not exist; returns the new
/// value. A value that is not an integer, or a result outside `i64`, is
/// [`HostError::InvalidArgument`]. Enqueues the `kv`/`set` event like
/// [`set`]. Needs write access.
pub fn increment(collection: &str, key: &str, delta: i64) -> Result<i64, HostError> {
    Ok(raw::increment(collection, key, delta)?)
}

/// How many times [`update`] reads and writes again before it gives up.
pub const UPDATE_TRIES: u32 = 16;

/// Read a key, compute its new value with `change`, and write it only if
/// nobody wrote the key in between ([`set_if_version`]); on a conflict,
/// read and compute again, up to [`UPDATE_TRIES`] times. `change` gets the
/// current value (`None` when the key does not exist) and may run more than
/// once, so keep it free of other effects. Returns the new version.
///
/// Errors: a host error, a stored value that does not fit `T`, or
/// [`HostError::Conflict`] after every try lost its race (fail the attempt:
/// the host retries the event later).
pub fn update<T, F>(collection: &str, key: &str, mut change: F) -> Result<u64, Error>
where
    T: DeserializeOwned + Serialize,
    F: FnMut(Option<T>) -> T,
{
    let mut last = None;
    for _ in 0..UPDATE_TRIES {
        let (current, version) = match get(collection, key)? {
            Some(e) => (Some(serde_json::from_value(e.value)?), e.version),
            None => (None, 0),
        };
        let next = change(current);
        match set_if_version(collection, key, &next, version) {
            Err(e) if e.is_conflict() => last = Some(e),
            written => return Ok(written?),
        }
    }
    Err(last
        .unwrap_or_else(|| HostError::Conflict(format!("{collection}/{key} kept changing")))
        .into())
}

/// Keys of a collection in ascending order, after `after` (for paging), at
/// most `limit` (the host caps it at 1000). Needs read access.
///
/// ```no_run
/// # fn main() -> Result<(), picloud_sdk::HostError> {
/// // Every key of `orders`, a page at a time.
/// let mut after: Option<String> = None;
/// loop {
///     let page = picloud_sdk::kv::list_keys("orders", after.as_deref(), 100)?;
///     let Some(last) = page.last() else { break };
///     after = Some(last.clone());
/// }
/// # Ok(())
/// # }
/// ```
pub fn list_keys(
    collection: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>, HostError> {
    Ok(raw::list_keys(collection, after, limit)?)
}
