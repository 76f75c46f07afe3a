//! The real `picloud-host` binary, driven as a person would: the README's
//! tutorial end to end on both backends, every bad input with its message
//! and an unchanged database, and the demo checked against its database.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use picloud_host::model::{DeadLetterFilter, Resolution};
use picloud_tests::cli::{ok, run, run_with, table_counts};
use picloud_tests::db::TestDb;
use picloud_tests::guests;
use serde_json::{Value, json};

/// The README's tutorial blocks: the code after `<!-- tutorial: NAME -->`.
fn readme_block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let marker = format!("<!-- tutorial: {name} -->");
    let after = readme
        .split(&marker)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no {marker}"));
    let body = after
        .split("```")
        .nth(1)
        .expect("a code block after the marker");
    body.split_once('\n').expect("a fenced block").1.to_owned()
}

/// Build the README's tutorial crate once, as a script author would.
fn tutorial_wasm() -> &'static PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap();
        // Inside the repository's target dir, so rust-toolchain.toml applies;
        // its own [workspace] keeps it out of the repository's workspace.
        let dir = repo.join("target/tutorial/hello-trigger");
        std::fs::create_dir_all(dir.join("src")).unwrap();
        // The README's placeholder for the reader's checkout, wherever it is.
        let manifest =
            readme_block("Cargo.toml").replace("PICLOUD_CHECKOUT", repo.to_str().unwrap());
        assert!(
            manifest.contains(repo.join("sdk").to_str().unwrap()),
            "{manifest}"
        );
        std::fs::write(dir.join("Cargo.toml"), format!("{manifest}\n[workspace]\n")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), readme_block("src/lib.rs")).unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(&dir)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", repo.join("target/tutorial/target"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the tutorial crate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wasm = repo.join("target/tutorial/target/wasm32-wasip2/release/hello_trigger.wasm");
        // The tutorial's release profile keeps a script author's component small.
        let size = std::fs::metadata(&wasm).unwrap().len();
        assert!(
            size < 512 * 1024,
            "the tutorial's component is {size} bytes: its release profile should make it small"
        );
        wasm
    })
}

picloud_tests::contract!(
    readme_tutorial_end_to_end,
    a_failing_script_tells_its_whole_story,
    bad_inputs_are_refused_and_change_nothing
);

/// `dispatch --until-settled` waits through the retries; the dead letter
/// shows every attempt with its error and log lines.
async fn a_failing_script_tells_its_whole_story(db: &TestDb) {
    let url = &db.url;
    ok(url, &["app", "create", "shop", "--admin", "alice"]);
    ok(
        url,
        &["script", "deploy", "shop", "fails", guests::ALWAYS_FAILS],
    );
    ok(
        url,
        &[
            "trigger",
            "add-kv",
            "shop",
            "--script",
            "fails",
            "--collection",
            "orders",
            "--as",
            "alice",
        ],
    );
    ok(
        url,
        &["kv", "set", "shop", "orders", "o1", "{}", "--as", "alice"],
    );
    let retries = [
        ("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "3"),
        ("PICLOUD_TRIGGER_RETRY_BASE_MS", "50"),
    ];
    // `--until-idle` returns while the event waits for its retry (a second
    // away: well after the idle check, however slow the machine)...
    let slow = [retries[0], ("PICLOUD_TRIGGER_RETRY_BASE_MS", "1000")];
    let idle = run_with(url, &["dispatch", "--until-idle"], &slow);
    assert!(idle.ok, "{}", idle.stderr);
    assert!(idle.stdout.contains("0 dead-lettered"), "{}", idle.stdout);
    assert_eq!(db.store.count_events(None).await.unwrap(), 1);
    // ...`--until-settled` waits until it is dead-lettered.
    let settled = run_with(url, &["dispatch", "--until-settled"], &retries);
    assert!(settled.ok, "{}", settled.stderr);
    assert!(
        settled.stdout.contains("1 dead-lettered"),
        "{}",
        settled.stdout
    );
    assert_eq!(db.store.count_events(None).await.unwrap(), 0);
    let dead = db
        .store
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    let shown = ok(url, &["dead-letters", "show", &dead[0].id.to_string()]);
    assert!(shown.contains("history: 3 runs, oldest first"), "{shown}");
    for n in 1..=3 {
        for line in [
            format!("kv/set, attempt {n}"),
            format!("  info   attempt {n} of "),
            format!("  stdout stdout of attempt {n}"),
            format!("  stderr stderr of attempt {n}"),
        ] {
            assert!(shown.contains(&line), "no {line:?} in:\n{shown}");
        }
    }
    assert_eq!(shown.matches("error    always fails: kv/set").count(), 3);
    let json: Value = serde_json::from_str(&ok(
        url,
        &["dead-letters", "show", &dead[0].id.to_string(), "--json"],
    ))
    .unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 3);
    assert_eq!(json["dead_letter"]["attempt_count"], json!(3));
    // The failed runs are what `runs list --failed` lists.
    let failed = ok(url, &["runs", "list", "shop", "--failed"]);
    assert_eq!(
        failed.matches("always fails: kv/set").count(),
        3,
        "{failed}"
    );
}

