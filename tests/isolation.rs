//! Tenant isolation (issue 10, SPEC 14): no app can hurt another, and no
//! principal can borrow another's rights. One test per finding of the
//! audit, on both backends where storage is involved, and every hostile
//! tenant at once beside a well-behaved app.
//!
//! Hostile shapes no Rust guest has (hundreds of core instances, two
//! memories) are components written by hand (`guests::handwritten`); the
//! rest are the `tenant-abuse` fixture's modes.

use std::sync::Arc;
use std::time::Duration;

use picloud_host::TriggerHost;
use picloud_host::auth::{MemberAuthorizer, Role};
use picloud_host::config::{SandboxCeiling, TriggerConfig};
use picloud_host::model::{
    AppId, DeadLetter, DeadLetterFilter, KvOp, KvOps, NewDeadLetter, NewEvent, NewTrigger,
    Resolution, Script, ScriptId, Timestamp, Trigger, TriggerSpec,
};
use picloud_host::runtime::{InvokeError, LimitExceeded, Runtime};
use picloud_host::store::{self, Backend, Store};
use picloud_tests::db::{self, TestDb};
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use serde_json::{Value, json};

picloud_tests::contract!(
    deep_values_are_refused_at_every_entry_point,
    an_undecodable_row_fails_alone,
    a_replaying_dead_letter_handler_ends_at_the_depth_limit,
    a_redeploy_lends_no_rights,
    budgets_end_a_storm_of_host_calls,
    dead_letter_listings_are_paged_by_bytes,
    a_disabled_triggers_replays_are_held_until_it_is_enabled,
    control_characters_in_names_are_invalid_arguments,
    every_hostile_tenant_at_once_leaves_a_good_app_untouched,
);

// ---------------------------------------------------------------- helpers

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

async fn trigger(
    s: &Arc<dyn Store>,
    app: AppId,
    script: ScriptId,
    spec: TriggerSpec,
    principal: &str,
) -> Trigger {
    s.create_trigger(&NewTrigger {
        app_id: app,
        script_id: script,
        name: "t".into(),
        registered_by_principal: principal.into(),
        spec,
        retry: Default::default(),
        max_depth: None,
    })
    .await
    .expect("registering a trigger")
}

fn on(collection: &str) -> TriggerSpec {
    TriggerSpec::Kv {
        collection: collection.into(),
        ops: KvOps::ALL,
        ordered: false,
    }
}

fn on_dead_letters() -> TriggerSpec {
    TriggerSpec::DeadLetter { source: "*".into() }
}

/// `n` kv `set` events of `collection` with `value(i)` for key `k<i>`.
async fn write_events(
    s: &Arc<dyn Store>,
    app: AppId,
    collection: &str,
    n: usize,
    value: impl Fn(usize) -> Value,
) {
    let events: Vec<NewEvent> = (0..n)
        .map(|i| {
            store::kv_event(
                app,
                KvOp::Set,
                collection,
                &format!("k{i}"),
                Some(&value(i)),
                1,
                0,
            )
        })
        .collect();
    for chunk in events.chunks(1000) {
        s.enqueue_many(chunk).await.expect("enqueueing events");
    }
}

async fn drain(host: &TriggerHost, within: Duration) {
    tokio::time::timeout(within, host.run_until_empty())
        .await
        .unwrap_or_else(|_| panic!("the outbox did not drain within {within:?}"))
        .expect("dispatch ran");
}

async fn dead_letters(s: &Arc<dyn Store>, app: AppId) -> Vec<DeadLetter> {
    s.list_dead_letters(&DeadLetterFilter {
        app_id: Some(app),
        ..DeadLetterFilter::default()
    })
    .await
    .expect("listing dead letters")
}

/// Run `script` once as [`ADMIN`] with `payload`; the reply as JSON, or the
/// invocation's error.
async fn invoke(rt: &Runtime, script: &Script, payload: Value) -> Result<Value, InvokeError> {
    let input = h::invocation(script.app_id, script.id, "http", "invoke", payload, ADMIN);
    match rt.invoke(script, input).await {
        Ok(ok) => Ok(serde_json::from_slice(&ok.reply.unwrap_or_default()).unwrap_or(Value::Null)),
        Err(failure) => Err(failure.error),
    }
}

