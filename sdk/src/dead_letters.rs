//! Dead letters: events that exhausted their retries, and how to settle them.
//!
//! A `dead_letter` trigger runs your script for each new dead letter of its
//! app whose original source matches; [`crate::Event::dead_letter`] gives
//! you its details. Look at it, do what you can, and [`resolve`] it.
//! A dead letter your handler leaves unresolved stays on the app's
//! dashboard for a person to replay or ignore.
//!
//! **Which dead letters reach a handler.** Every dead letter of an event that
//! ran out of retries does, with one exception: a dead letter made by the
//! depth limit (its `last_error` is `max trigger depth N exceeded`) reaches
//! no handler, because the handler's event would be deeper still, past the
//! same limit. Such dead letters are listed like the others
//! (`picloud-host dead-letters list APP`, with that error) for a person to
//! replay or ignore. A failed dead-letter handler makes none (below).
//!
//! # The recursion stop
//!
//! A dead-letter handler that returns an error is retried like any handler.
//! When its last attempt fails, the host resolves the dead letter it was
//! handling as [`Resolution::HandlerFailed`] and **never** produces another
//! dead letter for the failed handler: failures cannot cascade. To give up
//! at once without using up the retries, resolve it
//! [`HandlerFailed`](Resolution::HandlerFailed) yourself.
//!
//! Handlers run at least once, so the same dead letter can reach yours
//! twice; resolving one that is already resolved is a
//! [`HostError::Conflict`], which a handler can treat as "already done".
//!
//! Reading needs read access; resolving needs the app-admin capability of the
//! principal the script runs as.
//!
//! ```no_run
//! use picloud_sdk::dead_letters::{self, Resolution};
//! use picloud_sdk::{Event, HostError, Result, bail, handler};
//!
//! #[handler]
//! fn triage(event: Event) -> Result<()> {
//!     let Some(dead) = event.dead_letter() else { return Ok(()) };
//!     let resolution = if dead.last_error.contains("invalid") {
//!         Resolution::Ignored
//!     } else if dead.attempt_count > 10 {
//!         // Give up now: no retries, and no new dead letter.
//!         Resolution::HandlerFailed
//!     } else {
//!         // Fails this attempt; after the last retry the host resolves the
//!         // dead letter `handler_failed` (the recursion stop).
//!         bail!("no rule for {}", dead.last_error);
//!     };
//!     match dead_letters::resolve(&dead.dead_letter_id, resolution) {
//!         Ok(()) | Err(HostError::Conflict(_)) => Ok(()),
//!         Err(e) => Err(e.into()),
//!     }
//! }
//! ```

use std::fmt;
use std::str::FromStr;

use crate::sys::dead_letters as raw;
use crate::{Error, HostError};

/// How a dead letter was settled: a closed vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Enqueue the original event again for its trigger (a fresh set of
    /// attempts, same payload and depth).
    Replayed,
    /// Nothing more will be done about it.
    Ignored,
    /// Your script dealt with it.
    HandledByScript,
    /// The dead-letter handler gave up (the recursion stop).
    ///
    /// The host records this when a dead-letter handler returns an error on
    /// its last attempt, instead of creating another dead letter. A handler
    /// may resolve it so itself to give up at once, without waiting for its
    /// retries. Either way no new dead letter is ever produced.
    HandlerFailed,
}

