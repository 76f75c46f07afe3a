//! # Writing PiCloud trigger scripts
//!
//! A trigger script is a small Rust library compiled to a WebAssembly
//! component. The PiCloud host runs it once per event, in a fresh sandbox,
//! as the principal who registered the trigger. This crate is everything a
//! script needs: the [`handler`] attribute, the [`Event`] it receives, the
//! app's key-value store ([`kv`]), its queues ([`queue`]) and topics
//! ([`pubsub`]), its dead letters ([`dead_letters`]), its variables and
//! secrets ([`config`]) and a bounded log ([`log`]).
//!
//! ## A complete script
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "order-totals"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! picloud-sdk = { path = "../picloud/sdk" }
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//!
//! # Small components (~150 KB instead of ~3 MB): the host stores, hashes
//! # and compiles every byte you deploy.
//! [profile.release]
//! opt-level = "s"
//! strip = true
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use picloud_sdk::{Event, KvOp, Result, bail, handler, kv, log};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     customer: String,
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
//!     // Registered as a kv trigger on `orders`; anything else is not for us.
//!     let Some(change) = event.kv() else { return Ok(()) };
//!     if change.op == KvOp::Delete {
//!         kv::delete("order_totals", &change.key)?;
//!         return Ok(());
//!     }
//!     let Some(order) = change.value_as::<Order>()? else {
//!         bail!("order {} has no value", change.key);
//!     };
//!     let total: u64 = order.items.iter().map(|i| i.qty * i.price_cents).sum();
//!     // Writing is idempotent: a re-delivered event writes the same total.
//!     kv::set(
//!         "order_totals",
//!         &change.key,
//!         &json!({ "customer": order.customer, "total_cents": total }),
//!     )?;
//!     log::info!("order {} totals {total} cents", change.key);
//!     Ok(())
//! }
//! ```
//!
//! Build it with plain cargo (`rustup target add wasm32-wasip2` once, if your
//! toolchain lacks the target), then deploy it and register a trigger:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! picloud-host script deploy shop order-totals target/wasm32-wasip2/release/order_totals.wasm
//! picloud-host trigger add-kv shop --script order-totals --collection orders --as alice
//! ```
//!
//! ## The handler
//!
//! Put [`#[handler]`](handler) on exactly one function of the crate. It takes
//! the [`Event`] by value and returns `Result<R, E>`:
//!
//! - `R` is the reply body of a synchronous invocation (an event with source
//!   `http` and op `invoke`), ignored for every other event: `()` (no body),
//!   `Vec<u8>`, `Option<Vec<u8>>`, `String`, `&str` or a
//!   [`serde_json::Value`] (sent as JSON text). See [`IntoReply`].
//! - `E` is anything that implements `Display`. An error fails the attempt:
//!   its text becomes the attempt's `last_error`. The SDK's [`Error`] (with
//!   [`Result`], [`bail!`] and [`bail_permanent!`]) is the convenient
//!   choice: `?` converts host errors, JSON errors and strings into it, and
//!   it can say what the host should do next (below).
//!
//! ## Errors: retry, retry later, or give up
//!
//! A failed attempt is retried with the trigger's backoff, and the event
//! becomes a dead letter when its attempts run out. That is right for
//! trouble that passes (a downstream that is down), and what every error
//! means unless it says otherwise: [`Error::msg`], [`bail!`], a
//! [`HostError`] or a JSON error passed on with `?`, or any other `Display`
//! type. Two kinds of [`Error`] say more:
//!
//! | error | the host | for |
//! | --- | --- | --- |
//! | [`Error::msg`], [`bail!`], `?` | retries after the backoff | trouble that passes |
//! | [`Error::permanent`], [`bail_permanent!`] | makes a dead letter now, retries left or not | input no retry can fix |
//! | [`Error::retry_after`] | retries no sooner than the delay (the attempt counts) | a rate limit's `Retry-After` |
//!
//! A dead-letter handler's permanent error goes straight to the recursion
//! stop: its dead letter is resolved `handler_failed`. A synchronous
//! invocation is never retried, whatever its error.
//!
//! ```no_run
//! use std::time::Duration;
//! use picloud_sdk::{Error, Event, Result, bail_permanent, handler};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Charge {
//!     amount_cents: i64,
//! }
//!
//! #[handler]
//! fn charge(event: Event) -> Result<()> {
//!     let Ok(charge) = event.json::<Charge>() else {
//!         bail_permanent!("event {} is not a charge", event.id());
//!     };
//!     if charge.amount_cents <= 0 {
//!         return Err(Error::permanent("amount must be positive"));
//!     }
//!     let busy = charge.amount_cents > 1_000_000; // your downstream's answer
//!     if busy {
//!         return Err(Error::retry_after("bank: rate limited", Duration::from_secs(60)));
//!     }
//!     Ok(())
//! }
//! ```
//!
//! [`Error::is_permanent`] and [`Error::retry_delay`] read an error's kind
//! back, in a test for example.
//!
//! ## Events
//!
//! [`Event`] carries the source (`kv`, `cron`, `pubsub`, `queue`, `email`,
//! `http`, `dead_letter`), the op, and a JSON payload, which
//! [`Event::json`] parses into your own type. [`Event::kind`] tells them
//! apart, and each source the host produces has a typed view, `None` for
//! any other event:
//!
//! | source / op | typed view | registered with |
//! | --- | --- | --- |
//! | `kv` / `set`, `delete` | [`Event::kv`] → [`KvEvent`] | `trigger add-kv` |
//! | `cron` / `tick` | [`Event::cron`] → [`CronTick`] | `trigger add-cron --schedule` |
//! | `queue` / `message` | [`Event::queue_message`] → [`QueueMessage`] | `trigger add-queue` |
//! | `queue` / `batch` | [`Event::queue_batch`] → [`QueueBatch`] | `trigger add-queue --batch N` |
//! | `pubsub` / `publish` | [`Event::pubsub`] → [`PubsubMessage`] | `trigger add-pubsub` |
//! | `dead_letter` / `created` | [`Event::dead_letter`] → [`DeadLetterEvent`], whose [`kv`](DeadLetterEvent::kv), [`cron`](DeadLetterEvent::cron), [`queue_message`](DeadLetterEvent::queue_message) and [`pubsub`](DeadLetterEvent::pubsub) view the failed event | `trigger add-dead-letter` |
//! | `http` / `invoke` | [`Event::json`] (the caller's JSON) | none: see below |
//!
//! ### Scheduled scripts
//!
//! A cron trigger runs its script on a schedule. The tick says when it was
//! due ([`CronTick::scheduled_at`], RFC 3339 text) and how many earlier
//! ticks were skipped while no dispatcher ran ([`CronTick::missed`]): after
//! a gap the host runs the newest tick once, not one per missed time, so a
//! script that sweeps "everything older than X" catches up by itself. A tick is
//! delivered at least once, like any event: make it idempotent.
//! `examples/scheduled-cleanup` deletes expired sessions this way.
//!
//! ```no_run
//! use picloud_sdk::{Event, Result, handler, kv};
//!
//! #[handler]
//! fn nightly(event: Event) -> Result<()> {
//!     let Some(tick) = event.cron() else { return Ok(()) };
//!     // Keyed by the tick: a re-delivered tick writes the same report.
//!     kv::set("reports", &tick.scheduled_at, &tick.missed)?;
//!     Ok(())
//! }
//! ```
//!
//! ### Queues and topics
//!
//! [`queue::send`] hands work to the one consumer of a queue;
//! [`pubsub::publish`] tells every subscriber of a topic. Both take effect
//! only if your handler succeeds (a failed attempt's messages are dropped
//! with it, and its retry sends them again), one level deeper than the
//! event being handled. [`queue::send_after`] delays a message.
//!
//! A consumer registered with `--batch N` gets up to N messages in one
//! event ([`Event::queue_batch`]). Returning an error retries them all; to
//! retry only the ones that failed, call [`queue::retry`] (or
//! [`queue::retry_after`]) with their ids and return `Ok`. Each message
//! counts its own attempts ([`BatchMessage::attempt`]) and becomes a dead
//! letter alone. `examples/queue-consumer` is such a consumer.
//!
//! ## Synchronous invocations
//!
//! An application can call a script directly and wait for its answer
//! (`picloud-host invoke shop greeter --payload '{"name":"Ada"}'`). The
//! event's source is `http`, its op `invoke`, and what the handler returns
//! is the reply body; an error goes back to the caller and is not retried.
//!
//! ```no_run
//! use picloud_sdk::{Event, Result, bail, handler};
//! use serde_json::{Value, json};
//!
//! #[handler]
//! fn greet(event: Event) -> Result<Value> {
//!     let payload: Value = event.json()?;
//!     let Some(name) = payload["name"].as_str() else {
//!         bail!("missing field: name");
//!     };
//!     Ok(json!({ "greeting": format!("hello, {name}") }))
//! }
//! ```
//!
//! ## The rules a script lives by
//!
//! - **At-least-once delivery.** A crash between running your handler and
//!   recording its success runs it again. [`Event::id`] is stable across
//!   retries and re-deliveries: key your writes by it (or make them
//!   otherwise idempotent) so that running twice does no harm.
//! - **Retries.** Returning an error fails the attempt; the host retries with
//!   exponential backoff (5 attempts by default; [`Event::attempt`] counts
//!   them) and then turns the event into a dead letter, which `dead_letter`
//!   triggers can handle. A [permanent](Error::permanent) error skips the
//!   retries; a [retry-after](Error::retry_after) error sets the next
//!   one's delay.
//! - **The recursion stop.** A dead-letter handler that returns an error
//!   (after its retries) resolves its dead letter `handler_failed` and never
//!   produces another dead letter. A handler may resolve it
//!   [`HandlerFailed`](dead_letters::Resolution::HandlerFailed) itself to
//!   give up at once. See [`dead_letters`].
//! - **Depth.** A write, a queue message or a published message from
//!   inside a handler causes an event one level
//!   deeper than the one being handled ([`Event::depth`]). Events deeper than
//!   the host's limit (`PICLOUD_MAX_TRIGGER_DEPTH`, 8 by default) are never
//!   run: they become dead letters saying `max trigger depth N exceeded`. A
//!   script that writes to the collection it listens on stops there instead
//!   of looping forever, but it is better not to write one. A dead letter
//!   your handler resolves `replayed` is an event it causes too: the replay
//!   runs one level deeper, so a handler that replays what it handles ends
//!   at the limit.
//! - **Permissions.** Every host call is checked against the principal that
//!   registered the trigger, at the moment of the call, *and* against the
//!   principal who deployed the script's current code (when a principal
//!   deployed it): a script never has more rights than either. A viewer's
//!   script cannot write; a removed member's script cannot read; a
//!   developer's redeploy of an admin's script cannot resolve dead letters.
//!   The refusal is [`HostError::PermissionDenied`]. A script only ever
//!   sees its own app. The roles an app's members hold:
//!
//!   | role | may (and so may the scripts it registers or deploys) |
//!   | --- | --- |
//!   | `admin` | everything below, and resolve dead letters ([`dead_letters::resolve`]), manage members and triggers |
//!   | `developer` | deploy scripts, read and write [`kv`], invoke scripts, read runs and logs |
//!   | `viewer` | read [`kv`] and dead letters, read runs and logs |
//!
//!   An admin or the operator grants a role with `picloud-host member add
//!   APP PRINCIPAL ROLE`.
//! - **Budgets.** One invocation may make 1,000 `kv`, `dead_letters`,
//!   `queue` and `pubsub` calls, cause 100 events (each [`kv::set`],
//!   [`kv::delete`], replay, [`queue::send`] and [`pubsub::publish`] causes
//!   one) and read 16 MiB of answers, by default. The call that goes
//!   past a budget ends the invocation with an error that names it (`event
//!   limit of 100 per invocation exceeded ...`). A value nested more than 64
//!   deep, or a name (collection, key) with a control character, is
//!   [`HostError::InvalidArgument`].
//! - **The sandbox.** Each event gets a fresh instance: nothing survives from
//!   one event to the next except what you write to [`kv`]. No filesystem,
//!   no network, no environment. Clocks and random numbers work; `println!`
//!   and `eprintln!` go to the invocation's log (see below). There is a deadline (5 s),
//!   a memory limit (64 MiB), a log limit (64 KiB) and a reply limit by
//!   default; hitting one fails the attempt with an error that names it
//!   (`timeout after 5000 ms`, `memory limit 64 MiB exceeded`, ...). A
//!   panic fails the attempt too.
//!
//! ## Concurrency: handlers run at once, in any order
//!
//! The host runs many events at the same time, across several dispatchers
//! when they share a database, at least once each, and in no particular
//! order: the order events were written is not the order they run. Two
//! handlers that read a key and write it back race:
//!
//! ```no_run
//! # use picloud_sdk::{Result, kv};
//! # fn wrong() -> Result<()> {
//! // WRONG under concurrency: two orders both read 10 and both write 9.
//! let left: i64 = kv::get_json("stock", "widget")?.unwrap_or(0);
//! kv::set("stock", "widget", &(left - 1))?;
//! # Ok(())
//! # }
//! ```
//!
//! Thirty such orders against a stock of 10 leave it at 8 or 9, not 0 with
//! 20 backorders. Two cures:
//!
//! - **A conditional write.** [`kv::set_if_version`] and
//!   [`kv::delete_if_version`] write only if the key is still at the
//!   version you read (0: only if it does not exist), and fail with
//!   [`HostError::Conflict`] otherwise. [`kv::update`] does the read, your
//!   change and the conditional write, again on a conflict; when every try
//!   loses, return the error and the host retries the event later.
//! - **An atomic increment.** [`kv::increment`] adds to an integer in one
//!   step, for counters and stock levels.
//!
//! ```no_run
//! # use picloud_sdk::{Result, kv};
//! # fn right() -> Result<()> {
//! let mut short = 0;
//! kv::update("stock", "widget", |left: Option<i64>| {
//!     let left = left.unwrap_or(0);
//!     short = if left > 0 { 0 } else { 1 }; // the last run is the one written
//!     left - (1 - short)
//! })?;
//! if short > 0 {
//!     kv::increment("backorders", "widget", short)?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The repository's `examples/inventory` is this script in full, with both
//! cures; its test runs 1,000 orders against a stock of 100 and finds the
//! stock at exactly 0 and exactly 900 backorders. Many handlers updating
//! one key conflict often: each conflict costs a read and a try, and an
//! attempt that runs out of tries is retried by the host. For one hot
//! counter, prefer [`kv::increment`], which never conflicts.
//!
//! At-least-once delivery still holds: an attempt that wrote and then
//! failed runs again. Make the writes of one event idempotent (key them by
//! [`Event::id`]) where running twice would do harm.
//!
//! ### Ordering per key: an option of the trigger
//!
//! When the events of one key must run one at a time and in the order they
//! were written, register the kv trigger with `--ordered`
//! (`picloud-host trigger add-kv APP --script S --collection C --ordered --as P`,
//! or `TriggerOptions::ordered` in the host library). Then, for that
//! trigger and each (collection, key):
//!
//! - events run in write order, and one at a time: while one runs, or waits
//!   for its retry after a failure, the later ones of that key wait behind
//!   it (on every dispatcher sharing the database);
//! - other keys are not held up, and the trigger's handler still runs for
//!   many keys at once;
//! - an event that uses up its attempts becomes a dead letter as usual, and
//!   the next event of its key runs after it;
//! - ordering covers writes made after the trigger was registered, and a
//!   dead letter replayed by hand runs outside it.
//!
//! Under an ordered trigger the plain read-and-write above is correct for
//! state that belongs to the event's own key. It does not order different
//! keys: orders written under keys of their own still race on a shared
//! stock. `examples/inventory`'s `"method": "plain"` relies on every order
//! of an item being a new write of one key, `orders/<item>`. Ordering costs
//! throughput: each event takes one more outbox row (about a third to
//! two fifths of the unordered rate remains), and a key's events cannot run
//! side by side, so one hot key runs about a thousand events a second on
//! SQLite and a few hundred on PostgreSQL. Events waiting behind a key are
//! parked until their turn, so a long backlog on one key slows neither the
//! other keys nor other apps. Keep an ordered trigger's keys many; the
//! README's benchmark table gives the figures.
//!
//! ## Seeing what your script did
//!
//! Every invocation leaves a *run*: its outcome (`succeeded`, `failed`, or
//! `limit` with the limit named, among others), its attempt number, how long
//! it took, its error, and every line it logged: [`log`] lines with their
//! level, and each line printed with `println!` (level `stdout`) or
//! `eprintln!` (level `stderr`). Read them with the host's command line (or
//! the same calls in its library), as a member with logs access (admin,
//! developer or viewer):
//!
//! ```text
//! picloud-host logs shop                 # the lines of the last 20 runs
//! picloud-host logs shop --follow        # new lines as runs finish, until Ctrl-C
//! picloud-host runs list shop --failed   # runs that did not succeed
//! picloud-host runs show RUN-ID          # one run in full
//! picloud-host dead-letters show ID      # a dead letter and every attempt's run
//! ```
//!
//! A failing event's attempts are spread over its retry delays; `picloud-host
//! dispatch --until-settled` runs them all, so that the event ends as a dead
//! letter whose `show` tells the whole story. Runs are kept 7 days (at most
//! 100,000 per app) by default, and an operator may keep only failures or
//! none (`PICLOUD_RUNS`).
//!
//! ## Calling other services: outbound HTTP
//!
//! A script makes HTTP requests through `wasi:http`, with any Rust client
//! built for it. We use and recommend [`wstd`](https://docs.rs/wstd), the
//! Bytecode Alliance's async standard library for components: add
//! `wstd = "0.6"` to your dependencies and run its client with
//! `wstd::runtime::block_on` inside your (synchronous) handler:
//!
//! ```ignore
//! use picloud_sdk::{Event, Result, bail, config, handler};
//! use wstd::http::{Client, Request};
//!
//! #[handler]
//! fn notify(event: Event) -> Result<()> {
//!     let url = config::require("WEBHOOK_URL")?;
//!     let request = Request::post(url)
//!         .header("content-type", "application/json")
//!         .body(event.payload().to_owned())
//!         .map_err(|e| picloud_sdk::Error::msg(e.to_string()))?;
//!     let status = wstd::runtime::block_on(Client::new().send(request))
//!         .map_err(|e| picloud_sdk::Error::msg(format!("no answer: {e:?}")))?
//!         .status();
//!     if !status.is_success() {
//!         bail!("the service answered {status}"); // retried, then dead-lettered
//!     }
//!     Ok(())
//! }
//! ```
//!
//! The rules (the operator's and the app admin's, not yours to change):
//!
//! - **Nothing is allowed by default.** An app admin allows each host
//!   (`picloud-host app allow-host shop https://hooks.example.com`, or
//!   `https://*.example.com` for every name under it). Any other request
//!   fails at once with `ErrorCode::HttpRequestDenied`; so does a redirect
//!   to a host that is not allowed (each hop is a request of its own).
//! - **Private addresses are refused** even when their name is allowed: a
//!   name that resolves to a loopback, private, link-local or cloud
//!   metadata address gets `ErrorCode::DestinationIpProhibited`, unless the
//!   operator allowed that range (`PICLOUD_OUTBOUND_ALLOW_NETS`).
//! - **Limits** fail the attempt with the limit named, however your code
//!   handles the error: 16 requests per invocation, 3 s per request (and
//!   never past the invocation's deadline), 1 MiB of response body.
//! - Your principal, and whoever deployed your code, need write access.
//! - The run's log gets one line per request: method, URL without its
//!   query, status and duration (`http POST https://hooks.example.com/x ->
//!   200 (41 ms)`). Headers and bodies are never logged, so tokens in them
//!   stay out of the log; don't put secrets in a URL's path.
//!
//! `examples/webhook-notifier` is a complete dead-letter handler that posts
//! to a webhook.
//!
//! ## Outside the sandbox
//!
//! The crate compiles for any target, so `cargo check`, `cargo doc` and doc
//! tests work on your machine; only a `wasm32-wasip2` build is a script.
//! Host calls ([`kv`], [`queue`], [`pubsub`], [`dead_letters`], [`config`],
//! [`log`]) have no host to talk to
//! outside the sandbox and panic if called there, unless a test gives them
//! one.
//!
//! ## Testing a handler before you deploy it
//!
//! Two steps, both without an app:
//!
//! 1. **Unit tests, natively.** With `picloud-sdk`'s `testing` feature as a
//!    dev-dependency, `cargo test` calls your handler function with an event
//!    built by `picloud_sdk::testing` inside `TestHost::run`: an in-memory
//!    host with the KV and dead letters you seed, that records log lines,
//!    writes, queue messages sent and retried and messages published, and
//!    fails the calls you tell it to. The repository's
//!    `examples/inventory` tests itself this way.
//!
//!    ```toml
//!    [dev-dependencies]
//!    picloud-sdk = { path = "PICLOUD_CHECKOUT/sdk", features = ["testing"] }
//!    ```
//! 2. **One real run.** `picloud-host run target/wasm32-wasip2/release/NAME.wasm
//!    --event EVENT.json [--kv SEED.json]` runs the built component once in
//!    the real sandbox on a throwaway database and prints its reply, log
//!    lines, KV writes and any limit it hit.
#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use picloud_sdk_macros::handler;
pub use serde_json;