/// A dead letter of `app` with a payload of `bytes` bytes of text.
fn big_dead_letter(app: AppId, bytes: usize) -> NewDeadLetter {
    let now = Timestamp::now();
    NewDeadLetter {
        original_event_id: picloud_host::model::EventId::new(),
        app_id: app,
        source: "kv".into(),
        op: "set".into(),
        trigger_id: None,
        script_id: None,
        payload: json!({ "blob": "x".repeat(bytes) }),
        depth: 0,
        attempt_count: 1,
        first_attempt_at: now,
        last_attempt_at: now,
        last_error: "failed".into(),
    }
}

/// Make `app`'s kv event for `key` undecodable, around every check: its
/// payload becomes a value nested `depth` deep, as raw SQL could write it.
async fn poison(db: &TestDb, key: &str, depth: usize) {
    let deep = format!(
        r#"{{"collection":"in","key":"{key}","value":{},"version":1}}"#,
        nested(depth)
    );
    let sql = match db.backend {
        Backend::Sqlite => format!(
            "update outbox set payload = '{deep}' where json_extract(payload, '$.key') = '{key}'"
        ),
        Backend::Postgres => {
            format!("update outbox set payload = '{deep}'::jsonb where payload->>'key' = '{key}'")
        }
    };
    assert_eq!(db.execute(&sql).await.expect("poisoning a row"), 1);
}

// ------------------------------------------- finding 1: the instance pool

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_over_a_cap_are_refused_at_deploy() {
    let db = db::sqlite().await;
    let s = &db.store;
    // A core module has one table at most, so tables are capped below the
    // core instances here to show that cap too.
    let ceiling = SandboxCeiling {
        component_tables: 4,
        ..h::ceiling()
    };
    let rt = h::runtime(s, ceiling);
    let app = h::app(s, "caps").await;
    let three_memories = guests::handwritten(
        "(core module $mem (memory 1))",
        "(core instance (instantiate $mem)) (core instance (instantiate $mem))",
        "",
        "",
        "",
    );
    let cases = [
        (
            guests::with_core_instances(512),
            "component contains 512 core module instances, over the limit of 16 per component (PICLOUD_COMPONENT_MAX_CORE_INSTANCES)",
        ),
        (
            guests::with_core_instances(601),
            "component contains 601 core module instances",
        ),
        (
            guests::with_tables(5),
            "component contains 5 tables, over the limit of 4 per component (PICLOUD_COMPONENT_MAX_TABLES)",
        ),
        (
            three_memories,
            "component contains 3 linear memories, over the limit of 2 per component (PICLOUD_COMPONENT_MAX_MEMORIES)",
        ),
    ];
    for (wasm, expected) in cases {
        let err = rt
            .deploy(app.id, "big", &wasm)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(expected), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    assert!(
        s.list_scripts(app.id).await.unwrap().is_empty(),
        "a refused deploy stores nothing"
    );
    // At the caps it deploys and runs.
    for wasm in [guests::with_core_instances(16), guests::with_tables(4)] {
        let script = rt.deploy(app.id, "at-cap", &wasm).await.unwrap();
        invoke(&rt, &script, json!({})).await.unwrap();
    }
}

/// Before: the pool held 8 core instances per instance slot, so two
/// components of 16 filled it and the rest trapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_of_maximal_components_runs() {
    let db = db::sqlite().await;
    let s = &db.store;
    let ceiling = SandboxCeiling {
        max_instances: 4,
        timeout: Duration::from_secs(10),
        ..h::ceiling()
    };
    let rt = Arc::new(h::runtime(s, ceiling));
    let app = h::app(s, "maximal").await;
    // 16 core instances, and a handler that spins a while, so that the
    // pool is full of them at once.
    let spin = "(local $i i32)
        (loop $l
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 30000000))))";
    let empties: String = (1..16)
        .map(|_| "(core instance (instantiate $empty))\n")
        .collect();
    let wasm = guests::handwritten("(core module $empty)", &empties, "", "", spin);
    let maximal = rt.deploy(app.id, "maximal", &wasm).await.unwrap();
    let noop = h::deploy(&rt, app.id, "noop", guests::NOOP).await;
    let runs: Vec<_> = (0..12)
        .map(|i| {
            let rt = rt.clone();
            let script = if i % 3 == 2 {
                noop.clone()
            } else {
                maximal.clone()
            };
            tokio::spawn(async move { invoke(&rt, &script, json!({})).await })
        })
        .collect();
    for run in runs {
        run.await
            .unwrap()
            .expect("no invocation fails for lack of pool capacity");
    }
}

