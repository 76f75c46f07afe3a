//! Run records and logs (issue 11): every invocation leaves a run, written
//! with its event's outcome; a dead letter shows its history; reading needs
//! `AppLogs`; retention ages runs out; `logs --follow` sees runs that a
//! dispatcher in another process made. On both backends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_host::TriggerHost;
use picloud_host::admin::{Admin, AdminError};
use picloud_host::auth::{MemberAuthorizer, Role};
use picloud_host::config::TriggerConfig;
use picloud_host::model::{
    AppId, DeadLetterFilter, KvOps, NewTrigger, Script, ScriptId, TriggerSpec,
};
use picloud_host::runs::{Run, RunFilter, RunOutcome, RunsMode};
use picloud_host::runtime::LogLevel;
use picloud_host::store::Store;
use picloud_tests::db::{Pool, TempDir, TestDb};
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use picloud_tests::procs::spawn_host;
use serde_json::json;

picloud_tests::contract!(
    a_failing_scripts_runs_show_every_attempt_with_its_logs,
    a_dead_letter_handler_that_gives_up_is_recorded_as_the_recursion_stop,
    a_limit_trip_names_the_limit_and_the_log_budget_bounds_what_is_stored,
    a_synchronous_invoke_leaves_a_run,
    runs_mode_failures_keeps_failures_and_off_keeps_none,
    retention_removes_old_runs_and_keeps_recent_ones,
    a_viewer_can_read_logs_and_a_non_member_cannot,
    logs_follow_sees_runs_of_a_dispatcher_in_another_process,
    a_commit_retried_after_it_landed_records_each_run_once,
    a_run_whose_host_call_was_refused_is_recorded_denied,
    a_removed_triggers_pending_retry_is_recorded_skipped,
);

async fn kv_trigger(s: &Arc<dyn Store>, app: AppId, script: ScriptId, collection: &str) {
    kv_trigger_as(s, app, script, collection, ADMIN).await;
}

async fn kv_trigger_as(
    s: &Arc<dyn Store>,
    app: AppId,
    script: ScriptId,
    collection: &str,
    principal: &str,
) {
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
    .expect("kv trigger");
}

/// The `always-fails` fixture deployed as `fails`, on a kv trigger of
/// `orders` registered by [`ADMIN`].
async fn failing_on_orders(host: &TriggerHost, app: AppId) -> Script {
    let fails = h::deploy(host.runtime(), app, "fails", guests::ALWAYS_FAILS).await;
    kv_trigger(host.store(), app, fails.id, "orders").await;
    fails
}

async fn settle(host: &TriggerHost) {
    tokio::time::timeout(Duration::from_secs(60), host.run_until_empty())
        .await
        .expect("every event settles within a minute")
        .expect("dispatch ran");
}

fn admin(s: &Arc<dyn Store>) -> Admin {
    Admin::new(s.clone(), Arc::new(MemberAuthorizer::new(s.clone())))
}

async fn runs_of(s: &Arc<dyn Store>, app: AppId) -> Vec<Run> {
    s.list_runs(&RunFilter {
        limit: 1000,
        oldest_first: true,
        ..RunFilter::app(app)
    })
    .await
    .expect("listing runs")
}

/// Run raw SQL on the test database: `sqlite` or `postgres`, by backend.
async fn sql(db: &TestDb, sqlite: &str, postgres: &str) {
    match &db.pool {
        Pool::Sqlite(pool) => sqlx::query(sqlite).execute(pool).await.map(drop),
        Pool::Postgres(pool) => sqlx::query(postgres).execute(pool).await.map(drop),
    }
    .expect("raw SQL on the test database");
}

fn lines(run: &Run, level: LogLevel) -> Vec<&str> {
    run.logs
        .iter()
        .filter(|l| l.level == level)
        .map(|l| l.message.trim_end())
        .collect()
}

