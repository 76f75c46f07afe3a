//! The embedding API (issue 12), on both backends: events nothing would run
//! are refused at enqueue with one line (and a `NewEvent` with inconsistent
//! bookkeeping cannot be built: its fields are private); a script run enqueued in the
//! application's own transaction runs as its principal, is retried,
//! dead-lettered and replayed as that principal, and vanishes with a
//! rolled-back transaction; a principal without the capability is refused;
//! a queue message and a publication from the application's transaction
//! are delivered only if it commits.

use std::time::Duration;

use picloud_host::admin::{AdminError, TriggerOptions};
use picloud_host::auth::Role;
use picloud_host::messages;
use picloud_host::model::{DeadLetterFilter, KvOps, NewEvent, Resolution, source};
use picloud_host::runs::{RunFilter, RunOutcome};
use picloud_host::store::Conn;
use picloud_host::{InvokeCallError, TriggerHost};
use picloud_tests::cli::table_counts;
use picloud_tests::db::{FreshPostgres, TempDir};
use picloud_tests::db::{Pool, TestDb};
use picloud_tests::guests;
use picloud_tests::host as h;
use serde_json::json;

/// The README's embedding example, compiled as it is shipped
/// (`cargo run -p picloud-host --example embed`), run here on both backends.
#[path = "../host/examples/embed.rs"]
mod embed;

picloud_tests::contract!(
    events_nothing_would_run_are_refused_at_enqueue,
    an_invocation_in_the_applications_transaction_runs_as_its_principal,
    a_failing_invocation_is_dead_lettered_and_replayed_as_its_principal,
    an_invocation_for_a_principal_without_the_capability_is_refused,
    every_facade_operation_refuses_a_principal_without_the_capability,
    messages_from_the_applications_transaction_go_only_if_it_commits,
);

