//! The guest contract end to end: real components built from this repository
//! run through the sandboxed runtime, with the effects of their host calls
//! asserted in the store, on both backends where the store is involved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_host::auth::Role;
use picloud_host::model::{EventId, NewDeadLetter, Resolution, Timestamp, source};
use picloud_host::runtime::{DeployError, InvokeError, LimitExceeded, Runtime};
use picloud_host::store::Store;
use picloud_tests::db::TestDb;
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use serde_json::{Value, json};

picloud_tests::contract!(
    order_totals_derives_a_total,
    audit_log_records_each_event_once,
    payment_processor_fails_on_declined_cards,
    dead_letter_triage_resolves_by_error,
    greeter_replies,
    viewer_cannot_write_and_removed_member_cannot_read,
    apps_cannot_reach_each_other,
    deploy_rejections_store_nothing,
    redeploy_replaces_code_and_cache_survives_restart,
);

fn store(db: &TestDb) -> &Arc<dyn Store> {
    &db.store
}

async fn order_totals_derives_a_total(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "shop").await;
    let script = h::deploy(&rt, app.id, "order-totals", guests::ORDER_TOTALS).await;
    let order = json!({"customer": "ada", "items": [
        {"sku": "tea", "qty": 2, "price_cents": 450},
        {"sku": "mug", "qty": 1, "price_cents": 1200}
    ]});
    let payload = json!({"collection": "orders", "key": "o-1", "value": order, "version": 1});
    let inv = h::invocation(app.id, script.id, source::KV, "set", payload, ADMIN);
    rt.invoke(&script, inv)
        .await
        .expect("order-totals succeeds");

    let total = s
        .kv_get(app.id, "order_totals", "o-1")
        .await
        .unwrap()
        .expect("total written");
    assert_eq!(total.value["total_cents"], json!(2100));
    assert_eq!(total.value["customer"], json!("ada"));
    // The write enqueued its own kv event one level deeper.
    let rows = s.claim_due("t", 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].source, "kv");
    assert_eq!(rows[0].payload["collection"], json!("order_totals"));
    assert_eq!(rows[0].depth, 1);

    // A delete removes the total.
    let payload = json!({"collection": "orders", "key": "o-1", "value": null, "version": 2});
    let inv = h::invocation(app.id, script.id, source::KV, "delete", payload, ADMIN);
    rt.invoke(&script, inv).await.expect("delete handled");
    assert!(
        s.kv_get(app.id, "order_totals", "o-1")
            .await
            .unwrap()
            .is_none()
    );

    // A malformed order is the handler's error, not a crash.
    let payload =
        json!({"collection": "orders", "key": "o-2", "value": {"items": "x"}, "version": 1});
    let inv = h::invocation(app.id, script.id, source::KV, "set", payload, ADMIN);
    let err = rt.invoke(&script, inv).await.unwrap_err();
    assert!(matches!(err.error, InvokeError::Handler(_)), "{err}");
}

async fn audit_log_records_each_event_once(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "audited").await;
    let script = h::deploy(&rt, app.id, "audit-log", guests::AUDIT_LOG).await;
    let inv = h::invocation(app.id, script.id, "queue", "push", json!({"job": 7}), ADMIN);
    let id = inv.event_id.to_string();
    // Delivered twice (at-least-once): one entry, keyed by the event id.
    rt.invoke(&script, inv.clone())
        .await
        .expect("first delivery");
    let ok = rt.invoke(&script, inv).await.expect("second delivery");
    let entry = s
        .kv_get(app.id, "audit", &id)
        .await
        .unwrap()
        .expect("audit entry");
    assert_eq!(entry.value["source"], json!("queue"));
    assert_eq!(entry.value["payload"]["job"], json!(7));
    assert_eq!(
        s.kv_list_keys(app.id, "audit", None, 100).await.unwrap(),
        vec![id]
    );
    assert!(!ok.logs.is_empty(), "the audit logger logs a line");
}

