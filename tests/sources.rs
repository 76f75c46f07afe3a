//! Queues, pub/sub, cron and per-trigger retry policy, on both backends,
//! with the `flow` fixture (tests/fixtures/flow) as every script: one
//! publish reaching three subscribers with one failing alone, messages of a
//! failed invocation never delivered, batches of at most N with only the
//! failed messages retried, a delayed message waiting for its delay, the
//! three backoff shapes in run timestamps, a permanent error, retry-after,
//! a maximum event age, cron ticks run once under two dispatchers, the
//! catch-up policies, and a component built against the 0.2 contract.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use picloud_host::TriggerHost;
use picloud_host::cron::CatchUp;
use picloud_host::messages;
use picloud_host::model::{
    AppId, DeadLetterFilter, KvOps, NewTrigger, ScriptId, Timestamp, Trigger, TriggerSpec,
};
use picloud_host::retry::{Backoff, RetryPolicy};
use picloud_host::runs::{Run, RunFilter};
use picloud_host::store::Store;
use picloud_tests::db::TestDb;
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

picloud_tests::contract!(
    one_publish_reaches_three_subscribers_and_only_the_failing_one_retries,
    messages_sent_by_a_failing_invocation_are_never_delivered,
    batches_hold_at_most_n_and_retry_only_the_failed_messages,
    a_delayed_message_waits_for_its_delay,
    a_message_waits_for_its_queue_to_have_a_consumer,
    constant_linear_and_exponential_delays_show_in_run_timestamps,
    a_permanent_error_is_dead_lettered_after_one_attempt,
    retry_after_is_honoured,
    an_event_older_than_its_max_age_is_dead_lettered,
    cron_ticks_run_once_each_under_two_dispatchers,
    missed_cron_ticks_follow_the_catch_up_policy,
    a_component_built_against_0_2_keeps_running,
    a_trigger_stops_at_its_own_depth_naming_the_chain,
    a_script_publishes_to_subscribers_one_level_deeper,
);

fn host(s: &Arc<dyn Store>, max_attempts: i32) -> TriggerHost {
    h::host(s, h::fast_retries(max_attempts), h::ceiling())
}

async fn deploy(host: &TriggerHost, app: AppId, name: &str, path: &str) -> ScriptId {
    h::deploy(host.runtime(), app, name, path).await.id
}

async fn trigger(
    s: &Arc<dyn Store>,
    app: AppId,
    script: ScriptId,
    spec: TriggerSpec,
    retry: RetryPolicy,
) -> Trigger {
    s.create_trigger(&NewTrigger {
        app_id: app,
        script_id: script,
        name: format!("t-{}", uuid::Uuid::new_v4().simple()),
        registered_by_principal: ADMIN.into(),
        spec,
        retry,
        max_depth: None,
    })
    .await
    .expect("creating the trigger")
}

fn kv(collection: &str) -> TriggerSpec {
    TriggerSpec::Kv {
        collection: collection.into(),
        ops: KvOps::ALL,
        ordered: false,
    }
}

fn queue(name: &str, batch: u32) -> TriggerSpec {
    TriggerSpec::Queue {
        queue: name.into(),
        batch,
    }
}

async fn drain(host: &TriggerHost) {
    tokio::time::timeout(Duration::from_secs(60), host.run_until_empty())
        .await
        .expect("the outbox drains within a minute")
        .expect("dispatch ran");
}

/// The app's `collection` as key → value.
async fn collection(s: &Arc<dyn Store>, app: AppId, name: &str) -> HashMap<String, Value> {
    let keys = s
        .kv_list_keys(app, name, None, 1000)
        .await
        .expect("listing keys");
    let mut all = HashMap::new();
    for key in keys {
        let entry = s.kv_get(app, name, &key).await.unwrap().unwrap();
        all.insert(key, entry.value);
    }
    all
}

/// The runs of `trigger`, oldest first.
async fn runs_of(s: &Arc<dyn Store>, app: AppId, trigger: &Trigger) -> Vec<Run> {
    s.list_runs(&RunFilter {
        limit: 1000,
        oldest_first: true,
        trigger_id: Some(trigger.id),
        ..RunFilter::app(app)
    })
    .await
    .expect("listing runs")
}

fn gaps_ms(runs: &[Run]) -> Vec<i64> {
    runs.windows(2)
        .map(|w| (w[1].started_at.0 - w[0].started_at.0).num_milliseconds())
        .collect()
}