async fn a_failing_scripts_runs_show_every_attempt_with_its_logs(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(3), h::ceiling());
    let app = h::app(s, "shop").await;
    let fails = failing_on_orders(&host, app.id).await;
    s.kv_set(app.id, "orders", "o1", &json!({"n": 1}), 0)
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
    assert_eq!(dead.len(), 1, "{dead:?}");
    // The library's history and the store's agree: three attempts, in order.
    let (dl, history) = admin(s)
        .dead_letter_history(dead[0].id, Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(dl.id, dead[0].id);
    assert_eq!(history, s.dead_letter_runs(dl.id).await.unwrap());
    let attempts: Vec<i32> = history.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "{history:#?}");
    let event = history[0].event_id;
    for run in &history {
        assert_eq!(run.outcome, RunOutcome::Failed);
        assert_eq!(run.error.as_deref(), Some("always fails: kv/set"));
        assert_eq!(run.limit, None);
        assert_eq!((run.source.as_str(), run.op.as_str()), ("kv", "set"));
        assert_eq!(run.script_id, Some(fails.id));
        assert_eq!(run.trigger_id, dl.trigger_id);
        assert_eq!(run.principal, ADMIN);
        assert_eq!(run.event_id, event, "one event across its attempts");
        assert_eq!(run.reply_bytes, None, "not a synchronous call");
        let n = run.attempt;
        assert_eq!(
            lines(run, LogLevel::Info),
            [format!("attempt {n} of {event}")]
        );
        assert_eq!(
            lines(run, LogLevel::Stdout),
            [format!("stdout of attempt {n}")]
        );
        assert_eq!(
            lines(run, LogLevel::Stderr),
            [format!("stderr of attempt {n}")]
        );
    }
    assert!(
        history
            .windows(2)
            .all(|w| w[0].started_at <= w[1].started_at)
    );
    // `--failed` and `--event` listings find the same three runs; the
    // dead letter's own event (no dead-letter trigger) ran nothing.
    let failed = s
        .list_runs(&RunFilter {
            failed_only: true,
            event_id: Some(event),
            ..RunFilter::app(app.id)
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 3);
    assert_eq!(runs_of(s, app.id).await.len(), 3);
    // One run is all of a run: fetched by id, it is the listed one.
    assert_eq!(s.get_run(history[1].id).await.unwrap(), history[1]);
}

async fn a_dead_letter_handler_that_gives_up_is_recorded_as_the_recursion_stop(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(2), h::ceiling());
    let app = h::app(s, "shop").await;
    let fails = failing_on_orders(&host, app.id).await;
    s.create_trigger(&NewTrigger {
        app_id: app.id,
        script_id: fails.id,
        name: "triage".into(),
        registered_by_principal: ADMIN.into(),
        spec: TriggerSpec::DeadLetter { source: "*".into() },
        retry: Default::default(),
        max_depth: None,
    })
    .await
    .unwrap();
    s.kv_set(app.id, "orders", "o1", &json!(1), 0)
        .await
        .unwrap();
    settle(&host).await;

    let runs = runs_of(s, app.id).await;
    let outcomes: Vec<(&str, i32, RunOutcome)> = runs
        .iter()
        .map(|r| (r.source.as_str(), r.attempt, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("kv", 1, RunOutcome::Failed),
            ("kv", 2, RunOutcome::Failed),
            ("dead_letter", 1, RunOutcome::Failed),
            ("dead_letter", 2, RunOutcome::RecursionStopped),
        ],
        "{runs:#?}"
    );
    let stopped = &runs[3];
    assert_eq!(
        stopped.error.as_deref(),
        Some("always fails: dead_letter/created")
    );
    assert_eq!(host.metrics().recursion_stopped, 1);
}