async fn payment_processor_fails_on_declined_cards(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "payments").await;
    let script = h::deploy(&rt, app.id, "payment-processor", guests::PAYMENT_PROCESSOR).await;
    let pay = |key: &str, v: Value| json!({"collection": "payments", "key": key, "value": v, "version": 1});

    let inv = h::invocation(
        app.id,
        script.id,
        "kv",
        "set",
        pay("p1", json!({"amount_cents": 500, "card": "4242"})),
        ADMIN,
    );
    rt.invoke(&script, inv).await.expect("good payment");
    assert!(s.kv_get(app.id, "receipts", "p1").await.unwrap().is_some());

    let inv = h::invocation(
        app.id,
        script.id,
        "kv",
        "set",
        pay("p2", json!({"amount_cents": 500, "card": "decline-0001"})),
        ADMIN,
    );
    let err = rt.invoke(&script, inv).await.unwrap_err();
    assert!(err.to_string().contains("payment declined"), "{err}");

    let inv = h::invocation(
        app.id,
        script.id,
        "kv",
        "set",
        pay("p3", json!({"amount_cents": 0, "card": "4242"})),
        ADMIN,
    );
    let err = rt.invoke(&script, inv).await.unwrap_err();
    assert!(err.to_string().contains("invalid payment"), "{err}");
    assert!(s.kv_get(app.id, "receipts", "p2").await.unwrap().is_none());
}

async fn dead_letter(
    s: &Arc<dyn Store>,
    app: picloud_host::model::AppId,
    value: Value,
    error: &str,
) -> picloud_host::model::DeadLetter {
    let now = Timestamp::now();
    let dead = NewDeadLetter {
        original_event_id: EventId::new(),
        app_id: app,
        source: "kv".into(),
        op: "set".into(),
        trigger_id: None,
        script_id: None,
        payload: json!({"collection": "payments", "key": "k", "value": value, "version": 1}),
        depth: 0,
        attempt_count: 5,
        first_attempt_at: now,
        last_attempt_at: now,
        last_error: error.into(),
    };
    s.dead_letter(&dead, false, &[])
        .await
        .expect("dead letter stored")
}

fn dead_letter_event(dl: &picloud_host::model::DeadLetter) -> Value {
    json!({
        "dead_letter_id": dl.id, "source": dl.source, "op": dl.op,
        "trigger_id": dl.trigger_id, "script_id": dl.script_id,
        "attempt_count": dl.attempt_count, "last_error": dl.last_error, "payload": dl.payload,
    })
}

async fn dead_letter_triage_resolves_by_error(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "triage").await;
    let script = h::deploy(
        &rt,
        app.id,
        "dead-letter-triage",
        guests::DEAD_LETTER_TRIAGE,
    )
    .await;
    let run = |dl: &picloud_host::model::DeadLetter| {
        h::invocation(
            app.id,
            script.id,
            source::DEAD_LETTER,
            "created",
            dead_letter_event(dl),
            ADMIN,
        )
    };

    let declined = dead_letter(
        s,
        app.id,
        json!({"card": "decline-1"}),
        "payment declined: card decline-1",
    )
    .await;
    rt.invoke(&script, run(&declined))
        .await
        .expect("declined is handled");
    let after = s.get_dead_letter(declined.id).await.unwrap();
    assert_eq!(after.resolution, Some(Resolution::HandledByScript));
    assert!(
        s.kv_get(app.id, "manual_review", &declined.id.to_string())
            .await
            .unwrap()
            .is_some()
    );

    let invalid = dead_letter(
        s,
        app.id,
        json!({"amount_cents": 0}),
        "invalid payment: amount must be positive",
    )
    .await;
    rt.invoke(&script, run(&invalid))
        .await
        .expect("invalid is ignored");
    assert_eq!(
        s.get_dead_letter(invalid.id).await.unwrap().resolution,
        Some(Resolution::Ignored)
    );

    let poison = dead_letter(s, app.id, json!({"poison": true}), "payment declined: x").await;
    let err = rt.invoke(&script, run(&poison)).await.unwrap_err();
    assert!(matches!(err.error, InvokeError::Handler(_)), "{err}");
    assert_eq!(
        s.get_dead_letter(poison.id).await.unwrap().resolution,
        Some(Resolution::HandlerFailed)
    );

    let other = dead_letter(s, app.id, json!({}), "timeout after 5000 ms").await;
    rt.invoke(&script, run(&other)).await.unwrap_err();
    assert_eq!(
        s.get_dead_letter(other.id).await.unwrap().resolution,
        None,
        "left for the host's retries"
    );
    assert_eq!(s.unresolved_count(app.id).await.unwrap(), 1);
}

