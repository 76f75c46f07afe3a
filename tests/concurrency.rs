//! State that concurrent handlers share: conditional KV writes and atomic
//! increments, from the store, from a guest, and under contention with the
//! inventory example on both backends (several dispatcher processes on
//! PostgreSQL); and ordered kv triggers, which run one key's events one at
//! a time in write order, through retries, without holding up other keys. Also: a component built against the first guest contract
//! (`picloud:trigger@0.1.0`) still deploys and runs.

use std::sync::Arc;
use std::time::Duration;

use picloud_host::model::{AppId, DeadLetterFilter, KvOps, NewTrigger, TriggerSpec, source};
use picloud_host::runtime::Runtime;
use picloud_host::store::Backend;
use picloud_host::store::{Error, Store};
use picloud_tests::db::{TempDir, TestDb};
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use picloud_tests::procs::spawn_host;
use serde_json::{Value, json};

picloud_tests::contract!(
    conditional_writes_change_nothing_on_conflict,
    increment_adds_and_refuses_what_is_not_an_integer,
    guests_see_conflicts_as_conflict,
    inventory_with_update_keeps_stock_exact,
    inventory_with_increment_keeps_stock_exact,
    inventory_with_plain_get_and_set_on_an_ordered_trigger_keeps_stock_exact,
    ordered_events_run_in_write_order_through_a_retry,
    ordered_keys_do_not_block_each_other,
    a_backlog_behind_an_ordered_key_is_parked_then_released_in_order,
    a_parked_row_left_behind_nothing_runs_after_a_sweep,
    a_component_built_against_contract_0_1_0_still_runs,
);

/// Rows in the outbox of `app`.
async fn events(s: &Arc<dyn Store>, app: AppId) -> i64 {
    s.count_events(Some(app)).await.unwrap()
}

fn conflict(e: Error) -> (u64, u64) {
    match e {
        Error::VersionConflict {
            expected, found, ..
        } => (expected, found),
        other => panic!("expected a version conflict, got {other}"),
    }
}

async fn conditional_writes_change_nothing_on_conflict(db: &TestDb) {
    let s = &db.store;
    let app = h::app(s, "cond").await.id;
    let v = |n: i64| json!({"n": n});

    // Version 0: only if absent.
    let e = s
        .kv_set_if_version(app, "c", "k", &v(1), 0, 0)
        .await
        .unwrap();
    assert_eq!(e.version, 1);
    assert_eq!(events(s, app).await, 1, "the write enqueued its event");
    let refused = s
        .kv_set_if_version(app, "c", "k", &v(2), 0, 0)
        .await
        .unwrap_err();
    assert_eq!(conflict(refused), (0, 1));

    // A stale version is refused, the current one accepted.
    let e = s
        .kv_set_if_version(app, "c", "k", &v(3), 1, 0)
        .await
        .unwrap();
    assert_eq!(e.version, 2);
    let refused = s
        .kv_set_if_version(app, "c", "k", &v(4), 1, 0)
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "c/k is at version 2, not at version 1: read it again and retry, or fail the attempt"
    );
    // Expecting a key that does not exist.
    let refused = s
        .kv_set_if_version(app, "c", "nope", &v(1), 7, 0)
        .await
        .unwrap_err();
    assert_eq!(conflict(refused), (7, 0));

    // The refusals wrote nothing and enqueued nothing.
    let now = s.kv_get(app, "c", "k").await.unwrap().unwrap();
    assert_eq!((now.value, now.version), (v(3), 2));
    assert!(s.kv_get(app, "c", "nope").await.unwrap().is_none());
    assert_eq!(events(s, app).await, 2);

    // Delete: a stale version is refused; 0 asserts absence.
    let refused = s
        .kv_delete_if_version(app, "c", "k", 1, 0)
        .await
        .unwrap_err();
    assert_eq!(conflict(refused), (1, 2));
    let refused = s
        .kv_delete_if_version(app, "c", "k", 0, 0)
        .await
        .unwrap_err();
    assert_eq!(conflict(refused), (0, 2));
    assert!(
        !s.kv_delete_if_version(app, "c", "nope", 0, 0)
            .await
            .unwrap()
    );
    assert_eq!(events(s, app).await, 2, "refused deletes enqueue nothing");
    assert!(s.kv_delete_if_version(app, "c", "k", 2, 0).await.unwrap());
    assert!(s.kv_get(app, "c", "k").await.unwrap().is_none());
    assert_eq!(events(s, app).await, 3, "the delete enqueued its event");

    // Another app's key of the same name is another key.
    let other = h::app(s, "cond-other").await.id;
    s.kv_set_if_version(other, "c", "k", &v(9), 0, 0)
        .await
        .unwrap();
    assert!(s.kv_get(app, "c", "k").await.unwrap().is_none());
}