pub mod config;
pub mod dead_letters;
mod event;
pub mod kv;
pub mod log;
pub mod pubsub;
pub mod queue;
mod sys;
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

pub use event::{
    BatchMessage, CronTick, DeadLetterEvent, Event, EventKind, KvEvent, KvOp, PubsubMessage,
    QueueBatch, QueueMessage,
};

#[doc(hidden)]
pub mod __private {
    //! What `#[handler]` expands to; not a public API.

    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "trigger",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "::picloud_sdk::__private::bindings",
            generate_all,
        });
    }

    pub use bindings::Guest;
    pub use bindings::export;
    pub use bindings::picloud::trigger::types::Event as RawEvent;
    pub use bindings::picloud::trigger::types::HandlerError as RawHandlerError;

    /// The hand-written event around the generated one.
    pub fn event(raw: RawEvent) -> super::Event {
        super::Event::from_raw(raw)
    }

    /// The reply body of a handler's value.
    pub fn reply<R: super::IntoReply>(reply: R) -> Option<Vec<u8>> {
        reply.into_reply()
    }

    /// A handler's error as `handle` returns it, for the SDK's [`Error`]
    /// (its message, whether it is permanent, its retry-after).
    ///
    /// `#[handler]` calls `(&error).__picloud_handler_error()` with both
    /// this trait and [`DisplayFailure`] in scope: method lookup picks this
    /// one when the error is the SDK's (a match at `&Error`) and the other
    /// for any other `Display` (a match only at `&&E`).
    ///
    /// [`Error`]: super::Error
    pub trait SdkFailure {
        /// The WIT `handler-error`.
        fn __picloud_handler_error(&self) -> RawHandlerError;
    }

    impl SdkFailure for super::Error {
        fn __picloud_handler_error(&self) -> RawHandlerError {
            RawHandlerError {
                message: self.message.clone(),
                permanent: self.permanent,
                retry_after_ms: self.retry_after.map(super::millis),
            }
        }
    }

    /// A handler's error of any other `Display` type: its text, retryable,
    /// with no retry-after. See [`SdkFailure`].
    pub trait DisplayFailure {
        /// The WIT `handler-error`.
        fn __picloud_handler_error(&self) -> RawHandlerError;
    }

    impl<E: std::fmt::Display + ?Sized> DisplayFailure for &E {
        fn __picloud_handler_error(&self) -> RawHandlerError {
            RawHandlerError {
                message: self.to_string(),
                permanent: false,
                retry_after_ms: None,
            }
        }
    }
}