async fn greeter_replies(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "hello").await;
    let script = h::deploy(&rt, app.id, "greeter", guests::GREETER).await;
    let inv = h::invocation(
        app.id,
        script.id,
        source::HTTP,
        "invoke",
        json!({"name": "Ada"}),
        ADMIN,
    );
    let ok = rt.invoke(&script, inv).await.expect("greeting");
    let body: Value = serde_json::from_slice(&ok.reply.expect("a reply body")).unwrap();
    assert_eq!(body["greeting"], json!("hello, Ada"));

    let inv = h::invocation(app.id, script.id, source::HTTP, "invoke", json!({}), ADMIN);
    let err = rt.invoke(&script, inv).await.unwrap_err();
    assert_eq!(err.to_string(), "missing field: name");
}

async fn probe(
    rt: &Runtime,
    script: &picloud_host::model::Script,
    app: picloud_host::model::AppId,
    principal: &str,
    call: Value,
) -> Result<Value, String> {
    let inv = h::invocation(app, script.id, source::HTTP, "invoke", call, principal);
    match rt.invoke(script, inv).await {
        Ok(ok) => Ok(ok
            .reply
            .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
            .unwrap_or(Value::Null)),
        Err(f) => Err(f.to_string()),
    }
}

async fn viewer_cannot_write_and_removed_member_cannot_read(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "perm").await;
    let script = h::deploy(&rt, app.id, "kv-probe", guests::KV_PROBE).await;
    s.set_member(app.id, "victor", Role::Viewer).await.unwrap();
    s.kv_set(app.id, "c", "k", &json!(1), 0).await.unwrap();

    let set = json!({"call": "set", "collection": "c", "key": "k", "value": 2});
    assert_eq!(
        probe(&rt, &script, app.id, "victor", set.clone()).await,
        Err("permission denied".into())
    );
    assert_eq!(
        s.kv_get(app.id, "c", "k").await.unwrap().unwrap().value,
        json!(1),
        "nothing written"
    );

    let get = json!({"call": "get", "collection": "c", "key": "k"});
    assert!(
        probe(&rt, &script, app.id, "victor", get.clone())
            .await
            .is_ok(),
        "a viewer may read"
    );
    s.remove_member(app.id, "victor").await.unwrap();
    assert_eq!(
        probe(&rt, &script, app.id, "victor", get).await,
        Err("permission denied".into())
    );

    // An admin may write, and the write enqueues its event.
    assert!(probe(&rt, &script, app.id, ADMIN, set).await.is_ok());
    assert_eq!(
        s.kv_get(app.id, "c", "k").await.unwrap().unwrap().value,
        json!(2)
    );
}