async fn one_publish_reaches_three_subscribers_and_only_the_failing_one_retries(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "shop").await;
    let a = deploy(&host, app.id, "a", guests::FLOW).await;
    let b = deploy(&host, app.id, "b", guests::FLOW).await;
    let bad = deploy(&host, app.id, "bad", guests::ALWAYS_FAILS).await;
    let no = RetryPolicy::default();
    let ta = trigger(
        s,
        app.id,
        a,
        TriggerSpec::Pubsub {
            topic: "orders.*".into(),
        },
        no,
    )
    .await;
    let tb = trigger(
        s,
        app.id,
        b,
        TriggerSpec::Pubsub {
            topic: "orders.eu".into(),
        },
        no,
    )
    .await;
    let tbad = trigger(
        s,
        app.id,
        bad,
        TriggerSpec::Pubsub { topic: "*".into() },
        no,
    )
    .await;
    let other = trigger(
        s,
        app.id,
        a,
        TriggerSpec::Pubsub {
            topic: "audit".into(),
        },
        no,
    )
    .await;
    let id = s
        .enqueue(&messages::publication(app.id, "orders.eu", json!({"order": 7})).unwrap())
        .await
        .unwrap();
    drain(&host).await;

    let seen = collection(s, app.id, "seen").await;
    assert_eq!(seen.get(&format!("{a}:{id}")), Some(&json!(1)), "{seen:?}");
    assert_eq!(seen.get(&format!("{b}:{id}")), Some(&json!(1)), "{seen:?}");
    assert_eq!(runs_of(s, app.id, &ta).await.len(), 1);
    assert_eq!(runs_of(s, app.id, &tb).await.len(), 1);
    assert_eq!(runs_of(s, app.id, &tbad).await.len(), 3, "retried alone");
    assert!(runs_of(s, app.id, &other).await.is_empty(), "no match");
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].trigger_id, Some(tbad.id));
    assert_eq!(dead[0].source, "pubsub");
    assert_eq!(dead[0].attempt_count, 3);
}

async fn messages_sent_by_a_failing_invocation_are_never_delivered(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 2);
    let app = h::app(s, "shop").await;
    let producer = deploy(&host, app.id, "producer", guests::FLOW).await;
    let consumer = deploy(&host, app.id, "consumer", guests::FLOW).await;
    let no = RetryPolicy::default();
    trigger(s, app.id, producer, kv("jobs"), no).await;
    let tq = trigger(s, app.id, consumer, queue("mail", 1), no).await;
    let send = |n: i64| json!([{"queue": "mail", "body": {"n": n}}]);
    s.kv_set(
        app.id,
        "jobs",
        "fails",
        &json!({"send": send(1), "fail": "boom"}),
        0,
    )
    .await
    .unwrap();
    s.kv_set(app.id, "jobs", "works", &json!({"send": send(2)}), 0)
        .await
        .unwrap();
    drain(&host).await;

    let runs = runs_of(s, app.id, &tq).await;
    assert_eq!(
        runs.len(),
        1,
        "only the succeeding invocation's message arrived"
    );
    let seen = collection(s, app.id, "seen").await;
    let consumed = seen
        .keys()
        .filter(|k| k.starts_with(&format!("{consumer}:")))
        .count();
    assert_eq!(consumed, 1, "{seen:?}");
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "the failing producer's event");
    assert_eq!(dead[0].attempt_count, 2);
}

async fn batches_hold_at_most_n_and_retry_only_the_failed_messages(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "shop").await;
    let consumer = deploy(&host, app.id, "consumer", guests::FLOW).await;
    trigger(
        s,
        app.id,
        consumer,
        queue("work", 3),
        RetryPolicy::default(),
    )
    .await;
    let bodies: Vec<Value> = (0..7)
        .map(|n| match n {
            2 | 5 => json!({"n": n, "fail_attempts": 1}),
            _ => json!({"n": n}),
        })
        .collect();
    let rows: Vec<_> = bodies
        .iter()
        .map(|b| messages::queue_message(app.id, "work", b.clone(), 0).unwrap())
        .collect();
    let ids = s.enqueue_many(&rows).await.unwrap();
    drain(&host).await;

    let batches = collection(s, app.id, "batches").await;
    assert!(!batches.is_empty());
    assert!(
        batches.values().all(|n| n.as_u64().unwrap() <= 3),
        "at most 3 per batch: {batches:?}"
    );
    assert!(
        batches.values().any(|n| n.as_u64().unwrap() > 1),
        "messages claimed together travel together: {batches:?}"
    );
    let seen = collection(s, app.id, "seen").await;
    for (n, id) in ids.iter().enumerate() {
        let expected = if n == 2 || n == 5 { 2 } else { 1 };
        assert_eq!(
            seen.get(&id.to_string()),
            Some(&json!(expected)),
            "message {n}: {seen:?}"
        );
    }
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
}

