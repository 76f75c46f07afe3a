//! The store contract: one suite, run against SQLite and PostgreSQL, each
//! test on a fresh database. What a backend must do is stated here once;
//! a behaviour that differs between the backends fails one of the twins.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use picloud_host::auth::Role;
use picloud_host::model::{
    AppId, Attempts, DeadLetterFilter, EventId, KvOp, KvOps, NewDeadLetter, NewEvent, NewTrigger,
    Outcome, Resolution, ScriptId, Timestamp, Trigger, TriggerId, TriggerSpec, source,
};
use picloud_host::store::{self, Error, NewAbandoned, Retry, Signal, Store, StoredReply};
use picloud_tests::contract;
use picloud_tests::db::{Pool, TestDb};
use serde_json::{Value, json};

contract!(
    apps_are_created_found_and_unique,
    members_are_set_changed_and_removed,
    scripts_are_replaced_in_place_and_removed_with_their_triggers,
    triggers_crud_and_cascades,
    deleting_an_app_removes_everything,
    kv_matching_by_pattern_ops_enabled_and_app,
    dead_letter_matching_by_source,
    invalid_patterns_are_refused_and_nothing_is_stored,
    trigger_script_must_exist_in_the_same_app,
    claim_takes_due_unleased_rows_up_to_the_limit,
    complete_and_reschedule_are_batched,
    complete_and_claim_deletes_then_leases_in_one_call,
    fan_out_replaces_the_raw_row,
    release_gives_leases_back,
    a_backlog_does_not_hold_back_another_apps_event,
    one_claim_gives_each_backlogged_app_a_share,
    fair_claims_take_the_apps_in_turns_and_wrap_round,
    small_fair_claims_take_every_app_in_turn,
    dead_letter_moves_the_event_and_emits_one_deeper,
    dead_letter_without_event,
    dead_letters_are_listed_by_filter_and_counted,
    resolve_happens_once_and_replay_enqueues_the_original,
    the_database_refuses_unknown_resolutions,
    stop_recursion_deletes_the_row_and_resolves_handler_failed,
    dead_letters_and_abandoned_are_collected_by_age,
    kv_writes_version_and_enqueue_their_events,
    kv_keys_page_in_bytewise_order,
    kv_names_are_validated_and_apps_checked,
    concurrent_kv_writes_never_lose_a_version,
    kv_write_in_a_rolled_back_embedder_transaction_leaves_nothing,
    kv_write_in_a_committed_embedder_transaction_lands_with_its_event,
    replies_are_parked_taken_once_and_swept,
    subscribers_hear_outbox_writes_and_replies,
    unknown_ids_are_not_found,
);

// ---- helpers ----

fn s(db: &TestDb) -> &Arc<dyn Store> {
    &db.store
}

async fn app(db: &TestDb, name: &str) -> AppId {
    s(db).create_app(name).await.expect("creating an app").id
}

async fn script(db: &TestDb, app: AppId, name: &str) -> ScriptId {
    let wasm = format!("\0asm-{name}").into_bytes();
    s(db)
        .put_script(app, name, &wasm, &"ab".repeat(32), None)
        .await
        .expect("storing a script")
        .id
}

fn kv_spec(pattern: &str, ops: &str) -> TriggerSpec {
    TriggerSpec::Kv {
        collection: pattern.into(),
        ops: KvOps::parse(ops).unwrap(),
        ordered: false,
    }
}

fn dl_spec(pattern: &str) -> TriggerSpec {
    TriggerSpec::DeadLetter {
        source: pattern.into(),
    }
}

fn new_trigger(app: AppId, script: ScriptId, name: &str, spec: TriggerSpec) -> NewTrigger {
    NewTrigger {
        app_id: app,
        script_id: script,
        name: name.into(),
        registered_by_principal: "alice".into(),
        spec,
        retry: Default::default(),
        max_depth: None,
    }
}

async fn trigger(
    db: &TestDb,
    app: AppId,
    script: ScriptId,
    name: &str,
    spec: TriggerSpec,
) -> Trigger {
    s(db)
        .create_trigger(&new_trigger(app, script, name, spec))
        .await
        .expect("creating a trigger")
}

/// An outside event no trigger of these tests matches (collection `c`).
fn raw(app: AppId, n: i64) -> NewEvent {
    NewEvent::raw(
        app,
        source::KV,
        "set",
        json!({ "collection": "c", "key": n.to_string(), "n": n }),
    )
}

fn due_in(e: NewEvent, secs: i64) -> NewEvent {
    let now = Timestamp::now();
    e.due_at(if secs >= 0 {
        now.plus(Duration::from_secs(secs as u64))
    } else {
        now.minus(Duration::from_secs((-secs) as u64))
    })
}

fn new_dead(
    app: AppId,
    event: EventId,
    source: &str,
    trigger: Option<TriggerId>,
    depth: i32,
) -> NewDeadLetter {
    let now = Timestamp::now();
    NewDeadLetter {
        original_event_id: event,
        app_id: app,
        source: source.into(),
        op: "set".into(),
        trigger_id: trigger,
        script_id: Some(ScriptId::new()),
        payload: json!({"collection": "orders", "key": "o-1", "value": {"total": 3}, "version": 1}),
        depth,
        attempt_count: 5,
        first_attempt_at: now.minus(Duration::from_secs(60)),
        last_attempt_at: now,
        last_error: "boom".into(),
    }
}

/// Every due row, leased to `who` for a minute.
async fn claim_all(db: &TestDb, who: &str) -> Vec<picloud_host::model::OutboxEvent> {
    s(db)
        .claim_due(who, 10_000, Duration::from_secs(60))
        .await
        .expect("claiming")
}

fn ids<T, I: Eq + std::hash::Hash>(items: &[T], f: impl Fn(&T) -> I) -> HashSet<I> {
    items.iter().map(f).collect()
}

/// Time passes between two writes, so their timestamps differ.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(15)).await;
}

// ---- apps and members ----

async fn apps_are_created_found_and_unique(db: &TestDb) {
    let shop = s(db).create_app("shop").await.unwrap();
    let blog = s(db).create_app("blog").await.unwrap();
    assert_eq!(shop.name, "shop");
    assert_eq!(s(db).get_app(shop.id).await.unwrap(), shop);
    assert_eq!(s(db).find_app("shop").await.unwrap(), shop);
    assert_eq!(s(db).find_app(&shop.id.to_string()).await.unwrap(), shop);
    let names: Vec<String> = s(db)
        .list_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["blog", "shop"]);

    let err = s(db).create_app("shop").await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(err.to_string(), "app 'shop' already exists");
    assert_eq!(s(db).list_apps().await.unwrap().len(), 2);
    let err = s(db).find_app("nope").await.unwrap_err();
    assert_eq!(err.to_string(), "unknown app 'nope'");
    let _ = blog;
}

async fn members_are_set_changed_and_removed(db: &TestDb) {
    let a = app(db, "a").await;
    let b = app(db, "b").await;
    s(db).set_member(a, "bob", Role::Viewer).await.unwrap();
    s(db).set_member(a, "alice", Role::Admin).await.unwrap();
    assert_eq!(
        s(db).member_role(a, "bob").await.unwrap(),
        Some(Role::Viewer)
    );
    assert_eq!(
        s(db).member_role(b, "bob").await.unwrap(),
        None,
        "membership is per app"
    );

    s(db).set_member(a, "bob", Role::Developer).await.unwrap();
    assert_eq!(
        s(db).member_role(a, "bob").await.unwrap(),
        Some(Role::Developer)
    );
    let members = s(db).list_members(a).await.unwrap();
    let listed: Vec<(&str, Role)> = members
        .iter()
        .map(|m| (m.principal.as_str(), m.role))
        .collect();
    assert_eq!(listed, [("alice", Role::Admin), ("bob", Role::Developer)]);
    assert!(members.iter().all(|m| m.app_id == a));

    assert!(s(db).remove_member(a, "bob").await.unwrap());
    assert!(!s(db).remove_member(a, "bob").await.unwrap());
    assert_eq!(s(db).member_role(a, "bob").await.unwrap(), None);
    assert_eq!(s(db).list_members(a).await.unwrap().len(), 1);

    let err = s(db)
        .set_member(AppId::new(), "x", Role::Viewer)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

// ---- scripts ----

async fn scripts_are_replaced_in_place_and_removed_with_their_triggers(db: &TestDb) {
    let a = app(db, "a").await;
    let v1 = s(db)
        .put_script(a, "greeter", b"code-one", &"11".repeat(32), None)
        .await
        .unwrap();
    assert_eq!((v1.size, v1.sha256.as_str()), (8, "11".repeat(32).as_str()));
    tick().await;
    let v2 = s(db)
        .put_script(a, "greeter", b"code-two!", &"22".repeat(32), None)
        .await
        .unwrap();
    assert_eq!(v2.id, v1.id, "redeploying a name keeps its id");
    assert_eq!(v2.created_at, v1.created_at);
    assert!(v2.updated_at > v1.updated_at);
    assert_eq!(v2.size, 9);
    let (meta, code) = s(db).script_code(v1.id).await.unwrap();
    assert_eq!(meta, v2);
    assert_eq!(code, b"code-two!");
    assert_eq!(s(db).get_script(v1.id).await.unwrap(), v2);
    assert_eq!(s(db).find_script(a, "greeter").await.unwrap(), v2);
    assert_eq!(s(db).find_script(a, &v1.id.to_string()).await.unwrap(), v2);

    let other = s(db)
        .put_script(a, "audit", b"x", &"33".repeat(32), None)
        .await
        .unwrap();
    let names: Vec<String> = s(db)
        .list_scripts(a)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, ["audit", "greeter"]);

    // Another app cannot reach it by id, and has its own namespace.
    let b = app(db, "b").await;
    assert!(
        s(db)
            .find_script(b, &v1.id.to_string())
            .await
            .unwrap_err()
            .is_not_found()
    );
    let b_greeter = s(db)
        .put_script(b, "greeter", b"b", &"44".repeat(32), None)
        .await
        .unwrap();
    assert_ne!(b_greeter.id, v1.id);

    let t = trigger(db, a, v1.id, "on-orders", kv_spec("orders", "")).await;
    assert!(
        !s(db).remove_script(b, v1.id).await.unwrap(),
        "only the owning app removes it"
    );
    assert!(s(db).remove_script(a, v1.id).await.unwrap());
    assert!(!s(db).remove_script(a, v1.id).await.unwrap());
    assert!(s(db).get_script(v1.id).await.unwrap_err().is_not_found());
    assert!(
        s(db).get_trigger(t.id).await.unwrap_err().is_not_found(),
        "its triggers go with it"
    );
    assert_eq!(db.count("select count(*) from kv_trigger_details").await, 0);
    assert_eq!(s(db).list_scripts(a).await.unwrap(), vec![other]);
}