async fn apps_cannot_reach_each_other(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(s, h::ceiling());
    let a = h::app(s, "app-a").await;
    let b = h::app(s, "app-b").await;
    let script = h::deploy(&rt, a.id, "kv-probe", guests::KV_PROBE).await;
    s.kv_set(b.id, "secrets", "k", &json!("b's"), 0)
        .await
        .unwrap();
    let b_dead = dead_letter(s, b.id, json!({}), "boom").await;

    // ADMIN is admin of both apps, yet a script of A only ever sees A.
    let got = probe(
        &rt,
        &script,
        a.id,
        ADMIN,
        json!({"call": "get", "collection": "secrets", "key": "k"}),
    )
    .await;
    assert_eq!(got, Ok(Value::Null));
    let got = probe(
        &rt,
        &script,
        a.id,
        ADMIN,
        json!({"call": "dl-get", "id": b_dead.id}),
    )
    .await;
    assert_eq!(got, Ok(Value::Null));
    let listed = probe(&rt, &script, a.id, ADMIN, json!({"call": "dl-list"}))
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    let resolved = probe(
        &rt,
        &script,
        a.id,
        ADMIN,
        json!({"call": "dl-resolve", "id": b_dead.id, "resolution": "ignored"}),
    )
    .await;
    assert!(resolved.unwrap_err().starts_with("not found"));
    assert_eq!(s.get_dead_letter(b_dead.id).await.unwrap().resolution, None);
}

async fn deploy_rejections_store_nothing(db: &TestDb) {
    let s = store(db);
    let rt = h::runtime(
        s,
        picloud_host::config::SandboxCeiling {
            script_max_bytes: 1 << 20,
            ..h::ceiling()
        },
    );
    let app = h::app(s, "deploys").await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not-wasm",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "not a WebAssembly file: build the script with `cargo build --target wasm32-wasip2`",
        ),
        (
            "rlib",
            b"!<arch>\n/               0           0     0     0       8         `\n".to_vec(),
            "this is a Rust library archive (.rlib), not a component: add `[lib] crate-type = [\"cdylib\"]`",
        ),
        (
            "truncated",
            std::fs::read(guests::NOOP).unwrap()[..100].to_vec(),
            "invalid component: ",
        ),
        (
            "core",
            guests::wat("core-module"),
            "this is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target",
        ),
        (
            "no-export",
            guests::wat("no-handle-export"),
            "component does not export `handle`: it does not implement the picloud:trigger/trigger world",
        ),
        (
            "evil",
            guests::wat("unknown-import"),
            "component imports instance `acme:evil/rootkit@1.0.0`, which the host does not provide",
        ),
        (
            "big",
            vec![0u8; (1 << 20) + 1],
            "script is 1048577 bytes, over the limit of 1048576 bytes (PICLOUD_SCRIPT_MAX_BYTES)",
        ),
    ];
    for (name, wasm, want) in cases {
        let err = rt
            .deploy(app.id, name, &wasm)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{name}: got {err:?}, want {want:?}");
        assert!(!err.contains('\n'), "{name}: one line: {err:?}");
    }
    let noop = std::fs::read(guests::NOOP).unwrap();
    let err = rt.deploy(app.id, "bad name!", &noop).await.unwrap_err();
    assert!(matches!(err, DeployError::BadName(_)));
    assert!(
        s.list_scripts(app.id).await.unwrap().is_empty(),
        "nothing stored"
    );
}

