//! Earlier guest contracts, linked beside the current one.
//!
//! Rule: a component built against any released version of
//! `picloud:trigger` keeps deploying and running. Versions within a minor
//! only add, so wasmtime's linker resolves an import of `kv@0.1.0` to the
//! `0.1.1` the host defines; a new minor is a new name, so the last release
//! of each older minor is bound here from `wit/archive`, and each of its
//! calls is the current call with its types converted ([`forward`]). Nothing
//! of an old contract is implemented twice.
//!
//! The export, `handle`, changed once: before 0.3.0 it failed with a bare
//! message, since then with a `handler-error`. [`Ready`] holds a script by
//! the `handle` it exports (read off the component's type, not guessed from
//! its imports), and calls it through the bindings of that contract; the
//! 0.1 and 0.2 `handle`s have the same type, so one binding serves both.

use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Engine, Store};

use super::host::State;
use super::host::picloud::trigger::{dead_letters as dl, kv, log, types};
use super::host::{HandlerError, TriggerPre};

/// `picloud:trigger@0.1.1`, the last of the 0.1 line.
pub(super) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/archive/0.1.1",
        world: "trigger",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `picloud:trigger@0.2.0`, the last of the 0.2 line. Its `wasi:config`
/// import is the current one.
pub(super) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/archive/0.2.0",
        world: "trigger",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "wasi:config/store": super::super::host::wasi::config::store },
    });
}

/// Link every earlier minor's interfaces (the current world and WASI are
/// linked by the runtime).
pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v0_1::Trigger::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    // Not the 0.2 world's own `add_to_linker`: it would link `wasi:config`
    // a second time.
    use v0_2::picloud::trigger as t;
    t::types::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    t::kv::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    t::dead_letters::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    t::log::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    Ok(())
}

/// A script ready to instantiate, by the `handle` it exports.
#[derive(Clone)]
pub(crate) enum Ready {
    /// Built against the current contract.
    Current(TriggerPre<State>),
    /// Built against 0.1 or 0.2: `handle` fails with a message.
    Message(v0_2::TriggerPre<State>),
}

impl Ready {
    /// Link `component` and check its export.
    pub(super) fn new(linker: &Linker<State>, component: &Component) -> Result<Ready, ReadyError> {
        let pre = linker
            .instantiate_pre(component)
            .map_err(ReadyError::Link)?;
        let ready = match fails_with_message(linker.engine(), component) {
            true => v0_2::TriggerPre::new(pre).map(Ready::Message),
            false => TriggerPre::new(pre).map(Ready::Current),
        };
        ready.map_err(ReadyError::Export)
    }

    /// The compiled component.
    pub(super) fn component(&self) -> &Component {
        match self {
            Ready::Current(pre) => pre.instance_pre().component(),
            Ready::Message(pre) => pre.instance_pre().component(),
        }
    }