async fn a_delayed_message_waits_for_its_delay(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "shop").await;
    let consumer = deploy(&host, app.id, "consumer", guests::FLOW).await;
    let tq = trigger(
        s,
        app.id,
        consumer,
        queue("later", 1),
        RetryPolicy::default(),
    )
    .await;
    let sent_at = Timestamp::now();
    s.enqueue(&messages::queue_message(app.id, "later", json!({"n": 1}), 1500).unwrap())
        .await
        .unwrap();
    drain(&host).await;
    let runs = runs_of(s, app.id, &tq).await;
    assert_eq!(runs.len(), 1);
    let waited = (runs[0].started_at.0 - sent_at.0).num_milliseconds();
    assert!(waited >= 1500, "ran {waited} ms after it was sent");
}

async fn a_message_waits_for_its_queue_to_have_a_consumer(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "shop").await;
    let consumer = deploy(&host, app.id, "consumer", guests::FLOW).await;
    let id = s
        .enqueue(&messages::queue_message(app.id, "early", json!({"n": 1}), 0).unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), host.run_until_idle())
        .await
        .unwrap()
        .unwrap();
    assert!(collection(s, app.id, "seen").await.is_empty());
    trigger(
        s,
        app.id,
        consumer,
        queue("early", 1),
        RetryPolicy::default(),
    )
    .await;
    drain(&host).await;
    let seen = collection(s, app.id, "seen").await;
    assert_eq!(
        seen.get(&format!("{consumer}:{id}")),
        Some(&json!(1)),
        "{seen:?}"
    );
}

async fn constant_linear_and_exponential_delays_show_in_run_timestamps(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 9);
    let app = h::app(s, "shop").await;
    let fails = deploy(&host, app.id, "fails", guests::ALWAYS_FAILS).await;
    let mut triggers = Vec::new();
    for (backoff, collection) in [
        (Backoff::Constant, "constant"),
        (Backoff::Linear, "linear"),
        (Backoff::Exponential, "exponential"),
    ] {
        let policy = RetryPolicy {
            max_attempts: Some(4),
            backoff: Some(backoff),
            base_ms: Some(300),
            cap_ms: Some(10_000),
            jitter: Some(0.1),
            ..Default::default()
        };
        let t = trigger(s, app.id, fails, kv(collection), policy).await;
        s.kv_set(app.id, collection, "k", &json!(1), 0)
            .await
            .unwrap();
        triggers.push((backoff, t));
    }
    drain(&host).await;
    for (backoff, t) in triggers {
        let runs = runs_of(s, app.id, &t).await;
        assert_eq!(runs.len(), 4, "{backoff}: max attempts");
        let expected: [i64; 3] = match backoff {
            Backoff::Constant => [300, 300, 300],
            Backoff::Linear => [300, 600, 900],
            Backoff::Exponential => [300, 600, 1200],
        };
        // Within jitter (±10%) below, and the poll interval and a busy
        // machine's lag above.
        for (gap, want) in gaps_ms(&runs).into_iter().zip(expected) {
            assert!(
                gap >= want * 9 / 10 && gap <= want * 11 / 10 + 400,
                "{backoff}: gap {gap} ms, expected {want} ms ±10%"
            );
        }
    }
}

async fn a_permanent_error_is_dead_lettered_after_one_attempt(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 5);
    let app = h::app(s, "shop").await;
    let flow = deploy(&host, app.id, "flow", guests::FLOW).await;
    let t = trigger(s, app.id, flow, kv("orders"), RetryPolicy::default()).await;
    s.kv_set(
        app.id,
        "orders",
        "o1",
        &json!({"permanent": "card declined"}),
        0,
    )
    .await
    .unwrap();
    drain(&host).await;
    assert_eq!(runs_of(s, app.id, &t).await.len(), 1);
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempt_count, 1);
    assert_eq!(dead[0].last_error, "permanent error: card declined");
}

