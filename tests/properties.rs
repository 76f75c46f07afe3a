//! Property tests for every piece that parses input from outside the host:
//! trigger patterns, configuration values, the closed vocabularies
//! (resolutions, roles, kv ops), JSON arguments, KV names, database URLs,
//! and the event payloads the host builds and the guest SDK parses.
//!
//! Rule: a parser of outside input never panics, accepts exactly what its
//! documentation says, and refuses the rest with an error that names the
//! input.

use std::collections::HashMap;

use picloud_host::auth::Role;
use picloud_host::config::{SandboxCeiling, TriggerConfig};
use picloud_host::model::{
    AppId, DeadLetterId, EventId, KvOp, KvOps, NewDeadLetter, Resolution, ScriptId, Timestamp,
    TriggerId, source,
};
use picloud_host::pattern::{self, PatternError};
use picloud_host::runtime::limits::LogBuffer;
use picloud_host::runtime::{LimitExceeded, LogLevel};
use picloud_host::store::{self, MAX_KV_NAME_BYTES, dead_letter_event, kv_event, redact};
use picloud_sdk::__private::RawEvent;
use proptest::prelude::*;
use serde_json::{Value, json};

/// `n` cases per property (`PROPTEST_CASES` overrides); failures are
/// reported, not saved to files.
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The documented pattern grammar, stated independently of the code.
fn is_valid_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.trim() == p
        && !p.chars().any(char::is_control)
        && !p.strip_suffix('*').unwrap_or(p).contains('*')
}

/// A pattern body: no `*`, no control characters, no surrounding whitespace
/// (possibly empty).
fn body() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:._/ -]{0,12}"
        .prop_map(|s| s.trim().to_owned())
        .prop_filter("no whitespace at the ends", |s| s.trim() == s)
}

/// Names to match against, biased towards sharing prefixes with patterns.
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c:*]{0,6}", "[a-zA-Z0-9:._/ -]{0,16}", any::<String>(),]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn pattern_validate_never_panics_and_follows_the_grammar(p in any::<String>()) {
        let result = pattern::validate(&p);
        prop_assert_eq!(result.is_ok(), is_valid_pattern(&p), "{:?}: {:?}", p, result);
        if let Err(e) = result {
            let text = e.to_string();
            prop_assert!(text.starts_with("invalid pattern '"), "{}", text);
            if !matches!(e, PatternError::Empty) {
                prop_assert!(text.contains(&p), "{} does not name {:?}", text, p);
            }
        }
    }

    #[test]
    fn pattern_validate_on_wildcard_heavy_strings(p in "[ab* ]{0,6}") {
        prop_assert_eq!(pattern::validate(&p).is_ok(), is_valid_pattern(&p), "{:?}", p);
    }

    #[test]
    fn prefix_pattern_matches_exactly_the_names_with_its_prefix(
        prefix in body(),
        name in name(),
        suffix in "[a-z:*]{0,5}",
    ) {
        let p = format!("{prefix}*");
        prop_assert!(pattern::validate(&p).is_ok(), "{:?}", p);
        prop_assert_eq!(
            pattern::collection_matches(&p, &name),
            name.starts_with(&prefix),
            "{:?} vs {:?}", p, name
        );
        let extended = format!("{prefix}{suffix}");
        prop_assert!(pattern::collection_matches(&p, &extended));
        // The store's matcher is the same function.
        prop_assert_eq!(
            store::collection_matches(&p, &name),
            pattern::collection_matches(&p, &name)
        );
    }

    #[test]
    fn exact_pattern_matches_only_itself(exact in body(), name in name()) {
        prop_assume!(!exact.is_empty());
        prop_assert!(pattern::validate(&exact).is_ok());
        prop_assert!(pattern::collection_matches(&exact, &exact));
        prop_assert_eq!(pattern::collection_matches(&exact, &name), name == exact);
        let longer = format!("{exact}{name}");
        prop_assert_eq!(pattern::collection_matches(&exact, &longer), name.is_empty());
    }

    #[test]
    fn star_matches_everything(name in any::<String>()) {
        prop_assert!(pattern::collection_matches("*", &name));
    }
}