    /// Instantiate the script and call its `handle`.
    pub(super) async fn handle(
        &self,
        store: &mut Store<State>,
        event: &types::Event,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, HandlerError>> {
        match self {
            Ready::Current(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_handle(store, event).await
            }
            Ready::Message(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                let event = v0_2::picloud::trigger::types::Event {
                    id: event.id.clone(),
                    app_id: event.app_id.clone(),
                    source: event.source.clone(),
                    op: event.op.clone(),
                    payload: event.payload.clone(),
                    depth: event.depth,
                    attempt: event.attempt,
                    trigger_id: event.trigger_id.clone(),
                    script_id: event.script_id.clone(),
                    principal: event.principal.clone(),
                };
                let answer = instance.call_handle(store, &event).await?;
                Ok(answer.map_err(|message| HandlerError {
                    message,
                    permanent: false,
                    retry_after_ms: None,
                }))
            }
        }
    }
}

/// Why a component cannot be made ready.
pub(super) enum ReadyError {
    /// An import the host does not define.
    Link(wasmtime::Error),
    /// `handle` missing or of the wrong type.
    Export(wasmtime::Error),
}

/// Whether `component` exports a `handle` whose error is a string (the
/// contract before 0.3.0). Anything else is checked against the current
/// contract, whose error then names what is wrong.
fn fails_with_message(engine: &Engine, component: &Component) -> bool {
    use wasmtime::component::types::Type;
    let ty = component.component_type();
    let Some(ComponentItem::ComponentFunc(func)) =
        ty.get_export(engine, "handle").map(|export| export.ty)
    else {
        return false;
    };
    let mut results = func.results();
    matches!(
        (results.next(), results.next()),
        (Some(Type::Result(r)), None) if matches!(r.err(), Some(Type::String))
    )
}

/// Each of an old minor's calls, forwarded to the current one.
macro_rules! forward {
    ($minor:ident) => {
        const _: () = {
            use $minor::picloud::trigger::{
                dead_letters as old_dl, kv as old_kv, log as old_log, types as old_types,
            };

            type Answer<T> = wasmtime::Result<Result<T, old_types::HostError>>;

            fn error(e: types::HostError) -> old_types::HostError {
                use types::HostError as E;
                match e {
                    E::PermissionDenied => old_types::HostError::PermissionDenied,
                    E::NotFound(m) => old_types::HostError::NotFound(m),
                    E::InvalidArgument(m) => old_types::HostError::InvalidArgument(m),
                    E::Conflict(m) => old_types::HostError::Conflict(m),
                    E::Unavailable(m) => old_types::HostError::Unavailable(m),
                }
            }

            /// The current answer, in the old contract's types.
            fn answer<T, U>(
                current: wasmtime::Result<Result<T, types::HostError>>,
                convert: impl FnOnce(T) -> U,
            ) -> Answer<U> {
                Ok(current?.map(convert).map_err(error))
            }

            impl old_types::Host for State {}

            impl old_kv::Host for State {
                async fn get(
                    &mut self,
                    collection: String,
                    key: String,
                ) -> Answer<Option<old_kv::Entry>> {
                    answer(kv::Host::get(self, collection, key).await, |entry| {
                        entry.map(|e| old_kv::Entry {
                            key: e.key,
                            value: e.value,
                            version: e.version,
                        })
                    })
                }

                async fn set(
                    &mut self,
                    collection: String,
                    key: String,
                    value: String,
                ) -> Answer<u64> {
                    answer(kv::Host::set(self, collection, key, value).await, |v| v)
                }

                async fn delete(&mut self, collection: String, key: String) -> Answer<bool> {
                    answer(kv::Host::delete(self, collection, key).await, |v| v)
                }

                async fn set_if_version(
                    &mut self,
                    collection: String,
                    key: String,
                    value: String,
                    expected: u64,
                ) -> Answer<u64> {
                    answer(
                        kv::Host::set_if_version(self, collection, key, value, expected).await,
                        |v| v,
                    )
                }

                async fn delete_if_version(
                    &mut self,
                    collection: String,
                    key: String,
                    expected: u64,
                ) -> Answer<()> {
                    answer(
                        kv::Host::delete_if_version(self, collection, key, expected).await,
                        |v| v,
                    )
                }

                async fn increment(
                    &mut self,
                    collection: String,
                    key: String,
                    delta: i64,
                ) -> Answer<i64> {
                    answer(
                        kv::Host::increment(self, collection, key, delta).await,
                        |v| v,
                    )
                }

                async fn list_keys(
                    &mut self,
                    collection: String,
                    after: Option<String>,
                    limit: u32,
                ) -> Answer<Vec<String>> {
                    answer(
                        kv::Host::list_keys(self, collection, after, limit).await,
                        |v| v,
                    )
                }
            }

            fn resolution(r: dl::Resolution) -> old_dl::Resolution {
                match r {
                    dl::Resolution::Replayed => old_dl::Resolution::Replayed,
                    dl::Resolution::Ignored => old_dl::Resolution::Ignored,
                    dl::Resolution::HandledByScript => old_dl::Resolution::HandledByScript,
                    dl::Resolution::HandlerFailed => old_dl::Resolution::HandlerFailed,
                }
            }

            fn dead_letter(d: dl::DeadLetter) -> old_dl::DeadLetter {
                old_dl::DeadLetter {
                    id: d.id,
                    original_event_id: d.original_event_id,
                    source: d.source,
                    op: d.op,
                    trigger_id: d.trigger_id,
                    script_id: d.script_id,
                    payload: d.payload,
                    attempt_count: d.attempt_count,
                    first_attempt_at: d.first_attempt_at,
                    last_attempt_at: d.last_attempt_at,
                    last_error: d.last_error,
                    created_at: d.created_at,
                    resolved_at: d.resolved_at,
                    resolution: d.resolution.map(resolution),
                }
            }

            impl old_dl::Host for State {
                async fn get(&mut self, id: String) -> Answer<Option<old_dl::DeadLetter>> {
                    answer(dl::Host::get(self, id).await, |d| d.map(dead_letter))
                }

                async fn list_unresolved(&mut self, limit: u32) -> Answer<Vec<old_dl::DeadLetter>> {
                    answer(dl::Host::list_unresolved(self, limit).await, |list| {
                        list.into_iter().map(dead_letter).collect()
                    })
                }

                async fn resolve(&mut self, id: String, to: old_dl::Resolution) -> Answer<()> {
                    let to = match to {
                        old_dl::Resolution::Replayed => dl::Resolution::Replayed,
                        old_dl::Resolution::Ignored => dl::Resolution::Ignored,
                        old_dl::Resolution::HandledByScript => dl::Resolution::HandledByScript,
                        old_dl::Resolution::HandlerFailed => dl::Resolution::HandlerFailed,
                    };
                    answer(dl::Host::resolve(self, id, to).await, |v| v)
                }
            }

            impl old_log::Host for State {
                async fn log(
                    &mut self,
                    level: old_log::Level,
                    message: String,
                ) -> wasmtime::Result<()> {
                    let level = match level {
                        old_log::Level::Trace => log::Level::Trace,
                        old_log::Level::Debug => log::Level::Debug,
                        old_log::Level::Info => log::Level::Info,
                        old_log::Level::Warn => log::Level::Warn,
                        old_log::Level::Error => log::Level::Error,
                    };
                    log::Host::log(self, level, message).await
                }
            }
        };
    };
}

forward!(v0_1);
forward!(v0_2);
