//! The app's key-value store: JSON values in named collections.
//!
//! Reads need read access, writes need write access, checked against the
//! principal the script runs as at the moment of the call. Every write
//! enqueues a `kv` event (one level deeper than the event being handled) in
//! the same transaction as the write, so triggers on the written collection
//! fire too.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::picloud::trigger::kv as raw;
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