// ---------------------------------------------- finding 8: memory ceiling

/// Before: the limiter checked each memory on its own, and two memories of
/// 28 MiB each lived under a 32 MiB ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_ceiling_covers_all_memories_together() {
    let db = db::sqlite().await;
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling()); // 32 MiB
    let app = h::app(s, "memories").await;
    let pages = 28 * 16; // 28 MiB in 64 KiB pages
    let two = rt
        .deploy(app.id, "two", &guests::with_two_memories(pages))
        .await
        .unwrap();
    let err = invoke(&rt, &two, json!({})).await.unwrap_err();
    assert_eq!(err, InvokeError::Limit(LimitExceeded::Memory { mib: 32 }));
    assert_eq!(err.to_string(), "memory limit 32 MiB exceeded");
    // One memory of the same size is within the ceiling.
    let one = guests::handwritten(
        "",
        "",
        "",
        "",
        &format!("(drop (memory.grow (i32.const {pages})))"),
    );
    let one = rt.deploy(app.id, "one", &one).await.unwrap();
    invoke(&rt, &one, json!({})).await.unwrap();
}

// ------------------------------------------- finding 2: deep JSON values

async fn deep_values_are_refused_at_every_entry_point(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "deep").await;
    let abuse = h::deploy(host.runtime(), app.id, "abuse", guests::TENANT_ABUSE).await;
    let limit = "over the limit of 64: flatten it";

    // The library (what the CLI's `kv set` and an embedder call).
    let err = s
        .kv_set(app.id, "c", "k", &nested(65), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, store::Error::Invalid(_)), "{err:?}");
    assert_eq!(err.to_string(), format!("value is nested 65 deep, {limit}"));
    let admin =
        picloud_host::admin::Admin::new(s.clone(), Arc::new(MemberAuthorizer::new(s.clone())));
    let err = admin
        .kv_set(app.id, "c", "k", &nested(100), ADMIN)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nested 100 deep"), "{err}");
    let err = s
        .enqueue(&NewEvent::raw(app.id, "kv", "set", nested(65)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("payload is nested 65 deep"),
        "{err}"
    );
    // A synchronous invocation's payload.
    let err = host
        .invoke(app.id, "abuse", nested(65), ADMIN, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("payload is nested 65 deep"),
        "{err}"
    );
    // The host call: 127 deep was accepted and then poisoned the outbox.
    let reply = invoke(
        host.runtime(),
        &abuse,
        json!({"mode": "deep", "depth": 127}),
    )
    .await
    .unwrap();
    assert_eq!(
        reply,
        json!(format!(
            "invalid argument: value is nested 127 deep, {limit}"
        ))
    );
    // At the bound it is stored, and its events (64 + the envelope) decode.
    s.kv_set(app.id, "c", "k", &nested(64), 0).await.unwrap();
    drain(&host, Duration::from_secs(30)).await;
    assert_eq!(s.count_events(None).await.unwrap(), 0);
    assert!(dead_letters(s, app.id).await.is_empty());
    assert!(s.kv_get(app.id, "deep", "value").await.unwrap().is_none());
}

/// Before: the row's decode failed its whole claim batch, every time, and
/// the other rows claimed with it never ran.
async fn an_undecodable_row_fails_alone(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "poisoned").await;
    let noop = h::deploy(host.runtime(), app.id, "noop", guests::NOOP).await;
    trigger(s, app.id, noop.id, on("in"), ADMIN).await;
    write_events(s, app.id, "in", 50, |i| json!(i)).await;
    poison(db, "k17", 200).await;
    drain(&host, Duration::from_secs(30)).await;
    let m = host.metrics();
    assert_eq!(
        m.succeeded,
        49 + 1,
        "49 good rows and the poison's dead-letter event: {m:?}"
    );
    let dead = dead_letters(s, app.id).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]
            .last_error
            .starts_with("the stored payload cannot be decoded (recursion limit exceeded"),
        "{}",
        dead[0].last_error
    );
    assert!(
        dead[0]
            .last_error
            .ends_with(": dead-lettered without running")
    );
    // Its text is kept, as a string, for the operator.
    assert!(dead[0].payload.as_str().unwrap().contains("k17"));
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

