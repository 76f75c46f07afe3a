//! The dispatcher's rules (SPEC section 5, 7 and 10), one or more tests per
//! rule, with real example scripts on both backends.

use std::sync::Arc;
use std::time::Duration;

use picloud_host::InvokeCallError;
use picloud_host::TriggerHost;
use picloud_host::auth::Role;
use picloud_host::model::{
    AppId, DeadLetterFilter, KvOps, NewTrigger, Resolution, ScriptId, TriggerSpec,
};
use picloud_host::runtime::Runtime;
use picloud_host::store::Store;
use picloud_tests::db::TestDb;
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use serde_json::json;

picloud_tests::contract!(
    success_deletes_the_row,
    failing_trigger_retries_then_dead_letters_and_fires_dead_letter_trigger,
    failing_dead_letter_handler_stops_the_recursion,
    depth_limit_stops_a_self_triggering_script,
    only_the_failing_trigger_runs_again,
    replay_reruns_the_original_trigger,
    synchronous_invocation_replies_fails_and_abandons,
    rows_of_a_dead_dispatcher_are_picked_up_after_the_lease,
    revoked_principal_gets_permission_denied_dead_letters,
    stopping_leaves_no_row_leased_and_loses_none,
    a_backlog_does_not_hold_back_another_apps_event,
);

async fn kv_trigger(
    s: &Arc<dyn Store>,
    app: AppId,
    script: ScriptId,
    collection: &str,
    principal: &str,
) -> picloud_host::model::Trigger {
    s.create_trigger(&NewTrigger {
        app_id: app,
        script_id: script,
        name: format!("on-{collection}"),
        registered_by_principal: principal.into(),
        spec: TriggerSpec::Kv {
            collection: collection.into(),
            ops: KvOps::ALL,
            ordered: false,
        },
        retry: Default::default(),
        max_depth: None,
    })
    .await
    .expect("kv trigger")
}

async fn dead_letter_trigger(
    s: &Arc<dyn Store>,
    app: AppId,
    script: ScriptId,
    pattern: &str,
) -> picloud_host::model::Trigger {
    s.create_trigger(&NewTrigger {
        app_id: app,
        script_id: script,
        name: "triage".into(),
        registered_by_principal: ADMIN.into(),
        spec: TriggerSpec::DeadLetter {
            source: pattern.into(),
        },
        retry: Default::default(),
        max_depth: None,
    })
    .await
    .expect("dead letter trigger")
}

async fn drain(host: &TriggerHost) {
    tokio::time::timeout(Duration::from_secs(60), host.run_until_empty())
        .await
        .expect("the outbox drains within a minute")
        .expect("dispatch ran");
}

/// `n` kv `set` events on `collection` (keys `k0`..), written in batches.
async fn enqueue_kv_events(s: &Arc<dyn Store>, app: AppId, collection: &str, n: usize) {
    let events: Vec<_> = (0..n)
        .map(|i| {
            picloud_host::store::kv_event(
                app,
                picloud_host::model::KvOp::Set,
                collection,
                &format!("k{i}"),
                Some(&json!(i)),
                1,
                0,
            )
        })
        .collect();
    for chunk in events.chunks(1000) {
        s.enqueue_many(chunk).await.unwrap();
    }
}

fn rt(host: &TriggerHost) -> &Runtime {
    host.runtime()
}

async fn success_deletes_the_row(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    let app = h::app(s, "shop").await;
    let script = h::deploy(rt(&host), app.id, "order-totals", guests::ORDER_TOTALS).await;
    kv_trigger(s, app.id, script.id, "orders", ADMIN).await;
    let order = json!({"customer": "ada", "items": [{"sku": "x", "qty": 3, "price_cents": 100}]});
    s.kv_set(app.id, "orders", "o1", &order, 0).await.unwrap();
    drain(&host).await;
    assert_eq!(
        s.kv_get(app.id, "order_totals", "o1")
            .await
            .unwrap()
            .unwrap()
            .value["total_cents"],
        json!(300)
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0, "outbox empty");
    let m = host.metrics();
    assert_eq!(
        m.succeeded, 2,
        "the order event and the total's own event: {m:?}"
    );
    assert_eq!(m.dead_lettered, 0);
}