// ---- Configuration ----

/// Every integer variable with its accepted range.
const TRIGGER_VARS: &[(&str, u64, u64)] = &[
    ("PICLOUD_MAX_TRIGGER_DEPTH", 1, 1000),
    ("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", 1, 1000),
    ("PICLOUD_TRIGGER_RETRY_BASE_MS", 1, 24 * 60 * 60 * 1000),
    ("PICLOUD_TRIGGER_RETRY_MAX_MS", 1, 7 * 24 * 60 * 60 * 1000),
    ("PICLOUD_DEAD_LETTER_RETENTION_DAYS", 1, 36_500),
    ("PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS", 1, 36_500),
];
const SANDBOX_VARS: &[(&str, u64, u64)] = &[
    ("PICLOUD_SANDBOX_TIMEOUT_MS", 1, 3_600_000),
    ("PICLOUD_SANDBOX_MEMORY_MB", 1, 4095),
    ("PICLOUD_SANDBOX_LOG_BYTES", 1, 1 << 30),
    ("PICLOUD_SANDBOX_MAX_INSTANCES", 1, 10_000),
    ("PICLOUD_SCRIPT_MAX_BYTES", 1, 1 << 30),
    ("PICLOUD_SANDBOX_REPLY_BYTES", 1, 1 << 30),
];

fn source_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<&'static str, String> = pairs.into_iter().collect();
    move |k: &str| map.get(k).cloned()
}

/// The value a variable ended up with, in the variable's own unit.
fn trigger_value(c: &TriggerConfig, var: &str) -> u64 {
    const DAY_MS: u128 = 24 * 60 * 60 * 1000;
    match var {
        "PICLOUD_MAX_TRIGGER_DEPTH" => c.max_trigger_depth as u64,
        "PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS" => c.retry_max_attempts as u64,
        "PICLOUD_TRIGGER_RETRY_BASE_MS" => c.retry_base.as_millis() as u64,
        "PICLOUD_TRIGGER_RETRY_MAX_MS" => c.retry_max.as_millis() as u64,
        "PICLOUD_DEAD_LETTER_RETENTION_DAYS" => {
            (c.dead_letter_retention.as_millis() / DAY_MS) as u64
        }
        "PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS" => {
            (c.abandoned_retention.as_millis() / DAY_MS) as u64
        }
        other => unreachable!("{other}"),
    }
}

fn sandbox_value(c: &SandboxCeiling, var: &str) -> u64 {
    match var {
        "PICLOUD_SANDBOX_TIMEOUT_MS" => c.timeout.as_millis() as u64,
        "PICLOUD_SANDBOX_MEMORY_MB" => c.memory_bytes >> 20,
        "PICLOUD_SANDBOX_LOG_BYTES" => c.log_bytes,
        "PICLOUD_SANDBOX_MAX_INSTANCES" => c.max_instances as u64,
        "PICLOUD_SCRIPT_MAX_BYTES" => c.script_max_bytes,
        "PICLOUD_SANDBOX_REPLY_BYTES" => c.reply_max_bytes,
        other => unreachable!("{other}"),
    }
}

