//! The reliability tests' workload: many kv events on a collection whose
//! trigger runs the `recorder` fixture.
//!
//! Rule: the recorder writes `seen/<event id>`, so after a run the number of
//! `seen` entries is the number of distinct events handled and the sum of
//! their versions the number of runs; the difference is the duplicates that
//! at-least-once delivery allowed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use picloud_host::model::{AppId, KvOp, KvOps, NewTrigger, TriggerSpec};
use picloud_host::store::{Store, kv_event};
use serde_json::json;

use crate::guests;
use crate::host::{self as h, ADMIN};

/// The collection the events are written to.
pub const COLLECTION: &str = "in";

/// How many distinct events were handled.
pub const SEEN_SQL: &str = "select count(*) from kv_entries where collection = 'seen'";
/// How many runs there were in all.
pub const RUNS_SQL: &str =
    "select cast(coalesce(sum(version), 0) as bigint) from kv_entries where collection = 'seen'";
/// Rows still in the outbox.
pub const OUTBOX_SQL: &str = "select count(*) from outbox";
/// Dead letters.
pub const DEAD_SQL: &str = "select count(*) from dead_letters";

/// The sandbox timeout of the dispatcher processes, in ms.
pub const TIMEOUT_MS: u64 = 1000;
/// Their lease, in ms: short, so rows of a killed process come back soon.
pub const LEASE_MS: u64 = 3000;

/// An app with the recorder on [`COLLECTION`] (and the greeter deployed)
/// and `events` kv events waiting in the outbox.
pub struct Workload {
    /// The app (`reliability`; [`ADMIN`] is its admin).
    pub app: AppId,
    /// The ids of the events, as the recorder writes them.
    pub ids: HashSet<String>,
}

/// Set up the workload on `store`.
pub async fn recorder(store: &Arc<dyn Store>, events: usize) -> Workload {
    recorder_with(store, events, |i| json!(i)).await
}

/// The workload with event `i` writing `value(i)`: `{"sleep_ms": N}` makes
/// the recorder work N ms before its write.
pub async fn recorder_with(
    store: &Arc<dyn Store>,
    events: usize,
    value: impl Fn(usize) -> serde_json::Value,
) -> Workload {
    let rt = h::runtime(store, h::ceiling());
    let app = h::app(store, "reliability").await;
    let recorder = h::deploy(&rt, app.id, "recorder", guests::RECORDER).await;
    h::deploy(&rt, app.id, "greeter", guests::GREETER).await;
    store
        .create_trigger(&NewTrigger {
            app_id: app.id,
            script_id: recorder.id,
            name: "record".into(),
            registered_by_principal: ADMIN.into(),
            spec: TriggerSpec::Kv {
                collection: COLLECTION.into(),
                ops: KvOps::ALL,
                ordered: false,
            },
            retry: Default::default(),
            max_depth: None,
        })
        .await
        .expect("creating the trigger");
    let batch: Vec<_> = (0..events)
        .map(|i| {
            kv_event(
                app.id,
                KvOp::Set,
                COLLECTION,
                &format!("k{i}"),
                Some(&value(i)),
                1,
                0,
            )
        })
        .collect();
    let mut ids = HashSet::with_capacity(events);
    for chunk in batch.chunks(1000) {
        let written = store.enqueue_many(chunk).await.expect("enqueueing events");
        ids.extend(written.iter().map(|id| id.to_string()));
    }
    Workload { app: app.id, ids }
}

/// The environment of the dispatcher processes: a shared compile cache in
/// `cache`, a short sandbox timeout and lease.
pub fn dispatcher_env(cache: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("PICLOUD_CACHE_DIR", cache.display().to_string()),
        ("PICLOUD_SANDBOX_TIMEOUT_MS", TIMEOUT_MS.to_string()),
        ("PICLOUD_DISPATCH_LEASE_MS", LEASE_MS.to_string()),
        ("RUST_LOG", "warn".into()),
    ]
}

/// The keys of collection `seen` of `app`, all of them.
pub async fn seen_keys(store: &Arc<dyn Store>, app: AppId) -> HashSet<String> {
    let mut keys = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .kv_list_keys(app, "seen", after.as_deref(), 1000)
            .await
            .expect("listing seen keys");
        let Some(last) = page.last().cloned() else {
            break;
        };
        keys.extend(page);
        after = Some(last);
    }
    keys
}