/// Enqueue `events` in a transaction of the test's own pool, then commit
/// it (`commit`) or roll it back. The first refusal rolls it back and is
/// returned.
async fn enqueue_own(
    db: &TestDb,
    events: &[NewEvent],
    commit: bool,
) -> picloud_host::store::Result<()> {
    macro_rules! within {
        ($tx:expr) => {{
            let mut tx = $tx;
            let mut result = Ok(());
            for event in events {
                result = Conn::from(&mut *tx).enqueue(event).await.map(drop);
                if result.is_err() {
                    break;
                }
            }
            if commit && result.is_ok() {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            result
        }};
    }
    match &db.pool {
        Pool::Sqlite(pool) => within!(pool.begin_with("BEGIN IMMEDIATE").await.unwrap()),
        Pool::Postgres(pool) => within!(pool.begin().await.unwrap()),
    }
}

/// `host.enqueue_invocation_in` in a transaction of the test's own pool,
/// then commit it (`commit`) or roll it back.
async fn invoke_in_own_tx(
    db: &TestDb,
    host: &TriggerHost,
    app: picloud_host::model::AppId,
    script: &str,
    payload: serde_json::Value,
    principal: &str,
    commit: bool,
) -> Result<picloud_host::model::EventId, InvokeCallError> {
    macro_rules! within {
        ($tx:expr) => {{
            let mut tx = $tx;
            let result = host
                .enqueue_invocation_in(&mut *tx, app, script, &payload, principal)
                .await;
            if commit && result.is_ok() {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            result
        }};
    }
    match &db.pool {
        Pool::Sqlite(pool) => within!(pool.begin_with("BEGIN IMMEDIATE").await.unwrap()),
        Pool::Postgres(pool) => within!(pool.begin().await.unwrap()),
    }
}

async fn settle(host: &TriggerHost) {
    tokio::time::timeout(Duration::from_secs(60), host.run_until_empty())
        .await
        .expect("every event settles within a minute")
        .expect("dispatch ran");
}

async fn events_nothing_would_run_are_refused_at_enqueue(db: &TestDb) {
    let s = &db.store;
    let app = h::app(s, "shop").await;
    let unserved = NewEvent::raw(app.id, source::EMAIL, "received", json!({"n": 1}));
    let no_queue = NewEvent::raw(app.id, source::QUEUE, "message", json!({"body": 1}));
    let bad_op = NewEvent::raw(app.id, source::KV, "frobnicate", json!({"collection": "c"}));
    let no_collection = NewEvent::raw(app.id, source::KV, "set", json!({"key": "k"}));
    let no_dl_source = NewEvent::raw(app.id, source::DEAD_LETTER, "created", json!({}));
    let cases = [
        (
            unserved,
            "no trigger kind serves source \"email\" (served: kv, dead_letter, queue, pubsub)",
        ),
        (no_queue, "a queue event's payload needs a \"queue\" string"),
        (
            bad_op,
            "a kv event's op must be set or delete, not \"frobnicate\"",
        ),
        (
            no_collection,
            "a kv event's payload needs a \"collection\" string",
        ),
        (
            no_dl_source,
            "a dead_letter event's payload needs a \"source\" string",
        ),
    ];
    for (event, expected) in &cases {
        for result in [
            s.enqueue(event).await.map(drop),
            s.enqueue_many(std::slice::from_ref(event)).await.map(drop),
            enqueue_own(db, std::slice::from_ref(event), true).await,
        ] {
            let err = result.expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }
    assert_eq!(
        s.count_events(None).await.unwrap(),
        0,
        "nothing was written"
    );
}

async fn an_invocation_in_the_applications_transaction_runs_as_its_principal(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    let app = h::app(s, "shop").await;
    s.set_member(app.id, "dev", Role::Developer).await.unwrap();
    h::deploy(host.runtime(), app.id, "noop", guests::NOOP).await;

    // Rolled back: nothing runs.
    invoke_in_own_tx(db, &host, app.id, "noop", json!({"n": 0}), "dev", false)
        .await
        .unwrap();
    assert_eq!(s.count_events(None).await.unwrap(), 0);

    let id = invoke_in_own_tx(db, &host, app.id, "noop", json!({"n": 1}), "dev", true)
        .await
        .unwrap();
    host.notify();
    settle(&host).await;
    let runs = s.list_runs(&RunFilter::app(app.id)).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run.outcome, RunOutcome::Succeeded);
    assert_eq!(run.principal, "dev");
    assert_eq!(run.event_id, id);
    assert_eq!((run.source.as_str(), run.op.as_str()), ("http", "invoke"));
    assert_eq!(run.trigger_id, None);

    // An unknown script is refused before anything is written.
    let err = invoke_in_own_tx(db, &host, app.id, "nope", json!({}), "dev", true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

async fn a_failing_invocation_is_dead_lettered_and_replayed_as_its_principal(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "shop").await;
    s.set_member(app.id, "dev", Role::Developer).await.unwrap();
    let fails = h::deploy(host.runtime(), app.id, "fails", guests::ALWAYS_FAILS).await;
    let invocation = NewEvent::invocation(app.id, fails.id, "dev", json!({"n": 1}));
    enqueue_own(db, &[invocation], true).await.unwrap();
    host.notify();
    settle(&host).await;
    let dead = s
        .list_dead_letters(&DeadLetterFilter {
            app_id: Some(app.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].attempt_count, 2);
    assert_eq!(dead[0].script_id, Some(fails.id));
    assert_eq!(dead[0].trigger_id, None);
    s.resolve(dead[0].id, Resolution::Replayed).await.unwrap();
    settle(&host).await;
    let runs = s
        .list_runs(&RunFilter {
            limit: 100,
            oldest_first: true,
            ..RunFilter::app(app.id)
        })
        .await
        .unwrap();
    // Two attempts, then two more after the replay: every one as "dev".
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|r| r.principal == "dev"), "{runs:?}");
    assert!(
        runs.iter().all(|r| r.outcome == RunOutcome::Failed),
        "{runs:?}"
    );
}

async fn an_invocation_for_a_principal_without_the_capability_is_refused(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "shop").await;
    s.set_member(app.id, "watcher", Role::Viewer).await.unwrap();
    h::deploy(host.runtime(), app.id, "noop", guests::NOOP).await;
    for principal in ["watcher", "stranger"] {
        let err = invoke_in_own_tx(db, &host, app.id, "noop", json!({}), principal, true)
            .await
            .unwrap_err();
        assert!(
            matches!(err, InvokeCallError::PermissionDenied { .. }),
            "{principal}: {err}"
        );
    }
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

/// Every operation of the facade (`TriggerHost`, `Admin`) that acts for a
/// principal refuses a viewer where it needs more than reading, and a
/// stranger everywhere, with `PermissionDenied`; nothing changes.
async fn every_facade_operation_refuses_a_principal_without_the_capability(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(1), h::ceiling());
    let app = h::app(s, "shop").await;
    s.set_member(app.id, "watcher", Role::Viewer).await.unwrap();
    h::deploy(host.runtime(), app.id, "fails", guests::ALWAYS_FAILS).await;
    host.admin()
        .add_trigger(
            app.id,
            TriggerOptions::kv("fails", "orders", KvOps::ALL),
            h::ADMIN,
        )
        .await
        .unwrap();
    s.kv_set(app.id, "orders", "o1", &json!(1), 0)
        .await
        .unwrap();
    settle(&host).await;
    let dead = s
        .list_dead_letters(&DeadLetterFilter {
            app_id: Some(app.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let dl = dead[0].id;
    let before = table_counts(db).await;
    let wasm = std::fs::read(guests::NOOP).unwrap();
    let admin = host.admin();
    let denied = |what: &str, e: AdminError| {
        assert!(
            matches!(e, AdminError::PermissionDenied { .. }),
            "{what}: {e:?}"
        );
    };
    for p in ["watcher", "stranger"] {
        denied(
            "deploy",
            host.deploy(app.id, "x", &wasm, Some(p)).await.unwrap_err(),
        );
        denied(
            "add_trigger",
            admin
                .add_trigger(app.id, TriggerOptions::kv("fails", "c", KvOps::ALL), p)
                .await
                .unwrap_err(),
        );
        denied(
            "add_trigger (dead letters)",
            admin
                .add_trigger(app.id, TriggerOptions::dead_letter("fails", "kv"), p)
                .await
                .unwrap_err(),
        );
        denied(
            "kv_set",
            admin
                .kv_set(app.id, "c", "k", &json!(1), p)
                .await
                .unwrap_err(),
        );
        denied(
            "kv_delete",
            admin
                .kv_delete(app.id, "orders", "o1", p)
                .await
                .unwrap_err(),
        );
        for resolution in [Resolution::Replayed, Resolution::Ignored] {
            let results = admin.resolve_many(&[dl], resolution, Some(p), |_| {}).await;
            for r in results {
                denied("resolve_many", r.unwrap_err());
            }
        }
        let filter = DeadLetterFilter {
            app_id: Some(app.id),
            ..Default::default()
        };
        denied(
            "replay_matching",
            admin
                .replay_matching(&filter, Some(p), |_, _| {})
                .await
                .unwrap_err(),
        );
        let invoked = host
            .invoke(app.id, "fails", json!({}), p, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(invoked, InvokeCallError::PermissionDenied { .. }),
            "{invoked}"
        );
        let enqueued = invoke_in_own_tx(db, &host, app.id, "fails", json!({}), p, true)
            .await
            .unwrap_err();
        assert!(
            matches!(enqueued, InvokeCallError::PermissionDenied { .. }),
            "{enqueued}"
        );
    }
    // Reading runs and logs: a viewer may, a stranger may not.
    let runs = RunFilter::app(app.id);
    assert!(admin.list_runs(&runs, Some("watcher")).await.is_ok());
    denied(
        "list_runs",
        admin.list_runs(&runs, Some("stranger")).await.unwrap_err(),
    );
    denied(
        "dead_letter_history",
        admin
            .dead_letter_history(dl, Some("stranger"))
            .await
            .unwrap_err(),
    );
    match admin.follow_runs(runs.clone(), Some("stranger")).await {
        Ok(_) => panic!("follow_runs let a stranger in"),
        Err(e) => denied("follow_runs", e),
    }
    assert_eq!(table_counts(db).await, before, "nothing changed");
}

#[tokio::test]
async fn the_embedding_example_runs_on_sqlite_in_either_migration_order() {
    for app_first in [true, false] {
        let dir = TempDir::new();
        let url = format!("sqlite://{}", dir.0.join("embed.db").display());
        let db = embed::connect(&url).await.unwrap();
        for _ in 0..2 {
            let summary = embed::run(&db, app_first)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            check(&summary);
        }
    }
}

#[tokio::test]
async fn the_embedding_example_runs_on_postgres_in_either_migration_order() {
    for app_first in [true, false] {
        let fresh = FreshPostgres::create().await;
        let db = embed::connect(&fresh.url).await.unwrap();
        for _ in 0..2 {
            let summary = embed::run(&db, app_first)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            check(&summary);
        }
        if let embed::AppDb::Postgres(pool) = db {
            pool.close().await;
        }
    }
}

/// The manager sends a queue message and publishes on a topic from its own
/// transaction (`messages::queue_message`, `messages::publication`): they
/// are delivered, once each, only if that transaction commits.
async fn messages_from_the_applications_transaction_go_only_if_it_commits(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    let app = h::app(s, "shop").await;
    h::deploy(host.runtime(), app.id, "flow", guests::FLOW).await;
    for options in [
        TriggerOptions::queue("flow", "mail", 1),
        TriggerOptions::pubsub("flow", "orders.*"),
    ] {
        host.admin()
            .add_trigger(app.id, options, h::ADMIN)
            .await
            .unwrap();
    }
    let events = [
        messages::queue_message(app.id, "mail", json!({"to": "ada"}), 0).unwrap(),
        messages::publication(app.id, "orders.eu", json!({"order": 1})).unwrap(),
    ];

    // Rolled back: nothing is enqueued, so nothing will run.
    enqueue_own(db, &events, false).await.unwrap();
    assert_eq!(s.count_events(None).await.unwrap(), 0);

    enqueue_own(db, &events, true).await.unwrap();
    host.notify();
    settle(&host).await;
    let runs = s.list_runs(&RunFilter::app(app.id)).await.unwrap();
    let mut kinds: Vec<_> = runs
        .iter()
        .map(|r| (r.source.as_str(), r.op.as_str(), r.outcome))
        .collect();
    kinds.sort_by_key(|k| k.0);
    assert_eq!(
        kinds,
        [
            ("pubsub", "publish", RunOutcome::Succeeded),
            ("queue", "message", RunOutcome::Succeeded),
        ],
        "one delivery each, from the committed transaction: {runs:?}"
    );
    // The flow script counts what it saw: once each.
    let seen = s.kv_list_keys(app.id, "seen", None, 100).await.unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

fn check(summary: &embed::Summary) {
    assert_eq!(
        summary.orders, 1,
        "the rolled-back order left nothing: {summary:?}"
    );
    assert_eq!(summary.totals, 1, "{summary:?}");
    assert!(summary.badge >= 1, "{summary:?}");
    assert_eq!(summary.replayed as i64, summary.badge, "{summary:?}");
    assert_eq!(summary.greeting, "hello, Ada");
}