impl Resolution {
    /// The host's name for it (`replayed`, `ignored`, `handled_by_script`,
    /// `handler_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Replayed => "replayed",
            Resolution::Ignored => "ignored",
            Resolution::HandledByScript => "handled_by_script",
            Resolution::HandlerFailed => "handler_failed",
        }
    }

    /// All four, in the order above.
    pub const ALL: [Resolution; 4] = [
        Resolution::Replayed,
        Resolution::Ignored,
        Resolution::HandledByScript,
        Resolution::HandlerFailed,
    ];

    fn to_raw(self) -> raw::Resolution {
        match self {
            Resolution::Replayed => raw::Resolution::Replayed,
            Resolution::Ignored => raw::Resolution::Ignored,
            Resolution::HandledByScript => raw::Resolution::HandledByScript,
            Resolution::HandlerFailed => raw::Resolution::HandlerFailed,
        }
    }

    fn from_raw(r: raw::Resolution) -> Self {
        match r {
            raw::Resolution::Replayed => Resolution::Replayed,
            raw::Resolution::Ignored => Resolution::Ignored,
            raw::Resolution::HandledByScript => Resolution::HandledByScript,
            raw::Resolution::HandlerFailed => Resolution::HandlerFailed,
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resolution {
    type Err = Error;

    /// Parses the host's names (`handled_by_script`, ...).
    fn from_str(s: &str) -> Result<Self, Error> {
        Resolution::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::msg(format!(
                    "unknown resolution {s:?} (expected replayed, ignored, handled_by_script or handler_failed)"
                ))
            })
    }
}

/// One dead letter of the app.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its id.
    pub id: String,
    /// The outbox id of the event that failed.
    pub original_event_id: String,
    /// The original source.
    pub source: String,
    /// The original op.
    pub op: String,
    /// The trigger that failed, if any.
    pub trigger_id: Option<String>,
    /// The script that failed, if any.
    pub script_id: Option<String>,
    /// The original payload.
    pub payload: serde_json::Value,
    /// Attempts made.
    pub attempt_count: u32,
    /// First attempt, milliseconds since the Unix epoch.
    pub first_attempt_at_ms: i64,
    /// Last attempt, milliseconds since the Unix epoch.
    pub last_attempt_at_ms: i64,
    /// The last error.
    pub last_error: String,
    /// When it became a dead letter, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When it was resolved, if it was.
    pub resolved_at_ms: Option<i64>,
    /// How it was resolved, if it was.
    pub resolution: Option<Resolution>,
}

fn convert(d: raw::DeadLetter) -> DeadLetter {
    DeadLetter {
        id: d.id,
        original_event_id: d.original_event_id,
        source: d.source,
        op: d.op,
        trigger_id: d.trigger_id,
        script_id: d.script_id,
        payload: serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null),
        attempt_count: d.attempt_count,
        first_attempt_at_ms: d.first_attempt_at,
        last_attempt_at_ms: d.last_attempt_at,
        last_error: d.last_error,
        created_at_ms: d.created_at,
        resolved_at_ms: d.resolved_at,
        resolution: d.resolution.map(Resolution::from_raw),
    }
}

/// A dead letter of this app by id (`None` if there is none, including
/// another app's). Needs read access.
pub fn get(id: &str) -> Result<Option<DeadLetter>, HostError> {
    Ok(raw::get(id)?.map(convert))
}

/// The oldest unresolved dead letters of this app, at most `limit` (the
/// host caps it at 1000) and about 4 MiB of payloads and errors: a page
/// holds the dead letters that begin within 4 MiB (at least one, if there
/// is one), so a page may be shorter than `limit` while more remain.
/// Resolve what you read, then ask again. The bytes count against the
/// invocation's answer budget (16 MiB by default). Needs read access.
pub fn list_unresolved(limit: u32) -> Result<Vec<DeadLetter>, HostError> {
    Ok(raw::list_unresolved(limit)?
        .into_iter()
        .map(convert)
        .collect())
}

/// Settle a dead letter. `Replayed` enqueues the original event again in the
/// same transaction. A dead letter that is already resolved is a
/// [`HostError::Conflict`] and nothing changes; one that does not exist (or
/// belongs to another app) is [`HostError::NotFound`]. Needs the app-admin
/// capability.
///
/// Resolving [`Resolution::HandlerFailed`] from a dead-letter handler is how
/// it gives up at once: see [the recursion stop](self#the-recursion-stop).
pub fn resolve(id: &str, resolution: Resolution) -> Result<(), HostError> {
    Ok(raw::resolve(id, resolution.to_raw())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_round_trip_through_their_names() {
        for r in Resolution::ALL {
            assert_eq!(r.as_str().parse::<Resolution>(), Ok(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert!("handled-by-script".parse::<Resolution>().is_err());
    }
}
