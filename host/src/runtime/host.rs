//! The host side of the trigger world: the store data of one invocation and
//! the imports a script can call.
//!
//! Rule: every host call is checked against the run-as principal through the
//! [`Authorizer`] at the moment of the call, and only ever touches the
//! invocation's own app. Two levels of failure stay apart: the inner WIT
//! `result` is an error the guest can handle (`permission denied`, `not
//! found`, storage unavailable); the outer `wasmtime::Result` traps the guest
//! and is reserved for limits (the log budget) and host bugs.
//!
//! A call's arguments are checked before its capability, so a malformed
//! call is refused without a round trip to storage.
//!
//! A script acts with no more rights than the principal it runs as *and*
//! the principal who deployed its code (when a principal deployed it): a
//! developer who redeploys the script behind an admin's trigger gets no
//! admin rights through it.
//!
//! Every `kv` and `dead-letters` call is charged to the invocation's
//! [`Budget`]: calls, events caused, bytes of answers. Answers are bounded
//! before they are read (a listing is paged by bytes in the database), and
//! the call that goes past a budget traps the guest with the limit named.
//!
//! Every call that needs storage goes through [`Call::storage`]: it waits no
//! longer than the invocation's deadline, and it tells the invocation's
//! [`StorageWatch`] when storage let the script down (an `unavailable`
//! answer, or a call still waiting when the deadline passed), so the
//! dispatcher can tell the host's failures from the script's own.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use serde_json::Value;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{Budget, Limiter, LogBuffer, LogLevel};
use crate::auth::{Authorizer, Capability};
use crate::model::{AppId, Cause, DeadLetter, DeadLetterFilter, DeadLetterId, Resolution};
use crate::secrets::SecretKey;
use crate::store::{self, KvWrite, Store};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "trigger",
    imports: { default: async | trappable },
    exports: { default: async },
});

use picloud::trigger::dead_letters as wit_dl;
use picloud::trigger::kv as wit_kv;
use picloud::trigger::log as wit_log;
pub(super) use picloud::trigger::types::HostError;

/// What host calls need from the outside world.
pub struct Services {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Who may do what.
    pub authorizer: Arc<dyn Authorizer>,
    /// The key that opens the app's secrets (`PICLOUD_SECRET_KEY`), if the
    /// host has one.
    pub secret_key: Option<SecretKey>,
}

/// Who a script runs as, and for which event.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The app whose data the script may touch.
    pub app_id: AppId,
    /// The principal every host call is checked against.
    pub principal: String,
    /// Who deployed the script's code, when a principal did: every host
    /// call is checked against it too.
    pub deployer: Option<String>,
    /// What the events this invocation writes are caused by: one level
    /// deeper than the running event, and the chain of triggers.
    pub cause: Cause,
    /// When the invocation's time is up: no host call waits for storage
    /// past it.
    pub deadline: Instant,
}

/// Whether the host's own storage let one invocation down. Shared by the
/// invocation's host calls and read by the runtime when the invocation ends.
#[derive(Debug, Default)]
pub struct StorageWatch {
    /// Host calls waiting for storage right now. A call dropped mid-wait (the
    /// invocation was cut off at its deadline) never comes back to lower it.
    waiting: AtomicUsize,
    /// The first storage failure a host call reported to the script.
    failed: Mutex<Option<String>>,
    /// Whether a host call was refused for lack of a capability.
    denied: std::sync::atomic::AtomicBool,
}

impl StorageWatch {
    fn fail(&self, why: impl Into<String>) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_none() {
            *failed = Some(why.into());
        }
    }

    /// Whether a host call was refused for lack of a capability (the run of
    /// an invocation that then fails is recorded `denied`).
    pub fn denied(&self) -> bool {
        self.denied.load(Ordering::Relaxed)
    }

    /// Why storage let the invocation down, if it did: a host call answered
    /// `unavailable`, or one was still waiting for storage at the end.
    pub fn cause(&self) -> Option<String> {
        if let Some(why) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(why);
        }
        (self.waiting.load(Ordering::Relaxed) > 0)
            .then(|| "a host call was still waiting for storage at the deadline".to_owned())
    }
}

/// The data of one invocation's `Store`: created fresh for every event.
pub struct State {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) log: LogBuffer,
    pub(super) call: CallContext,
    pub(super) services: Arc<Services>,
    pub(super) watch: Arc<StorageWatch>,
    pub(super) budget: Budget,
    pub(super) http: WasiHttpCtx,
    pub(super) hooks: super::http::Hooks,
    /// Queue messages and publications, sent if the invocation succeeds.
    pub(super) sent: super::messages::Sent,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Largest page a guest may ask for in one list call.
