//! PiCloud trigger host: dispatches outbox events to sandboxed WebAssembly
//! trigger scripts.
//!
//! The pieces, one module per concept:
//! - [`admin`]: operations done for a principal (triggers, KV, bulk dead-letter work);
//! - [`model`]: ids, timestamps and the rows everything else passes around;
//! - [`pattern`]: collection/source patterns for triggers;
//! - [`retry`]: retry policy per trigger (attempts, backoff, age);
//! - [`cron`]: cron schedules, and the ticks they become exactly once;
//! - [`messages`]: queues and topics, messages that travel through the outbox;
//! - [`config`]: [`config::TriggerConfig`] and [`config::SandboxCeiling`] from the environment;
//! - [`auth`]: scopes, roles, capabilities and the [`auth::Authorizer`];
//! - [`store`]: the repository traits and their SQLite and PostgreSQL backends;
//! - [`runtime`]: the wasmtime engine, compile cache, sandbox limits and host imports
//!   (`kv`, `dead-letters`, `log`, `wasi:config`, outbound `wasi:http`), and the
//!   older guest contracts linked beside the current one;
//! - [`outbound`]: where a script's outbound HTTP may go (allowed hosts, the SSRF rule);
//! - [`secrets`]: app variables and secrets, sealed with `PICLOUD_SECRET_KEY`;
//! - [`dispatch`]: the claim loop, fan-out, retries, dead letters and the recursion stop;
//! - [`runs`]: run records, what every invocation did, and how long they are kept;
//! - [`inbox`]: where synchronous replies find their callers;
//! - [`metrics`]: counters an operator can read, and their Prometheus text;
//! - [`tokens`]: API tokens, how an HTTP caller proves its principal;
//! - `http` (cargo feature `http`, on by default): the HTTP API, `/metrics`
//!   and the dashboard, over [`TriggerHost`];
//! - [`service`]: [`TriggerHost`], the entry point an embedding application uses.
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
#[doc(hidden)]
pub mod bench; // the binary's `bench` commands: not part of the library's API
pub mod config;
pub mod cron;
pub mod dispatch;
#[cfg(feature = "http")]
pub mod http;
pub mod inbox;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod pattern;
pub mod retry;
pub mod runs;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod store;
pub mod tokens;
pub mod trial;

pub use service::{HostOptions, InvokeCallError, Notifier, TriggerHost};