async fn readme_tutorial_end_to_end(db: &TestDb) {
    let url = &db.url;
    let wasm = tutorial_wasm().to_str().unwrap().to_owned();
    // "Test it before you deploy it": the README's event, run once.
    let dir = picloud_tests::db::TempDir::new();
    let event = dir.0.join("event.json");
    std::fs::write(
        &event,
        r#"{"source":"kv","op":"set","payload":{"collection":"greetings","key":"ada","value":{"name":"Ada"},"version":1}}"#,
    )
    .unwrap();
    let tried = ok(url, &["run", &wasm, "--event", event.to_str().unwrap()]);
    assert!(tried.starts_with("succeeded in "), "{tried}");
    assert!(
        tried.contains(
            "log info   greeted Ada under greeted/ada
"
        ),
        "{tried}"
    );
    assert!(
        tried.contains("kv set greeted/ada = {\"message\":\"hello, Ada\"} (version 1)\n"),
        "{tried}"
    );
    assert!(ok(url, &["app", "create", "shop", "--admin", "alice"]).contains("created app shop"));
    ok(url, &["member", "add", "shop", "victor", "viewer"]);
    assert!(
        ok(url, &["script", "deploy", "shop", "hello", &wasm]).contains("deployed hello to shop")
    );
    ok(
        url,
        &[
            "trigger",
            "add-kv",
            "shop",
            "--script",
            "hello",
            "--collection",
            "greetings",
            "--as",
            "alice",
        ],
    );
    assert!(
        ok(
            url,
            &[
                "kv",
                "set",
                "shop",
                "greetings",
                "ada",
                r#"{"name":"Ada"}"#,
                "--as",
                "alice"
            ]
        )
        .contains("version 1")
    );
    let dispatched = ok(url, &["dispatch", "--until-settled"]);
    assert!(dispatched.contains("2 succeeded"), "{dispatched}");
    let greeted: Value =
        serde_json::from_str(&ok(url, &["kv", "get", "shop", "greeted", "ada"])).unwrap();
    assert_eq!(greeted, json!({"message": "hello, Ada"}));
    let reply = ok(
        url,
        &[
            "invoke",
            "shop",
            "hello",
            "--payload",
            r#"{"name":"Bo"}"#,
            "--as",
            "alice",
        ],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&reply).unwrap(),
        json!({"message": "hello, Bo"})
    );
    let triggers: Value =
        serde_json::from_str(&ok(url, &["trigger", "list", "shop", "--json"])).unwrap();
    assert_eq!(triggers.as_array().unwrap().len(), 1);
    assert_eq!(triggers[0]["registered_by_principal"], json!("alice"));
    assert_eq!(triggers[0]["spec"]["ordered"], json!(false));
    // An ordered trigger, as the SDK guide's section on ordering registers it.
    let added = ok(
        url,
        &[
            "trigger",
            "add-kv",
            "shop",
            "--script",
            "hello",
            "--collection",
            "queue",
            "--ordered",
            "--as",
            "alice",
        ],
    );
    assert!(added.contains("[set,delete, ordered per key]"), "{added}");
    let table = ok(url, &["trigger", "list", "shop"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("queue") && l.contains("set,delete ordered")),
        "{table}"
    );
    assert_eq!(ok(url, &["dead-letters", "count", "shop"]).trim(), "0");
    // The tutorial's last step: the script's log lines, run by run, also
    // for a viewer.
    let logs = ok(url, &["logs", "shop", "--as", "victor"]);
    let greeted = logs
        .lines()
        .find(|l| l.ends_with(" hello info   greeted Ada under greeted/ada"))
        .unwrap_or_else(|| panic!("no greeting line in:\n{logs}"));
    assert!(
        logs.lines()
            .any(|l| l.ends_with(" hello info   answered Bo")),
        "{logs}"
    );
    // Each line names its run, which `runs show` prints in full.
    let run_id = greeted.split(' ').nth(1).unwrap();
    let shown = ok(url, &["runs", "show", run_id]);
    for field in [
        "outcome  succeeded",
        "event    ",
        "kv/set, attempt 1",
        "as       alice",
        "  info   greeted Ada under greeted/ada",
    ] {
        assert!(shown.contains(field), "no {field:?} in:\n{shown}");
    }
    let runs: Value = serde_json::from_str(&ok(url, &["runs", "list", "shop", "--json"])).unwrap();
    let outcomes: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    // The trigger's run and the invoke's (the greeting's own event matches
    // no trigger: nothing ran for it).
    assert_eq!(outcomes, ["succeeded"; 2]);
    let scripts: Value =
        serde_json::from_str(&ok(url, &["script", "list", "shop", "--json"])).unwrap();
    assert_eq!(scripts[0]["name"], json!("hello"));
    // A viewer may read but not write.
    let r = run(
        url,
        &[
            "kv",
            "set",
            "shop",
            "greetings",
            "x",
            "{}",
            "--as",
            "victor",
        ],
    );
    assert!(
        !r.ok && r.stderr.contains("permission denied"),
        "{}",
        r.stderr
    );
    assert_eq!(db.store.count_events(None).await.unwrap(), 0);
}