async fn failing_trigger_retries_then_dead_letters_and_fires_dead_letter_trigger(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    let app = h::app(s, "pay").await;
    let pay = h::deploy(
        rt(&host),
        app.id,
        "payment-processor",
        guests::PAYMENT_PROCESSOR,
    )
    .await;
    let triage = h::deploy(
        rt(&host),
        app.id,
        "dead-letter-triage",
        guests::DEAD_LETTER_TRIAGE,
    )
    .await;
    let trigger = kv_trigger(s, app.id, pay.id, "payments", ADMIN).await;
    dead_letter_trigger(s, app.id, triage.id, "kv").await;
    s.kv_set(
        app.id,
        "payments",
        "p1",
        &json!({"amount_cents": 100, "card": "decline-7"}),
        0,
    )
    .await
    .unwrap();
    drain(&host).await;

    let dls = s
        .list_dead_letters(&DeadLetterFilter {
            app_id: Some(app.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dls.len(), 1, "{dls:?}");
    let dl = &dls[0];
    assert_eq!(dl.attempt_count, 3);
    assert_eq!(dl.trigger_id, Some(trigger.id));
    assert_eq!(dl.script_id, Some(pay.id));
    assert!(
        dl.last_error.contains("payment declined"),
        "{}",
        dl.last_error
    );
    // Two backoffs (about 20 ms and 40 ms, ±10%) lie between the first and last attempt.
    let spread = (dl.last_attempt_at.0 - dl.first_attempt_at.0)
        .to_std()
        .unwrap();
    assert!(
        spread >= Duration::from_millis(54),
        "attempts spread over {spread:?}"
    );
    // The dead_letter event ran the triage handler, which resolved it.
    assert_eq!(dl.resolution, Some(Resolution::HandledByScript));
    assert!(
        s.kv_get(app.id, "manual_review", &dl.id.to_string())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
    let m = host.metrics();
    assert_eq!((m.retried, m.dead_lettered), (2, 1), "{m:?}");
}

async fn failing_dead_letter_handler_stops_the_recursion(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "rec").await;
    let fails = h::deploy(rt(&host), app.id, "always-fails", guests::ALWAYS_FAILS).await;
    kv_trigger(s, app.id, fails.id, "jobs", ADMIN).await;
    dead_letter_trigger(s, app.id, fails.id, "*").await;
    s.kv_set(app.id, "jobs", "j1", &json!({}), 0).await.unwrap();
    drain(&host).await;

    let dls = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(
        dls.len(),
        1,
        "no dead letter for the failing handler: {dls:?}"
    );
    assert_eq!(dls[0].resolution, Some(Resolution::HandlerFailed));
    assert_eq!(s.count_events(None).await.unwrap(), 0, "outbox empty");
    assert_eq!(host.metrics().recursion_stopped, 1);
}

async fn depth_limit_stops_a_self_triggering_script(db: &TestDb) {
    let s = &db.store;
    let config = picloud_host::config::TriggerConfig {
        max_trigger_depth: 3,
        ..h::fast_retries(2)
    };
    let host = h::host(s, config, h::ceiling());
    let app = h::app(s, "deep").await;
    let bomb = h::deploy(rt(&host), app.id, "depth-bomb", guests::DEPTH_BOMB).await;
    let recorder = h::deploy(rt(&host), app.id, "recorder", guests::RECORDER).await;
    kv_trigger(s, app.id, bomb.id, "loop", ADMIN).await;
    dead_letter_trigger(s, app.id, recorder.id, "*").await;
    s.kv_set(app.id, "loop", "k", &json!({"n": 0}), 0)
        .await
        .unwrap();
    drain(&host).await;

    // Depths 0..=3 ran, each writing one key; the write at depth 4 was refused.
    let keys = s.kv_list_keys(app.id, "loop", None, 100).await.unwrap();
    assert_eq!(keys.len(), 5, "{keys:?}");
    let dls = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dls.len(), 1);
    // The dead letter names the triggers that led to it, newest first.
    assert_eq!(
        dls[0].last_error,
        "max trigger depth 3 exceeded; caused by triggers (newest first): \
         on-loop <- on-loop <- on-loop <- on-loop"
    );
    assert_eq!(dls[0].trigger_id, None);
    assert!(
        s.kv_list_keys(app.id, "seen", None, 100)
            .await
            .unwrap()
            .is_empty(),
        "no dead_letter event after it"
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

async fn only_the_failing_trigger_runs_again(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    let app = h::app(s, "two").await;
    let recorder = h::deploy(rt(&host), app.id, "recorder", guests::RECORDER).await;
    let fails = h::deploy(rt(&host), app.id, "always-fails", guests::ALWAYS_FAILS).await;
    kv_trigger(s, app.id, recorder.id, "events", ADMIN).await;
    let failing = kv_trigger(s, app.id, fails.id, "events", ADMIN).await;
    s.kv_set(app.id, "events", "e1", &json!(1), 0)
        .await
        .unwrap();
    drain(&host).await;

    let seen = s.kv_list_keys(app.id, "seen", None, 100).await.unwrap();
    assert_eq!(seen.len(), 1, "the recorder ran once: {seen:?}");
    let attempt = s
        .kv_get(app.id, "seen", &seen[0])
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(attempt, json!(1));
    let dls = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].trigger_id, Some(failing.id));
    assert_eq!(dls[0].attempt_count, 3);
}

async fn replay_reruns_the_original_trigger(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(1), h::ceiling());
    let app = h::app(s, "replay").await;
    let fails = h::deploy(rt(&host), app.id, "always-fails", guests::ALWAYS_FAILS).await;
    let trigger = kv_trigger(s, app.id, fails.id, "jobs", ADMIN).await;
    s.kv_set(app.id, "jobs", "j", &json!({}), 0).await.unwrap();
    drain(&host).await;
    let first = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt_count, 1);

    let replayed = s.resolve(first[0].id, Resolution::Replayed).await.unwrap();
    assert_eq!(replayed.resolution, Some(Resolution::Replayed));
    drain(&host).await;
    let all = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        2,
        "the replay ran the trigger again and failed again"
    );
    let second = all.iter().find(|d| d.id != first[0].id).unwrap();
    assert_eq!(second.trigger_id, Some(trigger.id));
    assert_eq!(second.payload, first[0].payload);
    assert_eq!(
        s.get_dead_letter(first[0].id).await.unwrap().resolution,
        Some(Resolution::Replayed)
    );
}