const MAX_LIST: u32 = 1000;

/// Most bytes of dead letters one `list-unresolved` call reads (the
/// invocation's byte budget may allow fewer). The page holds the dead
/// letters that begin within it, so at least one when there is one.
const MAX_ANSWER_BYTES: u64 = 4 << 20;

/// What a host call needs, detached from the store so the call's future
/// holds only `Send + Sync` data across its awaits.
#[derive(Clone)]
pub(super) struct Call {
    services: Arc<Services>,
    call: CallContext,
    watch: Arc<StorageWatch>,
}

impl State {
    pub(super) fn call(&self) -> Call {
        Call::new(self.services.clone(), self.call.clone(), self.watch.clone())
    }
}

/// What a guest is told when storage does not answer in time.
const STORAGE_LATE: &str = "storage did not answer before the invocation's deadline, try again";

impl Call {
    pub(super) fn new(
        services: Arc<Services>,
        call: CallContext,
        watch: Arc<StorageWatch>,
    ) -> Call {
        Call {
            services,
            call,
            watch,
        }
    }

    /// The invocation's app.
    pub(super) fn app_id(&self) -> AppId {
        self.call.app_id
    }

    /// When the invocation's time is up.
    pub(super) fn deadline(&self) -> Instant {
        self.call.deadline
    }

    /// The key that opens secrets, if the host has one.
    pub(super) fn secret_key(&self) -> Option<&SecretKey> {
        self.services.secret_key.as_ref()
    }

    /// Wait for a storage operation, at most until the invocation's
    /// deadline, and translate its error for the guest. A storage failure
    /// (not a refusal of the arguments) is reported to the [`StorageWatch`].
    pub(super) async fn storage<T>(
        &self,
        op: impl Future<Output = store::Result<T>>,
    ) -> Result<T, HostError> {
        self.watch.waiting.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout_at(self.call.deadline, op).await;
        self.watch.waiting.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.guest_error(e)),
            Err(_) => {
                self.watch.fail(STORAGE_LATE);
                Err(HostError::Unavailable(STORAGE_LATE.into()))
            }
        }
    }

    /// Translate a store error into what a guest may see: no raw database
    /// text. Storage trouble is noted on the watch.
    fn guest_error(&self, e: store::Error) -> HostError {
        let error = guest_error(e);
        if let HostError::Unavailable(why) = &error {
            self.watch.fail(why.clone());
        }
        error
    }

    /// `Ok(())` when the principal the script runs as holds `cap` now, and
    /// so does whoever deployed its code; else the guest-visible error.
    pub(super) async fn check(&self, cap: Capability) -> Result<(), HostError> {
        let checked = self.check_both(cap).await;
        if matches!(checked, Err(HostError::PermissionDenied)) {
            self.watch.denied.store(true, Ordering::Relaxed);
        }
        checked
    }

    async fn check_both(&self, cap: Capability) -> Result<(), HostError> {
        self.check_one(&self.call.principal, cap).await?;
        match &self.call.deployer {
            Some(deployer) if *deployer != self.call.principal => {
                self.check_one(deployer, cap).await.inspect_err(|e| {
                    if matches!(e, HostError::PermissionDenied) {
                        tracing::debug!(%deployer, ?cap, "denied: the script's deployer lacks the capability");
                    }
                })
            }
            _ => Ok(()),
        }
    }

    async fn check_one(&self, principal: &str, cap: Capability) -> Result<(), HostError> {
        let authorizer = self.services.authorizer.clone();
        let principal = principal.to_owned();
        let allowed = self
            .storage(async move {
                authorizer.allowed(&principal, cap).await.map_err(|e| {
                    tracing::debug!(error = %e, "authorizer failed during a host call");
                    store::Error::Unreachable {
                        url: "the authorizer".into(),
                        reason: e.to_string(),
                    }
                })
            })
            .await;
        match allowed {
            Ok(true) => Ok(()),
            Ok(false) => Err(HostError::PermissionDenied),
            Err(HostError::Unavailable(_)) => Err(HostError::Unavailable(
                "authorization check failed, try again".into(),
            )),
            Err(other) => Err(other),
        }
    }

    pub(super) fn store(&self) -> &dyn Store {
        &*self.services.store
    }

    /// A dead letter of this app, or `None` (another app's is invisible).
    async fn own_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, HostError> {
        let Ok(id) = id.parse::<DeadLetterId>() else {
            return Err(HostError::InvalidArgument(format!(
                "'{id}' is not a dead letter id"
            )));
        };
        let found = self
            .storage(async {
                match self.store().get_dead_letter(id).await {
                    Err(e) if e.is_not_found() => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        Ok(found.filter(|dl| dl.app_id == self.call.app_id))
    }
}

impl Call {
    /// Run a store write on its own task, so it always runs to completion,
    /// and wait for it as [`Call::storage`] does.
    ///
    /// A guest's invocation can be dropped mid-call (its deadline passed). A
    /// write future dropped while it waits for its transaction to begin would
    /// leave that transaction open on a pooled connection, holding SQLite's
    /// write lock for good; on its own task the write commits or fails,
    /// whatever happens to the guest. (A write that commits after the guest
    /// was told `unavailable` is one more at-least-once repetition.)
    async fn write<T, F, Fut>(&self, write: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = store::Result<T>> + Send + 'static,
    {
        let task = tokio::spawn(write(self.services.store.clone()));
        self.storage(async {
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "a store write task failed");
                Err(store::Error::Unreachable {
                    url: "the store".into(),
                    reason: "the write task failed".into(),
                })
            })
        })
        .await
    }
}