use __private::bindings::picloud::trigger::types::HostError as RawHostError;

/// Why the host refused a call. Every variant is an error your handler can
/// handle, or pass on with `?` (it converts into [`Error`]).
///
/// Its `Display` text is what a failed attempt records: `permission denied`,
/// `not found: ...`, `invalid argument: ...`, `conflict: ...`,
/// `unavailable: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The principal the script runs as lacks the capability (for example a
    /// viewer writing KV, or a member who has since been removed).
    PermissionDenied,
    /// The named thing does not exist in this app.
    NotFound(String),
    /// An argument was malformed (empty key, oversized value, bad id...).
    InvalidArgument(String),
    /// The call conflicts with current state: a conditional KV write
    /// ([`kv::set_if_version`], [`kv::delete_if_version`]) found the key at
    /// another version, or a dead letter is already resolved. The message
    /// says which.
    Conflict(String),
    /// The host's storage could not complete the call now (the database is
    /// down, or did not answer before your invocation's deadline). Pass it on
    /// with `?`: the host knows the failure is its own, and the attempt is
    /// tried again later without counting against your retries, however long
    /// the outage (up to the host's maximum event age). Don't loop on it
    /// yourself; your deadline keeps running.
    Unavailable(String),
}

impl HostError {
    /// Whether this is [`HostError::Conflict`]: for a conditional KV write,
    /// someone else wrote the key first; read it again and retry.
    pub fn is_conflict(&self) -> bool {
        matches!(self, HostError::Conflict(_))
    }
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

/// A handler's error: a message that becomes the attempt's `last_error`,
/// and what the host should do about the event.
///
/// Anything `Display` works as a handler error; this type is a convenient
/// default that `?` converts host errors, JSON errors and strings into.
/// [`bail!`] returns one built like `format!`. Such an error is
/// *retryable*: the host tries the event again after the trigger's backoff,
/// and turns it into a dead letter when the attempts run out. Two other
/// kinds say more:
///
/// - [`Error::permanent`] (or [`bail_permanent!`]): retrying cannot help
///   (the input is malformed, the order was cancelled). The event becomes a
///   dead letter after this attempt, without using up its retries.
/// - [`Error::retry_after`]: retry, but no sooner than the given delay
///   instead of after the backoff (a downstream answered `429` with
///   `Retry-After`). The attempt still counts.
///
/// An error that came from a host call keeps it: [`Error::host_error`]
/// tells a conflict or a refusal apart from a malformed value, for example
/// after [`kv::get_json`] or [`kv::update`].
///
/// ```no_run
/// use picloud_sdk::{HostError, kv};
///
/// # fn main() -> Result<(), picloud_sdk::Error> {
/// match kv::get_json::<u64>("counters", "visits") {
///     Ok(n) => println!("{n:?}"),
///     Err(e) if e.host_error() == Some(&HostError::PermissionDenied) => {
///         println!("this script may not read counters");
///     }
///     Err(e) => return Err(e), // unavailable, or not a u64
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    host: Option<HostError>,
    permanent: bool,
    retry_after: Option<Duration>,
}

