//! The sandboxed WebAssembly runtime: runs one event through one script.
//!
//! Rule: one [`Engine`] and one [`Linker`] per host, built once; a fresh
//! `Store` and instance for every invocation, so no state leaks from one
//! event to the next; every invocation runs under the [`SandboxCeiling`]
//! (deadline, memory, log, reply size, host-call budgets) and inside a semaphore sized to the
//! instance pool, so excess work waits instead of failing. Whatever a guest
//! does, the result is an [`InvokeError`] for that invocation, never a crash
//! of the host.
//!
//! WASI is linked so ordinary Rust components instantiate, but the context
//! grants nothing beyond clocks and random: no preopened directories, no
//! sockets, no environment, no arguments, and stdout/stderr go to the
//! invocation's bounded log. The one way out is `wasi:http`'s outgoing
//! handler, to the app's allowed hosts only (`http`), and the one way in
//! beyond the host calls is `wasi:config`, the app's variables (`vars`).
//!
//! Every released guest contract is linked (`compat`): the current
//! `picloud:trigger@0.3.0` and the last release of each older minor.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store as WasmStore, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use crate::auth::Authorizer;
use crate::config::SandboxCeiling;
use crate::model::{AppId, EventId, Script, ScriptId, TriggerId};
use crate::secrets::SecretKey;
use crate::store::Store;

mod cache;
mod compat;
mod deploy;
pub mod engine;
mod host;
mod http;
pub mod limits;
mod messages;
mod stdio;
mod vars;

pub use cache::{CacheStats, LoadError};
pub use deploy::{DeployError, sha256_hex, validate_name};
pub use host::{CallContext, Services, StorageWatch};
pub use limits::{LimitExceeded, LogLevel, LogLine};

use cache::ScriptCache;
use host::State;
use http::{Hooks, Outbound, OutboundLimits};
use limits::{Budget, Limiter, LogBuffer};
use stdio::LogPipe;

/// One event to run through one script.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The outbox event id (stable across retries).
    pub event_id: EventId,
    /// The app the script belongs to.
    pub app_id: AppId,
    /// Event source.
    pub source: String,
    /// Event op.
    pub op: String,
    /// JSON payload text.
    pub payload: String,
    /// Trigger depth of the event.
    pub depth: i32,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// The trigger that matched, if any.
    pub trigger_id: Option<TriggerId>,
    /// The script to run.
    pub script_id: ScriptId,
    /// The principal to run as.
    pub principal: String,
    /// The names of the triggers that led to the events this run writes,
    /// newest first: this run's trigger, then those that led to its event
    /// (see [`crate::model::Cause`]). Empty for a run outside any trigger.
    pub chain: Vec<String>,
}

/// A finished invocation.
#[derive(Clone, Debug)]
pub struct Success {
    /// The reply body, if the handler returned one.
    pub reply: Option<Vec<u8>>,
    /// The queue messages and publications the script sent: the dispatcher
    /// writes them with the event's outcome.
    pub sent: Vec<crate::model::NewEvent>,
    /// In a batch of queue messages, those the script asked to retry, with
    /// the delay it asked for.
    pub retries: Vec<(String, Option<Duration>)>,
    /// What the script logged.
    pub logs: Vec<LogLine>,
    /// Wall time from instantiation to return.
    pub elapsed: Duration,
}

/// A failed invocation: the error and what was logged before it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    /// Why it failed.
    pub error: InvokeError,
    /// What the script logged.
    pub logs: Vec<LogLine>,
    /// Whether a host call was refused for lack of a capability during it.
    pub denied: bool,
    /// Wall time from instantiation to the failure (zero if it never started).
    pub elapsed: Duration,
}

/// Why an invocation failed. The text is what ends up in `last_error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The handler returned an error.
    #[error("{0}")]
    Handler(String),
    /// The handler returned an error it marked permanent: not retried.
    #[error("permanent error: {0}")]
    Permanent(String),
    /// The handler returned an error and asked to be retried after a delay.
    #[error("{message} (retry after {after_ms} ms)")]
    RetryAfter {
        /// Its error.
        message: String,
        /// The delay it asked for.
        after_ms: u64,
    },
    /// The deadline passed.
    #[error("timeout after {ms} ms")]
    Timeout {
        /// The deadline.
        ms: u128,
    },
    /// A sandbox limit tripped.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The guest recursed too deep.
    #[error("stack overflow")]
    StackOverflow,
    /// The reply was bigger than allowed.
    #[error("reply of {size} bytes exceeds the reply limit of {limit} bytes")]
    ReplyTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: u64,
    },
    /// The guest trapped.
    #[error("trap: {0}")]
    Trap(String),
    /// The script could not be loaded (removed, or no longer valid).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The host's own storage failed the invocation: a host call answered
    /// `unavailable` or was still waiting for storage at the deadline, or
    /// the script's code could not be fetched. Not the script's failure: it
    /// costs no attempt (SPEC 14).
    #[error("storage unavailable: {0}")]
    Infrastructure(String),
}