/// Translate a store error into what a guest may see: no raw database text.
/// Only trouble that trying again may cure is `unavailable`; a database
/// refusing the arguments themselves is `invalid-argument`.
fn guest_error(e: store::Error) -> HostError {
    match e {
        store::Error::NotFound { what, id } => HostError::NotFound(format!("{what} '{id}'")),
        store::Error::Invalid(m) => HostError::InvalidArgument(m),
        store::Error::Pattern(p) => HostError::InvalidArgument(p.to_string()),
        e @ store::Error::AlreadyResolved { .. } => HostError::Conflict(e.to_string()),
        store::Error::Conflict(m) => HostError::Conflict(m),
        e @ store::Error::VersionConflict { .. } => HostError::Conflict(e.to_string()),
        e if e.is_input_refused() => {
            tracing::debug!(error = %e, "the database refused a host call's arguments");
            HostError::InvalidArgument("the database refused the value (bad text or number)".into())
        }
        other => {
            // Said once by the dispatcher's circuit breaker, not per call.
            tracing::debug!(error = %other, "store failed during a host call");
            HostError::Unavailable("storage is unavailable, try again".into())
        }
    }
}

impl State {
    /// A KV write host call: charged one call and one caused event, its
    /// arguments checked by `prepare`, then the principal's `KvWrite`, then
    /// `write` run to completion on its own task ([`Call::write`]) at the
    /// next depth.
    async fn kv_write<P, T, Fut>(
        &mut self,
        prepare: impl FnOnce() -> Result<P, HostError>,
        write: impl FnOnce(Arc<dyn Store>, AppId, Cause, P) -> Fut,
    ) -> wasmtime::Result<Result<T, HostError>>
    where
        T: Send + 'static,
        Fut: Future<Output = store::Result<T>> + Send + 'static,
    {
        self.budget.call()?;
        self.budget.enqueue()?;
        let this = self.call();
        Ok(async move {
            let prepared = prepare()?;
            this.check(Capability::KvWrite(this.call.app_id)).await?;
            let (app, cause) = (this.call.app_id, this.call.cause.clone());
            this.write(move |store| write(store, app, cause, prepared))
                .await
        }
        .await)
    }
}

/// A KV call's collection and key, checked before any storage round trip.
fn kv_names(collection: String, key: String) -> Result<(String, String), HostError> {
    store::validate_kv_names(&collection, &key).map_err(guest_error)?;
    Ok((collection, key))
}

/// A KV write's names and JSON value text, checked before any storage
/// round trip.
fn kv_value(collection: &str, key: &str, value: &str) -> Result<Value, HostError> {
    store::validate_kv_names(collection, key).map_err(guest_error)?;
    store::validate_kv_value_len(value.len()).map_err(guest_error)?;
    let value: Value = serde_json::from_str(value)
        .map_err(|e| HostError::InvalidArgument(format!("value is not valid JSON: {e}")))?;
    store::validate_json_depth("value", &value).map_err(guest_error)?;
    Ok(value)
}

impl picloud::trigger::types::Host for State {}

