//! Python scripts, built from `examples/python` and `tests/python` with the
//! Python SDK (`sdk-python`) and the pinned componentize-py, through the
//! same lifecycle as the Rust examples, on both backends: a KV trigger, a
//! failure retried then dead-lettered, a Python dead-letter handler
//! resolving it and one failing into `handler_failed`, a synchronous
//! invocation, and a hostile Python handler stopped by the named limits;
//! and the SDK's and the examples' native unit tests (`picloud-py test`).

use std::sync::Arc;
use std::time::Duration;

use picloud_host::TriggerHost;
use picloud_host::model::{
    AppId, DeadLetterFilter, KvOps, NewTrigger, Resolution, ScriptId, TriggerSpec, source,
};
use picloud_host::runs::RunFilter;
use picloud_host::runtime::{InvokeError, LimitExceeded};
use picloud_host::store::Store;
use picloud_tests::db::TestDb;
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use serde_json::{Value, json};

picloud_tests::contract!(
    a_kv_trigger_and_a_synchronous_invocation,
    a_failure_is_retried_dead_lettered_and_handled_by_a_python_handler,
    a_failing_python_dead_letter_handler_ends_handler_failed,
    a_hostile_python_handler_is_stopped_by_the_named_limits,
);

/// The SDK's own unit tests and the Python examples' ones pass, run
/// natively by `picloud-py test` against `picloud_testing` (the loop a
/// script author runs before building).
#[test]
fn the_sdk_and_the_examples_pass_their_native_unit_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let folders = [
        "sdk-python/tests",
        "examples/python/greeter",
        "examples/python/dead-letter-triage",
    ];
    let out = std::process::Command::new("python3")
        .arg("sdk-python/picloud-py")
        .arg("test")
        .args(folders)
        .current_dir(&root)
        .output()
        .expect("running python3 sdk-python/picloud-py test (python3 is needed)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "picloud-py test failed:\n{stderr}");
    // unittest says "Ran N tests ... OK" once per folder.
    assert_eq!(stderr.matches("\nOK").count(), folders.len(), "{stderr}");
    assert!(!stderr.contains("Ran 0 tests"), "{stderr}");
}

/// A host whose compile cache is the tests' shared one (each Python
/// component compiles once per machine).
fn host(s: &Arc<dyn Store>, max_attempts: i32) -> TriggerHost {
    h::host_with_cache(
        s,
        h::fast_retries(max_attempts),
        h::ceiling(),
        h::shared_cache_dir(),
    )
}

async fn deploy(host: &TriggerHost, app: AppId, name: &str) -> ScriptId {
    h::deploy(host.runtime(), app, name, guests::python(name))
        .await
        .id
}

async fn trigger(s: &Arc<dyn Store>, app: AppId, script: ScriptId, spec: TriggerSpec) {
    s.create_trigger(&NewTrigger {
        app_id: app,
        script_id: script,
        name: format!("t-{}", uuid::Uuid::new_v4().simple()),
        registered_by_principal: ADMIN.into(),
        spec,
        retry: Default::default(),
        max_depth: None,
    })
    .await
    .expect("creating the trigger");
}

fn kv(collection: &str) -> TriggerSpec {
    TriggerSpec::Kv {
        collection: collection.into(),
        ops: KvOps::ALL,
        ordered: false,
    }
}

fn dead_letters_of_kv() -> TriggerSpec {
    TriggerSpec::DeadLetter {
        source: "kv".into(),
    }
}

/// The hostile script triggered by `collection`, and the Python triage on
/// the dead letters of kv events.
async fn hostile_with_triage(s: &Arc<dyn Store>, host: &TriggerHost, app: AppId, collection: &str) {
    let hostile = deploy(host, app, "hostile").await;
    let triage = deploy(host, app, "dead-letter-triage").await;
    trigger(s, app, hostile, kv(collection)).await;
    trigger(s, app, triage, dead_letters_of_kv()).await;
}

async fn all_dead_letters(s: &Arc<dyn Store>) -> Vec<picloud_host::model::DeadLetter> {
    s.list_dead_letters(&DeadLetterFilter::default())
        .await
        .expect("listing dead letters")
}

async fn drain(host: &TriggerHost) {
    tokio::time::timeout(Duration::from_secs(120), host.run_until_empty())
        .await
        .expect("the outbox drains within two minutes")
        .expect("dispatch ran");
}

/// Every log line of the app's runs, oldest first.
async fn log_lines(s: &Arc<dyn Store>, app: AppId) -> Vec<String> {
    let runs = s
        .list_runs(&RunFilter {
            limit: 1000,
            oldest_first: true,
            ..RunFilter::app(app)
        })
        .await
        .expect("listing runs");
    runs.iter()
        .flat_map(|r| r.logs.iter().map(|l| l.message.clone()))
        .collect()
}