/// Parse one variable set to `raw` (the others unset): the parsed value, or
/// the error text.
fn parse_var(var: &'static str, raw: &str) -> Result<u64, String> {
    // The retry maximum must not be below the base (default 1000 ms); keep
    // the base at its minimum so this checks only the variable's own range.
    let mut pairs = vec![(var, raw.to_owned())];
    if var == "PICLOUD_TRIGGER_RETRY_MAX_MS" {
        pairs.push(("PICLOUD_TRIGGER_RETRY_BASE_MS", "1".into()));
    }
    if var == "PICLOUD_TRIGGER_RETRY_BASE_MS" {
        pairs.push((
            "PICLOUD_TRIGGER_RETRY_MAX_MS",
            (7 * 24 * 60 * 60 * 1000).to_string(),
        ));
    }
    let src = source_of(pairs);
    if TRIGGER_VARS.iter().any(|(v, _, _)| *v == var) {
        TriggerConfig::from_source(&src)
            .map(|c| trigger_value(&c, var))
            .map_err(|e| {
                assert_eq!(e.var, var);
                assert_eq!(e.value, raw);
                e.to_string()
            })
    } else {
        SandboxCeiling::from_source(&src)
            .map(|c| sandbox_value(&c, var))
            .map_err(|e| {
                assert_eq!(e.var, var);
                assert_eq!(e.value, raw);
                e.to_string()
            })
    }
}

fn any_var() -> impl Strategy<Value = (&'static str, u64, u64)> {
    prop::sample::select(
        TRIGGER_VARS
            .iter()
            .chain(SANDBOX_VARS)
            .copied()
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn config_accepts_exactly_the_in_range_integers((var, min, max) in any_var(), n in prop_oneof![
        0u64..2000,
        any::<u64>(),
        Just(0u64),
        Just(u64::MAX),
    ]) {
        let got = parse_var(var, &n.to_string());
        if (min..=max).contains(&n) {
            prop_assert_eq!(got, Ok(n), "{}={}", var, n);
        } else {
            let err = got.unwrap_err();
            prop_assert_eq!(
                err,
                format!("invalid {var}='{n}': expected a whole number from {min} to {max}")
            );
        }
    }

    #[test]
    fn config_never_panics_and_refuses_non_numbers_on_one_line(
        (var, min, max) in any_var(),
        raw in prop_oneof![any::<String>(), "[0-9+ \\-.eE_x\n\t]{0,8}"],
    ) {
        match parse_var(var, &raw) {
            Ok(n) => {
                // Accepted: it was a whole number in range (surrounding
                // whitespace and a leading '+' are tolerated).
                let digits = raw.trim().trim_start_matches('+');
                prop_assert_eq!(digits.parse::<u64>(), Ok(n), "{:?}", raw);
                prop_assert!((min..=max).contains(&n));
            }
            Err(text) => {
                prop_assert!(text.starts_with(&format!("invalid {var}='")), "{}", text);
                prop_assert!(!text.contains('\n') && !text.contains('\r'), "one line: {:?}", text);
            }
        }
    }
}

#[test]
fn retry_maximum_below_the_base_is_refused() {
    let src = source_of(vec![
        ("PICLOUD_TRIGGER_RETRY_BASE_MS", "500".into()),
        ("PICLOUD_TRIGGER_RETRY_MAX_MS", "499".into()),
    ]);
    let e = TriggerConfig::from_source(&src).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid PICLOUD_TRIGGER_RETRY_MAX_MS='499': must be at least PICLOUD_TRIGGER_RETRY_BASE_MS (500)"
    );
}

