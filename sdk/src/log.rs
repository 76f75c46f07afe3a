//! The invocation's log: lines kept in the invocation's run record,
//! bounded in total.
//!
//! Each line is stored with its level in the run of the invocation that
//! wrote it, together with the lines printed by `println!` (level `stdout`)
//! and `eprintln!` (level `stderr`). Read them with `picloud-host logs APP`
//! (`--follow` to watch), `runs show RUN-ID`, or `dead-letters show ID` for
//! every attempt of a dead letter; see the crate's guide, "Seeing what your
//! script did".
//!
//! The log shares its budget (64 KiB by default) with `println!` and
//! `eprintln!`. Past the budget the invocation fails with `log limit
//! exceeded` (what fitted is kept), so a runaway loop that logs cannot
//! flood the host.
//!
//! Each level is a function taking a message and a macro taking `format!`
//! arguments:
//!
//! ```no_run
//! use picloud_sdk::log;
//!
//! # let (key, total) = ("o-1", 900);
//! log::info("order totals updated");
//! log::info!("order {key} totals {total} cents");
//! ```

use crate::sys::log::{Level, log};

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

#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace {
    ($($arg:tt)*) => { $crate::log::trace(&::std::format!($($arg)*)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)*) => { $crate::log::debug(&::std::format!($($arg)*)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_info {
    ($($arg:tt)*) => { $crate::log::info(&::std::format!($($arg)*)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn {
    ($($arg:tt)*) => { $crate::log::warn(&::std::format!($($arg)*)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)*) => { $crate::log::error(&::std::format!($($arg)*)) };
}

/// Log at trace level, with `format!` arguments: `log::trace!("x = {x}")`.
#[doc(inline)]
pub use crate::__log_trace as trace;

/// Log at debug level, with `format!` arguments: `log::debug!("x = {x}")`.
#[doc(inline)]
pub use crate::__log_debug as debug;

/// Log at info level, with `format!` arguments: `log::info!("x = {x}")`.
#[doc(inline)]
pub use crate::__log_info as info;

/// Log at warn level, with `format!` arguments: `log::warn!("x = {x}")`.
#[doc(inline)]
pub use crate::__log_warn as warn;

/// Log at error level, with `format!` arguments: `log::error!("x = {x}")`.
#[doc(inline)]
pub use crate::__log_error as error;
