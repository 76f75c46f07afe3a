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

/// Read a key.
pub fn get(collection: &str, key: &str) -> Result<Option<Entry>, HostError> {
    let entry = raw::get(collection, key)?;
    Ok(entry.map(|e| Entry {
        key: e.key,
        value: serde_json::from_str(&e.value).unwrap_or(serde_json::Value::Null),
        version: e.version,
    }))
}

/// Read a key and parse its value into your type.
pub fn get_json<T: DeserializeOwned>(collection: &str, key: &str) -> Result<Option<T>, Error> {
    match get(collection, key)? {
        Some(e) => Ok(Some(serde_json::from_value(e.value)?)),
        None => Ok(None),
    }
}

/// Write a key; returns its new version.
pub fn set(collection: &str, key: &str, value: &impl Serialize) -> Result<u64, HostError> {
    let json = serde_json::to_string(value)
        .map_err(|e| HostError::InvalidArgument(format!("value does not serialize: {e}")))?;
    Ok(raw::set(collection, key, &json)?)
}

/// Delete a key; whether it existed.
pub fn delete(collection: &str, key: &str) -> Result<bool, HostError> {
    Ok(raw::delete(collection, key)?)
}

/// Keys of a collection in ascending order, after `after` (for paging), at
/// most `limit` (the host caps it at 1000).
pub fn list_keys(
    collection: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>, HostError> {
    Ok(raw::list_keys(collection, after, limit)?)
}