// ---- triggers ----

async fn triggers_crud_and_cascades(db: &TestDb) {
    let a = app(db, "a").await;
    let sc = script(db, a, "s").await;
    let t1 = trigger(db, a, sc, "orders", kv_spec("orders:*", "set")).await;
    assert_eq!(t1.app_id, a);
    assert_eq!(t1.script_id, sc);
    assert_eq!(t1.name, "orders");
    assert!(t1.enabled);
    assert_eq!(t1.registered_by_principal, "alice");
    assert_eq!(
        t1.spec,
        TriggerSpec::Kv {
            collection: "orders:*".into(),
            ops: KvOps {
                set: true,
                delete: false
            },
            ordered: false,
        }
    );
    tick().await;
    let t2 = trigger(db, a, sc, "dlq", dl_spec("kv")).await;
    assert_eq!(t2.spec, dl_spec("kv"));
    assert_eq!(s(db).get_trigger(t1.id).await.unwrap(), t1);
    assert_eq!(
        s(db).list_triggers(a).await.unwrap(),
        vec![t1.clone(), t2.clone()]
    );

    let ordered = TriggerSpec::Kv {
        collection: "queue".into(),
        ops: KvOps::ALL,
        ordered: true,
    };
    let t3 = trigger(db, a, sc, "in-order", ordered.clone()).await;
    assert_eq!(t3.spec, ordered, "ordered per key survives the round trip");
    assert!(t3.is_ordered() && !t1.is_ordered() && !t2.is_ordered());
    assert_eq!(s(db).get_trigger(t3.id).await.unwrap(), t3);
    s(db).delete_trigger(t3.id).await.unwrap();

    tick().await;
    let off = s(db).set_trigger_enabled(t1.id, false).await.unwrap();
    assert!(!off.enabled);
    assert!(off.updated_at > t1.updated_at);
    assert_eq!(off.created_at, t1.created_at);
    assert!(!s(db).get_trigger(t1.id).await.unwrap().enabled);
    assert!(
        s(db)
            .set_trigger_enabled(t1.id, true)
            .await
            .unwrap()
            .enabled
    );

    assert_eq!(db.count("select count(*) from kv_trigger_details").await, 1);
    assert_eq!(
        db.count("select count(*) from dead_letter_trigger_details")
            .await,
        1
    );
    assert!(s(db).delete_trigger(t1.id).await.unwrap());
    assert!(!s(db).delete_trigger(t1.id).await.unwrap());
    assert_eq!(
        db.count("select count(*) from kv_trigger_details").await,
        0,
        "details go with it"
    );
    assert!(s(db).delete_trigger(t2.id).await.unwrap());
    assert_eq!(
        db.count("select count(*) from dead_letter_trigger_details")
            .await,
        0
    );
    assert!(s(db).list_triggers(a).await.unwrap().is_empty());
}

async fn deleting_an_app_removes_everything(db: &TestDb) {
    let a = app(db, "doomed").await;
    let keep = app(db, "kept").await;
    for id in [a, keep] {
        s(db).set_member(id, "alice", Role::Admin).await.unwrap();
        let sc = script(db, id, "s").await;
        let t = trigger(db, id, sc, "kv", kv_spec("*", "")).await;
        trigger(db, id, sc, "dl", dl_spec("*")).await;
        s(db).kv_set(id, "c", "k", &json!(1), 0).await.unwrap();
        let ev = s(db).enqueue(&raw(id, 1)).await.unwrap();
        s(db)
            .dead_letter(&new_dead(id, ev, "kv", Some(t.id), 0), true, &[])
            .await
            .unwrap();
        s(db)
            .record_abandoned(&NewAbandoned {
                app_id: id,
                outbox_event_id: EventId::new(),
                script_id: sc,
                trigger_id: None,
                reply_to: "_INBOX.x".into(),
                outcome: Outcome::Ok,
                detail: "gone".into(),
            })
            .await
            .unwrap();
        s(db)
            .put_reply(&reply(id, &format!("_INBOX.{id}"), Timestamp::now()), &[])
            .await
            .unwrap();
    }
    let tables = [
        "app_members",
        "scripts",
        "kv_entries",
        "triggers",
        "kv_trigger_details",
        "dead_letter_trigger_details",
        "outbox",
        "dead_letters",
        "dead_letter_depths",
        "abandoned_executions",
        "invocation_replies",
    ];
    let mut before = Vec::new();
    for t in tables {
        let n = db.count(&format!("select count(*) from {t}")).await;
        assert!(n >= 2 && n % 2 == 0, "{t} has rows for both apps: {n}");
        before.push(n);
    }
    let deleted = db
        .execute(&format!("delete from apps where id = '{a}'"))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    for (t, n) in tables.iter().zip(before) {
        assert_eq!(
            db.count(&format!("select count(*) from {t}")).await,
            n / 2,
            "{t} kept only the other app's rows"
        );
    }
    assert_eq!(s(db).list_triggers(keep).await.unwrap().len(), 2);
}

async fn kv_matching_by_pattern_ops_enabled_and_app(db: &TestDb) {
    let a = app(db, "a").await;
    let b = app(db, "b").await;
    let sa = script(db, a, "s").await;
    let sb = script(db, b, "s").await;
    let all = trigger(db, a, sa, "all", kv_spec("*", "")).await;
    let prefix = trigger(db, a, sa, "prefix", kv_spec("orders:*", "set")).await;
    let exact = trigger(db, a, sa, "exact", kv_spec("orders", "delete")).await;
    let users = trigger(db, a, sa, "users", kv_spec("users", "set,delete")).await;
    let disabled = trigger(db, a, sa, "disabled", kv_spec("*", "")).await;
    s(db).set_trigger_enabled(disabled.id, false).await.unwrap();
    trigger(db, a, sa, "dead letters", dl_spec("*")).await;
    let other_app = trigger(db, b, sb, "b-all", kv_spec("*", "")).await;

    let matching = |app: AppId, coll: &'static str, op: KvOp| async move {
        let found = s(db).list_matching_kv(app, coll, op).await.unwrap();
        assert!(
            found
                .iter()
                .all(|t| t.enabled && t.app_id == app && t.spec.kind() == "kv")
        );
        ids(&found, |t| t.id)
    };
    let set = |ts: &[&Trigger]| ids(ts, |t| t.id);
    assert_eq!(
        matching(a, "orders:eu", KvOp::Set).await,
        set(&[&all, &prefix])
    );
    assert_eq!(matching(a, "orders:eu", KvOp::Delete).await, set(&[&all]));
    assert_eq!(
        matching(a, "orders", KvOp::Delete).await,
        set(&[&all, &exact])
    );
    assert_eq!(
        matching(a, "orders", KvOp::Set).await,
        set(&[&all]),
        "'orders:*' needs the colon"
    );
    assert_eq!(
        matching(a, "orders:", KvOp::Set).await,
        set(&[&all, &prefix])
    );
    assert_eq!(
        matching(a, "users", KvOp::Delete).await,
        set(&[&all, &users])
    );
    assert_eq!(
        matching(a, "Users", KvOp::Set).await,
        set(&[&all]),
        "exact is case-sensitive"
    );
    assert_eq!(matching(b, "orders", KvOp::Set).await, set(&[&other_app]));
    assert!(matching(AppId::new(), "orders", KvOp::Set).await.is_empty());

    s(db).set_trigger_enabled(disabled.id, true).await.unwrap();
    assert_eq!(matching(a, "x", KvOp::Set).await, set(&[&all, &disabled]));
}