async fn a_limit_trip_names_the_limit_and_the_log_budget_bounds_what_is_stored(db: &TestDb) {
    let s = &db.store;
    let ceiling = h::ceiling();
    let host = h::host(s, h::fast_retries(1), ceiling.clone());
    let app = h::app(s, "hostile").await;
    h::deploy(host.runtime(), app.id, "hostile", guests::HOSTILE).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let host = Arc::new(host);
    let running = tokio::spawn({
        let (host, shutdown) = (host.clone(), shutdown.clone());
        async move { host.run(shutdown).await }
    });
    for mode in ["loop", "log-flood", "memory"] {
        let result = host
            .invoke(
                app.id,
                "hostile",
                json!({"mode": mode}),
                ADMIN,
                Duration::from_secs(20),
            )
            .await;
        assert!(result.is_err(), "{mode} must fail");
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let runs = runs_of(s, app.id).await;
    let limits: Vec<(RunOutcome, Option<&str>)> = runs
        .iter()
        .map(|r| (r.outcome, r.limit.as_deref()))
        .collect();
    assert_eq!(
        limits,
        [
            (RunOutcome::Limit, Some("timeout")),
            (RunOutcome::Limit, Some("log")),
            (RunOutcome::Limit, Some("memory")),
        ],
        "{runs:#?}"
    );
    assert_eq!(
        runs[0].error.as_deref(),
        Some(format!("timeout after {} ms", ceiling.timeout.as_millis()).as_str())
    );
    assert!(runs[0].duration_us >= ceiling.timeout.as_micros() as i64);
    // What the flood logged before the limit is kept, within the budget
    // (each line costs its bytes and one for its line break).
    let flood = &runs[1];
    let stored: u64 = flood.logs.iter().map(|l| l.message.len() as u64 + 1).sum();
    assert!(!flood.logs.is_empty());
    assert!(
        stored <= ceiling.log_bytes,
        "{stored} bytes stored, budget {}",
        ceiling.log_bytes
    );
    assert!(stored + 100 > ceiling.log_bytes, "the budget was used up");
}

async fn a_synchronous_invoke_leaves_a_run(db: &TestDb) {
    let s = &db.store;
    let host = Arc::new(h::host(s, h::fast_retries(1), h::ceiling()));
    let app = h::app(s, "hello").await;
    let greeter = h::deploy(host.runtime(), app.id, "greeter", guests::GREETER).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (host, shutdown) = (host.clone(), shutdown.clone());
        async move { host.run(shutdown).await }
    });
    let reply = host
        .invoke(
            app.id,
            "greeter",
            json!({"name": "Bo"}),
            ADMIN,
            Duration::from_secs(20),
        )
        .await
        .expect("the greeter replies")
        .expect("with a body");
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let runs = runs_of(s, app.id).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run.outcome, RunOutcome::Succeeded);
    assert_eq!(run.reply_bytes, Some(reply.len() as i64));
    assert_eq!((run.source.as_str(), run.op.as_str()), ("http", "invoke"));
    assert_eq!(run.script_id, Some(greeter.id));
    assert_eq!(run.trigger_id, None);
    assert_eq!(run.principal, ADMIN);
    assert_eq!(run.error, None);
    assert!(run.duration_us > 0);
}

async fn runs_mode_failures_keeps_failures_and_off_keeps_none(db: &TestDb) {
    let s = &db.store;
    for (mode, app_name) in [(RunsMode::Failures, "failures"), (RunsMode::Off, "off")] {
        let config = TriggerConfig {
            runs: mode,
            ..h::fast_retries(2)
        };
        let host = h::host(s, config, h::ceiling());
        let app = h::app(s, app_name).await;
        let noop = h::deploy(host.runtime(), app.id, "noop", guests::NOOP).await;
        let fails = h::deploy(host.runtime(), app.id, "fails", guests::ALWAYS_FAILS).await;
        kv_trigger(s, app.id, noop.id, "good").await;
        kv_trigger(s, app.id, fails.id, "bad").await;
        for i in 0..5 {
            s.kv_set(app.id, "good", &format!("k{i}"), &json!(i), 0)
                .await
                .unwrap();
        }
        s.kv_set(app.id, "bad", "k", &json!(0), 0).await.unwrap();
        settle(&host).await;
        let runs = runs_of(s, app.id).await;
        let m = host.metrics();
        assert_eq!(m.dead_lettered, 1, "{mode:?}: {m:?}");
        match mode {
            RunsMode::Failures => {
                assert_eq!(runs.len(), 2, "{runs:#?}");
                assert!(runs.iter().all(|r| r.outcome == RunOutcome::Failed));
            }
            _ => assert!(runs.is_empty(), "{runs:#?}"),
        }
    }
}

