//! The bad-input corpus (SPEC section 13), through the library and the
//! command line: corrupt and random wasm (seeded), components of the wrong
//! world, malformed JSON and patterns, oversized values, unknown ids and
//! malformed environment values. Each is refused with one line that names
//! the problem, stores nothing, and crashes nothing. `tests/cli.rs` covers a
//! first set through the binary; this file extends it.
//!
//! The corpus is seeded: `PICLOUD_BAD_INPUT_SEED` (default below) picks it,
//! `PICLOUD_BAD_INPUT_CASES` sizes it; a failure prints the seed.

use std::sync::Arc;

use picloud_host::admin::{Admin, AdminError, TriggerOptions};
use picloud_host::auth::MemberAuthorizer;
use picloud_host::config::{SandboxCeiling, TriggerConfig};
use picloud_host::model::{
    AppId, DeadLetterFilter, DeadLetterId, KvOps, Resolution, ScriptId, TriggerId, source,
};
use picloud_host::runtime::{DeployError, Runtime};
use picloud_host::store::{MAX_KV_NAME_BYTES, MAX_KV_VALUE_BYTES, Store};
use picloud_tests::cli::{Run, assert_refused, ok, run_input, run_with, table_counts};
use picloud_tests::db::{TempDir, TestDb};
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use serde_json::json;

/// tests/fixtures/wasi-command: a WASI command (a binary), not a trigger.
const WASI_COMMAND: &str = env!("PICLOUD_GUEST_WASI_COMMAND");

const DEFAULT_SEED: u64 = 0x5eed_f00d;

picloud_tests::contract!(
    wrong_world_components_are_refused_with_the_reason,
    malformed_json_and_patterns_are_refused_by_the_library,
    oversized_values_are_refused_by_the_library_and_the_cli,
    unknown_ids_are_refused_by_the_library,
    more_bad_command_lines_are_refused_and_change_nothing,
);

// ---- A small seeded generator, so a failing corpus can be replayed ----

/// SplitMix64: tiny, seedable, good enough to pick bytes and lengths.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    match std::env::var("PICLOUD_BAD_INPUT_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PICLOUD_BAD_INPUT_SEED='{v}' is not a number")),
        Err(_) => DEFAULT_SEED,
    }
}