impl InvokeError {
    /// Whether another attempt could succeed. A script that cannot even be
    /// loaded will not load next time either.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            InvokeError::Load(LoadError::Link(_) | LoadError::Export(_))
                | InvokeError::Permanent(_)
        )
    }

    /// The delay the script asked for before its next attempt, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            InvokeError::RetryAfter { after_ms, .. } => Some(Duration::from_millis(*after_ms)),
            _ => None,
        }
    }

    /// Whether the host's infrastructure, not the script, caused the failure.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, InvokeError::Infrastructure(_))
    }

    /// The error of an invocation that ended with `self` while storage had
    /// let it down (`cause`): the script's own failures that storage can
    /// explain (its error, a trap such as an `unwrap` of the `unavailable`
    /// answer, the deadline passing while it waited) become
    /// [`InvokeError::Infrastructure`]; limits it reached by its own work stay.
    fn blame_storage(self, cause: Option<String>) -> InvokeError {
        match (self, cause) {
            (
                error @ (InvokeError::Handler(_)
                | InvokeError::RetryAfter { .. }
                | InvokeError::Timeout { .. }
                | InvokeError::Trap(_)),
                Some(cause),
            ) => InvokeError::Infrastructure(truncate(format!(
                "{cause} (the script then failed: {error})"
            ))),
            (error, _) => error,
        }
    }
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Failure {
        let error = match e {
            LoadError::Unavailable(why) => InvokeError::Infrastructure(why),
            other => InvokeError::Load(other),
        };
        Failure {
            error,
            logs: Vec::new(),
            denied: false,
            elapsed: Duration::ZERO,
        }
    }
}

/// The engine could not be built (the machine refused the pool's address
/// space, for example).
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly engine: {0}")]
pub struct SetupError(String);

/// Longest handler error kept, in bytes.
const MAX_ERROR_BYTES: usize = 4096;

/// The runtime: engine, linker, compile cache and the instance semaphore.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    cache: ScriptCache,
    services: Arc<Services>,
    ceiling: SandboxCeiling,
    outbound: OutboundLimits,
    permits: Arc<Semaphore>,
    /// Recent invocations' wall time, µs (an exponential moving average).
    recent_us: AtomicU64,
}

impl Runtime {
    /// Build the runtime. `cache_dir` keeps compiled scripts across restarts
    /// (`None`: memory only).
    pub fn new(
        ceiling: SandboxCeiling,
        store: Arc<dyn Store>,
        authorizer: Arc<dyn Authorizer>,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, SetupError> {
        let setup = |e: wasmtime::Error| SetupError(format!("{e:#}"));
        let engine = engine::build(&ceiling).map_err(setup)?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(setup)?;
        host::Trigger::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
            &mut linker,
            |s| s,
        )
        .map_err(setup)?;
        compat::add_to_linker(&mut linker).map_err(setup)?;
        Ok(Runtime {
            cache: ScriptCache::new(engine.clone(), cache_dir),
            permits: Arc::new(Semaphore::new(ceiling.max_instances as usize)),
            engine,
            linker,
            services: Arc::new(Services {
                store,
                authorizer,
                secret_key: None,
            }),
            outbound: OutboundLimits {
                max_requests: ceiling.outbound_max_requests,
                timeout: ceiling.outbound_timeout,
                max_body: ceiling.outbound_response_bytes,
                allow_nets: ceiling.outbound_allow_nets.clone().into(),
            },
            ceiling,
            recent_us: AtomicU64::new(0),
        })
    }