// ------------------------------------------------ finding 3: replay loops

/// Before: the replay went in at the original depth, and one failing event
/// made dead letters without end (764 in 5 s).
async fn a_replaying_dead_letter_handler_ends_at_the_depth_limit(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "replayer").await;
    let fails = h::deploy(host.runtime(), app.id, "fails", guests::ALWAYS_FAILS).await;
    let abuse = h::deploy(host.runtime(), app.id, "abuse", guests::TENANT_ABUSE).await;
    trigger(s, app.id, fails.id, on("in"), ADMIN).await;
    trigger(s, app.id, abuse.id, on_dead_letters(), ADMIN).await;
    s.kv_set(app.id, "in", "once", &json!(1), 0).await.unwrap();
    drain(&host, Duration::from_secs(60)).await;
    // Depths 0, 2, 4, 6, 8: each replay one deeper than the dead-letter
    // event (itself one deeper than its dead letter). The fifth's event is
    // past the limit of 8, so its dead letter is resolved handler_failed.
    let dead = dead_letters(s, app.id).await;
    let resolutions: Vec<_> = dead.iter().map(|d| d.resolution).collect();
    assert_eq!(
        resolutions,
        [
            Some(Resolution::Replayed),
            Some(Resolution::Replayed),
            Some(Resolution::Replayed),
            Some(Resolution::Replayed),
            Some(Resolution::HandlerFailed),
        ],
        "{dead:#?}"
    );
    // An operator's replay keeps the original depth; a script's is deeper.
    let at_3 = || NewDeadLetter {
        depth: 3,
        ..big_dead_letter(app.id, 10)
    };
    let by_operator = s.dead_letter(&at_3(), false, &[]).await.unwrap();
    let by_script = s.dead_letter(&at_3(), false, &[]).await.unwrap();
    s.resolve(by_operator.id, Resolution::Replayed)
        .await
        .unwrap();
    s.resolve_from_script(by_script.id, Resolution::Replayed, 3)
        .await
        .unwrap();
    let depths = (
        db.count("select cast(min(depth) as bigint) from outbox")
            .await,
        db.count("select cast(max(depth) as bigint) from outbox")
            .await,
    );
    assert_eq!(depths, (3, 4));
}

// ---------------------------------------- finding 4: borrowed rights

/// Before: a developer, refused `resolve` directly, redeployed the script
/// behind an admin's trigger and resolved a dead letter through it.
async fn a_redeploy_lends_no_rights(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(1), h::ceiling());
    let rt = host.runtime();
    let app = h::app(s, "rights").await;
    s.set_member(app.id, "dave", Role::Developer).await.unwrap();
    let victim = s
        .dead_letter(&big_dead_letter(app.id, 10), false, &[])
        .await
        .unwrap();
    let wasm = guests::wasm(guests::TENANT_ABUSE);
    // The admin's trigger, on the admin's script.
    let noop = guests::wasm(guests::NOOP);
    let script = rt
        .deploy_as(app.id, "handler", &noop, Some(ADMIN))
        .await
        .unwrap();
    trigger(s, app.id, script.id, on("cmd"), ADMIN).await;
    // The developer may deploy, and redeploys the script with other code.
    let redeployed = rt
        .deploy_as(app.id, "handler", &wasm, Some("dave"))
        .await
        .unwrap();
    assert_eq!(redeployed.id, script.id);
    assert_eq!(redeployed.deployed_by.as_deref(), Some("dave"));
    let order = json!({"mode": "resolve", "id": victim.id});
    s.kv_set(app.id, "cmd", "1", &order, 0).await.unwrap();
    drain(&host, Duration::from_secs(30)).await;
    assert_eq!(
        s.get_dead_letter(victim.id).await.unwrap().resolution,
        None,
        "the developer's code got no admin rights"
    );
    let dead = dead_letters(s, app.id).await;
    let refused = dead
        .iter()
        .find(|d| d.id != victim.id)
        .expect("the run failed");
    assert_eq!(refused.last_error, "permission denied");
    // Invoked directly by the admin, the developer's code is refused too.
    let err = invoke(rt, &redeployed, order.clone()).await.unwrap_err();
    assert_eq!(err.to_string(), "permission denied");
    // Once the admin deploys the same code, it acts with the admin's rights.
    rt.deploy_as(app.id, "handler", &wasm, Some(ADMIN))
        .await
        .unwrap();
    s.kv_set(app.id, "cmd", "2", &order, 0).await.unwrap();
    drain(&host, Duration::from_secs(30)).await;
    assert_eq!(
        s.get_dead_letter(victim.id).await.unwrap().resolution,
        Some(Resolution::HandledByScript)
    );
}