async fn increment_adds_and_refuses_what_is_not_an_integer(db: &TestDb) {
    let s = &db.store;
    let app = h::app(s, "incr").await.id;
    let e = s.kv_increment(app, "n", "a", 5, 0).await.unwrap();
    assert_eq!(
        (e.value.clone(), e.version),
        (json!(5), 1),
        "absent counts as 0"
    );
    let e = s.kv_increment(app, "n", "a", -7, 0).await.unwrap();
    assert_eq!((e.value.clone(), e.version), (json!(-2), 2));
    assert_eq!(events(s, app).await, 2, "each increment enqueued its event");

    s.kv_set(app, "n", "text", &json!("five"), 0).await.unwrap();
    let refused = s.kv_increment(app, "n", "text", 1, 0).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "n/text holds \"five\", not an integer: increment only integers, or set the key first"
    );
    s.kv_set(app, "n", "float", &json!(1.5), 0).await.unwrap();
    assert!(matches!(
        s.kv_increment(app, "n", "float", 1, 0).await,
        Err(Error::Invalid(_))
    ));
    s.kv_set(app, "n", "max", &json!(i64::MAX), 0)
        .await
        .unwrap();
    let refused = s.kv_increment(app, "n", "max", 1, 0).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("outside the signed 64-bit range"),
        "{refused}"
    );
    assert_eq!(
        s.kv_get(app, "n", "max").await.unwrap().unwrap().value,
        json!(i64::MAX),
        "unchanged"
    );
    assert_eq!(
        events(s, app).await,
        5,
        "refused increments enqueue nothing"
    );

    // Concurrent increments from many tasks lose nothing.
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.kv_increment(app, "n", "hot", 1, 0).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("an increment");
    }
    let hot = s.kv_get(app, "n", "hot").await.unwrap().unwrap();
    assert_eq!((hot.value, hot.version), (json!(40), 40));
}

async fn probe(
    rt: &Runtime,
    app: AppId,
    script: &picloud_host::model::Script,
    call: Value,
) -> Result<Value, String> {
    let inv = h::invocation(app, script.id, source::HTTP, "invoke", call, ADMIN);
    match rt.invoke(script, inv).await {
        Ok(ok) => Ok(ok
            .reply
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(Value::Null)),
        Err(f) => Err(f.to_string()),
    }
}

async fn guests_see_conflicts_as_conflict(db: &TestDb) {
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "probe").await.id;
    let script = h::deploy(&rt, app, "kv-probe", guests::KV_PROBE).await;
    let call = |c: Value| probe(&rt, app, &script, c);

    let set_if = |expected: u64| json!({"call": "set-if", "collection": "c", "key": "k", "value": {"a": 1}, "expected": expected});
    assert_eq!(call(set_if(0)).await, Ok(json!(1)));
    assert_eq!(
        call(set_if(0)).await,
        Err("conflict: c/k is at version 1, not absent: read it again and retry, or fail the attempt".into())
    );
    assert_eq!(call(set_if(1)).await, Ok(json!(2)));
    let delete_if = |expected: u64| json!({"call": "delete-if", "collection": "c", "key": "k", "expected": expected});
    assert!(
        call(delete_if(1))
            .await
            .unwrap_err()
            .starts_with("conflict: c/k is at version 2")
    );
    assert_eq!(call(delete_if(2)).await, Ok(Value::Null));
    assert!(s.kv_get(app, "c", "k").await.unwrap().is_none());

    let incr = |delta: i64| json!({"call": "incr", "collection": "c", "key": "n", "delta": delta});
    assert_eq!(call(incr(3)).await, Ok(json!(3)));
    assert_eq!(call(incr(-1)).await, Ok(json!(2)));
    assert_eq!(
        call(json!({"call": "incr", "collection": "", "key": "n", "delta": 1})).await,
        Err("invalid argument: empty collection: give a non-empty name".into())
    );

    // A viewer may not write conditionally either.
    s.set_member(app, "vera", picloud_host::auth::Role::Viewer)
        .await
        .unwrap();
    let inv = h::invocation(app, script.id, source::HTTP, "invoke", incr(1), "vera");
    let denied = rt.invoke(&script, inv).await.unwrap_err().to_string();
    assert_eq!(denied, "permission denied");
    assert_eq!(
        s.kv_get(app, "c", "n").await.unwrap().unwrap().value,
        json!(2)
    );
}