// ---- Closed vocabularies ----

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn resolution_parses_exactly_its_four_names(s in prop_oneof![
        any::<String>(),
        prop::sample::select(vec!["replayed", "ignored", "handled_by_script", "handler_failed",
            "Replayed", "handled-by-script", " ignored", "ignored ", ""]).prop_map(str::to_owned),
    ]) {
        let known = Resolution::ALL.iter().find(|r| r.as_str() == s);
        match s.parse::<Resolution>() {
            Ok(r) => prop_assert_eq!(Some(&r), known),
            Err(e) => {
                prop_assert!(known.is_none());
                let text = e.to_string();
                prop_assert!(text.starts_with("unknown resolution '"), "{}", text);
                prop_assert!(text.contains(&s));
            }
        }
    }

    #[test]
    fn role_parses_exactly_its_three_names(s in prop_oneof![
        any::<String>(),
        prop::sample::select(vec!["admin", "developer", "viewer", "Admin", "owner", " viewer", ""])
            .prop_map(str::to_owned),
    ]) {
        let known = ["admin", "developer", "viewer"].contains(&s.as_str());
        match s.parse::<Role>() {
            Ok(r) => {
                prop_assert!(known);
                prop_assert_eq!(r.as_str(), s.as_str());
                prop_assert_eq!(r.to_string(), s);
            }
            Err(e) => {
                prop_assert!(!known);
                prop_assert!(e.to_string().starts_with("unknown role '"));
            }
        }
    }

    #[test]
    fn kv_ops_parse_the_named_subset(s in prop_oneof![
        any::<String>(),
        "(( ?(set|delete|update|SET)? ?),){0,4}( ?(set|delete|update)? ?)",
    ]) {
        let parts: Vec<&str> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        let valid = parts.iter().all(|p| *p == "set" || *p == "delete");
        match KvOps::parse(&s) {
            Ok(ops) => {
                prop_assert!(valid, "{:?} accepted", s);
                if parts.is_empty() {
                    prop_assert_eq!(ops, KvOps::ALL);
                } else {
                    prop_assert_eq!(ops.set, parts.contains(&"set"));
                    prop_assert_eq!(ops.delete, parts.contains(&"delete"));
                }
                // The stored form reads back as the same set.
                prop_assert_eq!(KvOps::parse(ops.as_db_str()), Ok(ops));
                prop_assert!(ops.contains(KvOp::Set) || ops.contains(KvOp::Delete));
            }
            Err(e) => {
                prop_assert!(!valid, "{:?} refused: {}", s, e);
                prop_assert!(e.to_string().starts_with("unknown kv op '"));
            }
        }
    }

    #[test]
    fn ids_parse_only_uuids(s in any::<String>()) {
        // Outside input (CLI arguments, a guest's dead letter id): never a panic.
        let ok = uuid::Uuid::parse_str(&s).is_ok();
        prop_assert_eq!(s.parse::<DeadLetterId>().is_ok(), ok);
        prop_assert_eq!(s.parse::<TriggerId>().is_ok(), ok);
        prop_assert_eq!(s.parse::<AppId>().is_ok(), ok);
    }
}

#[test]
fn every_resolution_round_trips() {
    for r in Resolution::ALL {
        assert_eq!(r.as_str().parse::<Resolution>().unwrap(), r);
        assert_eq!(r.to_string(), r.as_str());
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json, json!(r.as_str()));
    }
    for role in [Role::Admin, Role::Developer, Role::Viewer] {
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
    }
}