    /// Open the apps' secrets with `key` (`PICLOUD_SECRET_KEY`). Without a
    /// key, a script that reads a secret is told the host has none.
    pub fn with_secret_key(mut self, key: Option<SecretKey>) -> Self {
        self.services = Arc::new(Services {
            store: self.services.store.clone(),
            authorizer: self.services.authorizer.clone(),
            secret_key: key,
        });
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits every invocation runs under.
    pub fn ceiling(&self) -> &SandboxCeiling {
        &self.ceiling
    }

    /// Compile-cache counters.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.cache.stats
    }

    /// How long recent invocations ran, from instantiation to their end: a
    /// moving average over about the last eight. The dispatcher claims ahead
    /// only while it is short.
    pub fn recent_run_time(&self) -> Duration {
        Duration::from_micros(self.recent_us.load(Ordering::Relaxed))
    }

    fn record_run_time(&self, took: Duration) {
        let took = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.recent_us.load(Ordering::Relaxed);
        // Racy by design: a lost update only nudges an estimate.
        self.recent_us
            .store(old - old / 8 + took / 8, Ordering::Relaxed);
    }

    /// Instances that could start right now without waiting.
    pub fn available_instances(&self) -> usize {
        self.permits.available_permits()
    }

    pub(crate) fn linker(&self) -> &Linker<State> {
        &self.linker
    }

    pub(crate) fn cache(&self) -> &ScriptCache {
        &self.cache
    }

    pub(crate) fn services(&self) -> &Services {
        &self.services
    }

    /// Make `script` ready to run (compile or load it once), without running it.
    pub async fn prepare(&self, script: &Script) -> Result<(), LoadError> {
        self.load(script).await.map(|_| ())
    }

    async fn load(&self, script: &Script) -> Result<compat::Ready, LoadError> {
        let store = self.services.store.clone();
        let id = script.id;
        self.cache
            .get_or_load(&self.linker, &script.sha256, || async move {
                match store.script_code(id).await {
                    Ok((_, code)) => Ok(code),
                    Err(e) if e.is_transient() => Err(LoadError::Unavailable(e.to_string())),
                    Err(e) => Err(LoadError::Code(e.to_string())),
                }
            })
            .await
    }

    /// Run one invocation of `script` and wait for its result.
    pub async fn invoke(&self, script: &Script, input: Invocation) -> Result<Success, Failure> {
        let pre = self.load(script).await?;
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the instance semaphore is never closed");
        let log = LogBuffer::new(self.ceiling.log_bytes);
        let watch = Arc::new(StorageWatch::default());
        let started = Instant::now();
        let result = self
            .run(
                &pre,
                &input,
                script.deployed_by.clone(),
                log.clone(),
                watch.clone(),
            )
            .await;
        let elapsed = started.elapsed();
        self.record_run_time(elapsed);
        let logs = log.take();
        match result {
            Ok((reply, sent)) => Ok(Success {
                reply,
                sent: sent.events,
                retries: sent.retries,
                logs,
                elapsed,
            }),
            Err(error) => Err(Failure {
                error,
                logs,
                denied: watch.denied(),
                elapsed,
            }),
        }
    }