async fn retry_after_is_honoured(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 5);
    let app = h::app(s, "shop").await;
    let flow = deploy(&host, app.id, "flow", guests::FLOW).await;
    let policy = RetryPolicy {
        backoff: Some(Backoff::Constant),
        base_ms: Some(20),
        ..Default::default()
    };
    let t = trigger(s, app.id, flow, kv("calls"), policy).await;
    s.kv_set(app.id, "calls", "c1", &json!({"retry_after_ms": 1200}), 0)
        .await
        .unwrap();
    drain(&host).await;
    let runs = runs_of(s, app.id, &t).await;
    assert_eq!(runs.len(), 2, "rate limited once, then done");
    let gap = gaps_ms(&runs)[0];
    assert!(gap >= 1200, "retried after {gap} ms, asked for 1200");
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("retry after 1200 ms"),
        "{:?}",
        runs[0].error
    );
}

async fn an_event_older_than_its_max_age_is_dead_lettered(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 100);
    let app = h::app(s, "shop").await;
    let fails = deploy(&host, app.id, "fails", guests::ALWAYS_FAILS).await;
    let policy = RetryPolicy {
        max_attempts: Some(100),
        backoff: Some(Backoff::Constant),
        base_ms: Some(200),
        max_age_ms: Some(500),
        ..Default::default()
    };
    let t = trigger(s, app.id, fails, kv("old"), policy).await;
    s.kv_set(app.id, "old", "k", &json!(1), 0).await.unwrap();
    drain(&host).await;
    let runs = runs_of(s, app.id, &t).await;
    assert!((2..=5).contains(&runs.len()), "{} attempts", runs.len());
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .last_error
            .contains("older than its trigger's maximum age of 500 ms"),
        "{}",
        dead[0].last_error
    );
}

fn cron(catch_up: CatchUp) -> TriggerSpec {
    TriggerSpec::Cron {
        schedule: "* * * * * *".into(),
        timezone: "UTC".into(),
        catch_up,
    }
}

/// Run `hosts` (dispatchers on one database) for `d`.
async fn run_for(hosts: &[&TriggerHost], d: Duration) {
    let cancel = CancellationToken::new();
    let runs: Vec<_> = hosts.iter().map(|h| h.run(cancel.clone())).collect();
    let stop = async {
        tokio::time::sleep(d).await;
        cancel.cancel();
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(runs), stop);
    for r in results {
        r.expect("the dispatcher ran");
    }
}

async fn cron_ticks_run_once_each_under_two_dispatchers(db: &TestDb) {
    let s = &db.store;
    let (one, two) = (host(s, 3), host(s, 3));
    let app = h::app(s, "shop").await;
    let flow = deploy(&one, app.id, "flow", guests::FLOW).await;
    trigger(s, app.id, flow, cron(CatchUp::Last), RetryPolicy::default()).await;
    run_for(&[&one, &two], Duration::from_secs(10)).await;
    // (The last tick may be left for a later dispatcher when they stop.)
    let ticks = collection(s, app.id, "ticks").await;
    assert!(
        (8..=11).contains(&ticks.len()),
        "a tick a second for 10 s: {} ticks",
        ticks.len()
    );
    for (at, count) in &ticks {
        assert_eq!(count, &json!(1), "tick {at} ran {count} times");
    }
}