async fn redeploy_replaces_code_and_cache_survives_restart(db: &TestDb) {
    let s = store(db);
    let dir = h::cache_dir();
    let auth = Arc::new(picloud_host::auth::MemberAuthorizer::new(s.clone()));
    let rt = Runtime::new(h::ceiling(), s.clone(), auth.clone(), Some(dir.clone())).unwrap();
    let app = h::app(s, "cache").await;
    let first = h::deploy(&rt, app.id, "script", guests::NOOP).await;
    let second = h::deploy(&rt, app.id, "script", guests::GREETER).await;
    assert_eq!(first.id, second.id, "a redeploy keeps the script's id");
    assert_ne!(first.sha256, second.sha256);
    let inv = h::invocation(
        app.id,
        second.id,
        source::HTTP,
        "invoke",
        json!({"name": "x"}),
        ADMIN,
    );
    assert!(
        rt.invoke(&second, inv.clone())
            .await
            .unwrap()
            .reply
            .is_some(),
        "new code runs"
    );

    // A new process (runtime) with the same cache dir loads, not compiles.
    let restarted = Runtime::new(h::ceiling(), s.clone(), auth, Some(dir)).unwrap();
    restarted.invoke(&second, inv).await.unwrap();
    let stats = restarted.cache_stats();
    assert_eq!(stats.compiled.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        stats.disk_hits.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

// ---- Hostile guests (no store effects involved: SQLite is enough). ----

async fn hostile_case(mode: Value) -> (InvokeError, Duration) {
    let db = picloud_tests::db::sqlite().await;
    let s = &db.store;
    let rt = Arc::new(h::runtime(s, h::ceiling()));
    let app = h::app(s, "hostile").await;
    let bad = h::deploy(&rt, app.id, "hostile", guests::HOSTILE).await;
    let good = h::deploy(&rt, app.id, "greeter", guests::GREETER).await;

    // A well-behaved invocation keeps running beside the hostile one.
    let rt2 = rt.clone();
    let good_inv = h::invocation(
        app.id,
        good.id,
        source::HTTP,
        "invoke",
        json!({"name": "ok"}),
        ADMIN,
    );
    let neighbour = tokio::spawn(async move {
        let mut n = 0;
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            rt2.invoke(&good, good_inv.clone())
                .await
                .expect("the neighbour is unaffected");
            n += 1;
        }
        n
    });
    let started = Instant::now();
    let inv = h::invocation(app.id, bad.id, source::HTTP, "invoke", mode, ADMIN);
    let err = rt
        .invoke(&bad, inv)
        .await
        .expect_err("hostile guest fails")
        .error;
    let took = started.elapsed();
    assert!(
        neighbour.await.unwrap() > 0,
        "the neighbour completed invocations"
    );
    // The host is still healthy afterwards.
    let again = h::invocation(
        app.id,
        bad.id,
        source::HTTP,
        "invoke",
        json!({"mode": "ok"}),
        ADMIN,
    );
    rt.invoke(&bad, again)
        .await
        .expect("the same script runs fine next time");
    (err, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_within_the_deadline() {
    let (err, took) = hostile_case(json!({"mode": "loop"})).await;
    assert_eq!(err.to_string(), "timeout after 1000 ms");
    assert!(
        took < Duration::from_millis(1000 + 250),
        "ended after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_limit() {
    let (err, _) = hostile_case(json!({"mode": "memory"})).await;
    assert_eq!(err, InvokeError::Limit(LimitExceeded::Memory { mib: 32 }));
    assert_eq!(err.to_string(), "memory limit 32 MiB exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_overflows_the_stack() {
    let (err, _) = hostile_case(json!({"mode": "recursion"})).await;
    assert_eq!(err.to_string(), "stack overflow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_is_cut_at_the_limit() {
    let (err, _) = hostile_case(json!({"mode": "log-flood"})).await;
    assert_eq!(err.to_string(), "log limit exceeded (16384 bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_is_cut_at_the_limit() {
    let (err, _) = hostile_case(json!({"mode": "stdout-flood"})).await;
    assert_eq!(err.to_string(), "log limit exceeded (16384 bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_reply_is_refused() {
    let (err, _) = hostile_case(json!({"mode": "big-reply", "bytes": 100_000})).await;
    assert_eq!(
        err.to_string(),
        "reply of 100000 bytes exceeds the reply limit of 65536 bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap_that_names_the_panic() {
    let (err, _) = hostile_case(json!({"mode": "trap"})).await;
    let text = err.to_string();
    assert!(text.starts_with("trap: "), "{text}");
    assert!(text.contains("panicked at "), "{text}");
    // The message too, though the guest printed it on a line of its own.
    assert!(text.contains("hostile guest panicked on purpose"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_within_the_limit_is_kept() {
    let db = picloud_tests::db::sqlite().await;
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "logs").await;
    let script = h::deploy(&rt, app.id, "audit-log", guests::AUDIT_LOG).await;
    let inv = h::invocation(app.id, script.id, "cron", "tick", json!({}), ADMIN);
    let ok = rt.invoke(&script, inv).await.unwrap();
    let total: usize = ok.logs.iter().map(|l| l.message.len()).sum();
    assert!(total > 0 && total <= 16 * 1024);
}