async fn a_kv_trigger_and_a_synchronous_invocation(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "shop").await;
    let greeter = deploy(&host, app.id, "greeter").await;
    trigger(s, app.id, greeter, kv("greetings")).await;
    s.kv_set(app.id, "greetings", "ada", &json!({"name": "Ada"}), 0)
        .await
        .unwrap();
    drain(&host).await;
    let greeted = s.kv_get(app.id, "greeted", "ada").await.unwrap();
    assert_eq!(
        greeted.expect("greeted/ada written").value,
        json!({"message": "hello, Ada"})
    );
    assert!(
        log_lines(s, app.id)
            .await
            .contains(&"greeted Ada under greeted/ada".to_owned()),
        "the Python log line is in the run"
    );

    let script = s.get_script(greeter).await.unwrap();
    let inv = h::invocation(
        app.id,
        greeter,
        source::HTTP,
        "invoke",
        json!({"name": "Bo"}),
        ADMIN,
    );
    let done = host
        .runtime()
        .invoke(&script, inv)
        .await
        .expect("the invocation succeeds");
    let reply: Value = serde_json::from_slice(&done.reply.expect("a reply body")).unwrap();
    assert_eq!(reply, json!({"message": "hello, Bo"}));
    let m = host.metrics();
    assert_eq!((m.succeeded, m.dead_lettered), (2, 0), "{m:?}");
}

async fn a_failure_is_retried_dead_lettered_and_handled_by_a_python_handler(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 3);
    let app = h::app(s, "pay").await;
    hostile_with_triage(s, &host, app.id, "payments").await;
    s.kv_set(
        app.id,
        "payments",
        "p1",
        &json!({"do": "fail", "id": "p1"}),
        0,
    )
    .await
    .unwrap();
    drain(&host).await;

    let dls = all_dead_letters(s).await;
    assert_eq!(dls.len(), 1, "{dls:?}");
    let dl = &dls[0];
    assert_eq!(dl.attempt_count, 3, "retried twice before dead-lettering");
    assert_eq!(
        dl.last_error, "payment declined: p1",
        "Fail's message, as raised"
    );
    assert_eq!(dl.resolution, Some(Resolution::HandledByScript));
    let review = s
        .kv_get(app.id, "manual_review", &dl.id.to_string())
        .await
        .unwrap()
        .expect("the Python triage wrote manual_review/<dead letter id>");
    assert_eq!(
        review.value["payload"]["value"],
        json!({"do": "fail", "id": "p1"})
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0);
    let m = host.metrics();
    assert_eq!((m.retried, m.dead_lettered), (2, 1), "{m:?}");
}

async fn a_failing_python_dead_letter_handler_ends_handler_failed(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 2);
    let app = h::app(s, "rec").await;
    hostile_with_triage(s, &host, app.id, "jobs").await;
    // An uncaught exception: no triage rule matches it, so the handler fails
    // on every attempt. And a poison value, which the handler gives up on at
    // once by resolving it handler_failed itself.
    s.kv_set(app.id, "jobs", "j1", &json!({"do": "raise"}), 0)
        .await
        .unwrap();
    s.kv_set(
        app.id,
        "jobs",
        "j2",
        &json!({"do": "fail", "poison": true}),
        0,
    )
    .await
    .unwrap();
    drain(&host).await;

    let dls = all_dead_letters(s).await;
    assert_eq!(
        dls.len(),
        2,
        "no dead letter for the failing handler: {dls:?}"
    );
    for dl in &dls {
        assert_eq!(dl.resolution, Some(Resolution::HandlerFailed), "{dl:?}");
    }
    let raised = dls
        .iter()
        .find(|d| d.payload["key"] == json!("j1"))
        .expect("j1's dead letter");
    assert_eq!(raised.last_error, "ZeroDivisionError: division by zero");
    let lines = log_lines(s, app.id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Traceback") && l.contains("ZeroDivisionError")),
        "the uncaught exception's traceback is in the run's log: {lines:?}"
    );
    assert_eq!(s.count_events(None).await.unwrap(), 0, "outbox empty");
    assert_eq!(
        host.metrics().recursion_stopped,
        1,
        "only j1's handler failed on every attempt"
    );
}

async fn a_hostile_python_handler_is_stopped_by_the_named_limits(db: &TestDb) {
    let s = &db.store;
    let host = host(s, 1);
    let app = h::app(s, "hostile").await;
    let hostile = deploy(&host, app.id, "hostile").await;
    let script = s.get_script(hostile).await.unwrap();
    let run = |payload: Value| {
        let inv = h::invocation(app.id, hostile, source::HTTP, "invoke", payload, ADMIN);
        let (rt, script) = (host.runtime(), script.clone());
        async move { rt.invoke(&script, inv).await }
    };
    let err = run(json!({"do": "loop"}))
        .await
        .expect_err("the loop is stopped")
        .error;
    assert_eq!(err.to_string(), "timeout after 1000 ms");
    let err = run(json!({"do": "bomb"}))
        .await
        .expect_err("the bomb is stopped")
        .error;
    assert_eq!(err, InvokeError::Limit(LimitExceeded::Memory { mib: 32 }));
    // A viewer's script may not write: the refusal propagates as the error.
    s.set_member(app.id, "vera", picloud_host::auth::Role::Viewer)
        .await
        .unwrap();
    let inv = h::invocation(
        app.id,
        hostile,
        source::HTTP,
        "invoke",
        json!({"do": "deny"}),
        "vera",
    );
    let err = host
        .runtime()
        .invoke(&script, inv)
        .await
        .expect_err("refused")
        .error;
    assert_eq!(err.to_string(), "permission denied");
    // The same script runs fine next time.
    let done = run(json!({"do": "nothing"}))
        .await
        .expect("a good call after the hostile ones");
    let reply: Value = serde_json::from_slice(&done.reply.unwrap()).unwrap();
    assert_eq!(reply, json!({"echo": {"do": "nothing"}}));
}
