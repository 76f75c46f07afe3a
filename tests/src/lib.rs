//! Shared support for the integration tests: fresh databases on both
//! backends, the guest components built from this repository, and builders
//! for hosts, apps and invocations.
//!
//! Rule: every test gets its own database; nothing is shared between tests
//! but the running PostgreSQL server, and a missing server fails loudly.

pub mod cli;
pub mod cluster;
pub mod db;
pub mod guests;
pub mod host;
pub mod http;
pub mod procs;
pub mod web;
pub mod workload;