// ---- JSON arguments, KV names, database URLs ----

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn json_arguments_parse_like_serde_and_fail_on_one_line(text in prop_oneof![
        any::<String>(),
        "[\\[\\]{}\",:0-9a-z \n]{0,12}",
    ]) {
        let want = serde_json::from_str::<Value>(&text).ok();
        match picloud_host::admin::parse_json("value", &text) {
            Ok(v) => prop_assert_eq!(Some(v), want),
            Err(e) => {
                prop_assert!(want.is_none());
                let msg = e.to_string();
                prop_assert!(msg.starts_with("invalid JSON value: "), "{}", msg);
                prop_assert!(!msg.contains('\n'), "one line: {:?}", msg);
            }
        }
    }

    #[test]
    fn kv_names_are_checked_by_length(
        collection in prop_oneof![any::<String>(), Just(String::new()), "x{500,520}"],
        key in prop_oneof![any::<String>(), Just(String::new()), "k{500,520}"],
    ) {
        let ok = !collection.is_empty()
            && !key.is_empty()
            && collection.len() <= MAX_KV_NAME_BYTES
            && key.len() <= MAX_KV_NAME_BYTES;
        let got = store::validate_kv_names(&collection, &key);
        prop_assert_eq!(got.is_ok(), ok, "{:?}", got);
        if let Err(e) = got {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn database_urls_never_panic_and_hide_passwords(
        user in "[a-z][a-z0-9_]{0,8}",
        // A URL's userinfo: '/', '?', '@' and '#' must be percent-encoded.
        password in "[A-Za-z0-9!$&'()*+,;=:%._~-]{1,16}",
        host in "[a-z0-9.]{1,12}(:[0-9]{1,5})?",
        db in "[a-z0-9_]{0,10}",
        query in prop_oneof![Just(String::new()), "\\?[a-z]{1,6}=[a-z0-9]{0,6}"],
        junk in any::<String>(),
    ) {
        let url = format!("postgres://{user}:{password}@{host}/{db}{query}");
        let shown = redact(&url);
        prop_assert!(shown.starts_with(&format!("postgres://{user}:***@{host}")), "{}", shown);
        prop_assert!(!shown.contains(&format!(":{password}@")), "{}", shown);
        prop_assert!(store::DatabaseUrl::parse(&url).is_ok());
        // Anything else: no panic, and an unknown scheme is refused.
        let _ = redact(&junk);
        let parsed = store::DatabaseUrl::parse(&junk);
        let scheme = junk.split_once(':').map(|(s, _)| s).unwrap_or("");
        prop_assert_eq!(
            parsed.is_ok(),
            matches!(scheme, "sqlite" | "postgres" | "postgresql")
        );
        // A password given as a query parameter is hidden too.
        let q = format!("postgres://{host}/{db}?password={password}&sslmode=disable");
        prop_assert!(!redact(&q).contains(&format!("={password}&")), "{}", redact(&q));
    }
}

// ---- The log budget ----

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn log_buffer_never_exceeds_its_budget(
        limit in 1u64..4096,
        lines in prop::collection::vec(any::<String>(), 0..40),
    ) {
        let log = LogBuffer::new(limit);
        let mut refused = false;
        for line in &lines {
            match log.push(LogLevel::Info, line) {
                Ok(()) => prop_assert!(!refused, "a line was accepted after the budget ran out"),
                Err(e) => {
                    prop_assert_eq!(e, LimitExceeded::Log { bytes: limit });
                    refused = true;
                }
            }
            prop_assert!(log.used() <= limit);
        }
        // A line costs its bytes plus one for its break, so even empty
        // lines use the budget up.
        let kept: usize = log.snapshot().iter().map(|l| l.message.len() + 1).sum();
        prop_assert!(kept as u64 <= limit, "{} > {}", kept, limit);
        let total: usize = lines.iter().map(|l| l.len() + 1).sum();
        prop_assert_eq!(refused, total as u64 > limit);
    }
}

// ---- Event payloads: built by the host, parsed by the guest SDK ----

