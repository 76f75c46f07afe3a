//! Per-invocation limits and the errors that name them.
//!
//! Rule: a guest can exhaust only its own invocation. Memory growth past the
//! ceiling, log output past the log limit and the deadline each trap the
//! guest with a typed [`LimitExceeded`], which the runtime turns into an
//! error that names the limit (`memory limit 64 MiB exceeded`).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A limit a guest ran into. Carried inside the trap so the runtime can name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// Linear memory would grow past the ceiling.
    #[error("memory limit {mib} MiB exceeded")]
    Memory {
        /// The ceiling in MiB.
        mib: u64,
    },
    /// Log and stdout/stderr output past the per-invocation budget.
    #[error("log limit exceeded ({bytes} bytes)")]
    Log {
        /// The budget in bytes.
        bytes: u64,
    },
    /// Table growth past a sane bound.
    #[error("table limit {elements} elements exceeded")]
    Table {
        /// The bound.
        elements: usize,
    },
}

/// Largest table a guest may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The store's [`wasmtime::ResourceLimiter`]: refuses growth past the ceiling
/// with a trap that names it.
pub struct Limiter {
    memory_bytes: u64,
}

impl Limiter {
    /// A limiter for `memory_bytes` of linear memory.
    pub fn new(memory_bytes: u64) -> Self {
        Limiter { memory_bytes }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            return Err(LimitExceeded::Memory {
                mib: self.memory_bytes >> 20,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(LimitExceeded::Table {
                elements: MAX_TABLE_ELEMENTS,
            }
            .into());
        }
        Ok(true)
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd.
    Warn,
    /// Something failed.
    Error,
    /// Written to the guest's stdout.
    Stdout,
    /// Written to the guest's stderr.
    Stderr,
}

/// One line of an invocation's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its severity (or the stream it came from).
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

/// An invocation's log: the `log` import and stdout/stderr share one budget.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<LogInner>>,
}

struct LogInner {
    lines: Vec<LogLine>,
    used: u64,
    limit: u64,
}

impl LogBuffer {
    /// An empty log with a budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        LogBuffer {
            inner: Arc::new(Mutex::new(LogInner {
                lines: Vec::new(),
                used: 0,
                limit,
            })),
        }
    }

    /// Append a line, or refuse it if the budget would be exceeded. A line
    /// costs its bytes plus one for its line break, so a flood of empty
    /// lines runs out of budget too.
    pub fn push(&self, level: LogLevel, message: &str) -> Result<(), LimitExceeded> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let cost = message.len() as u64 + 1;
        if inner.used + cost > inner.limit {
            // Keep what fits, so the log shows where the flood began.
            let room = (inner.limit - inner.used).saturating_sub(1) as usize;
            let cut = floor_char_boundary(message, room);
            if cut > 0 {
                inner.lines.push(LogLine {
                    level,
                    message: message[..cut].to_owned(),
                });
            }
            inner.used = inner.limit;
            return Err(LimitExceeded::Log { bytes: inner.limit });
        }
        inner.used += cost;
        inner.lines.push(LogLine {
            level,
            message: message.to_owned(),
        });
        Ok(())
    }

    /// Budget used so far: bytes, plus one per line.
    pub fn used(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).used
    }

    /// A copy of the lines written so far.
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
            .clone()
    }

    /// Take the lines written so far.
    pub fn take(&self) -> Vec<LogLine> {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).lines)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