async fn synchronous_invocation_replies_fails_and_abandons(db: &TestDb) {
    let s = &db.store;
    let host = Arc::new(h::host(s, h::fast_retries(3), h::ceiling()));
    let app = h::app(s, "sync").await;
    h::deploy(rt(&host), app.id, "greeter", guests::GREETER).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = {
        let (host, cancel) = (host.clone(), cancel.clone());
        tokio::spawn(async move { host.run(cancel).await })
    };
    let t = Duration::from_secs(10);
    let body = host
        .invoke(app.id, "greeter", json!({"name": "Bo"}), ADMIN, t)
        .await
        .expect("reply");
    let body: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(body["greeting"], json!("hello, Bo"));

    let err = host
        .invoke(app.id, "greeter", json!({}), ADMIN, t)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InvokeCallError::Failed(m) if m == "missing field: name"),
        "{err}"
    );
    let err = host
        .invoke(app.id, "greeter", json!({}), "mallory", t)
        .await
        .unwrap_err();
    assert!(
        matches!(err, InvokeCallError::PermissionDenied { .. }),
        "{err}"
    );
    cancel.cancel();
    runner.await.unwrap().unwrap();
    assert!(
        s.list_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "never dead-lettered"
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0, "never retried");

    // A caller that gives up before anyone runs the invocation (the runner
    // has stopped). The timeout is long enough for the check and the insert
    // to finish on a loaded machine; the insert runs on its own task, so the
    // test waits for its row before draining.
    let err = host
        .invoke(
            app.id,
            "greeter",
            json!({"name": "late"}),
            ADMIN,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, InvokeCallError::Timeout { ms: 2000 }),
        "{err}"
    );
    let enqueued = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.count_events(None).await.unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < enqueued,
            "the timed-out invocation's row never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drain(&host).await;
    let gone = s.list_abandoned(Some(app.id)).await.unwrap();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0].outcome, picloud_host::model::Outcome::Ok);
    assert_eq!(host.metrics().abandoned, 1);
}