/// Run `f` on the SDK's view of an event, as a handler would see it.
fn sdk_view<T>(
    source: &str,
    op: &str,
    payload: &Value,
    f: impl FnOnce(&picloud_sdk::Event) -> T,
) -> T {
    let raw = RawEvent {
        id: EventId::new().to_string(),
        app_id: AppId::new().to_string(),
        source: source.to_owned(),
        op: op.to_owned(),
        payload: payload.to_string(),
        depth: 0,
        attempt: 1,
        trigger_id: None,
        script_id: ScriptId::new().to_string(),
        principal: "alice".into(),
    };
    f(&picloud_sdk::__private::event(raw))
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // Decimals with a few digits: serde_json (without its
        // float_roundtrip feature) may change the last digit of a long
        // float when it reads it back, on either side.
        (any::<i32>(), 0u32..4).prop_map(|(m, e)| json!(m as f64 / 10f64.powi(e as i32))),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn kv_event_payload_round_trips_through_the_sdk(
        collection in any::<String>(),
        key in any::<String>(),
        value in prop::option::of(json_value()),
        version in 1i64..i64::MAX,
        depth in 0i32..100,
        delete in any::<bool>(),
    ) {
        let op = if delete { KvOp::Delete } else { KvOp::Set };
        let app = AppId::new();
        let ev = kv_event(app, op, &collection, &key, value.as_ref(), version, depth);
        prop_assert_eq!(ev.app_id(), app);
        prop_assert_eq!(ev.source(), source::KV);
        prop_assert_eq!(ev.op(), op.as_str());
        prop_assert_eq!(ev.depth(), depth);
        prop_assert_eq!(ev.trigger_id(), None);
        // The payload survives the trip through JSON text, as stored.
        let stored: Value = serde_json::from_str(&ev.payload().to_string()).unwrap();
        prop_assert_eq!(&stored, ev.payload());
        let seen = sdk_view(ev.source(), ev.op(), ev.payload(), |e| e.kv());
        let seen = seen.expect("the SDK sees a kv event");
        prop_assert_eq!(seen.op, if delete { picloud_sdk::KvOp::Delete } else { picloud_sdk::KvOp::Set });
        prop_assert_eq!(seen.collection, collection);
        prop_assert_eq!(seen.key, key);
        // JSON null is "no value", as on delete.
        prop_assert_eq!(seen.value, value.filter(|v| !v.is_null()));
        prop_assert_eq!(seen.version, version as u64);
    }

    #[test]
    fn dead_letter_event_payload_round_trips_through_the_sdk(
        src in any::<String>(),
        op in any::<String>(),
        with_trigger in any::<bool>(),
        with_script in any::<bool>(),
        attempts in 0i32..i32::MAX,
        last_error in any::<String>(),
        payload in json_value(),
        depth in 0i32..100,
    ) {
        let now = Timestamp::now();
        let dead = NewDeadLetter {
            original_event_id: EventId::new(),
            app_id: AppId::new(),
            source: src.clone(),
            op: op.clone(),
            trigger_id: with_trigger.then(TriggerId::new),
            script_id: with_script.then(ScriptId::new),
            payload: payload.clone(),
            depth,
            attempt_count: attempts,
            first_attempt_at: now,
            last_attempt_at: now,
            last_error: last_error.clone(),
        };
        let id = DeadLetterId::new();
        let ev = dead_letter_event(id, &dead);
        prop_assert_eq!(ev.source(), source::DEAD_LETTER);
        prop_assert_eq!(ev.op(), "created");
        prop_assert_eq!(ev.depth(), depth + 1, "one level deeper than the original");
        prop_assert_eq!(ev.app_id(), dead.app_id);
        let seen = sdk_view(ev.source(), ev.op(), ev.payload(), |e| e.dead_letter());
        let seen = seen.expect("the SDK sees a dead letter event");
        prop_assert_eq!(seen.dead_letter_id, id.to_string());
        prop_assert_eq!(seen.source, src);
        prop_assert_eq!(seen.op, op);
        prop_assert_eq!(seen.trigger_id, dead.trigger_id.map(|t| t.to_string()));
        prop_assert_eq!(seen.script_id, dead.script_id.map(|s| s.to_string()));
        prop_assert_eq!(seen.attempt_count, attempts as u32);
        prop_assert_eq!(seen.last_error, last_error);
        prop_assert_eq!(seen.payload, payload);
        // The id the host's recursion stop reads back is the same id.
        prop_assert_eq!(
            ev.payload()["dead_letter_id"].as_str().and_then(|s| s.parse::<DeadLetterId>().ok()),
            Some(id)
        );
    }

    #[test]
    fn sdk_accessors_never_panic_on_arbitrary_payloads(
        source in prop::sample::select(vec!["kv", "dead_letter", "http", "queue"]),
        op in prop::sample::select(vec!["set", "delete", "created", "invoke", "x"]),
        payload in prop_oneof![json_value(), any::<String>().prop_map(Value::String)],
    ) {
        sdk_view(source, op, &payload, |e| {
            let kv = e.kv();
            let dl = e.dead_letter();
            // Each accessor answers only for its own source.
            assert!(kv.is_none() || source == "kv");
            assert!(dl.is_none() || source == "dead_letter");
            let _ = e.json::<Value>();
        });
    }
}