impl Error {
    /// A retryable error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
            host: None,
            permanent: false,
            retry_after: None,
        }
    }

    /// An error that must not be retried: the host makes the event a dead
    /// letter after this attempt (a dead-letter handler's event goes to the
    /// recursion stop, resolved `handler_failed`), whatever attempts are
    /// left. For input no retry can fix.
    ///
    /// ```no_run
    /// use picloud_sdk::{Error, Event, Result};
    ///
    /// fn check(event: &Event) -> Result<u64> {
    ///     let order: serde_json::Value = event.json()?;
    ///     order["qty"]
    ///         .as_u64()
    ///         .ok_or_else(|| Error::permanent(format!("order {} has no qty", event.id())))
    /// }
    /// ```
    pub fn permanent(message: impl fmt::Display) -> Self {
        Error {
            permanent: true,
            ..Error::msg(message)
        }
    }

    /// A retryable error whose retry must wait at least `delay` (rounded up
    /// to whole milliseconds) instead of the trigger's backoff: a
    /// rate-limited downstream's `Retry-After`. The attempt still counts
    /// against the trigger's attempts.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use picloud_sdk::{Error, Result};
    ///
    /// fn answer(status: u16) -> Result<()> {
    ///     if status == 429 {
    ///         return Err(Error::retry_after("mail api: rate limited", Duration::from_secs(30)));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> Self {
        Error {
            retry_after: Some(delay),
            ..Error::msg(message)
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The host error this error came from, when it came from a host call.
    pub fn host_error(&self) -> Option<&HostError> {
        self.host.as_ref()
    }

    /// Whether the event must not be retried ([`Error::permanent`]).
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The least delay before the retry, when the error asks for one
    /// ([`Error::retry_after`]).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        Error {
            host: Some(e.clone()),
            ..Error::msg(e)
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::msg(format!("invalid JSON: {e}"))
    }
}