fn cases() -> usize {
    std::env::var("PICLOUD_BAD_INPUT_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(240)
}

/// The corpus: (label, bytes). Truncations of real components at spread
/// and random lengths, random bytes behind each kind of header, and real
/// components with a few bytes overwritten.
fn wasm_corpus(seed: u64, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(seed);
    let noop = guests::wasm(guests::NOOP);
    let greeter = guests::wasm(guests::GREETER);
    let mut out = Vec::new();
    let quarter = n / 4;
    // Truncations: spread over the whole file, then random.
    for i in 0..quarter {
        let (name, base) = if i % 2 == 0 {
            ("noop", &noop)
        } else {
            ("greeter", &greeter)
        };
        let len = if i < quarter / 2 {
            base.len() * i / (quarter / 2).max(1)
        } else {
            rng.below(base.len())
        };
        out.push((format!("{name} cut at {len}"), base[..len].to_vec()));
    }
    // Random bytes: bare, behind the component header, behind the core header.
    for i in 0..quarter {
        let len = rng.below(4096);
        let mut bytes = match i % 3 {
            0 => Vec::new(),
            1 => b"\0asm\x0d\x00\x01\x00".to_vec(),
            _ => b"\0asm\x01\x00\x00\x00".to_vec(),
        };
        bytes.extend(rng.bytes(len));
        out.push((format!("random {len} bytes, header {}", i % 3), bytes));
    }
    // Real components with a few bytes overwritten (some may still be valid).
    while out.len() < n {
        let base = if rng.below(4) == 0 { &greeter } else { &noop };
        let mut bytes = base.clone();
        let edits = 1 + rng.below(8);
        for _ in 0..edits {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        out.push((format!("{edits} bytes overwritten"), bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_random_wasm_is_refused_and_nothing_is_stored() {
    let seed = seed();
    let corpus = wasm_corpus(seed, cases());
    let db = picloud_tests::db::sqlite().await;
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "corpus").await;
    let mut accepted = Vec::new();
    let mut refusals = std::collections::BTreeMap::<String, usize>::new();
    for (i, (label, bytes)) in corpus.iter().enumerate() {
        let name = format!("case-{i}");
        match rt.deploy(app.id, &name, bytes).await {
            Err(e) => {
                let text = e.to_string();
                assert!(
                    !text.is_empty() && !text.contains('\n'),
                    "seed {seed}, {label}: one line: {text:?}"
                );
                assert!(
                    !text.contains("panicked"),
                    "seed {seed}, {label}: the validator panicked: {text}"
                );
                assert!(
                    matches!(
                        e,
                        DeployError::NotWasm
                            | DeployError::CoreModule
                            | DeployError::Invalid(_)
                            | DeployError::UnknownImport(_)
                            | DeployError::ImportMismatch { .. }
                            | DeployError::MissingExport
                            | DeployError::WrongExport(_)
                    ),
                    "seed {seed}, {label}: {e:?}"
                );
                let kind = text.split(':').next().unwrap_or_default().to_owned();
                *refusals.entry(kind).or_default() += 1;
                assert!(
                    s.find_script(app.id, &name).await.is_err(),
                    "seed {seed}, {label}: refused, yet stored"
                );
            }
            Ok(script) => accepted.push((label.clone(), script)),
        }
    }
    // A mutant that still validates is a real component: it must run (or
    // fail) like any other script, without hurting the host.
    for (label, script) in &accepted {
        let inv = h::invocation(
            app.id,
            script.id,
            source::HTTP,
            "invoke",
            json!({"name": "x"}),
            ADMIN,
        );
        let _ = rt.invoke(script, inv).await;
        let _ = label;
    }
    println!(
        "wasm corpus (seed {seed}): {} cases, {} refused {refusals:?}, {} still valid and ran",
        corpus.len(),
        corpus.len() - accepted.len(),
        accepted.len()
    );
    assert_eq!(
        s.list_scripts(app.id).await.unwrap().len(),
        accepted.len(),
        "only what validated was stored"
    );
    assert!(
        accepted.len() < corpus.len() / 4,
        "the corpus is mostly bad"
    );
    // The runtime is unharmed: a real component deploys and runs.
    let greeter = h::deploy(&rt, app.id, "greeter", guests::GREETER).await;
    let inv = h::invocation(
        app.id,
        greeter.id,
        source::HTTP,
        "invoke",
        json!({"name": "Ada"}),
        ADMIN,
    );
    assert!(rt.invoke(&greeter, inv).await.unwrap().reply.is_some());
}

// ---- Components for the wrong world ----

/// Components that are valid wasm but not trigger scripts, and the start of
/// the refusal each must get.
fn wrong_world() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let wat = |text: &str| wat::parse_str(text).expect("valid WAT");
    vec![
        (
            "a WASI command",
            guests::wasm(WASI_COMMAND),
            "component does not export `handle`",
        ),
        (
            "handle with the wrong type",
            wat(r#"(component
                (core module $m (func (export "f") (result i32) i32.const 0))
                (core instance $i (instantiate $m))
                (func $handle (result u32) (canon lift (core func $i "f")))
                (export "handle" (func $handle)))"#),
            "component exports `handle` with the wrong type",
        ),
        (
            "kv with the wrong types",
            wat(r#"(component
                (import "picloud:trigger/kv@0.1.0" (instance
                    (export "get" (func (param "x" u32))))))"#),
            "component imports instance `picloud:trigger/kv@0.1.0` with types the host does not match (instance export `get` has the wrong type",
        ),
        (
            "a future version of the interface",
            wat(r#"(component
                (import "picloud:trigger/kv@0.4.0" (instance
                    (export "get" (func (param "x" u32))))))"#),
            "component imports instance `picloud:trigger/kv@0.4.0`, which the host does not provide",
        ),
        (
            "a bare function import",
            wat(r#"(component (import "launch-missiles" (func)))"#),
            "component imports function `launch-missiles`, which the host does not provide",
        ),
        (
            "a core module",
            wat(r#"(module (func (export "handle")))"#),
            "this is a core WebAssembly module, not a component",
        ),
    ]
}

async fn wrong_world_components_are_refused_with_the_reason(db: &TestDb) {
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "worlds").await;
    let mut wrong = Vec::new();
    for (what, wasm, want) in wrong_world() {
        let err = rt
            .deploy(app.id, "script", &wasm)
            .await
            .expect_err(what)
            .to_string();
        println!("{what}: {err}");
        if !err.starts_with(want) || err.contains('\n') {
            wrong.push(format!("{what}: got {err:?}, want {want:?} on one line"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(s.list_scripts(app.id).await.unwrap().is_empty());
}

// ---- Malformed JSON and patterns ----

fn admin(s: &Arc<dyn Store>) -> Admin {
    Admin::new(s.clone(), Arc::new(MemberAuthorizer::new(s.clone())))
}

const BAD_JSON: &[&str] = &[
    "",
    " ",
    "{bad",
    "[1,",
    "nul",
    "{\"a\":}",
    "1 2",
    "'single'",
    "{\"a\":1}}",
    "\u{0}",
    "\"unterminated",
    "NaN",
    "0x10",
];

const BAD_PATTERNS: &[&str] = &[
    "", "a*b", "**", "*a", " a", "a ", "a\n", "\t", "a\u{7f}", "*\0", "x**",
];

async fn malformed_json_and_patterns_are_refused_by_the_library(db: &TestDb) {
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "json").await;
    h::deploy(&rt, app.id, "noop", guests::NOOP).await;
    let admin = admin(s);
    let before = table_counts(db).await;

    // Nesting deeper than the parser's limit is refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for json in BAD_JSON.iter().copied().chain([deep.as_str()]) {
        // The library takes values, typed; JSON text from outside (the CLI,
        // an API) is parsed by `parse_json`.
        let e = picloud_host::admin::parse_json("value", json).expect_err("malformed JSON");
        assert!(matches!(e, AdminError::InvalidJson { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("invalid JSON value: "), "{text}");
        assert!(!text.contains('\n'), "one line: {text:?}");
    }
    for pattern in BAD_PATTERNS {
        let e = admin
            .add_trigger(
                app.id,
                TriggerOptions::kv("noop", pattern, KvOps::ALL),
                ADMIN,
            )
            .await
            .expect_err("bad pattern");
        assert!(e.to_string().starts_with("invalid pattern '"), "{e}");
        let e = admin
            .add_trigger(app.id, TriggerOptions::dead_letter("noop", pattern), ADMIN)
            .await
            .expect_err("bad pattern");
        assert!(e.to_string().starts_with("invalid pattern '"), "{e}");
    }
    assert_eq!(table_counts(db).await, before, "nothing stored");
}

// ---- Oversized values ----

/// A JSON string value whose text is exactly `bytes` long.
fn json_of_len(bytes: usize) -> String {
    format!("\"{}\"", "x".repeat(bytes - 2))
}

async fn oversized_values_are_refused_by_the_library_and_the_cli(db: &TestDb) {
    let s = &db.store;
    let app = h::app(s, "big").await;
    let admin = admin(s);
    let before = table_counts(db).await;
    let over = json_of_len(MAX_KV_VALUE_BYTES + 1);
    let over_value: serde_json::Value = serde_json::from_str(&over).unwrap();
    let e = admin
        .kv_set(app.id, "c", "k", &over_value, ADMIN)
        .await
        .expect_err("over the limit");
    assert_eq!(
        e.to_string(),
        format!(
            "value of {} bytes is over the limit of {MAX_KV_VALUE_BYTES} bytes",
            MAX_KV_VALUE_BYTES + 1
        )
    );
    let long = "n".repeat(MAX_KV_NAME_BYTES + 1);
    for (c, k) in [
        (long.as_str(), "k"),
        ("c", long.as_str()),
        ("", "k"),
        ("c", ""),
    ] {
        let e = admin
            .kv_set(app.id, c, k, &1, ADMIN)
            .await
            .expect_err("bad name");
        assert!(!e.to_string().contains('\n'));
    }
    assert_eq!(table_counts(db).await, before, "nothing stored");

    // Through the CLI: a value that size does not fit in one argument
    // (Linux caps one at 128 KiB), so it comes on stdin.
    let url = &db.url;
    let r = run_input(
        url,
        &["kv", "set", "big", "c", "k", "-", "--as", ADMIN],
        &[],
        Some(over.as_bytes()),
    );
    assert_refused(
        &r,
        "kv set (oversized, stdin)",
        "is over the limit of 1048576 bytes",
    );
    let r = run_input(
        url,
        &["kv", "set", "big", "c", "k", "-", "--as", ADMIN],
        &[],
        Some(b"{not json"),
    );
    assert_refused(&r, "kv set (bad JSON, stdin)", "invalid JSON value");
    let r = run_with(
        url,
        &["kv", "set", "big", &long, "k", "1", "--as", ADMIN],
        &[],
    );
    assert_refused(
        &r,
        "kv set (long collection)",
        "collection of 513 bytes is over the limit",
    );
    assert_eq!(table_counts(db).await, before, "nothing stored");

    // Exactly at the limit is accepted, from stdin too.
    let at = json_of_len(MAX_KV_VALUE_BYTES);
    let r = run_input(
        url,
        &["kv", "set", "big", "c", "k", "-", "--as", ADMIN],
        &[],
        Some(at.as_bytes()),
    );
    assert!(r.ok, "{}", r.stderr);
    let stored = s.kv_get(app.id, "c", "k").await.unwrap().unwrap();
    assert_eq!(stored.value.to_string().len(), MAX_KV_VALUE_BYTES);
}

// ---- Unknown ids ----

async fn unknown_ids_are_refused_by_the_library(db: &TestDb) {
    let s = &db.store;
    let rt = h::runtime(s, h::ceiling());
    let app = h::app(s, "ids").await;
    h::deploy(&rt, app.id, "noop", guests::NOOP).await;
    let admin = admin(s);
    let before = table_counts(db).await;
    let one_line = |what: &str, e: &dyn std::fmt::Display| {
        let text = e.to_string();
        assert!(
            text.starts_with("unknown ") && !text.contains('\n'),
            "{what}: {text:?}"
        );
    };
    let (dl, tr, sc, ap) = (
        DeadLetterId::new(),
        TriggerId::new(),
        ScriptId::new(),
        AppId::new(),
    );
    one_line("app", &s.get_app(ap).await.unwrap_err());
    one_line("app by name", &s.find_app("nope").await.unwrap_err());
    one_line("script", &s.get_script(sc).await.unwrap_err());
    one_line(
        "script by name",
        &s.find_script(app.id, "nope").await.unwrap_err(),
    );
    one_line(
        "script of another app",
        &s.find_script(ap, "noop").await.unwrap_err(),
    );
    one_line("trigger", &s.get_trigger(tr).await.unwrap_err());
    one_line(
        "enable trigger",
        &s.set_trigger_enabled(tr, true).await.unwrap_err(),
    );
    assert!(!s.delete_trigger(tr).await.unwrap());
    one_line("dead letter", &s.get_dead_letter(dl).await.unwrap_err());
    one_line(
        "resolve",
        &s.resolve(dl, Resolution::Ignored).await.unwrap_err(),
    );
    one_line(
        "kv trigger for an unknown script",
        &admin
            .add_trigger(app.id, TriggerOptions::kv("nope", "c", KvOps::ALL), ADMIN)
            .await
            .unwrap_err(),
    );
    let results = admin
        .resolve_many(
            &[dl, DeadLetterId::new()],
            Resolution::Replayed,
            None,
            |_| {},
        )
        .await;
    assert_eq!(results.len(), 2, "one result per item");
    for r in &results {
        one_line("bulk resolve", r.as_ref().unwrap_err());
    }
    let replayed = admin
        .replay_matching(
            &DeadLetterFilter {
                app_id: Some(app.id),
                trigger_id: Some(tr),
                ..DeadLetterFilter::default()
            },
            None,
            |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(replayed, Default::default());
    assert!(!s.remove_script(app.id, sc).await.unwrap());
    assert!(!s.remove_member(app.id, "nobody").await.unwrap());
    assert_eq!(table_counts(db).await, before, "nothing changed");
}

// ---- The command line ----

/// Arguments, environment, and what the one-line refusal must contain.
type Case<'a, W = String> = (Vec<String>, Vec<(&'a str, &'a str)>, W);

async fn more_bad_command_lines_are_refused_and_change_nothing(db: &TestDb) {
    let url = &db.url;
    let dir = TempDir::new();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    };
    ok(url, &["app", "create", "shop", "--admin", ADMIN]);
    ok(
        url,
        &["script", "deploy", "shop", "greeter", guests::GREETER],
    );
    let unknown = "7b0c1f0e-1111-4222-8333-944445555666";
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();

    let mut cases: Vec<Case<'_>> = Vec::new();
    // Corrupt wasm from the seeded corpus (a sample: each is a process).
    let corpus = wasm_corpus(seed(), 40);
    // Truncations and random bytes only: an overwritten component may
    // still be valid.
    for (i, (label, bytes)) in corpus
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 1 && *i < 20)
    {
        let path = file(&format!("corpus-{i}.wasm"), bytes);
        let want = if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            "not a WebAssembly file".to_owned()
        } else if bytes[4..8] == [1, 0, 0, 0] {
            "core WebAssembly module".to_owned()
        } else {
            String::new()
        };
        let _ = label;
        cases.push((s(&["script", "deploy", "shop", "x", &path]), vec![], want));
    }
    for (what, wasm, want) in wrong_world() {
        let path = file(&format!("{}.wasm", what.replace(' ', "-")), &wasm);
        cases.push((
            s(&["script", "deploy", "shop", "x", &path]),
            vec![],
            want.to_owned(),
        ));
    }
    let more: Vec<Case<'_, &str>> = vec![
        // Unknown ids and names.
        (
            s(&["trigger", "disable", unknown]),
            vec![],
            "unknown trigger",
        ),
        (
            s(&["trigger", "remove", unknown]),
            vec![],
            "unknown trigger",
        ),
        (
            s(&["trigger", "remove", "12"]),
            vec![],
            "unknown trigger '12'",
        ),
        (
            s(&["dead-letters", "ignore", unknown]),
            vec![],
            "unknown dead letter",
        ),
        (
            s(&["dead-letters", "ignore", unknown, "not-an-id"]),
            vec![],
            "unknown dead letter 'not-an-id'",
        ),
        (
            s(&["dead-letters", "show", "x"]),
            vec![],
            "unknown dead letter 'x'",
        ),
        (
            s(&["dead-letters", "count", "nope"]),
            vec![],
            "unknown app 'nope'",
        ),
        (
            s(&["dead-letters", "list", "--trigger", "zzz"]),
            vec![],
            "unknown trigger 'zzz'",
        ),
        (
            s(&["dead-letters", "replay-all", "shop", "--since", "yesterday"]),
            vec![],
            "invalid --since time 'yesterday'",
        ),
        (
            s(&["member", "remove", "shop", "nobody"]),
            vec![],
            "nobody is not a member of shop",
        ),
        (s(&["member", "list", unknown]), vec![], "unknown app"),
        (
            s(&["script", "remove", "shop", "nope"]),
            vec![],
            "unknown script 'nope'",
        ),
        (
            s(&[
                "trigger",
                "add-dead-letter",
                "shop",
                "--script",
                "nope",
                "--as",
                ADMIN,
            ]),
            vec![],
            "unknown script 'nope'",
        ),
        (
            s(&["kv", "get", "shop", "c", "nope"]),
            vec![],
            "no key 'nope'",
        ),
        (
            s(&["kv", "delete", "shop", "c", "nope", "--as", ADMIN]),
            vec![],
            "no key 'nope'",
        ),
        (
            s(&[
                "invoke",
                "shop",
                "nope",
                "--as",
                ADMIN,
                "--timeout-ms",
                "5000",
            ]),
            vec![],
            "unknown script 'nope'",
        ),
        // What could hurt other tenants (issue 10): control characters in
        // names, values nested past the bound.
        (
            s(&["kv", "set", "shop", "c\u{1b}[2J", "k", "1", "--as", ADMIN]),
            vec![],
            "collection has a control character (U+001B) at byte 1: use printable text",
        ),
        (
            s(&["kv", "set", "shop", "c", "k\tk", "1", "--as", ADMIN]),
            vec![],
            "key has a control character (U+0009) at byte 1: use printable text",
        ),
        (
            vec![
                "kv".into(),
                "set".into(),
                "shop".into(),
                "c".into(),
                "k".into(),
                format!("{}1{}", "[".repeat(65), "]".repeat(65)),
                "--as".into(),
                ADMIN.into(),
            ],
            vec![],
            "value is nested 65 deep, over the limit of 64: flatten it",
        ),
        (
            vec![
                "invoke".into(),
                "shop".into(),
                "greeter".into(),
                "--payload".into(),
                format!("{}1{}", "[".repeat(80), "]".repeat(80)),
                "--as".into(),
                ADMIN.into(),
            ],
            vec![],
            "payload is nested 80 deep, over the limit of 64: flatten it",
        ),
        // Malformed JSON and patterns.
        (
            s(&["kv", "set", "shop", "c", "k", "", "--as", ADMIN]),
            vec![],
            "invalid JSON value",
        ),
        (
            s(&["kv", "set", "shop", "c", "k", "{\"a\":\n}", "--as", ADMIN]),
            vec![],
            "invalid JSON value",
        ),
        (
            s(&[
                "invoke",
                "shop",
                "greeter",
                "--payload",
                "{'a':1}",
                "--as",
                ADMIN,
            ]),
            vec![],
            "invalid JSON payload",
        ),
        (
            s(&[
                "trigger",
                "add-kv",
                "shop",
                "--script",
                "greeter",
                "--collection",
                "a\nb*",
                "--as",
                ADMIN,
            ]),
            vec![],
            "invalid pattern",
        ),
        (
            s(&[
                "trigger",
                "add-dead-letter",
                "shop",
                "--script",
                "greeter",
                "--source",
                "**",
                "--as",
                ADMIN,
            ]),
            vec![],
            "invalid pattern '**'",
        ),
        (
            s(&[
                "trigger",
                "add-kv",
                "shop",
                "--script",
                "greeter",
                "--collection",
                "c",
                "--ops",
                "set,,Delete",
                "--as",
                ADMIN,
            ]),
            vec![],
            "unknown kv op 'Delete'",
        ),
        (
            s(&["dead-letters", "resolve", unknown, "handled-by-script"]),
            vec![],
            "unknown resolution 'handled-by-script'",
        ),
        (s(&["app", "create", "  "]), vec![], "invalid app name"),
        // Malformed environment values: one per variable.
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "-3")],
            "invalid PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS='-3'",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_TRIGGER_RETRY_BASE_MS", "1e3")],
            "invalid PICLOUD_TRIGGER_RETRY_BASE_MS='1e3'",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_TRIGGER_RETRY_MAX_MS", "99999999999999999999999")],
            "invalid PICLOUD_TRIGGER_RETRY_MAX_MS='99999999999999999999999'",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![
                ("PICLOUD_TRIGGER_RETRY_BASE_MS", "5000"),
                ("PICLOUD_TRIGGER_RETRY_MAX_MS", "100"),
            ],
            "must be at least PICLOUD_TRIGGER_RETRY_BASE_MS (5000)",
        ),
        (
            s(&["gc"]),
            vec![("PICLOUD_DEAD_LETTER_RETENTION_DAYS", "")],
            "invalid PICLOUD_DEAD_LETTER_RETENTION_DAYS=''",
        ),
        (
            s(&["gc"]),
            vec![("PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS", "7 days")],
            "invalid PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS='7 days'",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_SANDBOX_MEMORY_MB", "4096")],
            "invalid PICLOUD_SANDBOX_MEMORY_MB='4096': expected a whole number from 1 to 4095",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_SANDBOX_LOG_BYTES", "0")],
            "invalid PICLOUD_SANDBOX_LOG_BYTES='0'",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_SANDBOX_MAX_INSTANCES", "sixty-four")],
            "invalid PICLOUD_SANDBOX_MAX_INSTANCES='sixty-four'",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_SANDBOX_REPLY_BYTES", "1.5")],
            "invalid PICLOUD_SANDBOX_REPLY_BYTES='1.5'",
        ),
        (
            s(&["dispatch", "--until-idle"]),
            vec![("PICLOUD_SANDBOX_TIMEOUT_MS", "5\n000")],
            "invalid PICLOUD_SANDBOX_TIMEOUT_MS='5\\n000'",
        ),
        (
            s(&["script", "deploy", "shop", "x", guests::NOOP]),
            vec![("PICLOUD_SCRIPT_MAX_BYTES", "32MiB")],
            "invalid PICLOUD_SCRIPT_MAX_BYTES='32MiB'",
        ),
        (
            s(&["invoke", "shop", "greeter", "--as", ADMIN]),
            vec![("PICLOUD_SANDBOX_TIMEOUT_MS", "-1")],
            "invalid PICLOUD_SANDBOX_TIMEOUT_MS='-1'",
        ),
    ];
    cases.extend(
        more.into_iter()
            .map(|(args, env, want)| (args, env, want.to_owned())),
    );

    let before = table_counts(db).await;
    for (args, env, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r: Run = run_with(url, &args, env);
        assert_refused(&r, &format!("{args:?} {env:?}"), want);
        assert_eq!(
            table_counts(db).await,
            before,
            "{args:?} changed the database"
        );
    }
}

// ---- Configuration at its extremes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_but_valid_ceilings_build_or_fail_on_one_line() {
    let db = picloud_tests::db::sqlite().await;
    let s = &db.store;
    let auth = Arc::new(MemberAuthorizer::new(s.clone()));
    let extremes = [
        ("PICLOUD_SANDBOX_MAX_INSTANCES", "10000"),
        ("PICLOUD_SANDBOX_MEMORY_MB", "4095"),
        ("PICLOUD_SANDBOX_TIMEOUT_MS", "1"),
        ("PICLOUD_SANDBOX_LOG_BYTES", "1"),
        ("PICLOUD_SANDBOX_REPLY_BYTES", "1"),
    ];
    let all = |k: &str| {
        extremes
            .iter()
            .find(|(v, _)| *v == k)
            .map(|(_, x)| x.to_string())
    };
    let ceiling = SandboxCeiling::from_source(&all).expect("in range");
    TriggerConfig::from_source(&all).expect("in range");
    // The largest pool of the largest memories may not fit in the address
    // space: that is a setup error on one line, never a panic.
    match Runtime::new(ceiling, s.clone(), auth.clone(), None) {
        Ok(rt) => {
            let app = h::app(s, "tiny").await;
            let script = h::deploy(&rt, app.id, "greeter", guests::GREETER).await;
            let inv = h::invocation(
                app.id,
                script.id,
                source::HTTP,
                "invoke",
                json!({"name": "x"}),
                ADMIN,
            );
            // A 1 ms deadline and a 1 byte reply: a named failure either way.
            let err = rt.invoke(&script, inv).await.unwrap_err().to_string();
            assert!(
                err.starts_with("timeout after 1 ms") || err.starts_with("reply of "),
                "{err}"
            );
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with("cannot set up the WebAssembly engine: ") && !text.contains('\n'),
                "{text:?}"
            );
        }
    }
}
