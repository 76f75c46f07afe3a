//! Building hosts, apps and invocations for tests.

use std::sync::Arc;
use std::time::Duration;

use picloud_host::auth::{MemberAuthorizer, Role};
use picloud_host::config::{SandboxCeiling, TriggerConfig};
use picloud_host::dispatch::DispatchOptions;
use picloud_host::model::{App, AppId, EventId, Script, ScriptId, TriggerId};
use picloud_host::runtime::{Invocation, Runtime};
use picloud_host::store::Store;
use picloud_host::{HostOptions, TriggerHost};

/// The principal tests register triggers as (an app admin).
pub const ADMIN: &str = "alice";

/// A sandbox ceiling with a short deadline, so hostile tests end quickly.
pub fn ceiling() -> SandboxCeiling {
    SandboxCeiling {
        timeout: Duration::from_millis(1000),
        memory_bytes: 32 << 20,
        log_bytes: 16 * 1024,
        max_instances: 16,
        script_max_bytes: 32 << 20,
        reply_max_bytes: 64 * 1024,
        ..SandboxCeiling::default()
    }
}

/// A retry policy with millisecond backoff, so retry tests are quick.
pub fn fast_retries(max_attempts: i32) -> TriggerConfig {
    TriggerConfig {
        retry_max_attempts: max_attempts,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(80),
        ..TriggerConfig::default()
    }
}

/// A fresh temporary directory for the compile cache of one test.
pub fn cache_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("picloud-cache-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("creating a cache dir");
    dir
}

/// The compile cache the Python tests share, within a run and across runs:
/// a Python component is ~20 MB and takes ~20 s to compile in a test build,
/// so each compiles once per machine. Safe to share: artifacts are keyed by
/// content hash and engine (see `runtime::cache`).
pub fn shared_cache_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("picloud-test-shared-cache");
    std::fs::create_dir_all(&dir).expect("creating the shared cache dir");
    dir
}

/// A runtime over `store` with the built-in authorizer.
pub fn runtime(store: &Arc<dyn Store>, ceiling: SandboxCeiling) -> Runtime {
    let auth = Arc::new(MemberAuthorizer::new(store.clone()));
    Runtime::new(ceiling, store.clone(), auth, Some(cache_dir())).expect("building the runtime")
}

/// A whole host over `store`.
pub fn host(store: &Arc<dyn Store>, config: TriggerConfig, ceiling: SandboxCeiling) -> TriggerHost {
    host_with_cache(store, config, ceiling, cache_dir())
}

/// [`host`] with its compile cache in `cache`.
pub fn host_with_cache(
    store: &Arc<dyn Store>,
    config: TriggerConfig,
    ceiling: SandboxCeiling,
    cache: std::path::PathBuf,
) -> TriggerHost {
    let auth = Arc::new(MemberAuthorizer::new(store.clone()));
    let mut options = HostOptions::new(&ceiling);
    options.cache_dir = Some(cache);
    options.dispatch = DispatchOptions {
        poll_interval: Duration::from_millis(50),
        ..DispatchOptions::for_timeout(ceiling.timeout)
    };
    TriggerHost::new(store.clone(), auth, config, ceiling, options).expect("building the host")
}

/// A new app with [`ADMIN`] as its admin.
pub async fn app(store: &Arc<dyn Store>, name: &str) -> App {
    let app = store.create_app(name).await.expect("creating the app");
    store
        .set_member(app.id, ADMIN, Role::Admin)
        .await
        .expect("adding the admin");
    app
}

/// Deploy the component at `path` as `name`.
pub async fn deploy(rt: &Runtime, app: AppId, name: &str, path: &str) -> Script {
    let wasm = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    rt.deploy(app, name, &wasm)
        .await
        .unwrap_or_else(|e| panic!("deploying {name}: {e}"))
}

/// An invocation of `script` with a JSON payload, as `principal`.
pub fn invocation(
    app: AppId,
    script: ScriptId,
    source: &str,
    op: &str,
    payload: serde_json::Value,
    principal: &str,
) -> Invocation {
    Invocation {
        event_id: EventId::new(),
        app_id: app,
        source: source.into(),
        op: op.into(),
        payload: payload.to_string(),
        depth: 0,
        attempt: 1,
        trigger_id: None::<TriggerId>,
        script_id: script,
        principal: principal.into(),
        chain: Vec::new(),
    }
}