async fn dead_letter_matching_by_source(db: &TestDb) {
    let a = app(db, "a").await;
    let b = app(db, "b").await;
    let sa = script(db, a, "s").await;
    let sb = script(db, b, "s").await;
    let all = trigger(db, a, sa, "all", dl_spec("*")).await;
    let kv = trigger(db, a, sa, "kv", dl_spec("kv")).await;
    let cr = trigger(db, a, sa, "cr", dl_spec("cr*")).await;
    let off = trigger(db, a, sa, "off", dl_spec("kv")).await;
    s(db).set_trigger_enabled(off.id, false).await.unwrap();
    trigger(db, a, sa, "kv trigger", kv_spec("*", "")).await;
    let other = trigger(db, b, sb, "b", dl_spec("*")).await;

    let matching = |app: AppId, src: &'static str| async move {
        ids(
            &s(db).list_matching(app, "dead_letter", src).await.unwrap(),
            |t| t.id,
        )
    };
    let set = |ts: &[&Trigger]| ids(ts, |t| t.id);
    assert_eq!(matching(a, "kv").await, set(&[&all, &kv]));
    assert_eq!(matching(a, "cron").await, set(&[&all, &cr]));
    assert_eq!(matching(a, "http").await, set(&[&all]));
    assert_eq!(matching(b, "kv").await, set(&[&other]));
}

async fn invalid_patterns_are_refused_and_nothing_is_stored(db: &TestDb) {
    let a = app(db, "a").await;
    let sc = script(db, a, "s").await;
    for (spec, pattern) in [
        (kv_spec("a*b", ""), "a*b"),
        (kv_spec("*a", ""), "*a"),
        (kv_spec("**", ""), "**"),
        (dl_spec("k*v"), "k*v"),
    ] {
        let err = s(db)
            .create_trigger(&new_trigger(a, sc, "bad", spec))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Pattern(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid pattern '{pattern}': '*' is allowed only as the last character ('*' or 'prefix*')"
            )
        );
    }
    let err = s(db)
        .create_trigger(&new_trigger(a, sc, "bad", kv_spec("", "")))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("invalid pattern ''"), "{err}");
    assert!(s(db).list_triggers(a).await.unwrap().is_empty());
    assert_eq!(db.count("select count(*) from triggers").await, 0);
    assert_eq!(db.count("select count(*) from kv_trigger_details").await, 0);
    assert_eq!(
        db.count("select count(*) from dead_letter_trigger_details")
            .await,
        0
    );
}

async fn trigger_script_must_exist_in_the_same_app(db: &TestDb) {
    let a = app(db, "a").await;
    let b = app(db, "b").await;
    let sb = script(db, b, "theirs").await;
    let err = s(db)
        .create_trigger(&new_trigger(a, sb, "t", kv_spec("*", "")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("belongs to another app"), "{err}");
    let missing = ScriptId::new();
    let err = s(db)
        .create_trigger(&new_trigger(a, missing, "t", kv_spec("*", "")))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), format!("unknown script '{missing}'"));
    assert_eq!(db.count("select count(*) from triggers").await, 0);
}

// ---- the outbox ----

async fn claim_takes_due_unleased_rows_up_to_the_limit(db: &TestDb) {
    let a = app(db, "a").await;
    assert_eq!(s(db).next_due_at().await.unwrap(), None);
    let future = s(db).enqueue(&due_in(raw(a, 0), 3600)).await.unwrap();
    let oldest = s(db).enqueue(&due_in(raw(a, 1), -30)).await.unwrap();
    let mut due = vec![oldest];
    for n in 2..=5 {
        due.push(s(db).enqueue(&due_in(raw(a, n), -10)).await.unwrap());
    }
    assert_eq!(s(db).count_events(Some(a)).await.unwrap(), 6);
    assert_eq!(s(db).count_events(Some(AppId::new())).await.unwrap(), 0);
    assert_eq!(s(db).count_events(None).await.unwrap(), 6);
    assert!(s(db).next_due_at().await.unwrap().unwrap() < Timestamp::now());
    assert!(
        s(db)
            .claim_due("w0", 0, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );

    let before = Timestamp::now();
    let first = s(db)
        .claim_due("w1", 3, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "the limit is honoured");
    assert_eq!(first[0].id, oldest, "earliest due first");
    for row in &first {
        assert_eq!(row.locked_by.as_deref(), Some("w1"));
        let until = row.locked_until.expect("leased");
        assert!(until >= before.plus(Duration::from_secs(59)), "{until:?}");
        assert_eq!(
            s(db)
                .get_event(row.id)
                .await
                .unwrap()
                .unwrap()
                .locked_by
                .as_deref(),
            Some("w1")
        );
    }
    let second = s(db)
        .claim_due("w2", 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        second.len(),
        2,
        "leased rows and future rows are not claimed"
    );
    assert!(second.iter().all(|r| r.locked_by.as_deref() == Some("w2")));
    let claimed: HashSet<EventId> = first.iter().chain(&second).map(|r| r.id).collect();
    assert_eq!(claimed, due.iter().copied().collect());
    assert!(claim_all(db, "w3").await.is_empty());
    let untouched = s(db).get_event(future).await.unwrap().unwrap();
    assert_eq!((untouched.locked_by, untouched.locked_until), (None, None));
    let next = s(db).next_due_at().await.unwrap().unwrap();
    assert!(
        next > Timestamp::now() && next < Timestamp::now().plus(Duration::from_secs(61)),
        "lease expiry: {next:?}"
    );

    // An expired lease is claimed again, by someone else.
    let short = s(db).enqueue(&raw(a, 9)).await.unwrap();
    let got = s(db)
        .claim_due("crashed", 10, Duration::from_millis(30))
        .await
        .unwrap();
    assert_eq!(ids(&got, |r| r.id), HashSet::from([short]));
    assert!(claim_all(db, "w4").await.is_empty(), "still leased");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let again = claim_all(db, "w4").await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id, again[0].locked_by.as_deref()),
        (short, Some("w4"))
    );
    assert_eq!(again[0].payload["n"], json!(9));
    assert_eq!(again[0].attempt_count, 0);
}