// -------------------------------------------------- finding 5: budgets

async fn budgets_end_a_storm_of_host_calls(db: &TestDb) {
    let s = &db.store;
    let ceiling = SandboxCeiling {
        timeout: Duration::from_secs(10),
        max_host_calls: 300,
        ..h::ceiling()
    };
    let rt = h::runtime(s, ceiling);
    let app = h::app(s, "storms").await;
    let abuse = h::deploy(&rt, app.id, "abuse", guests::TENANT_ABUSE).await;
    let err = invoke(&rt, &abuse, json!({"mode": "write-storm"}))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        InvokeError::Limit(LimitExceeded::Enqueued { limit: 100 })
    );
    assert_eq!(
        err.to_string(),
        "event limit of 100 per invocation exceeded: each kv set or delete and each replay enqueues an event (PICLOUD_SANDBOX_ENQUEUED_EVENTS)"
    );
    let written = s.kv_list_keys(app.id, "storm", None, 1000).await.unwrap();
    assert_eq!(written.len(), 100, "the writes within the budget stand");
    assert_eq!(s.count_events(Some(app.id)).await.unwrap(), 100);
    let err = invoke(&rt, &abuse, json!({"mode": "call-storm"}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "host call limit of 300 per invocation exceeded (PICLOUD_SANDBOX_HOST_CALLS)"
    );
}

// ------------------------------------- finding 6: host-side answer bytes