async fn rows_of_a_dead_dispatcher_are_picked_up_after_the_lease(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    let app = h::app(s, "lease").await;
    let recorder = h::deploy(rt(&host), app.id, "recorder", guests::RECORDER).await;
    kv_trigger(s, app.id, recorder.id, "in", ADMIN).await;
    for i in 0..20 {
        s.kv_set(app.id, "in", &format!("k{i}"), &json!(i), 0)
            .await
            .unwrap();
    }
    // A dispatcher claims everything and dies.
    let stolen = s
        .claim_due("dead-worker", 100, Duration::from_millis(700))
        .await
        .unwrap();
    assert_eq!(stolen.len(), 20);
    host.run_until_idle().await.unwrap();
    assert!(
        s.kv_list_keys(app.id, "seen", None, 100)
            .await
            .unwrap()
            .is_empty(),
        "leased rows are left alone"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    drain(&host).await;
    assert_eq!(
        s.kv_list_keys(app.id, "seen", None, 100)
            .await
            .unwrap()
            .len(),
        20
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

async fn revoked_principal_gets_permission_denied_dead_letters(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "revoke").await;
    s.set_member(app.id, "bob", Role::Developer).await.unwrap();
    let script = h::deploy(rt(&host), app.id, "order-totals", guests::ORDER_TOTALS).await;
    kv_trigger(s, app.id, script.id, "orders", "bob").await;
    let order = json!({"customer": "c", "items": [{"sku": "x", "qty": 1, "price_cents": 5}]});
    s.kv_set(app.id, "orders", "before", &order, 0)
        .await
        .unwrap();
    drain(&host).await;
    assert!(
        s.kv_get(app.id, "order_totals", "before")
            .await
            .unwrap()
            .is_some()
    );

    s.remove_member(app.id, "bob").await.unwrap();
    s.kv_set(app.id, "orders", "after", &order, 0)
        .await
        .unwrap();
    drain(&host).await;
    assert!(
        s.kv_get(app.id, "order_totals", "after")
            .await
            .unwrap()
            .is_none()
    );
    let dls = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dls.len(), 1);
    assert!(
        dls[0].last_error.contains("permission denied"),
        "{}",
        dls[0].last_error
    );
}

async fn stopping_leaves_no_row_leased_and_loses_none(db: &TestDb) {
    let s = &db.store;
    // Two instances and a no-op script: the dispatcher claims several rows
    // per instance ahead of running them. Stopped mid-way, it finishes what
    // it started, gives back the leases of the rest and commits everything.
    let ceiling = picloud_host::config::SandboxCeiling {
        max_instances: 2,
        ..h::ceiling()
    };
    let host = Arc::new(h::host(s, h::fast_retries(3), ceiling));
    let app = h::app(s, "busy").await;
    let noop = h::deploy(rt(&host), app.id, "noop", guests::NOOP).await;
    kv_trigger(s, app.id, noop.id, "in", ADMIN).await;
    enqueue_kv_events(s, app.id, "in", 20_000).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = tokio::spawn({
        let (host, cancel) = (host.clone(), cancel.clone());
        async move { host.run(cancel).await }
    });
    while host.metrics().succeeded < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), runner)
        .await
        .expect("the dispatcher stops")
        .unwrap()
        .unwrap();
    let m = host.metrics();
    let left = s.count_events(None).await.unwrap();
    assert!(left > 0, "stopped before the end: {m:?}");
    assert_eq!(
        db.count("select count(*) from outbox where locked_by is not null")
            .await,
        0,
        "no row stays leased by a dispatcher that stopped: {m:?}"
    );
    assert_eq!(
        left as u64 + m.succeeded,
        20_000,
        "every event ran or is waiting, none twice"
    );
}