async fn retention_removes_old_runs_and_keeps_recent_ones(db: &TestDb) {
    let s = &db.store;
    let config = TriggerConfig {
        run_retention_per_app: 4,
        ..h::fast_retries(1)
    };
    let host = h::host(s, config, h::ceiling());
    let (busy, quiet) = (h::app(s, "busy").await, h::app(s, "quiet").await);
    for app in [&busy, &quiet] {
        let noop = h::deploy(host.runtime(), app.id, "noop", guests::NOOP).await;
        kv_trigger(s, app.id, noop.id, "c").await;
    }
    for i in 0..6 {
        s.kv_set(busy.id, "c", &format!("k{i}"), &json!(i), 0)
            .await
            .unwrap();
    }
    for i in 0..3 {
        s.kv_set(quiet.id, "c", &format!("k{i}"), &json!(i), 0)
            .await
            .unwrap();
    }
    settle(&host).await;
    assert_eq!(runs_of(s, busy.id).await.len(), 6);
    // Age one of the quiet app's runs past the 7 days of retention: a run's
    // id says when it finished (UUIDv7), so its id becomes one of
    // 2020-01-01 (1577836800000 ms in its first six bytes).
    let quiet_runs = runs_of(s, quiet.id).await;
    let old = quiet_runs[0].id;
    let mut aged = *old.0.as_bytes();
    aged[..6].copy_from_slice(&1_577_836_800_000u64.to_be_bytes()[2..]);
    let aged = uuid::Uuid::from_bytes(aged);
    // SQLite keeps the runs table compact: blob ids.
    let sqlite = format!(
        "update runs set id = x'{}' where id = x'{}'",
        aged.simple(),
        old.0.simple()
    );
    let postgres = format!("update runs set id = '{aged}' where id = '{old}'");
    sql(db, &sqlite, &postgres).await;
    let busy_runs = runs_of(s, busy.id).await;

    let report = host.gc().await.unwrap();
    assert_eq!(report.runs, 3, "two over the busy app's count, one too old");
    // The busy app keeps its newest four; the quiet app its two recent ones.
    let kept: Vec<_> = runs_of(s, busy.id).await.iter().map(|r| r.id).collect();
    let newest: Vec<_> = busy_runs[2..].iter().map(|r| r.id).collect();
    assert_eq!(kept, newest);
    let kept: Vec<_> = runs_of(s, quiet.id).await.iter().map(|r| r.id).collect();
    assert_eq!(kept, [quiet_runs[1].id, quiet_runs[2].id]);
    // Collecting again finds nothing more.
    assert_eq!(host.gc().await.unwrap().runs, 0);
}