const STOCK: i64 = 100;
const ORDERS: usize = 1000;

/// The inventory example on `orders`, a stock of [`STOCK`] widgets and
/// [`ORDERS`] orders of one each, written as `method` says; dispatched until
/// settled (by three dispatcher processes on PostgreSQL). The stock must end
/// at exactly 0 with exactly `ORDERS - STOCK` backorders.
///
/// Method `plain` (a plain get and set) is made correct by the trigger: it
/// is ordered, and every order is a new write of one key, `orders/widget`.
/// The other methods write each order under a key of its own.
async fn inventory_keeps_stock_exact(db: &TestDb, method: &str) {
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "shop").await.id;
    let script = h::deploy(&rt, app, "inventory", guests::INVENTORY).await;
    let ordered = method == "plain";
    s.create_trigger(&NewTrigger {
        app_id: app,
        script_id: script.id,
        name: "on-orders".into(),
        registered_by_principal: ADMIN.into(),
        spec: TriggerSpec::Kv {
            collection: "orders".into(),
            ops: KvOps::ALL,
            ordered,
        },
        retry: Default::default(),
        max_depth: None,
    })
    .await
    .unwrap();
    s.kv_set(app, "stock", "widget", &json!(STOCK), 0)
        .await
        .unwrap();
    for i in 0..ORDERS {
        let order = json!({"item": "widget", "qty": 1, "method": method});
        let key = if ordered {
            "widget".to_owned()
        } else {
            format!("o{i:04}")
        };
        s.kv_set(app, "orders", &key, &order, 0).await.unwrap();
    }

    // Conflicts fail attempts that the host retries: give them room. The
    // deadline is long: an attempt cut off after it took stock would run
    // again and take it twice (at-least-once), which this test is not about.
    let mut config = h::fast_retries(1000);
    config.retry_max = Duration::from_millis(40);
    if db.backend == Backend::Postgres {
        let cache = h::cache_dir();
        let env = [
            ("PICLOUD_CACHE_DIR", cache.display().to_string()),
            ("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "1000".to_owned()),
            ("PICLOUD_TRIGGER_RETRY_BASE_MS", "10".to_owned()),
            ("PICLOUD_TRIGGER_RETRY_MAX_MS", "40".to_owned()),
            ("PICLOUD_SANDBOX_TIMEOUT_MS", "30000".to_owned()),
            // Two of these tests run at once: six processes at the default
            // 16 + 1 connections would exceed the server's 100.
            ("PICLOUD_PG_POOL_SIZE", "6".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        // Output goes to files: a pipe read only after the process exits
        // can fill and stall it (and with it the others, which wait for its
        // leased rows to settle).
        let dir = TempDir::new();
        let mut procs: Vec<_> = (0..3)
            .map(|k| {
                spawn_host(
                    &db.url,
                    &["dispatch", "--until-settled"],
                    &env,
                    &dir.0,
                    &format!("dispatcher-{k}"),
                )
            })
            .collect();
        for p in &mut procs {
            let status = p.wait_for_exit(Duration::from_secs(600), || pg_activity(&db.url));
            assert!(status.success(), "dispatcher failed: {}", p.stderr());
        }
    }
    // SQLite's dispatcher, and on PostgreSQL whatever the processes left.
    let ceiling = picloud_host::config::SandboxCeiling {
        timeout: Duration::from_secs(30),
        ..h::ceiling()
    };
    let settled = tokio::time::timeout(
        Duration::from_secs(600),
        h::host(s, config, ceiling).run_until_empty(),
    )
    .await;
    match settled {
        Ok(result) => result.unwrap(),
        Err(_) => panic!(
            "the outbox did not settle within 600 s: {} rows left; {}",
            s.count_events(None).await.unwrap(),
            if db.backend == Backend::Postgres {
                pg_activity(&db.url)
            } else {
                String::new()
            }
        ),
    }
    let failures = failed_runs(s, app).await;

    let value =
        |c: &'static str| async move { s.kv_get(app, c, "widget").await.unwrap().map(|e| e.value) };
    let dead = s
        .list_dead_letters(&DeadLetterFilter {
            app_id: Some(app),
            ..DeadLetterFilter::default()
        })
        .await
        .unwrap();
    assert!(
        dead.is_empty(),
        "no order gave up: {:?}",
        dead.first().map(|d| &d.last_error)
    );
    assert_eq!(
        value("stock").await,
        Some(json!(0)),
        "{method}: stock; failed runs: {failures:?}"
    );
    assert_eq!(
        value("backorders").await,
        Some(json!(ORDERS as i64 - STOCK)),
        "{method}: backorders; failed runs: {failures:?}"
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

/// What the database's sessions are doing and waiting for, as `psql` prints
/// it: the evidence a stalled multi-process test leaves.
fn pg_activity(url: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            url,
            "-c",
            "select pid, state, wait_event_type, wait_event, now() - xact_start as xact, \
             left(query, 120) as query from pg_stat_activity where datname = current_database()",
        ])
        .output();
    match out {
        Ok(out) => format!(
            "the database's sessions:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(psql did not run: {e})"),
    }
}

/// The errors of `app`'s runs that did not succeed, with their counts.
async fn failed_runs(s: &Arc<dyn Store>, app: AppId) -> std::collections::BTreeMap<String, usize> {
    let mut filter = picloud_host::runs::RunFilter::app(app);
    filter.failed_only = true;
    filter.limit = 10_000;
    let mut errors = std::collections::BTreeMap::new();
    for run in s.list_runs(&filter).await.unwrap() {
        *errors.entry(run.error.unwrap_or_default()).or_default() += 1;
    }
    errors
}

async fn inventory_with_update_keeps_stock_exact(db: &TestDb) {
    inventory_keeps_stock_exact(db, "update").await;
}

async fn inventory_with_increment_keeps_stock_exact(db: &TestDb) {
    inventory_keeps_stock_exact(db, "increment").await;
}

async fn inventory_with_plain_get_and_set_on_an_ordered_trigger_keeps_stock_exact(db: &TestDb) {
    inventory_keeps_stock_exact(db, "plain").await;
}

/// An app with the sequencer fixture on collection `in`, its trigger
/// ordered per key.
async fn sequencer_app(db: &TestDb, name: &str) -> AppId {
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, name).await.id;
    let script = h::deploy(&rt, app, "sequencer", guests::SEQUENCER).await;
    s.create_trigger(&NewTrigger {
        app_id: app,
        script_id: script.id,
        name: "in-order".into(),
        registered_by_principal: ADMIN.into(),
        spec: TriggerSpec::Kv {
            collection: "in".into(),
            ops: KvOps::ALL,
            ordered: true,
        },
        retry: Default::default(),
        max_depth: None,
    })
    .await
    .unwrap();
    app
}

/// What the sequencer appended for `key`.
async fn seen(s: &Arc<dyn Store>, app: AppId, key: &str) -> Vec<i64> {
    s.kv_get(app, "seen", key)
        .await
        .unwrap()
        .map(|e| serde_json::from_value(e.value).unwrap())
        .unwrap_or_default()
}

/// Two keys written in turn, 25 events each; one event of each key fails
/// its first attempt. Every event runs exactly once to success, and each
/// key's list is its write order: the retried event held the ones behind
/// it, and the plain get-and-set lost nothing.
async fn ordered_events_run_in_write_order_through_a_retry(db: &TestDb) {
    let s = &db.store;
    let app = sequencer_app(db, "sequence").await;
    const N: i64 = 25;
    for n in 0..N {
        for key in ["a", "b"] {
            let step = json!({"n": n, "fail_first": n == 3 || n == 17, "sleep_ms": 2});
            s.kv_set(app, "in", key, &step, 0).await.unwrap();
        }
    }
    h::host(s, h::fast_retries(5), h::ceiling())
        .run_until_empty()
        .await
        .unwrap();
    let all: Vec<i64> = (0..N).collect();
    assert_eq!(seen(s, app, "a").await, all, "key a in write order");
    assert_eq!(seen(s, app, "b").await, all, "key b in write order");
    let failures = failed_runs(s, app).await;
    assert_eq!(
        failures.values().sum::<usize>(),
        4,
        "two first attempts per key failed, and nothing else: {failures:?}"
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

/// A key whose first event waits for a distant retry holds only its own
/// later events: another key's events all run meanwhile.
async fn ordered_keys_do_not_block_each_other(db: &TestDb) {
    let s = &db.store;
    let app = sequencer_app(db, "keys").await;
    s.kv_set(app, "in", "slow", &json!({"n": 0, "fail_first": true}), 0)
        .await
        .unwrap();
    s.kv_set(app, "in", "slow", &json!({"n": 1}), 0)
        .await
        .unwrap();
    for n in 0..10 {
        s.kv_set(app, "in", "fast", &json!({"n": n}), 0)
            .await
            .unwrap();
    }
    let config = picloud_host::config::TriggerConfig {
        retry_base: Duration::from_secs(600),
        retry_max: Duration::from_secs(600),
        ..h::fast_retries(3)
    };
    // Until nothing is due: the slow key's retry is ten minutes away, and
    // its second event is not due while the first waits.
    h::host(s, config, h::ceiling())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(seen(s, app, "fast").await, (0..10).collect::<Vec<_>>());
    assert_eq!(
        seen(s, app, "slow").await,
        Vec::<i64>::new(),
        "the first slow event waits for its retry, the second behind it"
    );
    assert_eq!(
        s.count_events(Some(app)).await.unwrap(),
        2,
        "the slow key's two invocation rows are left"
    );
}

/// Rows parked behind an ordered key (due at `Timestamp::parked`,
/// 9999-01-02): claims never look at them.
const PARKED_SQL: &str = "select count(*) from outbox where due_at > '9999-01-01T12:00:00.000000Z'";

/// Make every row that is neither held nor parked due now (a retry's wait
/// cut short).
const DUE_NOW_SQL: &str = "update outbox set due_at = '2000-01-01T00:00:00.000000Z'
     where due_at < '9000-01-01T00:00:00.000000Z'";

/// One key's first event waits for a distant retry, with 60 events behind
/// it: once they are fanned out they wait parked, so nothing is due and
/// claims read none of them. When the first one settles, the store call
/// that deletes it releases the next, and the rest run in write order.
async fn a_backlog_behind_an_ordered_key_is_parked_then_released_in_order(db: &TestDb) {
    let s = &db.store;
    let app = sequencer_app(db, "backlog").await;
    const N: i64 = 60;
    for n in 0..N {
        let step = json!({"n": n, "fail_first": n == 0});
        s.kv_set(app, "in", "hot", &step, 0).await.unwrap();
    }
    let config = picloud_host::config::TriggerConfig {
        retry_base: Duration::from_secs(600),
        retry_max: Duration::from_secs(600),
        ..h::fast_retries(3)
    };
    h::host(s, config.clone(), h::ceiling())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(seen(s, app, "hot").await, Vec::<i64>::new());
    assert_eq!(
        db.count(PARKED_SQL).await,
        N - 1,
        "every event behind the first is parked"
    );
    assert_eq!(events(s, app).await, N, "the first waits for its retry");
    let next = s
        .next_due_at()
        .await
        .unwrap()
        .expect("the retry is due later");
    assert!(
        next.0 > chrono::Utc::now() + chrono::Duration::seconds(500),
        "nothing is due before the first event's retry: {next:?}"
    );

    // Its retry comes: it alone is claimable, and completing it makes the
    // next one due in the same store call, not at a sweep.
    db.execute(DUE_NOW_SQL).await.unwrap();
    let lease = Duration::from_secs(60);
    let first = s.claim_due("test", 10, lease).await.unwrap();
    assert_eq!(first.len(), 1, "only the first of the key is claimable");
    s.complete(&[first[0].id], &[]).await.unwrap();
    assert_eq!(db.count(PARKED_SQL).await, N - 2, "the next was released");
    let second = s.claim_due("test", 10, lease).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].order_seq, Some(2), "the second write is next");
    s.release(&[second[0].id]).await.unwrap();

    h::host(s, config, h::ceiling())
        .run_until_empty()
        .await
        .unwrap();
    assert_eq!(seen(s, app, "hot").await, (1..N).collect::<Vec<_>>());
    assert_eq!(events(s, app).await, 0);
}

/// A row parked behind a raw row that then goes without a row for its
/// trigger (the trigger was disabled when the raw row was fanned out) has
/// nothing ahead of it and nothing to release it: the sweep of an idle
/// dispatcher finds it, and it runs once the trigger is enabled again.
async fn a_parked_row_left_behind_nothing_runs_after_a_sweep(db: &TestDb) {
    let s = &db.store;
    let app = sequencer_app(db, "left-behind").await;
    let trigger = s.list_triggers(app).await.unwrap()[0].id;
    for n in 0..2 {
        s.kv_set(app, "in", "k", &json!({"n": n}), 0).await.unwrap();
    }
    // Another dispatcher holds the first raw row while this one fans out
    // the second: its trigger's row is parked behind the first.
    let lease = Duration::from_secs(600);
    let first = s.claim_due("elsewhere", 1, lease).await.unwrap();
    assert_eq!(first.len(), 1);
    let config = h::fast_retries(3);
    h::host(s, config.clone(), h::ceiling())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(
        db.count(PARKED_SQL).await,
        1,
        "the second write's row waits"
    );
    assert_eq!(s.release_parked().await.unwrap(), 0, "the raw row holds it");

    // The first raw row is fanned out while the trigger is disabled: no
    // row of the trigger, nothing left ahead of the parked one.
    s.set_trigger_enabled(trigger, false).await.unwrap();
    s.release(&[first[0].id]).await.unwrap();
    h::host(s, config.clone(), h::ceiling())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(
        db.count(PARKED_SQL).await,
        0,
        "the idle dispatcher's sweep released it (and held it: its trigger is disabled)"
    );
    assert_eq!(events(s, app).await, 1);
    s.set_trigger_enabled(trigger, true).await.unwrap();

    h::host(s, config, h::ceiling())
        .run_until_empty()
        .await
        .unwrap();
    assert_eq!(seen(s, app, "k").await, vec![1]);
    assert_eq!(events(s, app).await, 0);
}

async fn a_component_built_against_contract_0_1_0_still_runs(db: &TestDb) {
    let wasm = guests::wasm(guests::CONTRACT_0_1_0);
    let imports = String::from_utf8_lossy(&wasm);
    assert!(
        imports.contains("picloud:trigger/kv@0.1.0") && !imports.contains("@0.1.1"),
        "the fixture imports the old contract"
    );
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "legacy").await.id;
    let script = h::deploy(&rt, app, "legacy", guests::CONTRACT_0_1_0).await;
    let inv = h::invocation(
        app,
        script.id,
        source::HTTP,
        "invoke",
        json!({"old": true}),
        ADMIN,
    );
    let id = inv.event_id.to_string();
    let ok = rt
        .invoke(&script, inv)
        .await
        .expect("the old component runs");
    assert_eq!(ok.reply.as_deref(), Some(&b"legacy wrote version 1"[..]));
    let written = s.kv_get(app, "legacy", &id).await.unwrap().unwrap();
    assert_eq!(written.value, json!({"old": true}));
}