async fn bad_inputs_are_refused_and_change_nothing(db: &TestDb) {
    let url = &db.url;
    let dir = picloud_tests::db::TempDir::new();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    };
    ok(url, &["app", "create", "shop", "--admin", "alice"]);
    ok(url, &["member", "add", "shop", "victor", "viewer"]);
    ok(
        url,
        &["script", "deploy", "shop", "greeter", guests::GREETER],
    );
    ok(url, &["kv", "set", "shop", "c", "k", "1", "--as", "alice"]);
    let noop = std::fs::read(guests::NOOP).unwrap();
    let unknown = "7b0c1f0e-1111-4222-8333-944445555666";
    let cases: Vec<(Vec<String>, Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                "script".into(),
                "deploy".into(),
                "shop".into(),
                "x".into(),
                file("x.wasm", b"hello"),
            ],
            vec![],
            "not a WebAssembly file",
        ),
        (
            vec![
                "script".into(),
                "deploy".into(),
                "shop".into(),
                "x".into(),
                file("t.wasm", &noop[..200]),
            ],
            vec![],
            "invalid component",
        ),
        (
            vec![
                "script".into(),
                "deploy".into(),
                "shop".into(),
                "x".into(),
                file("core.wasm", &guests::wat("core-module")),
            ],
            vec![],
            "core WebAssembly module, not a component",
        ),
        (
            vec![
                "script".into(),
                "deploy".into(),
                "shop".into(),
                "x".into(),
                file("evil.wasm", &guests::wat("unknown-import")),
            ],
            vec![],
            "imports instance `acme:evil/rootkit@1.0.0`, which the host does not provide",
        ),
        (
            vec![
                "script".into(),
                "deploy".into(),
                "shop".into(),
                "x".into(),
                file("empty.wasm", &guests::wat("no-handle-export")),
            ],
            vec![],
            "does not export `handle`",
        ),
        (
            vec![
                "script".into(),
                "deploy".into(),
                "shop".into(),
                "x".into(),
                guests::NOOP.into(),
            ],
            vec![("PICLOUD_SCRIPT_MAX_BYTES", "1000")],
            "over the limit of 1000 bytes",
        ),
        (
            vec![
                "script".into(),
                "deploy".into(),
                "shop".into(),
                "x".into(),
                "/nonexistent.wasm".into(),
            ],
            vec![],
            "cannot read /nonexistent.wasm",
        ),
        (
            vec!["script".into(), "list".into(), "nope".into()],
            vec![],
            "unknown app 'nope'",
        ),
        (
            vec![
                "trigger".into(),
                "add-kv".into(),
                "shop".into(),
                "--script".into(),
                "nope".into(),
                "--collection".into(),
                "c".into(),
                "--as".into(),
                "alice".into(),
            ],
            vec![],
            "unknown script 'nope'",
        ),
        (
            vec![
                "trigger".into(),
                "add-kv".into(),
                "shop".into(),
                "--script".into(),
                "greeter".into(),
                "--collection".into(),
                "a*b".into(),
                "--as".into(),
                "alice".into(),
            ],
            vec![],
            "invalid pattern 'a*b'",
        ),
        (
            vec![
                "trigger".into(),
                "add-kv".into(),
                "shop".into(),
                "--script".into(),
                "greeter".into(),
                "--collection".into(),
                "c".into(),
                "--ops".into(),
                "update".into(),
                "--as".into(),
                "alice".into(),
            ],
            vec![],
            "unknown kv op 'update'",
        ),
        (
            vec![
                "trigger".into(),
                "add-kv".into(),
                "shop".into(),
                "--script".into(),
                "greeter".into(),
                "--collection".into(),
                "c".into(),
                "--as".into(),
                "victor".into(),
            ],
            vec![],
            // A viewer: the refusal names the role that would do and how.
            "permission denied: victor lacks AppAdmin on this app (not a member, or a member \
             whose role does not grant it): the admin role grants it; an app admin or the \
             operator runs `picloud-host member add APP victor admin`",
        ),
        (
            vec!["trigger".into(), "enable".into(), unknown.into()],
            vec![],
            "unknown trigger",
        ),
        (
            vec!["trigger".into(), "enable".into(), "not-an-id".into()],
            vec![],
            "unknown trigger 'not-an-id'",
        ),
        (
            vec![
                "kv".into(),
                "set".into(),
                "shop".into(),
                "c".into(),
                "k".into(),
                "{bad".into(),
                "--as".into(),
                "alice".into(),
            ],
            vec![],
            "invalid JSON value",
        ),
        (
            vec![
                "kv".into(),
                "set".into(),
                "shop".into(),
                "c".into(),
                "k".into(),
                "2".into(),
                "--as".into(),
                "victor".into(),
            ],
            vec![],
            "permission denied",
        ),
        (
            vec![
                "invoke".into(),
                "shop".into(),
                "greeter".into(),
                "--payload".into(),
                "[1,".into(),
                "--as".into(),
                "alice".into(),
            ],
            vec![],
            "invalid JSON payload",
        ),
        (
            vec!["dead-letters".into(), "show".into(), unknown.into()],
            vec![],
            "unknown dead letter",
        ),
        (
            vec![
                "dead-letters".into(),
                "resolve".into(),
                unknown.into(),
                "bogus".into(),
            ],
            vec![],
            "unknown resolution 'bogus'",
        ),
        (
            vec!["dead-letters".into(), "replay".into(), unknown.into()],
            vec![],
            "unknown dead letter",
        ),
        (
            vec![
                "member".into(),
                "add".into(),
                "shop".into(),
                "eve".into(),
                "owner".into(),
            ],
            vec![],
            "unknown role 'owner'",
        ),
        (
            vec!["dispatch".into(), "--until-idle".into()],
            vec![("PICLOUD_SANDBOX_TIMEOUT_MS", "soon")],
            "invalid PICLOUD_SANDBOX_TIMEOUT_MS='soon'",
        ),
        (
            vec!["dispatch".into(), "--until-idle".into()],
            vec![("PICLOUD_MAX_TRIGGER_DEPTH", "0")],
            "invalid PICLOUD_MAX_TRIGGER_DEPTH='0'",
        ),
    ];
    let before = table_counts(db).await;
    for (args, env, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run_with(url, &args, env);
        assert!(!r.ok, "{args:?} should fail");
        let line = r.stderr.trim();
        assert!(
            line.starts_with("error: ") && line.contains(want),
            "{args:?}: got {line:?}, want {want:?}"
        );
        assert_eq!(line.lines().count(), 1, "{args:?}: one line, got {line:?}");
        assert_eq!(
            table_counts(db).await,
            before,
            "{args:?} changed the database"
        );
    }
}

