//! One component run once, in the real sandbox, against a throwaway
//! database: what `picloud-host run FILE.wasm --event EVENT.json` does, so
//! a script author can try a handler before deploying it anywhere.
//!
//! Rule: nothing here is simulated. The component is validated as a deploy
//! validates it, runs in the same runtime under the operator's sandbox
//! ceiling (`PICLOUD_SANDBOX_*`), as an app admin of a fresh app in a
//! temporary SQLite file, and every host call goes to that database. What
//! the script wrote is read back from the outbox its writes enqueued. The
//! file is deleted when the run ends; the compiled code stays in the host's
//! compile cache (`PICLOUD_CACHE_DIR`), as a deploy's would, so trying the
//! script again or deploying it next does not compile it again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{MemberAuthorizer, Role};
use crate::config::SandboxCeiling;
use crate::model::{EventId, KvOp};
use crate::runs::limit_name;
use crate::runtime::{DeployError, Invocation, LogLine, Runtime, SetupError};
use crate::store::{self, Store};

/// More rows than a trial's outbox can hold (the seed, and the script's
/// writes within its event budget).
const CLAIM_ALL: u32 = 1_000_000;

/// The principal a trial runs as: the admin of the trial's app.
pub const PRINCIPAL: &str = "author";

/// The event to run the component on (`--event EVENT.json`). Every field
/// has a default: a synchronous invocation (`http`/`invoke`) with a null
/// payload, at depth 0, attempt 1.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrialEvent {
    /// `kv`, `dead_letter`, `http`, ...
    #[serde(default = "default_source")]
    pub source: String,
    /// `set`, `delete`, `invoke`, ...
    #[serde(default = "default_op")]
    pub op: String,
    /// The payload, e.g. `{"collection":"orders","key":"o-1","value":{..},"version":1}`
    /// for a `kv`/`set` event.
    #[serde(default)]
    pub payload: Value,
    /// 1 on a first attempt.
    #[serde(default = "one")]
    pub attempt: u32,
}

fn default_source() -> String {
    "http".into()
}
fn default_op() -> String {
    "invoke".into()
}
fn one() -> u32 {
    1
}

/// KV entries to start from (`--kv SEED.json`): collection → key → value.
pub type KvSeed = BTreeMap<String, BTreeMap<String, Value>>;

/// One KV write the script made.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KvWrite {
    /// `set` or `delete`.
    pub op: KvOp,
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The value written (`None` for a delete).
    pub value: Option<Value>,
    /// The key's version after the write.
    pub version: i64,
}

/// What one trial run did.
#[derive(Clone, Debug, Serialize)]
pub struct TrialReport {
    /// Whether the handler returned `Ok`.
    pub succeeded: bool,
    /// The reply body, as text (lossy UTF-8), if it returned one.
    pub reply: Option<String>,
    /// The error, if it failed.
    pub error: Option<String>,
    /// The limit that ended it, if one did (`timeout`, `memory`, ...).
    pub limit: Option<&'static str>,
    /// Every line it logged.
    pub logs: Vec<LogLine>,
    /// Its KV writes, in order.
    pub writes: Vec<KvWrite>,
    /// How long it ran.
    pub elapsed_us: u64,
}

/// Why a trial could not run the component at all.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The component was refused, as a deploy would refuse it.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// A seed value or name was refused.
    #[error("--kv seed {collection}/{key}: {source}")]
    Seed {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// Why.
        source: store::Error,
    },
    /// The sandbox could not be built.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The throwaway database failed.
    #[error("the trial database: {0}")]
    Store(#[from] store::Error),
    /// The temporary directory could not be made.
    #[error("cannot create a temporary directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `wasm` once on `event`, after seeding `seed`, under `ceiling`, and
/// report what it did.
pub async fn run_once(
    wasm: &[u8],
    event: &TrialEvent,
    seed: &KvSeed,
    ceiling: SandboxCeiling,
) -> Result<TrialReport, TrialError> {
    let scratch = Scratch(
        std::env::temp_dir().join(format!("picloud-run-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&scratch.0)?;
    let url = format!("sqlite://{}", scratch.0.join("trial.db").display());
    let store = store::connect(&url).await?;
    store.migrate().await?;
    let report = run_in(&store, wasm, event, seed, ceiling).await;
    store.close().await;
    report
}

async fn run_in(
    store: &Arc<dyn Store>,
    wasm: &[u8],
    event: &TrialEvent,
    seed: &KvSeed,
    ceiling: SandboxCeiling,
) -> Result<TrialReport, TrialError> {
    let app = store.create_app("trial").await?;
    store.set_member(app.id, PRINCIPAL, Role::Admin).await?;
    let authorizer = Arc::new(MemberAuthorizer::new(store.clone()));
    // The host's compile cache: trying a script again, or deploying it
    // after trying it, does not compile it again (seconds for a Python one).
    let cache = crate::service::default_cache_dir();
    let runtime = Runtime::new(ceiling, store.clone(), authorizer, cache)?;
    let script = runtime.deploy(app.id, "trial", wasm).await?;
    for (collection, entries) in seed {
        for (key, value) in entries {
            store
                .kv_set(app.id, collection, key, value, 0)
                .await
                .map_err(|source| TrialError::Seed {
                    collection: collection.clone(),
                    key: key.clone(),
                    source,
                })?;
        }
    }
    // The seed's own events are not the script's writes.
    let seeded = store
        .claim_due("trial", CLAIM_ALL, Duration::from_secs(3600))
        .await?;
    store
        .complete(&seeded.iter().map(|e| e.id).collect::<Vec<_>>(), &[])
        .await?;

    let input = Invocation {
        event_id: EventId::new(),
        app_id: app.id,
        source: event.source.clone(),
        op: event.op.clone(),
        payload: event.payload.to_string(),
        depth: 0,
        attempt: event.attempt.max(1),
        trigger_id: None,
        script_id: script.id,
        principal: PRINCIPAL.into(),
        chain: Vec::new(),
    };
    let outcome = runtime.invoke(&script, input).await;

    let mut written = store
        .claim_due("trial", CLAIM_ALL, Duration::from_secs(3600))
        .await?;
    written.sort_by_key(|e| e.id);
    let writes = written
        .into_iter()
        .filter_map(|e| {
            let op = match e.op.as_str() {
                "set" => KvOp::Set,
                "delete" => KvOp::Delete,
                _ => return None,
            };
            let text = |k: &str| e.payload.get(k)?.as_str().map(str::to_owned);
            Some(KvWrite {
                op,
                collection: text("collection")?,
                key: text("key")?,
                value: e.payload.get("value").filter(|v| !v.is_null()).cloned(),
                version: e
                    .payload
                    .get("version")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            })
        })
        .collect();
    Ok(match outcome {
        Ok(ok) => TrialReport {
            succeeded: true,
            reply: ok.reply.map(|b| String::from_utf8_lossy(&b).into_owned()),
            error: None,
            limit: None,
            logs: ok.logs,
            writes,
            elapsed_us: ok.elapsed.as_micros() as u64,
        },
        Err(failure) => TrialReport {
            succeeded: false,
            reply: None,
            limit: limit_name(&failure.error),
            error: Some(failure.error.to_string()),
            logs: failure.logs,
            writes,
            elapsed_us: failure.elapsed.as_micros() as u64,
        },
    })
}
