//! # Writing PiCloud trigger scripts
//!
//! A trigger script is a small Rust library compiled to a WebAssembly
//! component. The PiCloud host runs it once per event, in a fresh sandbox,
//! as the principal who registered the trigger. This crate is everything a
//! script needs: the [`handler`] attribute, the [`Event`] it receives, the
//! app's key-value store ([`kv`]), its dead letters ([`dead_letters`]) and a
//! bounded log ([`log`]).
//!
//! ## A complete script
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "order-totals"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! picloud-sdk = { path = "../picloud/sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use picloud_sdk::{Event, Result, handler, kv, log};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     items: Vec<Item>,
//! }
//!
//! #[derive(Deserialize)]
//! struct Item {
//!     qty: u64,
//!     price_cents: u64,
//! }
//!
//! /// Keeps `order_totals/<key>` equal to the total of `orders/<key>`.
//! #[handler]
//! fn on_order(event: Event) -> Result<()> {
//!     let Some(change) = event.kv() else { return Ok(()) };
//!     match change.value_as::<Order>()? {
//!         Some(order) => {
//!             let total: u64 = order.items.iter().map(|i| i.qty * i.price_cents).sum();
//!             kv::set("order_totals", &change.key, &serde_json::json!({ "total_cents": total }))?;
//!             log::info(&format!("order {} totals {total} cents", change.key));
//!         }
//!         None => {
//!             kv::delete("order_totals", &change.key)?;
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Build it with plain cargo, then deploy it and register a trigger:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! picloud-host script deploy shop order-totals target/wasm32-wasip2/release/order_totals.wasm
//! picloud-host trigger add-kv shop --script order-totals --collection orders --as alice
//! ```
//!
//! ## The rules a script lives by
//!
//! - **At-least-once delivery.** A crash between running your handler and
//!   recording its success runs it again. [`Event::id`] is stable across
//!   retries and re-deliveries: key your writes by it to stay idempotent.
//! - **Retries.** Returning an error fails the attempt; the host retries with
//!   exponential backoff (5 attempts by default) and then turns the event into
//!   a dead letter, which `dead_letter` triggers can handle.
//! - **The recursion stop.** A dead-letter handler that fails after its
//!   retries resolves its dead letter `handler_failed`; it never creates
//!   another dead letter. See [`dead_letters`].
//! - **Depth.** A write from inside a handler causes an event one level
//!   deeper than the one being handled ([`Event::depth`]). Events deeper than
//!   the host's limit (8 by default) are never run: they become dead letters
//!   saying `max trigger depth N exceeded`. A script that writes to the
//!   collection it listens on stops there instead of looping forever.
//! - **Permissions.** Every host call is checked against the principal that
//!   registered the trigger, at the moment of the call. A viewer's script
//!   cannot write; a removed member's script cannot read. The refusal is
//!   [`HostError::PermissionDenied`]. A script only ever sees its own app.
//! - **The sandbox.** No filesystem, no network, no environment. Clocks and
//!   random numbers work; `println!` and `eprintln!` go to the invocation's
//!   log. There is a deadline (5 s), a memory limit (64 MiB), a log limit
//!   (64 KiB) and a reply limit (1 MiB) by default; hitting one fails the
//!   attempt with an error that names it.
#![warn(missing_docs)]

use std::fmt;

use serde::de::DeserializeOwned;

pub use picloud_sdk_macros::handler;
pub use serde_json;

pub mod dead_letters;
mod event;
pub mod kv;
pub mod log;

pub use event::{DeadLetterEvent, Event, KvEvent, KvOp};

#[doc(hidden)]
pub mod __private {
    //! What `#[handler]` expands to; not a public API.

    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "trigger",
            pub_export_macro: true,
            default_bindings_module: "::picloud_sdk::__private::bindings",
        });
    }

    /// Run the user's handler on a raw event and shape its result for the host.
    pub fn run<R, E, F>(
        raw: bindings::picloud::trigger::types::Event,
        handler: F,
    ) -> Result<Option<Vec<u8>>, String>
    where
        R: super::IntoReply,
        E: std::fmt::Display,
        F: FnOnce(super::Event) -> Result<R, E>,
    {
        match handler(super::Event::from_raw(raw)) {
            Ok(reply) => Ok(reply.into_reply()),
            Err(e) => Err(e.to_string()),
        }
    }
}

use __private::bindings::picloud::trigger::types::HostError as RawHostError;

/// Why the host refused a call. Every variant is an error your handler can
/// handle (or pass on with `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The principal the script runs as lacks the capability (for example a
    /// viewer writing KV, or a member who has since been removed).
    PermissionDenied,
    /// The named thing does not exist in this app.
    NotFound(String),
    /// An argument was malformed (empty key, oversized value, bad id...).
    InvalidArgument(String),
    /// The call conflicts with current state (e.g. a dead letter already resolved).
    Conflict(String),
    /// The host could not complete the call now; retrying may help.
    Unavailable(String),
}

impl From<RawHostError> for HostError {
    fn from(e: RawHostError) -> Self {
        match e {
            RawHostError::PermissionDenied => HostError::PermissionDenied,
            RawHostError::NotFound(m) => HostError::NotFound(m),
            RawHostError::InvalidArgument(m) => HostError::InvalidArgument(m),
            RawHostError::Conflict(m) => HostError::Conflict(m),
            RawHostError::Unavailable(m) => HostError::Unavailable(m),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::PermissionDenied => f.write_str("permission denied"),
            HostError::NotFound(m) => write!(f, "not found: {m}"),
            HostError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            HostError::Conflict(m) => write!(f, "conflict: {m}"),
            HostError::Unavailable(m) => write!(f, "unavailable: {m}"),
        }
    }
}

impl std::error::Error for HostError {}

/// A handler's error: a message that becomes the attempt's `last_error`.
///
/// Anything `Display` works as a handler error; this type is a convenient
/// default that `?` converts host errors, JSON errors and strings into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        Error(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("invalid JSON: {e}"))
    }
}

impl From<String> for Error {
    fn from(e: String) -> Self {
        Error(e)
    }
}

impl From<&str> for Error {
    fn from(e: &str) -> Self {
        Error(e.to_owned())
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Return early from a handler with an error message built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)).into())
    };
}

/// What a handler may return as the reply body of a synchronous invocation
/// (ignored for other events).
pub trait IntoReply {
    /// The body, if any.
    fn into_reply(self) -> Option<Vec<u8>>;
}

impl IntoReply for () {
    fn into_reply(self) -> Option<Vec<u8>> {
        None
    }
}

impl IntoReply for Vec<u8> {
    fn into_reply(self) -> Option<Vec<u8>> {
        Some(self)
    }
}

impl IntoReply for Option<Vec<u8>> {
    fn into_reply(self) -> Option<Vec<u8>> {
        self
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Option<Vec<u8>> {
        Some(self.into_bytes())
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Option<Vec<u8>> {
        Some(self.as_bytes().to_vec())
    }
}

impl IntoReply for serde_json::Value {
    fn into_reply(self) -> Option<Vec<u8>> {
        Some(self.to_string().into_bytes())
    }
}

/// Parse JSON text into `T`, with the SDK's error.
pub(crate) fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    Ok(serde_json::from_str(text)?)
}