impl From<String> for Error {
    fn from(e: String) -> Self {
        Error::msg(e)
    }
}

impl From<&str> for Error {
    fn from(e: &str) -> Self {
        Error::msg(e)
    }
}

/// `Result` with the SDK's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Return early from a handler with a retryable [`Error`] whose message is
/// built like `format!`.
///
/// ```no_run
/// use picloud_sdk::{Event, Result, bail};
///
/// fn check(event: &Event) -> Result<()> {
///     if event.attempt() > 3 {
///         bail!("event {} keeps failing", event.id());
///     }
///     Ok(())
/// }
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err(
            ::core::convert::From::from($crate::Error::msg(::std::format!($($arg)*)))
        )
    };
}

/// Return early from a handler with a permanent [`Error`]
/// ([`Error::permanent`]: no retry, a dead letter after this attempt) whose
/// message is built like `format!`.
///
/// ```no_run
/// use picloud_sdk::{Event, Result, bail_permanent};
/// use serde_json::Value;
///
/// fn name(event: &Event) -> Result<String> {
///     let payload: Value = event.json()?;
///     let Some(name) = payload["name"].as_str() else {
///         bail_permanent!("event {} has no name: retrying will not add one", event.id());
///     };
///     Ok(name.to_owned())
/// }
/// ```
#[macro_export]
macro_rules! bail_permanent {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err(
            ::core::convert::From::from($crate::Error::permanent(::std::format!($($arg)*)))
        )
    };
}