    async fn run(
        &self,
        pre: &compat::Ready,
        input: &Invocation,
        deployer: Option<String>,
        log: LogBuffer,
        watch: Arc<StorageWatch>,
    ) -> Result<(Option<Vec<u8>>, messages::Sent), InvokeError> {
        let wasi = WasiCtxBuilder::new()
            .stdout(LogPipe::new(log.clone(), LogLevel::Stdout))
            .stderr(LogPipe::new(log.clone(), LogLevel::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        // The guest's deadline starts before instantiation, as it always has.
        let deadline = Instant::now() + self.ceiling.timeout;
        let call = CallContext {
            app_id: input.app_id,
            principal: input.principal.clone(),
            deployer,
            cause: crate::model::Cause {
                depth: input.depth + 1,
                chain: input.chain.clone(),
            },
            deadline: deadline.into(),
        };
        let outbound = Outbound::new(
            host::Call::new(self.services.clone(), call.clone(), watch.clone()),
            log.clone(),
            self.outbound.clone(),
        );
        let state = State {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(self.ceiling.memory_bytes),
            log: log.clone(),
            call,
            services: self.services.clone(),
            watch: watch.clone(),
            budget: Budget::new(
                self.ceiling.max_host_calls,
                self.ceiling.max_enqueued,
                self.ceiling.host_bytes,
            ),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: Hooks(outbound.clone()),
            sent: messages::Sent::for_event(&input.source, &input.op, &input.payload),
        };
        let mut store = WasmStore::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Guest code yields to the executor on every epoch tick, so a guest
        // that spins cannot hold a worker thread for its whole deadline and
        // starve the invocations beside it (whose deadlines keep running);
        // once its own deadline has passed, the next tick traps it, as it
        // does once an outbound request tripped a limit.
        store.set_epoch_deadline(1);
        let tripped = outbound.clone();
        store.epoch_deadline_callback(move |_| {
            if let Some(limit) = tripped.tripped() {
                return Err(limit.into());
            }
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });

        let event = host::picloud::trigger::types::Event {
            id: input.event_id.to_string(),
            app_id: input.app_id.to_string(),
            source: input.source.clone(),
            op: input.op.clone(),
            payload: input.payload.clone(),
            depth: input.depth.max(0) as u32,
            attempt: input.attempt,
            trigger_id: input.trigger_id.map(|t| t.to_string()),
            script_id: input.script_id.to_string(),
            principal: input.principal.clone(),
        };
        let call = pre.handle(&mut store, &event);
        // The epoch deadline stops guest code; this outer bound also covers
        // time spent inside host calls (a stalled database).
        let timeout = self.ceiling.timeout;
        let outcome = tokio::time::timeout(timeout + engine::EPOCH_TICK * 4, call).await;
        let result = match outcome {
            Ok(outcome) => self.result(outcome, &log),
            Err(_) => Err(InvokeError::Timeout {
                ms: timeout.as_millis(),
            }),
        };
        // An outbound limit fails the invocation however the script answered.
        if let Some(limit) = outbound.tripped() {
            return Err(InvokeError::Limit(limit));
        }
        let reply = result.map_err(|e| e.blame_storage(watch.cause()))?;
        Ok((reply, std::mem::take(&mut store.data_mut().sent)))
    }

    /// The guest's answer, or what its trap means.
    fn result(
        &self,
        outcome: wasmtime::Result<Result<Option<Vec<u8>>, host::HandlerError>>,
        log: &LogBuffer,
    ) -> Result<Option<Vec<u8>>, InvokeError> {
        match outcome {
            Ok(Ok(reply)) => {
                if let Some(body) = &reply
                    && body.len() as u64 > self.ceiling.reply_max_bytes
                {
                    return Err(InvokeError::ReplyTooLarge {
                        size: body.len(),
                        limit: self.ceiling.reply_max_bytes,
                    });
                }
                Ok(reply)
            }
            Ok(Err(e)) => Err(handler_error(e)),
            Err(trap) => Err(self.classify(trap, log)),
        }
    }

    fn classify(&self, error: wasmtime::Error, log: &LogBuffer) -> InvokeError {
        if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
            return InvokeError::Limit(limit.clone());
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => InvokeError::Timeout {
                ms: self.ceiling.timeout.as_millis(),
            },
            Some(Trap::StackOverflow) => InvokeError::StackOverflow,
            Some(trap) => {
                // A Rust guest's panic message went to stderr just before the
                // trap; name it so the error says what happened.
                // Its report is a line `thread '..' panicked at FILE:L:C:`
                // and the message on the lines after it.
                let logs = log.snapshot();
                let stderr: Vec<&str> = logs
                    .iter()
                    .filter(|l| l.level == LogLevel::Stderr)
                    .map(|l| l.message.as_str())
                    .collect();
                let panic = stderr
                    .iter()
                    .rposition(|l| l.contains(" panicked at "))
                    .map(|at| {
                        let message = stderr.get(at + 1).copied().unwrap_or_default();
                        format!(" ({} {})", one_line(stderr[at]), one_line(message))
                    });
                InvokeError::Trap(truncate(format!("{trap}{}", panic.unwrap_or_default())))
            }
            None => InvokeError::Trap(truncate(format!("{error:#}"))),
        }
    }
}

/// What a handler's error means for its event.
fn handler_error(e: host::HandlerError) -> InvokeError {
    let message = truncate(e.message);
    match (e.permanent, e.retry_after_ms) {
        (true, _) => InvokeError::Permanent(message),
        (false, Some(ms)) => InvokeError::RetryAfter {
            message,
            after_ms: ms.min(crate::messages::MAX_DELAY_MS),
        },
        (false, None) => InvokeError::Handler(message),
    }
}

/// `text` on one line: a guest's panic message spans two (`panicked at
/// file:line:col:` then the message), but `last_error` is one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