/// Before: one `list-unresolved` loaded every dead letter it was asked for
/// into the host's memory (40 of 1 MiB: 138 MiB for one call).
async fn dead_letter_listings_are_paged_by_bytes(db: &TestDb) {
    let s = &db.store;
    let ceiling = SandboxCeiling {
        timeout: Duration::from_secs(20),
        memory_bytes: 64 << 20,
        host_bytes: 10 << 20,
        ..h::ceiling()
    };
    let rt = h::runtime(s, ceiling);
    let app = h::app(s, "hoard").await;
    let abuse = h::deploy(&rt, app.id, "abuse", guests::TENANT_ABUSE).await;
    for _ in 0..40 {
        s.dead_letter(&big_dead_letter(app.id, 1 << 20), false, &[])
            .await
            .unwrap();
    }
    let page = invoke(&rt, &abuse, json!({"mode": "read-dead-letters"}))
        .await
        .unwrap();
    // A page holds the dead letters that begin within 4 MiB.
    assert_eq!(page["count"], json!(4), "{page}");
    // The budget of 10 MiB allows two such pages, not three.
    let err = invoke(
        &rt,
        &abuse,
        json!({"mode": "read-dead-letters", "calls": 3}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "host answer limit of 10485760 bytes per invocation exceeded (PICLOUD_SANDBOX_HOST_BYTES)"
    );
    // The store's paging on its own: by bytes, and at least one.
    let filter = DeadLetterFilter {
        app_id: Some(app.id),
        unresolved_only: true,
        limit: Some(1000),
        ..DeadLetterFilter::default()
    };
    assert_eq!(
        s.list_dead_letters_within(&filter, 1).await.unwrap().len(),
        1
    );
    assert_eq!(
        s.list_dead_letters_within(&filter, 3 << 20)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        s.list_dead_letters_within(&filter, 0).await.unwrap().len(),
        0
    );
    assert_eq!(
        s.list_dead_letters_within(&filter, u64::MAX)
            .await
            .unwrap()
            .len(),
        40
    );
}

// --------------------------------------------- finding 7: disabled triggers

/// Before: a disabled trigger's retries and replays ran anyway.
async fn a_disabled_triggers_replays_are_held_until_it_is_enabled(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "paused").await;
    let fails = h::deploy(host.runtime(), app.id, "fails", guests::ALWAYS_FAILS).await;
    let t = trigger(s, app.id, fails.id, on("in"), ADMIN).await;
    s.kv_set(app.id, "in", "k", &json!(1), 0).await.unwrap();
    drain(&host, Duration::from_secs(30)).await;
    let first = dead_letters(s, app.id).await;
    assert_eq!(first.len(), 1);

    s.set_trigger_enabled(t.id, false).await.unwrap();
    s.resolve(first[0].id, Resolution::Replayed).await.unwrap();
    drain(&host, Duration::from_secs(30)).await;
    assert_eq!(
        dead_letters(s, app.id).await.len(),
        1,
        "the replay did not run"
    );
    assert_eq!(host.metrics().held, 1);
    assert_eq!(s.count_events(Some(app.id)).await.unwrap(), 1, "it is kept");
    let held: i64 = db
        .count("select count(*) from outbox where due_at > '9000-01-01'")
        .await;
    assert_eq!(held, 1, "at the held time");

    let enabled = s.set_trigger_enabled(t.id, true).await.unwrap();
    assert!(enabled.enabled);
    drain(&host, Duration::from_secs(30)).await;
    let after = dead_letters(s, app.id).await;
    assert_eq!(after.len(), 2, "released, it ran (and failed again)");
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

// ----------------------------------------- finding 9: control characters

/// Before: SQLite stored a NUL in a collection; PostgreSQL answered
/// `unavailable`, so the bad argument was retried as if transient.
async fn control_characters_in_names_are_invalid_arguments(db: &TestDb) {
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "names").await;
    let abuse = h::deploy(&rt, app.id, "abuse", guests::TENANT_ABUSE).await;
    let reply = invoke(&rt, &abuse, json!({"mode": "nul-name"}))
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!(
            "invalid argument: collection has a control character (U+0000) at byte 1: use printable text"
        )
    );
    for (collection, key) in [("a\0b", "k"), ("c", "k\n"), ("c\u{1b}[31m", "k")] {
        let err = s
            .kv_set(app.id, collection, key, &json!(1), 0)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("control character"),
            "{collection:?}/{key:?}: {err}"
        );
        assert!(matches!(err, store::Error::Invalid(_)), "{err:?}");
    }
    assert!(matches!(
        s.create_app("bad\0name").await.unwrap_err(),
        store::Error::Invalid(_)
    ));
    assert!(matches!(
        s.set_member(app.id, "eve\u{7f}", Role::Viewer)
            .await
            .unwrap_err(),
        store::Error::Invalid(_)
    ));
    assert_eq!(s.count_events(None).await.unwrap(), 0, "nothing written");
}

// ------------------------------------------------------- all at once

