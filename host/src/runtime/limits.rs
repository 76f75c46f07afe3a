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
    /// More `kv` and `dead-letters` calls than one invocation may make.
    #[error("host call limit of {limit} per invocation exceeded (PICLOUD_SANDBOX_HOST_CALLS)")]
    HostCalls {
        /// The budget.
        limit: u32,
    },
    /// More events caused than one invocation may cause.
    #[error(
        "event limit of {limit} per invocation exceeded: each kv set or delete and each replay enqueues an event (PICLOUD_SANDBOX_ENQUEUED_EVENTS)"
    )]
    Enqueued {
        /// The budget.
        limit: u32,
    },
    /// More bytes of host-call answers than one invocation may read.
    #[error(
        "host answer limit of {limit} bytes per invocation exceeded (PICLOUD_SANDBOX_HOST_BYTES)"
    )]
    HostBytes {
        /// The budget.
        limit: u64,
    },
    /// More outbound HTTP requests than one invocation may make.
    #[error(
        "outbound request limit of {limit} per invocation exceeded (PICLOUD_OUTBOUND_MAX_REQUESTS)"
    )]
    OutboundRequests {
        /// The budget.
        limit: u32,
    },
    /// An outbound request ran past the per-request timeout.
    #[error(
        "outbound request timeout of {ms} ms exceeded by {request} (PICLOUD_OUTBOUND_TIMEOUT_MS)"
    )]
    OutboundTimeout {
        /// The timeout.
        ms: u64,
        /// The request: method and URL without its query.
        request: String,
    },
    /// An outbound response body larger than a script may read.
    #[error(
        "outbound response body limit of {limit} bytes exceeded by {request} (PICLOUD_OUTBOUND_MAX_RESPONSE_BYTES)"
    )]
    OutboundBody {
        /// The limit.
        limit: u64,
        /// The request: method and URL without its query.
        request: String,
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
///
/// The memory ceiling is for the whole instance: a component may define
/// more than one linear memory, and their sizes are added up, so two
/// memories cannot hold twice the ceiling between them.
pub struct Limiter {
    memory_bytes: u64,
    /// The bytes all of the instance's memories hold now. Every memory
    /// passes through [`wasmtime::ResourceLimiter::memory_growing`] when it
    /// is created (from 0) and on every growth.
    in_use: u64,
}

impl Limiter {
    /// A limiter for `memory_bytes` of linear memory in total.
    pub fn new(memory_bytes: u64) -> Self {
        Limiter {
            memory_bytes,
            in_use: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired as u64).saturating_sub(current as u64);
        let total = self.in_use.saturating_add(growth);
        if total > self.memory_bytes {
            return Err(LimitExceeded::Memory {
                mib: self.memory_bytes >> 20,
            }
            .into());
        }
        // Counted when allowed: a growth that then fails (the pool's slot is
        // smaller) leaves the count high, never low.
        self.in_use = total;
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

/// What one invocation may still spend on host calls: calls, events it
/// causes, and bytes of answers. Each call is charged before it runs (the
/// bytes once the answer is known, before it reaches the guest); the call
/// that goes past a budget traps the guest with the limit named, so a
/// script's storm of calls ends its own invocation and nothing else.
#[derive(Debug, Clone)]
pub struct Budget {
    calls: u32,
    max_calls: u32,
    enqueued: u32,
    max_enqueued: u32,
    bytes: u64,
    max_bytes: u64,
}

impl Budget {
    /// A full budget.
    pub fn new(max_calls: u32, max_enqueued: u32, max_bytes: u64) -> Self {
        Budget {
            calls: 0,
            max_calls,
            enqueued: 0,
            max_enqueued,
            bytes: 0,
            max_bytes,
        }
    }

    /// Charge one host call.
    pub fn call(&mut self) -> Result<(), LimitExceeded> {
        if self.calls >= self.max_calls {
            return Err(LimitExceeded::HostCalls {
                limit: self.max_calls,
            });
        }
        self.calls += 1;
        Ok(())
    }

    /// Charge one event the invocation causes.
    pub fn enqueue(&mut self) -> Result<(), LimitExceeded> {
        if self.enqueued >= self.max_enqueued {
            return Err(LimitExceeded::Enqueued {
                limit: self.max_enqueued,
            });
        }
        self.enqueued += 1;
        Ok(())
    }

    /// Bytes of answers the invocation may still read.
    pub fn bytes_left(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes)
    }

    /// Fail as [`Budget::read`] would if no byte is left: a call that
    /// could only answer within what is left must not answer with nothing.
    pub fn require_bytes(&self) -> Result<(), LimitExceeded> {
        if self.bytes_left() == 0 {
            return Err(LimitExceeded::HostBytes {
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Charge `n` bytes of an answer.
    pub fn read(&mut self, n: usize) -> Result<(), LimitExceeded> {
        let total = self.bytes.saturating_add(n as u64);
        if total > self.max_bytes {
            self.bytes = self.max_bytes;
            return Err(LimitExceeded::HostBytes {
                limit: self.max_bytes,
            });
        }
        self.bytes = total;
        Ok(())
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Its severity (or the stream it came from).
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

/// An invocation's log: the `log` import and stdout/stderr share one budget.
/// Output streams become lines at their line breaks, however the guest
/// splits its writes (`eprintln!` writes each piece of its format on its
/// own, unbuffered).
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<LogInner>>,
}

struct LogInner {
    lines: Vec<LogLine>,
    used: u64,
    limit: u64,
    /// The unfinished last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
}

/// The longest unfinished line kept waiting for its line break; a longer
/// one becomes a line as it is (so output without line breaks still meets
/// the budget).
const MAX_PARTIAL_LINE: usize = 4096;

impl LogInner {
    fn push(&mut self, level: LogLevel, message: &str) -> Result<(), LimitExceeded> {
        let cost = message.len() as u64 + 1;
        if self.used + cost > self.limit {
            // Keep what fits, so the log shows where the flood began.
            let room = (self.limit - self.used).saturating_sub(1) as usize;
            let cut = floor_char_boundary(message, room);
            if cut > 0 {
                self.lines.push(LogLine {
                    level,
                    message: message[..cut].to_owned(),
                });
            }
            self.used = self.limit;
            return Err(LimitExceeded::Log { bytes: self.limit });
        }
        self.used += cost;
        self.lines.push(LogLine {
            level,
            message: message.to_owned(),
        });
        Ok(())
    }

    /// Finish the unfinished line of stream `i` as a line of `level`.
    fn finish_line(&mut self, i: usize, level: LogLevel) -> Result<(), LimitExceeded> {
        let line = std::mem::take(&mut self.partial[i]);
        self.push(level, &String::from_utf8_lossy(&line))
    }

    /// Finish both streams' unfinished lines (the invocation ended).
    fn finish_streams(&mut self) {
        for (i, level) in [(0, LogLevel::Stdout), (1, LogLevel::Stderr)] {
            if !self.partial[i].is_empty() {
                // Over the budget it keeps what fits; the limit has tripped.
                let _ = self.finish_line(i, level);
            }
        }
    }
}

impl LogBuffer {
    /// An empty log with a budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        LogBuffer {
            inner: Arc::new(Mutex::new(LogInner {
                lines: Vec::new(),
                used: 0,
                limit,
                partial: [Vec::new(), Vec::new()],
            })),
        }
    }

    /// Append a line, or refuse it if the budget would be exceeded. A line
    /// costs its bytes plus one for its line break, so a flood of empty
    /// lines runs out of budget too.
    pub fn push(&self, level: LogLevel, message: &str) -> Result<(), LimitExceeded> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(level, message)
    }

    /// Append what the guest wrote to its stdout or stderr (`level`):
    /// each line break ends a line; the rest waits for the next write, or
    /// for the end of the invocation ([`LogBuffer::take`]).
    pub fn write_stream(&self, level: LogLevel, bytes: &[u8]) -> Result<(), LimitExceeded> {
        let i = usize::from(level == LogLevel::Stderr);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            inner.partial[i].extend_from_slice(&rest[..at]);
            rest = &rest[at + 1..];
            inner.finish_line(i, level)?;
        }
        inner.partial[i].extend_from_slice(rest);
        if inner.partial[i].len() >= MAX_PARTIAL_LINE {
            inner.finish_line(i, level)?;
        }
        Ok(())
    }

    /// Budget used so far: bytes, plus one per line.
    pub fn used(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).used
    }

    /// A copy of the lines written so far (unfinished stream lines too).
    pub fn snapshot(&self) -> Vec<LogLine> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.finish_streams();
        inner.lines.clone()
    }

    /// Take the lines written so far, finishing the streams' last lines.
    pub fn take(&self) -> Vec<LogLine> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.finish_streams();
        std::mem::take(&mut inner.lines)
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn stream_writes_become_lines_at_their_line_breaks() {
        let log = LogBuffer::new(64 * 1024);
        for piece in ["stderr of attempt", " ", "1", "\n"] {
            log.write_stream(LogLevel::Stderr, piece.as_bytes())
                .unwrap();
        }
        log.write_stream(LogLevel::Stdout, b"a\nb").unwrap();
        log.push(LogLevel::Info, "between").unwrap();
        let lines: Vec<(LogLevel, String)> = log
            .take()
            .into_iter()
            .map(|l| (l.level, l.message))
            .collect();
        assert_eq!(
            lines,
            [
                (LogLevel::Stderr, "stderr of attempt 1".into()),
                (LogLevel::Stdout, "a".into()),
                (LogLevel::Info, "between".into()),
                (LogLevel::Stdout, "b".into()),
            ]
        );
    }

    #[test]
    fn output_without_line_breaks_still_meets_the_budget() {
        let log = LogBuffer::new(10_000);
        let chunk = [b'x'; 1000];
        let tripped = (0..100).find_map(|_| log.write_stream(LogLevel::Stdout, &chunk).err());
        assert_eq!(tripped, Some(LimitExceeded::Log { bytes: 10_000 }));
        let kept: usize = log.take().iter().map(|l| l.message.len() + 1).sum();
        assert!(kept <= 10_000, "{kept}");
    }

    #[test]
    fn the_memory_ceiling_covers_all_memories_together() {
        let mib = 1 << 20;
        let mut l = Limiter::new(64 * mib as u64);
        // One memory created at 1 MiB and grown to 40 MiB.
        assert!(l.memory_growing(0, mib, None).unwrap());
        assert!(l.memory_growing(mib, 40 * mib, None).unwrap());
        // A second memory: created, then grown past what is left.
        assert!(l.memory_growing(0, mib, None).unwrap());
        let e = l.memory_growing(mib, 30 * mib, None).unwrap_err();
        assert_eq!(
            e.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::Memory { mib: 64 })
        );
        // What is left still fits.
        assert!(l.memory_growing(mib, 23 * mib, None).unwrap());
    }
}