async fn a_viewer_can_read_logs_and_a_non_member_cannot(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(1), h::ceiling());
    let app = h::app(s, "shop").await;
    s.set_member(app.id, "vera", Role::Viewer).await.unwrap();
    failing_on_orders(&host, app.id).await;
    s.kv_set(app.id, "orders", "o1", &json!(1), 0)
        .await
        .unwrap();
    settle(&host).await;
    let dead = s
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    let a = admin(s);
    let filter = RunFilter::app(app.id);

    let seen = a.list_runs(&filter, Some("vera")).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(a.get_run(seen[0].id, Some("vera")).await.unwrap(), seen[0]);
    let (_, history) = a
        .dead_letter_history(dead[0].id, Some("vera"))
        .await
        .unwrap();
    assert_eq!(history, seen);
    a.follow_runs(filter.clone(), Some("vera")).await.unwrap();

    let denied = |r: Result<(), AdminError>| {
        let e = r.expect_err("mallory is refused");
        assert!(matches!(e, AdminError::PermissionDenied { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "permission denied: mallory lacks AppLogs on this app (not a member, or a member \
             whose role does not grant it): the viewer role grants it; an app admin or the \
             operator runs `picloud-host member add APP mallory viewer`"
        );
    };
    denied(a.list_runs(&filter, Some("mallory")).await.map(drop));
    denied(a.get_run(seen[0].id, Some("mallory")).await.map(drop));
    denied(
        a.dead_letter_history(dead[0].id, Some("mallory"))
            .await
            .map(drop),
    );
    denied(a.follow_runs(filter, Some("mallory")).await.map(drop));
}

async fn logs_follow_sees_runs_of_a_dispatcher_in_another_process(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(1), h::ceiling());
    let app = h::app(s, "shop").await;
    s.set_member(app.id, "vera", Role::Viewer).await.unwrap();
    failing_on_orders(&host, app.id).await;
    let dir = TempDir::new();
    let env = [(
        "PICLOUD_CACHE_DIR",
        dir.0.join("cache").display().to_string(),
    )];
    let mut follow = spawn_host(
        &db.url,
        &["logs", "shop", "--follow", "--as", "vera"],
        &env,
        &dir.0,
        "follow",
    );
    wait_for(&follow, |out, err| {
        err.contains("following") || !out.is_empty()
    });
    follow.assert_running();

    // Another process dispatches what is written from here on.
    let dispatch_env = [
        env[0].clone(),
        ("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "1".to_owned()),
    ];
    let mut dispatcher = spawn_host(&db.url, &["dispatch"], &dispatch_env, &dir.0, "dispatcher");
    for key in ["o1", "o2"] {
        s.kv_set(app.id, "orders", key, &json!(1), 0).await.unwrap();
    }
    wait_for(&follow, |out, _| {
        out.matches("always fails: kv/set").count() >= 2
    });
    dispatcher.interrupt(Duration::from_secs(10));
    let out = follow.stdout();
    let runs = runs_of(s, app.id).await;
    assert_eq!(runs.len(), 2);
    for run in &runs {
        // Every line carries its run's time, id, script and level.
        let prefix = format!("{} {} fails ", run.started_at, run.id);
        for (level, text) in [
            ("info", format!("attempt 1 of {}", run.event_id)),
            ("stdout", "stdout of attempt 1".to_owned()),
            ("stderr", "stderr of attempt 1".to_owned()),
            ("failed", "always fails: kv/set".to_owned()),
        ] {
            let line = format!("{prefix}{level:<7}{text}");
            assert!(out.contains(&line), "no line {line:?} in:\n{out}");
        }
    }
    let status = follow.interrupt(Duration::from_secs(10));
    assert!(
        status.success(),
        "Ctrl-C ends `logs --follow` cleanly: {status:?}"
    );
}

/// Wait up to 60 s until the process's output satisfies `done`.
fn wait_for(p: &picloud_tests::procs::HostProcess, done: impl Fn(&str, &str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (out, err) = (p.stdout(), p.stderr());
        if done(&out, &err) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting; stdout:\n{out}\nstderr:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A claim that timed out may still have committed; the dispatcher then
/// commits the same completions and runs again. Each run is recorded once.
async fn a_commit_retried_after_it_landed_records_each_run_once(db: &TestDb) {
    let s = &db.store;
    let app = h::app(s, "shop").await;
    let ev = s
        .enqueue(&picloud_host::model::NewEvent::raw(
            app.id,
            "kv",
            "set",
            json!({"collection": "c", "key": "k"}),
        ))
        .await
        .unwrap();
    let run = picloud_host::runs::NewRun {
        id: picloud_host::model::RunId::new(),
        app_id: app.id,
        trigger_id: None,
        script_id: None,
        event_id: ev,
        source: "kv".into(),
        op: "set".into(),
        attempt: 1,
        principal: ADMIN.into(),
        started_at: picloud_host::model::Timestamp::now(),
        duration_us: 12,
        outcome: RunOutcome::Succeeded,
        limit: None,
        error: None,
        reply_bytes: None,
        logs: vec![picloud_host::runtime::LogLine {
            level: LogLevel::Warn,
            message: "once".into(),
        }],
    };
    let runs = [run.clone()];
    let claimed = s
        .complete_and_claim(&[], &runs, "w", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    for _ in 0..2 {
        s.complete(&[ev], &runs).await.unwrap();
        s.complete_and_claim(&[ev], &runs, "w", 10, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let stored = runs_of(s, app.id).await;
    assert_eq!(stored.len(), 1, "{stored:#?}");
    let got = &stored[0];
    assert_eq!(
        (got.id, got.event_id, got.duration_us, got.logs.clone()),
        (run.id, ev, 12, run.logs.clone())
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}

async fn a_run_whose_host_call_was_refused_is_recorded_denied(db: &TestDb) {
    let s = &db.store;
    let host = h::host(s, h::fast_retries(1), h::ceiling());
    let app = h::app(s, "revoke").await;
    s.set_member(app.id, "bob", Role::Developer).await.unwrap();
    let script = h::deploy(host.runtime(), app.id, "order-totals", guests::ORDER_TOTALS).await;
    kv_trigger_as(s, app.id, script.id, "orders", "bob").await;
    // Bob leaves: the trigger he registered runs as him and may not write.
    s.remove_member(app.id, "bob").await.unwrap();
    let order = json!({"customer": "c", "items": [{"sku": "x", "qty": 1, "price_cents": 5}]});
    s.kv_set(app.id, "orders", "o1", &order, 0).await.unwrap();
    settle(&host).await;
    let runs = runs_of(s, app.id).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].outcome, RunOutcome::Denied);
    assert_eq!(runs[0].principal, "bob");
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("permission denied"),
        "{:?}",
        runs[0].error
    );
}

async fn a_removed_triggers_pending_retry_is_recorded_skipped(db: &TestDb) {
    let s = &db.store;
    let config = TriggerConfig {
        retry_base: Duration::from_secs(3600),
        retry_max: Duration::from_secs(3600),
        ..h::fast_retries(3)
    };
    let host = h::host(s, config, h::ceiling());
    let app = h::app(s, "shop").await;
    failing_on_orders(&host, app.id).await;
    s.kv_set(app.id, "orders", "o1", &json!(1), 0)
        .await
        .unwrap();
    host.run_until_idle().await.unwrap();
    // The retry waits an hour; its trigger goes, and the row comes due.
    let trigger = s.list_triggers(app.id).await.unwrap().remove(0);
    s.delete_trigger(trigger.id).await.unwrap();
    sql(
        db,
        "update outbox set due_at = '2020-01-01T00:00:00.000000Z'",
        "update outbox set due_at = now() - interval '1 minute'",
    )
    .await;
    settle(&host).await;
    let runs = runs_of(s, app.id).await;
    let outcomes: Vec<(i32, RunOutcome)> = runs.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(
        outcomes,
        [(1, RunOutcome::Failed), (2, RunOutcome::Skipped)],
        "{runs:#?}"
    );
    assert_eq!(
        runs[1].error,
        Some(format!("trigger {} was removed", trigger.id))
    );
    assert_eq!(runs[1].duration_us, 0);
    assert_eq!(s.count_events(None).await.unwrap(), 0);
}