/// Whole milliseconds, rounded up, for the host's `delay-ms` and
/// `retry-after-ms` (a delay never shrinks to less than asked).
pub(crate) fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// What a handler may return: the reply body of a synchronous invocation
/// (ignored for other events).
///
/// `()` and `None` send no body; a [`serde_json::Value`] is sent as JSON
/// text; strings and bytes are sent as they are.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's reply",
    label = "the handler returns `Result<{Self}, _>`",
    note = "a reply is `()`, `Vec<u8>`, `Option<Vec<u8>>`, `String`, `&str` or `serde_json::Value`"
)]
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

impl IntoReply for &str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_read_like_the_contract() {
        assert_eq!(HostError::PermissionDenied.to_string(), "permission denied");
        assert_eq!(
            HostError::NotFound("dead letter x".into()).to_string(),
            "not found: dead letter x"
        );
        assert_eq!(
            HostError::InvalidArgument("empty key".into()).to_string(),
            "invalid argument: empty key"
        );
        assert_eq!(
            HostError::Conflict("already resolved as ignored".into()).to_string(),
            "conflict: already resolved as ignored"
        );
        assert_eq!(
            HostError::Unavailable("storage".into()).to_string(),
            "unavailable: storage"
        );
        let e: Error = HostError::PermissionDenied.into();
        assert_eq!(e.to_string(), "permission denied");
    }

    #[test]
    fn replies() {
        assert_eq!(().into_reply(), None);
        assert_eq!("ok".into_reply(), Some(b"ok".to_vec()));
        assert_eq!(String::from("ok").into_reply(), Some(b"ok".to_vec()));
        assert_eq!(None::<Vec<u8>>.into_reply(), None);
        assert_eq!(
            serde_json::json!({"a": 1}).into_reply(),
            Some(br#"{"a":1}"#.to_vec())
        );
    }

    /// What `#[handler]` does with an `Err`: the same call, with the same
    /// two traits in scope.
    fn failure<E: fmt::Display>(error: &E) -> __private::RawHandlerError {
        #[allow(unused_imports)]
        use __private::{DisplayFailure as _, SdkFailure as _};
        (&error).__picloud_handler_error()
    }

    #[allow(clippy::needless_borrow)] // the borrow is the macro's, on purpose
    fn sdk_failure(error: Error) -> __private::RawHandlerError {
        #[allow(unused_imports)]
        use __private::{DisplayFailure as _, SdkFailure as _};
        (&error).__picloud_handler_error()
    }

    #[test]
    fn a_failed_handler_keeps_its_text_and_its_kind() {
        let plain = sdk_failure("payment declined: card decline-1".into());
        assert_eq!(plain.message, "payment declined: card decline-1");
        assert_eq!((plain.permanent, plain.retry_after_ms), (false, None));

        let permanent = sdk_failure(Error::permanent("malformed order"));
        assert_eq!(permanent.message, "malformed order");
        assert_eq!(
            (permanent.permanent, permanent.retry_after_ms),
            (true, None)
        );

        let later = sdk_failure(Error::retry_after(
            "rate limited",
            Duration::from_micros(1500),
        ));
        assert_eq!((later.permanent, later.retry_after_ms), (false, Some(2)));

        // Any other Display: its text, retryable.
        let text = failure(&String::from("boom"));
        assert_eq!(
            (text.message.as_str(), text.permanent, text.retry_after_ms),
            ("boom", false, None)
        );

        let bailed = || -> Result<()> { bail!("missing field: {}", "name") };
        let e = bailed().unwrap_err();
        assert_eq!(
            (e.message(), e.is_permanent()),
            ("missing field: name", false)
        );
        let bailed = || -> Result<()> { bail_permanent!("no {} here", "name") };
        let e = bailed().unwrap_err();
        assert_eq!(
            (e.message(), e.is_permanent(), e.retry_delay()),
            ("no name here", true, None)
        );
    }

    #[test]
    fn the_kind_survives_question_mark() {
        let inner =
            || -> Result<()> { Err(Error::retry_after("slow down", Duration::from_secs(3))) };
        let outer = || -> Result<()> {
            inner()?;
            Ok(())
        };
        assert_eq!(
            outer().unwrap_err().retry_delay(),
            Some(Duration::from_secs(3))
        );
        let host: Error = HostError::Unavailable("down".into()).into();
        assert!(!host.is_permanent());
        assert_eq!(host.retry_delay(), None);
    }

    #[test]
    fn delays_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::from_millis(250)), 250);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn refused() -> Result<()> {
        Err(HostError::Conflict(
            "c/k is at version 2, not absent".into(),
        ))?;
        Ok(())
    }

    #[test]
    fn a_host_error_passed_on_with_question_mark_can_still_be_matched() {
        let e = refused().unwrap_err();
        assert_eq!(e.message(), "conflict: c/k is at version 2, not absent");
        assert!(e.host_error().is_some_and(HostError::is_conflict));
        assert_eq!(Error::msg("mine").host_error(), None);
        assert_eq!(Error::from("mine"), Error::msg("mine"));
    }
}
