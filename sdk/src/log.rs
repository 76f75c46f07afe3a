//! The invocation's log: lines kept with the invocation, bounded in total.
//!
//! The log shares its budget (64 KiB by default) with `println!` and
//! `eprintln!`. Past the budget the invocation fails with `log limit
//! exceeded`, so a runaway loop that logs cannot flood the host.

use crate::__private::bindings::picloud::trigger::log::{Level, log};

/// Finest detail.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Debugging detail.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Normal operation.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Something unexpected but handled.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Something failed.
pub fn error(message: &str) {
    log(Level::Error, message);
}