async fn complete_and_reschedule_are_batched(db: &TestDb) {
    let a = app(db, "a").await;
    let evs = s(db)
        .enqueue_many(&(0..4).map(|n| raw(a, n)).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(evs.len(), 4);
    assert_eq!(claim_all(db, "w").await.len(), 4);

    assert_eq!(s(db).complete(&[evs[0], evs[1]], &[]).await.unwrap(), 2);
    assert_eq!(s(db).complete(&[evs[0]], &[]).await.unwrap(), 0);
    assert_eq!(s(db).complete(&[], &[]).await.unwrap(), 0);
    assert!(s(db).get_event(evs[0]).await.unwrap().is_none());
    assert!(s(db).get_event(evs[1]).await.unwrap().is_none());

    let first = Timestamp::now().minus(Duration::from_secs(5));
    let last = Timestamp::now();
    let later = last.plus(Duration::from_secs(3600));
    let retry = |id, n: i32, due| Retry {
        id,
        attempt_count: n,
        first_attempt_at: first,
        last_attempt_at: last,
        last_error: format!("failure {n}"),
        due_at: due,
    };
    s(db)
        .reschedule(
            &[
                retry(evs[2], 1, later),
                retry(evs[3], 2, last.minus(Duration::from_secs(1))),
            ],
            &[],
        )
        .await
        .unwrap();
    let r2 = s(db).get_event(evs[2]).await.unwrap().unwrap();
    assert_eq!(r2.attempt_count, 1);
    assert_eq!(r2.last_error.as_deref(), Some("failure 1"));
    assert_eq!(r2.first_attempt_at, Some(first));
    assert_eq!(r2.last_attempt_at, Some(last));
    assert_eq!(r2.due_at, later);
    assert_eq!(
        (r2.locked_by, r2.locked_until),
        (None, None),
        "the lease is cleared"
    );
    let r3 = s(db).get_event(evs[3]).await.unwrap().unwrap();
    assert_eq!(
        (r3.attempt_count, r3.last_error.as_deref()),
        (2, Some("failure 2"))
    );

    let again = claim_all(db, "w").await;
    assert_eq!(
        ids(&again, |r| r.id),
        HashSet::from([evs[3]]),
        "only the one due now"
    );
    assert_eq!(again[0].attempt_count, 2);
    assert_eq!(s(db).complete(&evs, &[]).await.unwrap(), 2);
    assert_eq!(s(db).count_events(None).await.unwrap(), 0);

    // Large batches cross the chunk size.
    let many = s(db)
        .enqueue_many(&(0..1203).map(|n| raw(a, n)).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(many.iter().collect::<HashSet<_>>().len(), 1203);
    assert_eq!(s(db).count_events(Some(a)).await.unwrap(), 1203);
    let rows = claim_all(db, "w").await;
    assert_eq!(rows.len(), 1203);
    let retries: Vec<Retry> = many[..700].iter().map(|id| retry(*id, 1, later)).collect();
    s(db).reschedule(&retries, &[]).await.unwrap();
    assert_eq!(s(db).complete(&many[700..], &[]).await.unwrap(), 503);
    assert_eq!(s(db).count_events(None).await.unwrap(), 700);
}

async fn complete_and_claim_deletes_then_leases_in_one_call(db: &TestDb) {
    let a = app(db, "a").await;
    let lease = Duration::from_secs(60);
    let evs = s(db)
        .enqueue_many(&(0..1210).map(|n| raw(a, n)).collect::<Vec<_>>())
        .await
        .unwrap();
    // Nothing finished yet: a plain claim.
    let first = s(db)
        .complete_and_claim(&[], &[], "w", 600, lease)
        .await
        .unwrap();
    assert_eq!(first.len(), 600);
    assert!(first.iter().all(|r| r.locked_by.as_deref() == Some("w")));
    // The 600 finished rows go (more than one chunk), the next 600 are leased,
    // never one of those being deleted.
    let done: Vec<EventId> = first.iter().map(|r| r.id).collect();
    let second = s(db)
        .complete_and_claim(&done, &[], "w", 600, lease)
        .await
        .unwrap();
    assert_eq!(second.len(), 600);
    let done_set: HashSet<EventId> = done.iter().copied().collect();
    assert!(second.iter().all(|r| !done_set.contains(&r.id)));
    assert_eq!(s(db).count_events(Some(a)).await.unwrap(), 610);
    assert!(s(db).get_event(done[0]).await.unwrap().is_none());
    // A limit of 0 only completes; more than is due claims what there is.
    let done: Vec<EventId> = second.iter().map(|r| r.id).collect();
    assert!(
        s(db)
            .complete_and_claim(&done, &[], "w", 0, lease)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s(db).count_events(Some(a)).await.unwrap(), 10);
    let last = s(db)
        .complete_and_claim(&[evs[0]], &[], "w", 600, lease)
        .await
        .unwrap();
    assert_eq!(
        last.len(),
        10,
        "the ten still due; the deleted id is gone already"
    );
    assert!(
        s(db)
            .complete_and_claim(&[], &[], "w", 600, lease)
            .await
            .unwrap()
            .is_empty(),
        "all leased"
    );
}

async fn fan_out_replaces_the_raw_row(db: &TestDb) {
    let a = app(db, "a").await;
    let raw_id = s(db).enqueue(&raw(a, 1).at_depth(2)).await.unwrap();
    let row = claim_all(db, "w").await.pop().unwrap();
    let (t1, t2) = (TriggerId::new(), TriggerId::new());
    let inv = |t: TriggerId, attempts: i32| {
        NewEvent::for_trigger(
            &row,
            t,
            ScriptId::new(),
            Attempts {
                count: attempts,
                first_at: (attempts > 0).then(Timestamp::now),
                last_at: (attempts > 0).then(Timestamp::now),
                last_error: (attempts > 0).then(|| "first try failed".to_owned()),
            },
            Timestamp::now(),
        )
    };
    let ids = s(db)
        .fan_out(&[raw_id], &[inv(t1, 0), inv(t2, 1)], &[])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(row.event_id, raw_id, "a fresh row's event id is its own id");
    assert!(
        s(db).get_event(raw_id).await.unwrap().is_none(),
        "the raw row is gone"
    );
    let one = s(db).get_event(ids[0]).await.unwrap().unwrap();
    let two = s(db).get_event(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (one.event_id, two.event_id),
        (raw_id, raw_id),
        "every invocation row carries the raw event's id (stable across retries)"
    );
    assert_eq!(
        (one.trigger_id, one.attempt_count, one.depth),
        (Some(t1), 0, 2)
    );
    assert_eq!((two.trigger_id, two.attempt_count), (Some(t2), 1));
    assert_eq!(two.last_error.as_deref(), Some("first try failed"));
    assert_eq!(one.payload["n"], json!(1));
    assert_eq!(s(db).count_events(None).await.unwrap(), 2);
}

async fn release_gives_leases_back(db: &TestDb) {
    let a = app(db, "a").await;
    let evs = s(db).enqueue_many(&[raw(a, 1), raw(a, 2)]).await.unwrap();
    assert_eq!(claim_all(db, "w1").await.len(), 2);
    assert!(claim_all(db, "w2").await.is_empty());
    s(db).release(&evs).await.unwrap();
    let row = s(db).get_event(evs[0]).await.unwrap().unwrap();
    assert_eq!(
        (row.locked_by, row.locked_until, row.attempt_count),
        (None, None, 0)
    );
    let again = claim_all(db, "w2").await;
    assert_eq!(ids(&again, |r| r.id), evs.iter().copied().collect());
}

// ---- fair claims (SPEC section 14) ----

/// `n` due rows of `app`, written in a few large transactions.
async fn backlog(db: &TestDb, app: AppId, n: usize) -> Vec<EventId> {
    let events: Vec<NewEvent> = (0..n as i64).map(|i| raw(app, i)).collect();
    let mut ids = Vec::with_capacity(n);
    for chunk in events.chunks(10_000) {
        ids.extend(
            s(db)
                .enqueue_many(chunk)
                .await
                .expect("enqueueing a backlog"),
        );
    }
    ids
}

/// How many of `rows` belong to each app.
fn per_app(rows: &[picloud_host::model::OutboxEvent]) -> std::collections::HashMap<AppId, usize> {
    let mut counts = std::collections::HashMap::new();
    for r in rows {
        *counts.entry(r.app_id).or_default() += 1;
    }
    counts
}

/// The dispatcher's batch size.
const BATCH: u32 = 256;

async fn a_backlog_does_not_hold_back_another_apps_event(db: &TestDb) {
    let lease = Duration::from_secs(60);
    let (a, b) = (app(db, "busy").await, app(db, "quiet").await);
    // The store has just seen an outbox with nothing waiting (a claim that
    // came back short), as a dispatcher sees it between bursts: its next
    // claim is the plain one.
    let first = s(db).enqueue(&raw(a, -1)).await.unwrap();
    let got = s(db)
        .complete_and_claim(&[], &[], "w", BATCH, lease)
        .await
        .unwrap();
    assert_eq!(ids(&got, |r| r.id), HashSet::from([first]));
    s(db).complete(&[first], &[]).await.unwrap();

    // Then app a writes 100,000 events and app b one, last.
    let backlog = backlog(db, a, 100_000).await;
    let single = s(db).enqueue(&raw(b, 0)).await.unwrap();

    // Claims as the dispatcher makes them: each completes the one before.
    let mut done: Vec<EventId> = Vec::new();
    let mut found = None;
    for round in 1..=2 {
        let rows = s(db)
            .complete_and_claim(&done, &[], "w", BATCH, lease)
            .await
            .unwrap();
        assert_eq!(rows.len(), BATCH as usize, "round {round}: a full claim");
        if let Some(at) = rows.iter().position(|r| r.id == single) {
            found = Some((round, at));
            break;
        }
        done = rows.iter().map(|r| r.id).collect();
    }
    let (round, at) = found.expect("app b's event is in the first or second claim");
    println!(
        "fair claims: app b's one event leased by claim {round} of {BATCH} rows \
         (position {at} in it), with {} of app a's due",
        backlog.len()
    );
    assert!(
        at <= 1,
        "and it starts with the first turn of that claim (at {at})"
    );
}

async fn one_claim_gives_each_backlogged_app_a_share(db: &TestDb) {
    let lease = Duration::from_secs(60);
    let mut apps = Vec::new();
    for name in ["a", "b", "c"] {
        let app = app(db, name).await;
        // Written one app after the other: by due time, all of a's rows come
        // before b's, and all of b's before c's.
        backlog(db, app, 1_000).await;
        apps.push(app);
    }
    // A claim that comes back full: there is a backlog.
    let one = s(db).claim_due("w", 1, lease).await.unwrap();
    s(db).release(&[one[0].id]).await.unwrap();

    let rows = s(db).claim_due("w", BATCH, lease).await.unwrap();
    assert_eq!(rows.len(), BATCH as usize);
    let counts = per_app(&rows);
    let mut shares: Vec<usize> = apps
        .iter()
        .map(|a| counts.get(a).copied().unwrap_or(0))
        .collect();
    println!("fair claims: one claim of {BATCH} over three backlogs: {shares:?}");
    shares.sort_unstable();
    assert_eq!(shares, [85, 85, 86], "each app a third");
    for app in &apps {
        let mine: Vec<_> = rows.iter().filter(|r| r.app_id == *app).collect();
        assert!(
            mine.windows(2).all(|w| w[0].due_at <= w[1].due_at),
            "each app's oldest rows, oldest first"
        );
    }
    // The rows start in turns: every app's first row, then every app's
    // second, and so on.
    let firsts: HashSet<AppId> = rows[..3].iter().map(|r| r.app_id).collect();
    assert_eq!(firsts, apps.iter().copied().collect());
}

async fn fair_claims_take_the_apps_in_turns_and_wrap_round(db: &TestDb) {
    let lease = Duration::from_secs(60);
    // More apps than one fair claim serves (64), two rows each.
    let mut apps = Vec::new();
    for i in 0..70 {
        let app = app(db, &format!("app-{i:02}")).await;
        s(db)
            .enqueue_many(&[raw(app, 0), raw(app, 1)])
            .await
            .unwrap();
        apps.push(app);
    }
    let one = s(db).claim_due("w", 1, lease).await.unwrap();
    s(db).release(&[one[0].id]).await.unwrap();

    // Each claim of 64 serves 64 apps, one row each; the second goes on
    // where the first stopped, wraps round to the first apps, and so
    // reaches the 6 the first left out.
    let first = s(db).claim_due("w", 64, lease).await.unwrap();
    let second = s(db).claim_due("w", 64, lease).await.unwrap();
    for (n, rows) in [&first, &second].iter().enumerate() {
        assert_eq!(rows.len(), 64, "claim {}", n + 1);
        let counts = per_app(rows);
        assert_eq!(counts.len(), 64, "claim {}: 64 apps, one row each", n + 1);
    }
    let first_apps: HashSet<AppId> = first.iter().map(|r| r.app_id).collect();
    let second_apps: HashSet<AppId> = second.iter().map(|r| r.app_id).collect();
    let left_out: HashSet<AppId> = apps
        .iter()
        .copied()
        .filter(|a| !first_apps.contains(a))
        .collect();
    assert_eq!(left_out.len(), 6);
    assert!(
        left_out.is_subset(&second_apps),
        "the apps the first claim left out come first in the second"
    );
    assert!(
        second_apps.iter().any(|a| first_apps.contains(a)),
        "the second claim wrapped round to apps the first served"
    );
    // What is left is claimed too, and nothing twice.
    let rest = claim_all(db, "w").await;
    assert_eq!(rest.len(), 140 - 128);
    let all: HashSet<EventId> = first
        .iter()
        .chain(&second)
        .chain(&rest)
        .map(|r| r.id)
        .collect();
    assert_eq!(all.len(), 140);
}

async fn small_fair_claims_take_every_app_in_turn(db: &TestDb) {
    let lease = Duration::from_secs(60);
    // A claim smaller than the number of apps: each claim serves as many
    // apps as it has rows, and the next goes on after the last it served,
    // so three claims of 30 reach all 70 apps.
    let mut apps = Vec::new();
    for i in 0..70 {
        let app = app(db, &format!("app-{i:02}")).await;
        s(db)
            .enqueue_many(&[raw(app, 0), raw(app, 1)])
            .await
            .unwrap();
        apps.push(app);
    }
    let one = s(db).claim_due("w", 1, lease).await.unwrap();
    s(db).release(&[one[0].id]).await.unwrap();

    let mut reached = HashSet::new();
    let mut before: HashSet<AppId> = HashSet::new();
    for n in 1..=3 {
        let rows = s(db).claim_due("w", 30, lease).await.unwrap();
        let these: HashSet<AppId> = rows.iter().map(|r| r.app_id).collect();
        assert_eq!(
            (rows.len(), these.len()),
            (30, 30),
            "claim {n}: 30 apps, one row each"
        );
        if n == 2 {
            assert!(these.is_disjoint(&before), "claim 2 goes on after claim 1");
        }
        reached.extend(these.iter().copied());
        before = these;
    }
    assert_eq!(reached.len(), 70, "three claims of 30 reach all 70 apps");
}

// ---- dead letters ----

async fn dead_letter_moves_the_event_and_emits_one_deeper(db: &TestDb) {
    let a = app(db, "a").await;
    let ev = s(db).enqueue(&raw(a, 1).at_depth(2)).await.unwrap();
    let trig = TriggerId::new();
    let dead = new_dead(a, ev, "kv", Some(trig), 2);
    let dl = s(db).dead_letter(&dead, true, &[]).await.unwrap();
    assert_eq!(dl.original_event_id, ev);
    assert_eq!(
        (dl.app_id, dl.source.as_str(), dl.op.as_str()),
        (a, "kv", "set")
    );
    assert_eq!((dl.trigger_id, dl.script_id), (Some(trig), dead.script_id));
    assert_eq!((dl.attempt_count, dl.last_error.as_str()), (5, "boom"));
    assert_eq!(
        (dl.first_attempt_at, dl.last_attempt_at),
        (dead.first_attempt_at, dead.last_attempt_at)
    );
    assert_eq!(dl.payload, dead.payload);
    assert_eq!((dl.resolved_at, dl.resolution), (None, None));
    assert_eq!(s(db).get_dead_letter(dl.id).await.unwrap(), dl);
    assert!(
        s(db).get_event(ev).await.unwrap().is_none(),
        "the outbox row is gone"
    );
    assert_eq!(s(db).unresolved_count(a).await.unwrap(), 1);

    let rows = claim_all(db, "w").await;
    assert_eq!(rows.len(), 1, "one dead_letter event");
    let e = &rows[0];
    assert_eq!(
        (e.source.as_str(), e.op.as_str(), e.depth),
        ("dead_letter", "created", 3)
    );
    assert_eq!(
        (e.trigger_id, e.script_id, e.attempt_count),
        (None, None, 0)
    );
    assert_eq!(
        e.payload,
        json!({
            "dead_letter_id": dl.id,
            "source": "kv",
            "op": "set",
            "trigger_id": trig,
            "script_id": dead.script_id,
            "attempt_count": 5,
            "last_error": "boom",
            "payload": dead.payload,
        })
    );
    assert_eq!(
        db.count(&format!(
            "select cast(depth as bigint) from dead_letter_depths where dead_letter_id = '{}'",
            dl.id
        ))
        .await,
        2
    );
}

async fn dead_letter_without_event(db: &TestDb) {
    let a = app(db, "a").await;
    let ev = s(db).enqueue(&raw(a, 1).at_depth(9)).await.unwrap();
    let mut dead = new_dead(a, ev, "cron", None, 9);
    dead.last_error = "max trigger depth 8 exceeded".into();
    let dl = s(db).dead_letter(&dead, false, &[]).await.unwrap();
    assert_eq!(dl.last_error, "max trigger depth 8 exceeded");
    assert_eq!(
        s(db).count_events(None).await.unwrap(),
        0,
        "no dead_letter event, and the row is gone"
    );
    assert_eq!(s(db).unresolved_count(a).await.unwrap(), 1);
}

async fn dead_letters_are_listed_by_filter_and_counted(db: &TestDb) {
    let a = app(db, "a").await;
    let b = app(db, "b").await;
    let t1 = TriggerId::new();
    let d1 = s(db)
        .dead_letter(&new_dead(a, EventId::new(), "kv", Some(t1), 0), false, &[])
        .await
        .unwrap();
    tick().await;
    let d2 = s(db)
        .dead_letter(&new_dead(a, EventId::new(), "cron", None, 0), false, &[])
        .await
        .unwrap();
    tick().await;
    let d3 = s(db)
        .dead_letter(&new_dead(b, EventId::new(), "kv", None, 0), false, &[])
        .await
        .unwrap();
    assert!(d1.created_at < d2.created_at && d2.created_at < d3.created_at);
    let d1 = s(db).resolve(d1.id, Resolution::Ignored).await.unwrap();

    let list = |f: DeadLetterFilter| async move {
        s(db)
            .list_dead_letters(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(DeadLetterFilter::default()).await,
        [d1.id, d2.id, d3.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            app_id: Some(a),
            ..Default::default()
        })
        .await,
        [d1.id, d2.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            app_id: Some(a),
            unresolved_only: true,
            ..Default::default()
        })
        .await,
        [d2.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            source: Some("kv".into()),
            ..Default::default()
        })
        .await,
        [d1.id, d3.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            trigger_id: Some(t1),
            ..Default::default()
        })
        .await,
        [d1.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            created_after: Some(d2.created_at),
            ..Default::default()
        })
        .await,
        [d2.id, d3.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            created_before: Some(d2.created_at),
            ..Default::default()
        })
        .await,
        [d1.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            created_after: Some(d1.created_at),
            created_before: Some(d3.created_at),
            source: Some("cron".into()),
            ..Default::default()
        })
        .await,
        [d2.id]
    );
    assert_eq!(
        list(DeadLetterFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        [d1.id, d2.id]
    );
    let full = s(db)
        .list_dead_letters(&DeadLetterFilter {
            app_id: Some(a),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(full[0], d1);
    assert_eq!(full[1], d2);

    assert_eq!(s(db).unresolved_count(a).await.unwrap(), 1);
    assert_eq!(s(db).unresolved_count(b).await.unwrap(), 1);
    assert_eq!(s(db).unresolved_count(AppId::new()).await.unwrap(), 0);
}

async fn resolve_happens_once_and_replay_enqueues_the_original(db: &TestDb) {
    let a = app(db, "a").await;
    let trig = TriggerId::new();
    let ignored = s(db)
        .dead_letter(
            &new_dead(a, EventId::new(), "kv", Some(trig), 4),
            false,
            &[],
        )
        .await
        .unwrap();
    let done = s(db)
        .resolve(ignored.id, Resolution::Ignored)
        .await
        .unwrap();
    assert_eq!(done.resolution, Some(Resolution::Ignored));
    let at = done.resolved_at.expect("resolved_at is set");
    for again in Resolution::ALL {
        let err = s(db).resolve(ignored.id, again).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::AlreadyResolved {
                    resolution: Resolution::Ignored,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("dead letter {} is already resolved as ignored", ignored.id)
        );
    }
    let still = s(db).get_dead_letter(ignored.id).await.unwrap();
    assert_eq!(
        (still.resolution, still.resolved_at),
        (Some(Resolution::Ignored), Some(at)),
        "nothing changed"
    );
    assert_eq!(
        s(db).count_events(None).await.unwrap(),
        0,
        "a refused replay enqueues nothing"
    );

    let dead = new_dead(a, EventId::new(), "kv", Some(trig), 4);
    let dl = s(db).dead_letter(&dead, false, &[]).await.unwrap();
    let replayed = s(db).resolve(dl.id, Resolution::Replayed).await.unwrap();
    assert_eq!(replayed.resolution, Some(Resolution::Replayed));
    assert_eq!(s(db).unresolved_count(a).await.unwrap(), 0);
    let rows = claim_all(db, "w").await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_ne!(r.id, dl.original_event_id, "a fresh invocation row");
    assert_eq!((r.source.as_str(), r.op.as_str()), ("kv", "set"));
    assert_eq!(
        (r.trigger_id, r.script_id),
        (Some(trig), dead.script_id),
        "same trigger and script"
    );
    assert_eq!(r.payload, dead.payload);
    assert_eq!(
        (r.depth, r.attempt_count),
        (4, 0),
        "same depth, no attempts yet"
    );
    assert_eq!(
        (
            r.first_attempt_at,
            r.last_error.as_deref(),
            r.reply_to.as_deref()
        ),
        (None, None, None)
    );
    let err = s(db)
        .resolve(dl.id, Resolution::Replayed)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("dead letter {} is already resolved as replayed", dl.id)
    );
    assert_eq!(
        s(db).count_events(None).await.unwrap(),
        1,
        "no second replay"
    );

    // A dead letter without a depth row replays at depth 0.
    let bare = s(db)
        .dead_letter(
            &new_dead(a, EventId::new(), "kv", Some(trig), 7),
            false,
            &[],
        )
        .await
        .unwrap();
    db.execute(&format!(
        "delete from dead_letter_depths where dead_letter_id = '{}'",
        bare.id
    ))
    .await
    .unwrap();
    s(db).resolve(bare.id, Resolution::Replayed).await.unwrap();
    let rows = claim_all(db, "w2").await;
    assert_eq!(rows.iter().map(|r| r.depth).collect::<Vec<_>>(), [0]);
}

async fn the_database_refuses_unknown_resolutions(db: &TestDb) {
    let a = app(db, "a").await;
    let dl = s(db)
        .dead_letter(&new_dead(a, EventId::new(), "kv", None, 0), false, &[])
        .await
        .unwrap();
    let err = db
        .execute(&format!(
            "update dead_letters set resolution = 'bogus', resolved_at = created_at where id = '{}'",
            dl.id
        ))
        .await
        .expect_err("the CHECK constraint refuses it");
    let dberr = err.as_database_error().expect("a database error");
    assert!(dberr.is_check_violation(), "{dberr}");
    let still = s(db).get_dead_letter(dl.id).await.unwrap();
    assert_eq!((still.resolution, still.resolved_at), (None, None));
    for r in Resolution::ALL {
        db.execute(&format!(
            "update dead_letters set resolution = '{r}' where id = '{}'",
            dl.id
        ))
        .await
        .unwrap_or_else(|e| panic!("{r} is in the vocabulary: {e}"));
    }
    let err = db
        .execute(&format!(
            "update app_members set role = 'owner' where app_id = '{a}'"
        ))
        .await;
    assert!(err.is_ok(), "no members: nothing to refuse");
    s(db).set_member(a, "x", Role::Viewer).await.unwrap();
    let err = db
        .execute(&format!(
            "update app_members set role = 'owner' where app_id = '{a}'"
        ))
        .await
        .unwrap_err();
    assert!(err.as_database_error().unwrap().is_check_violation());
}

async fn stop_recursion_deletes_the_row_and_resolves_handler_failed(db: &TestDb) {
    let a = app(db, "a").await;
    let dl = s(db)
        .dead_letter(&new_dead(a, EventId::new(), "kv", None, 0), true, &[])
        .await
        .unwrap();
    let handler_row = claim_all(db, "w")
        .await
        .pop()
        .expect("the dead_letter event");
    s(db)
        .stop_recursion(handler_row.id, dl.id, &[])
        .await
        .unwrap();
    assert!(s(db).get_event(handler_row.id).await.unwrap().is_none());
    let now = s(db).get_dead_letter(dl.id).await.unwrap();
    assert_eq!(now.resolution, Some(Resolution::HandlerFailed));
    assert!(now.resolved_at.is_some());
    assert_eq!(
        s(db)
            .list_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap()
            .len(),
        1,
        "no new dead letter"
    );

    // A handler that already resolved it keeps its resolution.
    let dl2 = s(db)
        .dead_letter(&new_dead(a, EventId::new(), "kv", None, 0), true, &[])
        .await
        .unwrap();
    let row2 = claim_all(db, "w").await.pop().unwrap();
    s(db)
        .resolve(dl2.id, Resolution::HandledByScript)
        .await
        .unwrap();
    s(db).stop_recursion(row2.id, dl2.id, &[]).await.unwrap();
    assert!(s(db).get_event(row2.id).await.unwrap().is_none());
    assert_eq!(
        s(db).get_dead_letter(dl2.id).await.unwrap().resolution,
        Some(Resolution::HandledByScript)
    );
}

async fn dead_letters_and_abandoned_are_collected_by_age(db: &TestDb) {
    let a = app(db, "a").await;
    let b = app(db, "b").await;
    let old = s(db)
        .dead_letter(&new_dead(a, EventId::new(), "kv", None, 1), false, &[])
        .await
        .unwrap();
    tick().await;
    let young = s(db)
        .dead_letter(&new_dead(a, EventId::new(), "kv", None, 1), false, &[])
        .await
        .unwrap();
    assert_eq!(
        s(db).gc_dead_letters(old.created_at).await.unwrap(),
        0,
        "strictly older only"
    );
    assert_eq!(s(db).gc_dead_letters(young.created_at).await.unwrap(), 1);
    assert!(
        s(db)
            .get_dead_letter(old.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(s(db).get_dead_letter(young.id).await.unwrap(), young);
    assert_eq!(
        db.count("select count(*) from dead_letter_depths").await,
        1,
        "depth rows go along"
    );

    let abandoned = |app: AppId, outcome: Outcome| NewAbandoned {
        app_id: app,
        outbox_event_id: EventId::new(),
        script_id: ScriptId::new(),
        trigger_id: Some(TriggerId::new()),
        reply_to: format!("_INBOX.{}", uuid::Uuid::new_v4().simple()),
        outcome,
        detail: "reply of 12 bytes, caller gone".into(),
    };
    let spec1 = abandoned(a, Outcome::Ok);
    let x1 = s(db).record_abandoned(&spec1).await.unwrap();
    assert_eq!(
        (
            x1.app_id,
            x1.outbox_event_id,
            x1.script_id,
            x1.trigger_id,
            x1.reply_to.as_str(),
            x1.outcome,
            x1.detail.as_str()
        ),
        (
            a,
            spec1.outbox_event_id,
            spec1.script_id,
            spec1.trigger_id,
            spec1.reply_to.as_str(),
            Outcome::Ok,
            spec1.detail.as_str()
        )
    );
    tick().await;
    let x2 = s(db)
        .record_abandoned(&abandoned(b, Outcome::Error))
        .await
        .unwrap();
    assert_eq!(
        s(db).list_abandoned(None).await.unwrap(),
        vec![x1.clone(), x2.clone()]
    );
    assert_eq!(
        s(db).list_abandoned(Some(a)).await.unwrap(),
        vec![x1.clone()]
    );
    assert_eq!(
        s(db).list_abandoned(Some(b)).await.unwrap()[0].outcome,
        Outcome::Error
    );
    assert_eq!(s(db).gc_abandoned(x2.created_at).await.unwrap(), 1);
    assert_eq!(s(db).list_abandoned(None).await.unwrap(), vec![x2]);
}

// ---- KV ----

fn kv_payload(e: &picloud_host::model::OutboxEvent) -> (String, i32, Value) {
    (e.op.clone(), e.depth, e.payload.clone())
}

async fn kv_writes_version_and_enqueue_their_events(db: &TestDb) {
    let a = app(db, "a").await;
    assert_eq!(s(db).kv_get(a, "orders", "o-1").await.unwrap(), None);
    let v1 = s(db)
        .kv_set(a, "orders", "o-1", &json!({"total": 3}), 0)
        .await
        .unwrap();
    assert_eq!(
        (v1.collection.as_str(), v1.key.as_str(), v1.version),
        ("orders", "o-1", 1)
    );
    assert_eq!(v1.value, json!({"total": 3}));
    assert_eq!(
        s(db).kv_get(a, "orders", "o-1").await.unwrap(),
        Some(v1.clone())
    );
    tick().await;
    let v2 = s(db)
        .kv_set(a, "orders", "o-1", &json!({"total": 4}), 2)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert!(v2.updated_at > v1.updated_at);
    assert_eq!(
        s(db)
            .kv_get(a, "orders", "o-1")
            .await
            .unwrap()
            .unwrap()
            .value,
        json!({"total": 4})
    );
    // Another app's key of the same name is another entry.
    let b = app(db, "b").await;
    assert_eq!(
        s(db)
            .kv_set(b, "orders", "o-1", &json!(null), 0)
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        s(db)
            .kv_get(a, "orders", "o-1")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );

    assert!(s(db).kv_delete(a, "orders", "o-1", 1).await.unwrap());
    assert!(
        !s(db).kv_delete(a, "orders", "o-1", 1).await.unwrap(),
        "a second delete finds nothing"
    );
    assert_eq!(s(db).kv_get(a, "orders", "o-1").await.unwrap(), None);
    assert_eq!(
        s(db)
            .kv_set(a, "orders", "o-1", &json!(1), 0)
            .await
            .unwrap()
            .version,
        1,
        "a new entry starts again"
    );

    let mut events: Vec<_> = claim_all(db, "w")
        .await
        .into_iter()
        .filter(|e| e.app_id == a)
        .collect();
    events.sort_by_key(|e| e.created_at);
    assert!(
        events
            .iter()
            .all(|e| e.source == "kv" && e.trigger_id.is_none())
    );
    let got: Vec<_> = events.iter().map(kv_payload).collect();
    assert_eq!(
        got,
        [
            (
                "set".to_owned(),
                0,
                json!({"collection": "orders", "key": "o-1", "value": {"total": 3}, "version": 1})
            ),
            (
                "set".to_owned(),
                2,
                json!({"collection": "orders", "key": "o-1", "value": {"total": 4}, "version": 2})
            ),
            (
                "delete".to_owned(),
                1,
                json!({"collection": "orders", "key": "o-1", "value": null, "version": 3})
            ),
            (
                "set".to_owned(),
                0,
                json!({"collection": "orders", "key": "o-1", "value": 1, "version": 1})
            ),
        ],
        "one event per write, none for the delete that found nothing"
    );
}

async fn kv_keys_page_in_bytewise_order(db: &TestDb) {
    let a = app(db, "a").await;
    let b = app(db, "b").await;
    for key in ["k3", "k1", "B", "a", "k2", "_"] {
        s(db).kv_set(a, "c", key, &json!(key), 0).await.unwrap();
    }
    s(db).kv_set(a, "other", "k0", &json!(0), 0).await.unwrap();
    s(db).kv_set(b, "c", "k0", &json!(0), 0).await.unwrap();
    let page = |after: Option<&'static str>, limit| async move {
        s(db).kv_list_keys(a, "c", after, limit).await.unwrap()
    };
    assert_eq!(page(None, 100).await, ["B", "_", "a", "k1", "k2", "k3"]);
    assert_eq!(page(None, 2).await, ["B", "_"]);
    assert_eq!(page(Some("_"), 2).await, ["a", "k1"]);
    assert_eq!(page(Some("k1"), 2).await, ["k2", "k3"]);
    assert!(page(Some("k3"), 2).await.is_empty());
    assert!(page(None, 0).await.is_empty());
    assert!(
        s(db)
            .kv_list_keys(a, "nope", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn kv_names_are_validated_and_apps_checked(db: &TestDb) {
    let a = app(db, "a").await;
    let err = s(db).kv_set(a, "", "k", &json!(1), 0).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert_eq!(err.to_string(), "empty collection: give a non-empty name");
    let long = "k".repeat(store::MAX_KV_NAME_BYTES + 1);
    assert!(matches!(
        s(db).kv_set(a, "c", &long, &json!(1), 0).await.unwrap_err(),
        Error::Invalid(_)
    ));
    assert!(matches!(
        s(db).kv_delete(a, "c", "", 0).await.unwrap_err(),
        Error::Invalid(_)
    ));
    let err = s(db)
        .kv_set(AppId::new(), "c", "k", &json!(1), 0)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(db.count("select count(*) from kv_entries").await, 0);
    assert_eq!(s(db).count_events(None).await.unwrap(), 0);
}

async fn concurrent_kv_writes_never_lose_a_version(db: &TestDb) {
    let a = app(db, "a").await;
    let writers: Vec<_> = (0..40)
        .map(|n| {
            let store = db.store.clone();
            tokio::spawn(async move {
                // Writers interleave with readers and claims.
                store
                    .kv_set(a, "hot", "counter", &json!(n), 0)
                    .await
                    .unwrap();
                store.kv_get(a, "hot", "counter").await.unwrap().unwrap();
                store
                    .claim_due("w", 1, Duration::from_secs(60))
                    .await
                    .unwrap()
                    .len()
            })
        })
        .collect();
    let mut claimed = 0;
    for w in writers {
        claimed += w.await.unwrap();
    }
    assert_eq!(
        s(db)
            .kv_get(a, "hot", "counter")
            .await
            .unwrap()
            .unwrap()
            .version,
        40
    );
    let rest = claim_all(db, "w").await;
    assert_eq!(claimed + rest.len(), 40, "one event per write");
    let mut versions: Vec<i64> = Vec::new();
    for id in db_events(db).await {
        versions.push(
            s(db).get_event(id).await.unwrap().unwrap().payload["version"]
                .as_i64()
                .unwrap(),
        );
    }
    versions.sort();
    assert_eq!(versions, (1..=40).collect::<Vec<_>>(), "every version once");
}

/// Ids of every outbox row, via raw SQL.
async fn db_events(db: &TestDb) -> Vec<EventId> {
    let ids: Vec<String> = match &db.pool {
        Pool::Sqlite(p) => sqlx::query_scalar("select id from outbox")
            .fetch_all(p)
            .await
            .unwrap(),
        Pool::Postgres(p) => sqlx::query_scalar("select id::text from outbox")
            .fetch_all(p)
            .await
            .unwrap(),
    };
    ids.iter().map(|i| i.parse().unwrap()).collect()
}

async fn kv_write_in_a_rolled_back_embedder_transaction_leaves_nothing(db: &TestDb) {
    let a = app(db, "a").await;
    match &db.pool {
        Pool::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let e = store::sqlite::kv_set_in(&mut tx, a, "orders", "o-1", &json!(1), 0)
                .await
                .unwrap();
            assert_eq!(e.version, 1);
            let seen: i64 = sqlx::query_scalar("select count(*) from outbox")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(seen, 1, "the event is written inside the transaction");
            store::sqlite::enqueue_in(&mut tx, &raw(a, 1))
                .await
                .unwrap();
            tx.rollback().await.unwrap();
        }
        Pool::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            let e = store::postgres::kv_set_in(&mut tx, a, "orders", "o-1", &json!(1), 0)
                .await
                .unwrap();
            assert_eq!(e.version, 1);
            let seen: i64 = sqlx::query_scalar("select count(*) from outbox")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(seen, 1, "the event is written inside the transaction");
            store::postgres::enqueue_in(&mut tx, &raw(a, 1))
                .await
                .unwrap();
            tx.rollback().await.unwrap();
        }
    }
    assert_eq!(s(db).kv_get(a, "orders", "o-1").await.unwrap(), None);
    assert_eq!(s(db).count_events(None).await.unwrap(), 0);
    assert_eq!(db.count("select count(*) from kv_entries").await, 0);
}

async fn kv_write_in_a_committed_embedder_transaction_lands_with_its_event(db: &TestDb) {
    let a = app(db, "a").await;
    s(db)
        .kv_set(a, "orders", "o-1", &json!(1), 0)
        .await
        .unwrap();
    match &db.pool {
        Pool::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            store::sqlite::kv_set_in(&mut tx, a, "orders", "o-1", &json!(2), 1)
                .await
                .unwrap();
            assert!(
                store::sqlite::kv_delete_in(&mut tx, a, "orders", "o-2", 1)
                    .await
                    .is_ok_and(|x| !x)
            );
            tx.commit().await.unwrap();
        }
        Pool::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            store::postgres::kv_set_in(&mut tx, a, "orders", "o-1", &json!(2), 1)
                .await
                .unwrap();
            assert!(
                store::postgres::kv_delete_in(&mut tx, a, "orders", "o-2", 1)
                    .await
                    .is_ok_and(|x| !x)
            );
            tx.commit().await.unwrap();
        }
    }
    let entry = s(db).kv_get(a, "orders", "o-1").await.unwrap().unwrap();
    assert_eq!((entry.version, entry.value), (2, json!(2)));
    let events = claim_all(db, "w").await;
    let last = events
        .iter()
        .find(|e| e.payload["version"] == json!(2))
        .expect("the committed write's event");
    assert_eq!((last.depth, last.payload["value"].clone()), (1, json!(2)));
    assert_eq!(events.len(), 2);
}

// ---- replies and signals ----

fn reply(app: AppId, inbox: &str, at: Timestamp) -> StoredReply {
    StoredReply {
        inbox: inbox.into(),
        app_id: app,
        outbox_event_id: EventId::new(),
        script_id: ScriptId::new(),
        outcome: Outcome::Ok,
        body: b"hello".to_vec(),
        created_at: at,
    }
}

async fn replies_are_parked_taken_once_and_swept(db: &TestDb) {
    let a = app(db, "a").await;
    let ev = s(db).enqueue(&raw(a, 1)).await.unwrap();
    let fresh = StoredReply {
        outbox_event_id: ev,
        ..reply(a, "_INBOX.fresh", Timestamp::now())
    };
    s(db).put_reply(&fresh, &[]).await.unwrap();
    assert!(
        s(db).get_event(ev).await.unwrap().is_none(),
        "the answered row is deleted"
    );
    let old = reply(
        a,
        "_INBOX.old",
        Timestamp::now().minus(Duration::from_secs(600)),
    );
    s(db).put_reply(&old, &[]).await.unwrap();
    let failed = StoredReply {
        outcome: Outcome::Error,
        body: b"trap: unreachable".to_vec(),
        ..reply(a, "_INBOX.failed", Timestamp::now())
    };
    s(db).put_reply(&failed, &[]).await.unwrap();

    assert_eq!(s(db).take_reply("_INBOX.fresh").await.unwrap(), Some(fresh));
    assert_eq!(
        s(db).take_reply("_INBOX.fresh").await.unwrap(),
        None,
        "taken once"
    );
    assert_eq!(
        s(db).take_reply("_INBOX.failed").await.unwrap(),
        Some(failed)
    );
    let stale = s(db)
        .take_stale_replies(Timestamp::now().minus(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(stale, vec![old]);
    assert!(
        s(db)
            .take_stale_replies(Timestamp::now().plus(Duration::from_secs(60)))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn next_signal(
    sub: &mut Box<dyn store::Subscription>,
    want: impl Fn(&Signal) -> bool,
) -> Signal {
    let wait = async {
        loop {
            let got = sub.recv().await.expect("the subscription is alive");
            if want(&got) {
                return got;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a signal within 10 s")
}

async fn subscribers_hear_outbox_writes_and_replies(db: &TestDb) {
    let a = app(db, "a").await;
    let mut sub = s(db).subscribe().await.unwrap();
    let mut second = s(db).subscribe().await.unwrap();
    s(db).enqueue(&raw(a, 1)).await.unwrap();
    assert_eq!(next_signal(&mut sub, |_| true).await, Signal::Outbox);
    assert_eq!(
        next_signal(&mut second, |_| true).await,
        Signal::Outbox,
        "every subscriber hears it"
    );
    s(db).kv_set(a, "c", "k", &json!(1), 0).await.unwrap();
    assert_eq!(next_signal(&mut sub, |_| true).await, Signal::Outbox);
    if let Pool::Postgres(pool) = &db.pool {
        // An embedder's own insert wakes dispatchers too (statement trigger).
        let mut tx = pool.begin().await.unwrap();
        store::postgres::enqueue_in(&mut tx, &raw(a, 2))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(next_signal(&mut sub, |_| true).await, Signal::Outbox);
    }
    s(db)
        .put_reply(&reply(a, "_INBOX.sig", Timestamp::now()), &[])
        .await
        .unwrap();
    let got = next_signal(&mut sub, |sig| matches!(sig, Signal::Reply(_))).await;
    assert_eq!(got, Signal::Reply("_INBOX.sig".into()));
}

async fn unknown_ids_are_not_found(db: &TestDb) {
    let a = app(db, "a").await;
    let missing_app = AppId::new();
    assert_eq!(
        s(db).get_app(missing_app).await.unwrap_err().to_string(),
        format!("unknown app '{missing_app}'")
    );
    let sid = ScriptId::new();
    assert_eq!(
        s(db).get_script(sid).await.unwrap_err().to_string(),
        format!("unknown script '{sid}'")
    );
    assert!(s(db).script_code(sid).await.unwrap_err().is_not_found());
    assert_eq!(
        s(db).find_script(a, "nope").await.unwrap_err().to_string(),
        "unknown script 'nope'"
    );
    let tid = TriggerId::new();
    assert_eq!(
        s(db).get_trigger(tid).await.unwrap_err().to_string(),
        format!("unknown trigger '{tid}'")
    );
    assert!(
        s(db)
            .set_trigger_enabled(tid, false)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(!s(db).delete_trigger(tid).await.unwrap());
    let did = picloud_host::model::DeadLetterId::new();
    assert_eq!(
        s(db).get_dead_letter(did).await.unwrap_err().to_string(),
        format!("unknown dead letter '{did}'")
    );
    assert!(
        s(db)
            .resolve(did, Resolution::Ignored)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        s(db)
            .put_script(missing_app, "x", b"x", "00", None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        s(db)
            .enqueue(&raw(missing_app, 1))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(s(db).get_event(EventId::new()).await.unwrap().is_none());
    s(db)
        .stop_recursion(EventId::new(), did, &[])
        .await
        .expect("nothing to stop is fine");
    assert_eq!(s(db).list_scripts(missing_app).await.unwrap(), vec![]);
}

// ---- one backend only ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_url_works() {
    let store = store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let a = store.create_app("mem").await.unwrap();
    store.kv_set(a.id, "c", "k", &json!(1), 0).await.unwrap();
    // One connection: every call sees the same in-memory database.
    assert_eq!(store.count_events(Some(a.id)).await.unwrap(), 1);
    assert_eq!(store.find_app("mem").await.unwrap(), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_claimers_never_share_a_row() {
    let db = picloud_tests::db::postgres().await;
    let a = app(&db, "race").await;
    let events: Vec<NewEvent> = (0..2000).map(|n| raw(a, n)).collect();
    let all = s(&db).enqueue_many(&events).await.unwrap();
    assert_eq!(all.len(), 2000);

    let mut claimers = Vec::new();
    for worker in ["left", "right"] {
        // A separate pool: separate connections, as on two machines.
        let other = store::connect(&db.url).await.unwrap();
        claimers.push(tokio::spawn(async move {
            let mut got: Vec<EventId> = Vec::new();
            loop {
                let batch = other
                    .claim_due(worker, 50, Duration::from_secs(600))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                assert!(batch.len() <= 50);
                assert!(batch.iter().all(|r| r.locked_by.as_deref() == Some(worker)));
                got.extend(batch.iter().map(|r| r.id));
            }
            other.close().await;
            got
        }));
    }
    let mut sizes = Vec::new();
    let mut union = HashSet::new();
    for c in claimers {
        let got = c.await.unwrap();
        sizes.push(got.len());
        union.extend(got);
    }
    assert_eq!(
        sizes.iter().sum::<usize>(),
        2000,
        "every row claimed once: {sizes:?}"
    );
    assert_eq!(union.len(), 2000, "no row claimed twice");
    assert_eq!(union, all.into_iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dead_letters_schema_is_the_seed() {
    let db = picloud_tests::db::postgres().await;
    let cols: Vec<(String, String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text, is_nullable::text from information_schema.columns
         where table_name = 'dead_letters' order by ordinal_position",
    )
    .fetch_all(db.pg_pool())
    .await
    .unwrap();
    let want = [
        ("id", "uuid", "NO"),
        ("app_id", "uuid", "NO"),
        ("original_event_id", "uuid", "NO"),
        ("source", "text", "NO"),
        ("op", "text", "NO"),
        ("trigger_id", "uuid", "YES"),
        ("script_id", "uuid", "YES"),
        ("payload", "jsonb", "NO"),
        ("attempt_count", "integer", "NO"),
        ("first_attempt_at", "timestamp with time zone", "NO"),
        ("last_attempt_at", "timestamp with time zone", "NO"),
        ("last_error", "text", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("resolved_at", "timestamp with time zone", "YES"),
        ("resolution", "text", "YES"),
    ];
    let got: Vec<(&str, &str, &str)> = cols
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, want);
    let partial: String = sqlx::query_scalar(
        "select indexdef from pg_indexes where indexname = 'idx_dead_letters_app_unresolved'",
    )
    .fetch_one(db.pg_pool())
    .await
    .unwrap();
    assert!(
        partial.contains("(app_id, created_at, id) WHERE (resolved_at IS NULL)"),
        "{partial}"
    );
    // The badge query can be served by the partial index (forbid the
    // sequential scan a tiny table would otherwise get).
    let mut tx = db.pg_pool().begin().await.unwrap();
    sqlx::query("set local enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "explain select count(*) from dead_letters
         where app_id = '00000000-0000-0000-0000-000000000000' and resolved_at is null",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(
        plan.join("\n").contains("idx_dead_letters_app_unresolved"),
        "{plan:#?}"
    );
}
