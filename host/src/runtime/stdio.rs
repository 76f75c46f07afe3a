//! The guest's stdout and stderr: captured into the invocation's log.
//!
//! Rule: stdout and stderr share the log budget with the `log` import; the
//! write that would exceed it traps the guest with `log limit exceeded`.
//! Each line the guest prints is one log line, however its writes split it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::limits::{LogBuffer, LogLevel};

/// One of the guest's output streams, writing into the invocation's log.
#[derive(Clone)]
pub struct LogPipe {
    log: LogBuffer,
    level: LogLevel,
}

impl LogPipe {
    /// A pipe writing lines of `level` into `log`.
    pub fn new(log: LogBuffer, level: LogLevel) -> Self {
        LogPipe { log, level }
    }

    fn write_bytes(&self, bytes: &[u8]) -> Result<(), super::limits::LimitExceeded> {
        self.log.write_stream(self.level, bytes)
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::from(e)))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable; the budget is enforced on write so the overflow
        // traps with a named error instead of a silently closed stream.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.write_bytes(buf) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