async fn missed_cron_ticks_follow_the_catch_up_policy(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    // An app per policy: each app's `ticks` and `missed` are its trigger's.
    let skip = h::app(s, "skip").await;
    let last = h::app(s, "last").await;
    for (app, catch_up) in [(&skip, CatchUp::Skip), (&last, CatchUp::Last)] {
        let flow = deploy(&host, app.id, "flow", guests::FLOW).await;
        trigger(s, app.id, flow, cron(catch_up), RetryPolicy::default()).await;
    }
    run_for(&[&host], Duration::from_secs(2)).await;
    let stopped = Timestamp::now();
    // No dispatcher for 6 ticks.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let restarted = Timestamp::now();
    run_for(&[&host], Duration::from_secs(2)).await;

    // Ticks scheduled while no dispatcher ran, and not on time when it came
    // back (on time: within `cron::GRACE` of their time).
    let missed_window = |ticks: &HashMap<String, Value>| -> Vec<String> {
        let from = stopped.plus(Duration::from_millis(500)).0;
        let to = restarted.minus(cron_grace() + Duration::from_millis(500)).0;
        ticks
            .keys()
            .filter(|at| {
                let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
                at > from && at < to
            })
            .cloned()
            .collect()
    };
    let skip_ticks = collection(s, skip.id, "ticks").await;
    let last_ticks = collection(s, last.id, "ticks").await;
    assert_eq!(
        missed_window(&skip_ticks),
        Vec::<String>::new(),
        "skip runs none"
    );
    assert!(missed_window(&last_ticks).len() <= 1, "{last_ticks:?}");
    let missed = collection(s, last.id, "missed").await;
    let caught_up: Vec<_> = missed
        .iter()
        .filter(|(_, m)| m.as_u64().unwrap() >= 2)
        .collect();
    assert_eq!(
        caught_up.len(),
        1,
        "`last` ran the newest missed tick once: {missed:?}"
    );
    let skipped = collection(s, skip.id, "missed").await;
    assert!(skipped.values().all(|m| m == &json!(0)), "{skipped:?}");
}

fn cron_grace() -> Duration {
    picloud_host::cron::GRACE
}

async fn a_component_built_against_0_2_keeps_running(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 2);
    let app = h::app(s, "shop").await;
    let legacy = deploy(&host, app.id, "legacy", guests::CONTRACT_0_2_0).await;
    let t = trigger(s, app.id, legacy, kv("in"), RetryPolicy::default()).await;
    s.kv_set(app.id, "in", "ok", &json!({"x": 1}), 0)
        .await
        .unwrap();
    s.kv_set(app.id, "in", "bad", &json!({"fail": "old style"}), 0)
        .await
        .unwrap();
    drain(&host).await;
    assert_eq!(collection(s, app.id, "legacy").await.len(), 2);
    let runs = runs_of(s, app.id, &t).await;
    let errors: Vec<_> = runs.iter().map(|r| r.error.clone()).collect();
    assert_eq!(runs.len(), 3, "one success, two attempts: {errors:?}");
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error, "old style");
}

async fn a_trigger_stops_at_its_own_depth_naming_the_chain(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "shop").await;
    let bomb = deploy(&host, app.id, "bomb", guests::DEPTH_BOMB).await;
    let t = s
        .create_trigger(&NewTrigger {
            app_id: app.id,
            script_id: bomb,
            name: "bomb".into(),
            registered_by_principal: ADMIN.into(),
            spec: kv("loop"),
            retry: RetryPolicy::default(),
            max_depth: Some(3),
        })
        .await
        .unwrap();
    assert_eq!(t.max_depth, Some(3));
    s.kv_set(app.id, "loop", "k", &json!({"n": 0}), 0)
        .await
        .unwrap();
    drain(&host).await;

    // Depths 0 to 3 ran; the write at depth 4 stopped for this trigger,
    // below the host's limit of 8.
    let runs = runs_of(s, app.id, &t).await;
    let ran = runs
        .iter()
        .filter(|r| r.outcome.as_str() == "succeeded")
        .count();
    assert_eq!(ran, 4, "{runs:?}");
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].trigger_id, Some(t.id));
    assert_eq!(
        dead[0].last_error,
        "trigger 'bomb': its max depth 3 exceeded; caused by triggers (newest first): \
         bomb <- bomb <- bomb <- bomb"
    );
}

async fn a_script_publishes_to_subscribers_one_level_deeper(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "shop").await;
    let flow = deploy(&host, app.id, "flow", guests::FLOW).await;
    let no = RetryPolicy::default();
    trigger(s, app.id, flow, kv("orders"), no).await;
    let sub = trigger(
        s,
        app.id,
        flow,
        TriggerSpec::Pubsub {
            topic: "order.*".into(),
        },
        no,
    )
    .await;
    let publish = json!({"publish": [{"topic": "order.placed", "body": {"id": 9}}]});
    s.kv_set(app.id, "orders", "o9", &publish, 0).await.unwrap();
    drain(&host).await;
    let runs = runs_of(s, app.id, &sub).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].source, "pubsub");
    assert_eq!(runs[0].op, "publish");
}