/// SPEC 5.9 on PostgreSQL: two dispatcher processes share one database; every
/// event is handled, none twice (no lease expires in this run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatcher_processes_share_one_postgres_database() {
    let events: usize = std::env::var("PICLOUD_TEST_TWO_PROCESS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let db = picloud_tests::db::postgres().await;
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "shared").await;
    let recorder = h::deploy(&rt, app.id, "recorder", guests::RECORDER).await;
    kv_trigger(s, app.id, recorder.id, "in", ADMIN).await;
    enqueue_kv_events(s, app.id, "in", events).await;

    // Output goes to files, never to a pipe read only after exit.
    let dir = picloud_tests::db::TempDir::new();
    let env = [(
        "PICLOUD_CACHE_DIR",
        std::env::temp_dir()
            .join("picloud-two-process-cache")
            .display()
            .to_string(),
    )];
    let args = ["dispatch", "--until-idle"];
    let mut a = picloud_tests::procs::spawn_host(&db.url, &args, &env, &dir.0, "a");
    let mut b = picloud_tests::procs::spawn_host(&db.url, &args, &env, &dir.0, "b");
    let succeeded = |p: &mut picloud_tests::procs::HostProcess| -> u64 {
        let status = p.wait_for_exit(Duration::from_secs(600), String::new);
        assert!(status.success(), "dispatcher failed: {}", p.stderr());
        let text = p.stdout();
        text.split("dispatched: ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {text}"))
    };
    let (na, nb) = (succeeded(&mut a), succeeded(&mut b));
    // A process may stop when it finds nothing due while the other still
    // runs; finish what is left here (there should be nothing).
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    host.run_until_empty().await.unwrap();

    let mut distinct = 0usize;
    let mut runs = 0i64;
    let mut after: Option<String> = None;
    loop {
        let keys = s
            .kv_list_keys(app.id, "seen", after.as_deref(), 1000)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        for k in &keys {
            runs += s.kv_get(app.id, "seen", k).await.unwrap().unwrap().version;
        }
        distinct += keys.len();
        after = keys.last().cloned();
    }
    println!(
        "two processes: {na} + {nb} rows succeeded; {distinct} distinct events seen, {} duplicates",
        runs - distinct as i64
    );
    assert_eq!(distinct, events, "every event handled");
    assert_eq!(runs, events as i64, "none handled twice");
    assert!(
        na > 0 && nb > 0,
        "both processes took a share: {na} and {nb}"
    );
    assert_eq!(
        na + nb,
        2 * events as u64,
        "each event and the recorder's own write event"
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
    assert!(
        s.list_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// SPEC section 14, claims are fair across apps: app a has a backlog of
/// no-op events (`PICLOUD_TEST_FAIR_BACKLOG`, default 100,000) and app b one
/// event, written last, on a trigger running the recorder. The dispatcher has
/// just drained an outbox, so its first claim is the plain one (all of it
/// app a's oldest rows); app b's event must still start within 2 claims.
/// Claims are counted by watching the dispatcher's own `picloud.dispatch.claim`
/// spans ([`claim_rounds`]).
async fn a_backlog_does_not_hold_back_another_apps_event(db: &TestDb) {
    let backlog: usize = std::env::var("PICLOUD_TEST_FAIR_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let s = &db.store;
    let host = Arc::new(h::host(s, h::fast_retries(3), h::ceiling()));
    let (a, b) = (h::app(s, "busy").await, h::app(s, "quiet").await);
    let noop = h::deploy(rt(&host), a.id, "noop", guests::NOOP).await;
    kv_trigger(s, a.id, noop.id, "in", ADMIN).await;
    let recorder = h::deploy(rt(&host), b.id, "recorder", guests::RECORDER).await;
    kv_trigger(s, b.id, recorder.id, "in", ADMIN).await;
    // Between bursts: the last claim found less than it asked for.
    enqueue_kv_events(s, a.id, "in", 1).await;
    drain(&host).await;

    enqueue_kv_events(s, a.id, "in", backlog).await;
    s.kv_set(b.id, "in", "only", &json!(1), 0).await.unwrap();

    let watch = claim_rounds::watch(b.id);
    let cancel = tokio_util::sync::CancellationToken::new();
    let started = std::time::Instant::now();
    let runner = tokio::spawn({
        use tracing::Instrument;
        let (host, cancel) = (host.clone(), cancel.clone());
        let span = claim_rounds::span(b.id);
        async move { host.run(cancel).await }.instrument(span)
    });
    let first = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(first) = watch.first_event() {
                return first;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("app b's event starts");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .expect("the dispatcher stops")
        .unwrap()
        .unwrap();
    let delay = first.at.duration_since(started);
    println!(
        "fair claims ({:?}): app b's single event started after {} ms, {} claim rounds \
         ({} rows claimed), with {backlog} of app a's due",
        db.backend,
        delay.as_millis(),
        first.claims,
        first.claimed
    );
    assert!(
        (1..=2).contains(&first.claims),
        "app b's event started within 2 claims: {first:?}"
    );
    // The dispatcher let what had started finish: the recorder ran.
    let seen = s.kv_list_keys(b.id, "seen", None, 10).await.unwrap();
    assert_eq!(seen.len(), 1, "app b's event ran once");
}

/// Counting a dispatcher's claims from its spans: the dispatcher runs inside
/// a span [`span`] naming an app; every `picloud.dispatch.claim` span inside
/// it is one claim, and its `claimed` field the rows it leased. The first
/// `picloud.dispatch.event` span of the named app is its first event
/// starting: [`Watch::first_event`] says how many claims had finished then.
/// One global subscriber serves every test of this binary; each watches its
/// own app.
mod claim_rounds {
    use std::collections::HashMap;
    use std::fmt::Debug;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Instant;

    use picloud_host::model::AppId;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    const WATCH: &str = "picloud.test.watch";
    const CLAIM: &str = "picloud.dispatch.claim";
    const EVENT: &str = "picloud.dispatch.event";

    /// What the watched dispatcher had done when the app's first event started.
    #[derive(Clone, Copy, Debug)]
    pub struct FirstEvent {
        /// Claims finished.
        pub claims: u64,
        /// Rows those claims leased.
        pub claimed: u64,
        /// When the event started.
        pub at: Instant,
    }

    #[derive(Debug, Default)]
    struct State {
        claims: u64,
        claimed: u64,
        first: Option<FirstEvent>,
    }

    /// One watched app.
    #[derive(Clone)]
    pub struct Watch(Arc<Mutex<State>>);

    impl Watch {
        /// Whether the app's first event has started, and when.
        pub fn first_event(&self) -> Option<FirstEvent> {
            self.0.lock().unwrap().first
        }
    }

    type Watches = Mutex<HashMap<String, Watch>>;

    fn watches() -> &'static Watches {
        static WATCHES: OnceLock<Watches> = OnceLock::new();
        WATCHES.get_or_init(|| {
            let layer =
                Counter.with_filter(tracing_subscriber::filter::filter_fn(|m: &Metadata<'_>| {
                    matches!(m.name(), WATCH | CLAIM | EVENT)
                }));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("no other global subscriber in this test binary");
            Mutex::new(HashMap::new())
        })
    }

    /// Start watching `app`.
    pub fn watch(app: AppId) -> Watch {
        let watch = Watch(Arc::default());
        watches()
            .lock()
            .unwrap()
            .insert(app.to_string(), watch.clone());
        watch
    }

    /// The span to run the watched dispatcher in.
    pub fn span(app: AppId) -> tracing::Span {
        tracing::info_span!(WATCH, app.id = %app)
    }

    /// Finds one field's value as text.
    struct Find<'a>(&'a str, Option<String>);

    impl Visit for Find<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            if field.name() == self.0 {
                self.1 = Some(format!("{value:?}"));
            }
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == self.0 {
                self.1 = Some(value.to_string());
            }
        }
    }

    /// The watch a `picloud.test.watch` span stands for (a span extension).
    struct Watched(Watch);

    struct Counter;

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Counter {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let name = attrs.metadata().name();
            if name != WATCH && name != EVENT {
                return;
            }
            let mut app = Find("app.id", None);
            attrs.record(&mut app);
            let Some(watch) = app
                .1
                .and_then(|app| watches().lock().unwrap().get(&app).cloned())
            else {
                return;
            };
            if name == WATCH {
                if let Some(span) = ctx.span(id) {
                    span.extensions_mut().insert(Watched(watch));
                }
                return;
            }
            let mut state = watch.0.lock().unwrap();
            if state.first.is_none() {
                state.first = Some(FirstEvent {
                    claims: state.claims,
                    claimed: state.claimed,
                    at: Instant::now(),
                });
            }
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(id) else { return };
            if span.name() != CLAIM {
                return;
            }
            let mut claimed = Find("claimed", None);
            values.record(&mut claimed);
            let Some(claimed) = claimed.1.and_then(|n| n.parse::<u64>().ok()) else {
                return;
            };
            for ancestor in span.scope().skip(1) {
                if let Some(Watched(watch)) = ancestor.extensions().get::<Watched>() {
                    let mut state = watch.0.lock().unwrap();
                    state.claims += 1;
                    state.claimed += claimed;
                    return;
                }
            }
        }
    }
}