impl wit_kv::Host for State {
    async fn get(
        &mut self,
        collection: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<wit_kv::Entry>, HostError>> {
        self.budget.call()?;
        let this = self.call();
        let answer = async move {
            store::validate_kv_names(&collection, &key).map_err(guest_error)?;
            this.check(Capability::KvRead(this.call.app_id)).await?;
            let entry = this
                .storage(this.store().kv_get(this.call.app_id, &collection, &key))
                .await?;
            Ok(entry.map(|e| wit_kv::Entry {
                key: e.key,
                value: e.value.to_string(),
                version: e.version as u64,
            }))
        }
        .await;
        if let Ok(Some(entry)) = &answer {
            self.budget.read(entry.key.len() + entry.value.len())?;
        }
        Ok(answer)
    }

    async fn set(
        &mut self,
        collection: String,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<u64, HostError>> {
        self.kv_write(
            || Ok((kv_value(&collection, &key, &value)?, collection, key)),
            |store, app, cause, (value, collection, key)| async move {
                let set = KvWrite::Set(&value);
                let entry = store.kv_write(app, &collection, &key, set, &cause).await?;
                Ok(entry.entry().version as u64)
            },
        )
        .await
    }

    async fn delete(
        &mut self,
        collection: String,
        key: String,
    ) -> wasmtime::Result<Result<bool, HostError>> {
        self.kv_write(
            || kv_names(collection, key),
            |store, app, cause, (collection, key)| async move {
                let delete = KvWrite::Delete;
                let done = store
                    .kv_write(app, &collection, &key, delete, &cause)
                    .await?;
                Ok(done.deleted())
            },
        )
        .await
    }

    async fn set_if_version(
        &mut self,
        collection: String,
        key: String,
        value: String,
        expected: u64,
    ) -> wasmtime::Result<Result<u64, HostError>> {
        self.kv_write(
            || Ok((kv_value(&collection, &key, &value)?, collection, key)),
            move |store, app, cause, (value, collection, key)| async move {
                let set = KvWrite::SetIfVersion(&value, expected);
                let entry = store.kv_write(app, &collection, &key, set, &cause).await?;
                Ok(entry.entry().version as u64)
            },
        )
        .await
    }

    async fn delete_if_version(
        &mut self,
        collection: String,
        key: String,
        expected: u64,
    ) -> wasmtime::Result<Result<(), HostError>> {
        self.kv_write(
            || kv_names(collection, key),
            move |store, app, cause, (collection, key)| async move {
                let delete = KvWrite::DeleteIfVersion(expected);
                store
                    .kv_write(app, &collection, &key, delete, &cause)
                    .await
                    .map(drop)
            },
        )
        .await
    }

    async fn increment(
        &mut self,
        collection: String,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, HostError>> {
        self.kv_write(
            || kv_names(collection, key),
            move |store, app, cause, (collection, key)| async move {
                let add = KvWrite::Increment(delta);
                let entry = store
                    .kv_write(app, &collection, &key, add, &cause)
                    .await?
                    .entry();
                // What the store wrote is an integer.
                Ok(entry.value.as_i64().unwrap_or_default())
            },
        )
        .await
    }

    async fn list_keys(
        &mut self,
        collection: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, HostError>> {
        self.budget.call()?;
        let this = self.call();
        let answer = async move {
            // The collection, and the key to page after if there is one.
            let after_key = after.as_deref().unwrap_or("-");
            store::validate_kv_names(&collection, after_key).map_err(guest_error)?;
            this.check(Capability::KvRead(this.call.app_id)).await?;
            this.storage(this.store().kv_list_keys(
                this.call.app_id,
                &collection,
                after.as_deref(),
                limit.min(MAX_LIST),
            ))
            .await
        }
        .await;
        if let Ok(keys) = &answer {
            self.budget.read(keys.iter().map(|k| k.len()).sum())?;
        }
        Ok(answer)
    }
}

fn to_wit_resolution(r: Resolution) -> wit_dl::Resolution {
    match r {
        Resolution::Replayed => wit_dl::Resolution::Replayed,
        Resolution::Ignored => wit_dl::Resolution::Ignored,
        Resolution::HandledByScript => wit_dl::Resolution::HandledByScript,
        Resolution::HandlerFailed => wit_dl::Resolution::HandlerFailed,
    }
}

fn from_wit_resolution(r: wit_dl::Resolution) -> Resolution {
    match r {
        wit_dl::Resolution::Replayed => Resolution::Replayed,
        wit_dl::Resolution::Ignored => Resolution::Ignored,
        wit_dl::Resolution::HandledByScript => Resolution::HandledByScript,
        wit_dl::Resolution::HandlerFailed => Resolution::HandlerFailed,
    }
}

/// What a dead letter's fixed-size fields (four ids, four times, counts)
/// cost an answer, about their size as the guest receives them.
const DEAD_LETTER_FIXED_BYTES: usize = 160;

/// What a dead letter's answer costs the invocation: its text fields and
/// [`DEAD_LETTER_FIXED_BYTES`].
fn dead_letter_bytes(d: &wit_dl::DeadLetter) -> usize {
    d.payload.len() + d.last_error.len() + d.source.len() + d.op.len() + DEAD_LETTER_FIXED_BYTES
}

fn to_wit_dead_letter(d: DeadLetter) -> wit_dl::DeadLetter {
    wit_dl::DeadLetter {
        id: d.id.to_string(),
        original_event_id: d.original_event_id.to_string(),
        source: d.source,
        op: d.op,
        trigger_id: d.trigger_id.map(|t| t.to_string()),
        script_id: d.script_id.map(|s| s.to_string()),
        payload: d.payload.to_string(),
        attempt_count: d.attempt_count.max(0) as u32,
        first_attempt_at: d.first_attempt_at.millis(),
        last_attempt_at: d.last_attempt_at.millis(),
        last_error: d.last_error,
        created_at: d.created_at.millis(),
        resolved_at: d.resolved_at.map(|t| t.millis()),
        resolution: d.resolution.map(to_wit_resolution),
    }
}

impl wit_dl::Host for State {
    async fn get(
        &mut self,
        id: String,
    ) -> wasmtime::Result<Result<Option<wit_dl::DeadLetter>, HostError>> {
        self.budget.call()?;
        let this = self.call();
        let answer = async move {
            this.check(Capability::KvRead(this.call.app_id)).await?;
            Ok(this.own_dead_letter(&id).await?.map(to_wit_dead_letter))
        }
        .await;
        if let Ok(Some(dl)) = &answer {
            self.budget.read(dead_letter_bytes(dl))?;
        }
        Ok(answer)
    }

    async fn list_unresolved(
        &mut self,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<wit_dl::DeadLetter>, HostError>> {
        self.budget.call()?;
        // Paged by bytes in the database: the page is what this call may
        // still read, so the host never holds more than that (and one dead
        // letter) for it.
        self.budget.require_bytes()?;
        let page = self.budget.bytes_left().min(MAX_ANSWER_BYTES);
        let this = self.call();
        let answer = async move {
            this.check(Capability::KvRead(this.call.app_id)).await?;
            let filter = DeadLetterFilter {
                app_id: Some(this.call.app_id),
                unresolved_only: true,
                limit: Some(limit.min(MAX_LIST)),
                ..DeadLetterFilter::default()
            };
            let list = this
                .storage(this.store().list_dead_letters_within(&filter, page))
                .await?;
            Ok(list.into_iter().map(to_wit_dead_letter).collect::<Vec<_>>())
        }
        .await;
        if let Ok(list) = &answer {
            self.budget.read(list.iter().map(dead_letter_bytes).sum())?;
        }
        Ok(answer)
    }

    async fn resolve(
        &mut self,
        id: String,
        resolution: wit_dl::Resolution,
    ) -> wasmtime::Result<Result<(), HostError>> {
        self.budget.call()?;
        let resolution = from_wit_resolution(resolution);
        if resolution == Resolution::Replayed {
            self.budget.enqueue()?;
        }
        let this = self.call();
        Ok(async move {
            this.check(Capability::AppDeadLetterManage(this.call.app_id))
                .await?;
            let Some(dl) = this.own_dead_letter(&id).await? else {
                return Err(HostError::NotFound(format!("dead letter '{id}'")));
            };
            // A replay is an event this script causes: one level deeper.
            let depth = this.call.cause.depth - 1;
            this.write(move |store| async move {
                store.resolve_from_script(dl.id, resolution, depth).await
            })
            .await?;
            Ok(())
        }
        .await)
    }
}

impl wit_log::Host for State {
    async fn log(&mut self, level: wit_log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit_log::Level::Trace => LogLevel::Trace,
            wit_log::Level::Debug => LogLevel::Debug,
            wit_log::Level::Info => LogLevel::Info,
            wit_log::Level::Warn => LogLevel::Warn,
            wit_log::Level::Error => LogLevel::Error,
        };
        // Past the budget the guest traps: a log flood ends its invocation.
        self.log.push(level, &message)?;
        Ok(())
    }
}