/// Every hostile tenant at once, against one dispatcher, while a
/// well-behaved app's 1,000 events all succeed on their first attempt.
async fn every_hostile_tenant_at_once_leaves_a_good_app_untouched(db: &TestDb) {
    let s = &db.store;
    let config = TriggerConfig {
        max_trigger_depth: 4,
        ..h::fast_retries(2)
    };
    let ceiling = SandboxCeiling {
        timeout: Duration::from_secs(10),
        memory_bytes: 64 << 20,
        max_host_calls: 200,
        max_enqueued: 20,
        ..h::ceiling()
    };
    let host = h::host(s, config, ceiling);
    let rt = host.runtime();
    let deploy = |app: AppId, name: &'static str, path: &'static str| async move {
        h::deploy(rt, app, name, path).await
    };

    // The well-behaved app: records `done/<key>` = the attempt.
    let good = h::app(s, "good").await;
    let script = deploy(good.id, "good", guests::TENANT_ABUSE).await;
    trigger(s, good.id, script.id, on("in"), ADMIN).await;

    // Storms of host calls and writes.
    let storms = h::app(s, "storms").await;
    let script = deploy(storms.id, "abuse", guests::TENANT_ABUSE).await;
    trigger(s, storms.id, script.id, on("in"), ADMIN).await;
    write_events(
        s,
        storms.id,
        "in",
        20,
        |i| json!({"mode": if i % 2 == 0 { "write-storm" } else { "call-storm" }}),
    )
    .await;

    // An amplifier: each write of `fan` writes 3 more, to the depth limit.
    let amplifier = h::app(s, "amplifier").await;
    let script = deploy(amplifier.id, "abuse", guests::TENANT_ABUSE).await;
    trigger(s, amplifier.id, script.id, on("fan"), ADMIN).await;
    s.kv_set(
        amplifier.id,
        "fan",
        "seed",
        &json!({"mode": "fan-out", "n": 3}),
        0,
    )
    .await
    .unwrap();

    // A replaying dead-letter handler.
    let replayer = h::app(s, "replayer").await;
    let fails = deploy(replayer.id, "fails", guests::ALWAYS_FAILS).await;
    let abuse = deploy(replayer.id, "abuse", guests::TENANT_ABUSE).await;
    trigger(s, replayer.id, fails.id, on("in"), ADMIN).await;
    trigger(s, replayer.id, abuse.id, on_dead_letters(), ADMIN).await;
    write_events(s, replayer.id, "in", 3, |i| json!(i)).await;

    // A reader of big dead letters.
    let hoarder = h::app(s, "hoarder").await;
    let script = deploy(hoarder.id, "abuse", guests::TENANT_ABUSE).await;
    trigger(s, hoarder.id, script.id, on("in"), ADMIN).await;
    for _ in 0..12 {
        s.dead_letter(&big_dead_letter(hoarder.id, 1 << 20), false, &[])
            .await
            .unwrap();
    }
    write_events(
        s,
        hoarder.id,
        "in",
        4,
        |_| json!({"mode": "read-dead-letters", "calls": 6}),
    )
    .await;

    // Two memories past the ceiling; components at the core-instance cap;
    // deep values and NUL names through host calls.
    let shapes = h::app(s, "shapes").await;
    let two = rt
        .deploy(shapes.id, "two", &guests::with_two_memories(40 * 16))
        .await
        .unwrap();
    trigger(s, shapes.id, two.id, on("memory"), ADMIN).await;
    let maximal = rt
        .deploy(shapes.id, "maximal", &guests::with_core_instances(16))
        .await
        .unwrap();
    trigger(s, shapes.id, maximal.id, on("maximal"), ADMIN).await;
    let script = deploy(shapes.id, "abuse", guests::TENANT_ABUSE).await;
    trigger(s, shapes.id, script.id, on("names"), ADMIN).await;
    write_events(s, shapes.id, "memory", 5, |i| json!(i)).await;
    write_events(s, shapes.id, "maximal", 50, |i| json!(i)).await;
    write_events(
        s,
        shapes.id,
        "names",
        10,
        |i| json!({"mode": if i % 2 == 0 { "deep" } else { "nul-name" }}),
    )
    .await;

    // A backlog of 10,000 due events, and a poisoned row.
    let backlog = h::app(s, "backlog").await;
    let noop = deploy(backlog.id, "noop", guests::NOOP).await;
    trigger(s, backlog.id, noop.id, on("in"), ADMIN).await;
    write_events(s, backlog.id, "in", 10_000, |i| json!(i)).await;
    poison(db, "k9999", 200).await;

    // The good app's events come last, behind everything else.
    write_events(s, good.id, "in", 1000, |_| json!({"mode": "ok"})).await;

    let started = std::time::Instant::now();
    drain(&host, Duration::from_secs(300)).await;
    println!(
        "all hostile tenants at once ({:?}): drained in {:.1} s, {:?}",
        db.backend,
        started.elapsed().as_secs_f64(),
        host.metrics()
    );

    // The good app: every event once, on its first attempt.
    let done = s.kv_list_keys(good.id, "done", None, 1000).await.unwrap();
    assert_eq!(done.len(), 1000);
    let firsts: i64 = db
        .count(&format!(
            "select count(*) from kv_entries where app_id = '{}' and collection = 'done' and version = 1 and value = '1'",
            good.id
        ))
        .await;
    assert_eq!(
        firsts, 1000,
        "every good event succeeded on its first attempt"
    );
    assert!(dead_letters(s, good.id).await.is_empty());

    // Each hostile tenant paid for itself, with the limit named.
    let errors =
        |dead: Vec<DeadLetter>| -> Vec<String> { dead.into_iter().map(|d| d.last_error).collect() };
    let storm_errors = errors(dead_letters(s, storms.id).await);
    assert_eq!(storm_errors.len(), 20, "{storm_errors:?}");
    assert_eq!(
        storm_errors
            .iter()
            .filter(|e| e.starts_with("event limit of 20 "))
            .count(),
        10
    );
    assert_eq!(
        storm_errors
            .iter()
            .filter(|e| e.starts_with("host call limit of 200 "))
            .count(),
        10
    );
    let hoard_errors = errors(dead_letters(s, hoarder.id).await);
    assert_eq!(
        hoard_errors
            .iter()
            .filter(|e| e.starts_with("host answer limit of 16777216 bytes"))
            .count(),
        4,
        "{hoard_errors:?}"
    );
    let shape_errors = errors(dead_letters(s, shapes.id).await);
    assert_eq!(
        shape_errors.len(),
        5,
        "only the memory hogs failed: {shape_errors:?}"
    );
    assert!(
        shape_errors
            .iter()
            .all(|e| e == "memory limit 64 MiB exceeded")
    );
    // Each of the 3 failing events: dead letters at depths 0, 2 and 4; the
    // last one's event is past the limit of 4 (the recursion stop).
    let replays = dead_letters(s, replayer.id).await;
    assert_eq!(replays.len(), 3 * 3, "the depth limit ended the replays");
    let poisoned = errors(dead_letters(s, backlog.id).await);
    assert_eq!(poisoned.len(), 1);
    assert!(poisoned[0].contains("cannot be decoded"));
    assert_eq!(
        s.kv_list_keys(amplifier.id, "fan", None, 1000)
            .await
            .unwrap()
            .len(),
        1 + 3 + 9 + 27 + 81 + 243,
        "the seed and what it amplified to, stopped at the depth limit"
    );
    assert_eq!(
        dead_letters(s, amplifier.id).await.len(),
        243,
        "too deep to run"
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

/// The caps leave room: every guest of this repository, examples and
/// fixtures, has far fewer core instances, memories and tables. Prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repositorys_guests_fit_well_within_the_caps() {
    use picloud_host::runtime::DeployError;
    let db = db::sqlite().await;
    let s = &db.store;
    let app = h::app(s, "sizes").await;
    // One cap at a time set to 1 makes the engine report that count (a
    // count of 1 or none deploys: reported as 1).
    let count = |ceiling: SandboxCeiling, wasm: Vec<u8>| {
        let rt = h::runtime(s, ceiling);
        async move {
            match rt.deploy(app.id, "probe", &wasm).await {
                Err(DeployError::OverCap { count, .. }) => count,
                Ok(_) => 1,
                // The fixture that is not a trigger (a WASI command).
                Err(DeployError::MissingExport) => 0,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let d = SandboxCeiling::default();
    for (name, path) in guests::ALL {
        let wasm = guests::wasm(path);
        let caps: [fn(&mut SandboxCeiling); 3] = [
            |c| c.component_core_instances = 1,
            |c| c.component_memories = 1,
            |c| c.component_tables = 1,
        ];
        let mut counts = Vec::new();
        for cap in caps {
            let mut ceiling = h::ceiling();
            cap(&mut ceiling);
            counts.push(count(ceiling, wasm.clone()).await);
        }
        let [instances, memories, tables] = counts[..] else {
            unreachable!("three caps")
        };
        if instances == 0 {
            continue;
        }
        println!("{name}: {instances} core instances, {memories} memories, {tables} tables");
        assert!(
            instances * 2 <= u64::from(d.component_core_instances),
            "{name}"
        );
        assert!(memories <= 1, "{name}");
        assert!(tables * 2 <= u64::from(d.component_tables), "{name}");
    }
}