#[test]
fn unreachable_database_is_named_without_its_password() {
    let r = run(
        "postgres://picloud:hunter2@127.0.0.1:1/nowhere",
        &["app", "list"],
    );
    assert!(!r.ok);
    let line = r.stderr.trim();
    assert!(
        line.starts_with("error: cannot reach database postgres://picloud:***@127.0.0.1:1/nowhere"),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "{line}");
    assert_eq!(line.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_summary_matches_its_database() {
    let dir = picloud_tests::db::TempDir::new();
    let db_path = dir.0.join("demo.db");
    let keep = db_path.to_str().unwrap();
    let r = run_with("sqlite://unused.db", &["demo", "--keep", keep], &[]);
    assert!(r.ok, "demo failed: {}", r.stderr);
    let summary = |label: &str| -> i64 {
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no '{label}' in:\n{}", r.stdout));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    let store = picloud_host::store::connect(&format!("sqlite://{keep}"))
        .await
        .unwrap();
    let dls = store
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    let by = |r: Resolution| dls.iter().filter(|d| d.resolution == Some(r)).count() as i64;
    assert_eq!(summary("dead letters"), dls.len() as i64);
    assert_eq!(
        summary("handled_by_script"),
        by(Resolution::HandledByScript)
    );
    assert_eq!(summary("ignored"), by(Resolution::Ignored));
    assert_eq!(summary("handler_failed"), by(Resolution::HandlerFailed));
    assert_eq!(summary("recursion stops"), 1);
    let app = store.find_app("shop").await.unwrap();
    let runs = store
        .list_runs(&picloud_host::runs::RunFilter {
            limit: 100_000,
            ..picloud_host::runs::RunFilter::app(app.id)
        })
        .await
        .unwrap();
    assert_eq!(summary("runs recorded"), runs.len() as i64);
    assert!(
        r.stdout.contains("attempt 3 failed after"),
        "the declined payment's history: {}",
        r.stdout
    );
    assert_eq!(
        summary("outbox left"),
        store.count_events(None).await.unwrap()
    );
    assert_eq!(summary("outbox left"), 0);
    assert_eq!(
        (
            by(Resolution::HandledByScript),
            by(Resolution::Ignored),
            by(Resolution::HandlerFailed)
        ),
        (1, 1, 2)
    );
    assert_eq!(
        store
            .kv_list_keys(app.id, "order_totals", None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .kv_list_keys(app.id, "receipts", None, 100)
            .await
            .unwrap(),
        vec!["p-1".to_owned()]
    );
    assert_eq!(
        store
            .kv_list_keys(app.id, "audit", None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    // The cron script removed the two expired sessions; the queue consumer
    // rendered both mails.
    assert_eq!(
        store
            .kv_list_keys(app.id, "sessions", None, 100)
            .await
            .unwrap(),
        vec!["s-3".to_owned()]
    );
    assert_eq!(
        store
            .kv_list_keys(app.id, "outbox-mail", None, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    let seconds: f64 = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("took"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds < 60.0, "the demo took {seconds} s");
}

/// `run FILE.wasm`: a good component, a failing one and a limit trip, each
/// run once in the real sandbox with no app set-up; and bad input files.
#[test]
fn run_tries_a_component_once_and_reports_what_it_did() {
    let dir = picloud_tests::db::TempDir::new();
    let file = |name: &str, body: Value| {
        let path = dir.0.join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let order = file(
        "order.json",
        json!({"source": "kv", "op": "set", "payload": {
            "collection": "orders", "key": "o-1",
            "value": {"item": "widget", "qty": 3}, "version": 1}}),
    );
    let seed = file("seed.json", json!({"stock": {"widget": 2}}));
    // The URL is never opened: `run` has a throwaway database of its own.
    let url = "sqlite:///nonexistent-dir/never-created.db";

    // A good component: its log line and both KV writes, in order.
    let r = run(
        url,
        &[
            "run",
            guests::INVENTORY,
            "--event",
            &order,
            "--kv",
            &seed,
            "--json",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["succeeded"], json!(true));
    assert_eq!(report["limit"], Value::Null);
    assert_eq!(
        report["logs"][0]["message"],
        json!("order o-1: 1 of widget backordered")
    );
    assert_eq!(
        report["writes"],
        json!([
            {"op": "set", "collection": "stock", "key": "widget", "value": 0, "version": 2},
            {"op": "set", "collection": "backorders", "key": "widget", "value": 1, "version": 1},
        ]),
        "the seed is not a write; the script's two are"
    );
    let text = run(
        url,
        &["run", guests::INVENTORY, "--event", &order, "--kv", &seed],
    );
    assert!(text.ok);
    assert!(text.stdout.starts_with("succeeded in "), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("\nkv set stock/widget = 0 (version 2)\n"),
        "{}",
        text.stdout
    );

    // A failing handler: exit 1, its error on stderr in one line.
    let r = run(url, &["run", guests::GREETER]);
    assert_eq!(r.code, Some(1));
    assert!(r.stdout.starts_with("failed in "), "{}", r.stdout);
    assert_eq!(
        r.stderr.trim(),
        "error: the handler failed: missing field: name"
    );

    // A limit trip names the limit.
    let spin = file("spin.json", json!({"payload": {"mode": "loop"}}));
    let r = run_with(
        url,
        &["run", guests::HOSTILE, "--event", &spin, "--json"],
        &[("PICLOUD_SANDBOX_TIMEOUT_MS", "300")],
    );
    assert_eq!(r.code, Some(1));
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["limit"], json!("timeout"));
    assert_eq!(report["error"], json!("timeout after 300 ms"));

    // Bad input names the file and the fix.
    let bad = file("bad.json", json!({"sauce": "kv"}));
    picloud_tests::cli::assert_refused(
        &run(url, &["run", guests::GREETER, "--event", &bad]),
        "an unknown event field",
        "--event file",
    );
    picloud_tests::cli::assert_refused(
        &run(url, &["run", "/nonexistent.wasm"]),
        "a missing component",
        "cannot read /nonexistent.wasm",
    );
    picloud_tests::cli::assert_refused(
        &run(url, &["run", &seed]),
        "a JSON file as the component",
        "not a WebAssembly file",
    );
}
