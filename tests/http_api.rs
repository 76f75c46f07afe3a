//! The HTTP API over real HTTP on both backends: every endpoint's success
//! path, each refusal with its status and code, and a bulk replay of 10,000
//! dead letters.

use std::time::Duration;

use picloud_host::auth::Role;
use picloud_host::config::SandboxCeiling;
use picloud_host::model::{DeadLetterFilter, EventId, NewDeadLetter, Timestamp};
use picloud_tests::db::TestDb;
use picloud_tests::guests;
use picloud_tests::host::{self, ADMIN};
use picloud_tests::http::{Served, token};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

picloud_tests::contract!(
    every_endpoint_answers,
    refusals,
    bulk_replay_of_ten_thousand,
    allowed_hosts_variables_and_secrets,
);

/// A client call: method, path, token, optional JSON body; status and body.
async fn call(
    s: &Served,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Client::new().request(method.clone(), s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Assert a problem: its status, code, and a one-line detail.
fn problem(got: (StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert_eq!(got.1["status"], status.as_u16(), "{}", got.1);
    let detail = got.1["detail"].as_str().expect("a detail");
    assert!(!detail.is_empty() && !detail.contains('\n'), "{detail}");
    assert_eq!(got.1["type"], format!("urn:picloud:problem:{code}"));
}

async fn served(db: &TestDb) -> Served {
    let host = host::host(&db.store, host::fast_retries(1), host::ceiling());
    Served::start(host).await
}

/// Wait until `check` holds, up to 30 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Wait until the app has exactly one unresolved dead letter (through the
/// badge route), and return it (through the listing).
async fn the_unresolved_one(s: &Served, t: Option<&str>, what: &str) -> Value {
    eventually(what, async || {
        call(
            s,
            Method::GET,
            "/api/v1/apps/shop/dead-letters/count",
            t,
            None,
        )
        .await
        .1["unresolved"]
            == 1
    })
    .await;
    let path = "/api/v1/apps/shop/dead-letters?unresolved=true";
    let (_, page) = call(s, Method::GET, path, t, None).await;
    page["items"][0].clone()
}

async fn every_endpoint_answers(db: &TestDb) {
    let app = host::app(&db.store, "shop").await;
    let s = served(db).await;
    let secret = token(&db.store, ADMIN).await;
    let t = Some(secret.as_str());
    use Method as M;

    let (st, health) = call(&s, M::GET, "/health", None, None).await;
    assert_eq!(
        (st, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (_, me) = call(&s, M::GET, "/api/v1/whoami", t, None).await;
    assert_eq!(me["principal"], ADMIN);
    let (_, apps) = call(&s, M::GET, "/api/v1/apps", t, None).await;
    assert_eq!(apps[0]["name"], "shop");
    assert_eq!(apps[0]["unresolved_dead_letters"], 0);
    let (_, one) = call(&s, M::GET, "/api/v1/apps/shop", t, None).await;
    assert_eq!(one["id"], app.id.to_string());

    // Members.
    let (st, m) = call(
        &s,
        M::PUT,
        "/api/v1/apps/shop/members/victor",
        t,
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!((st, m["role"].as_str()), (StatusCode::OK, Some("viewer")));
    let (_, members) = call(&s, M::GET, "/api/v1/apps/shop/members", t, None).await;
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    let (st, _) = call(&s, M::DELETE, "/api/v1/apps/shop/members/victor", t, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(db.store.member_role(app.id, "victor").await.unwrap(), None);

    // Scripts: deploy by upload, list, invoke, remove.
    let client = Client::new();
    for (name, path) in [
        ("greeter", guests::GREETER),
        ("fails", guests::ALWAYS_FAILS),
        ("spare", guests::NOOP),
    ] {
        let resp = client
            .put(s.url(&format!("/api/v1/apps/shop/scripts/{name}")))
            .bearer_auth(&secret)
            .header("content-type", "application/wasm")
            .body(guests::wasm(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
    }
    let (_, scripts) = call(&s, M::GET, "/api/v1/apps/shop/scripts", t, None).await;
    assert_eq!(scripts.as_array().unwrap().len(), 3);
    let (st, reply) = call(
        &s,
        M::POST,
        "/api/v1/apps/shop/scripts/greeter/invoke",
        t,
        Some(json!({"name": "Ada"})),
    )
    .await;
    assert_eq!(
        (st, reply["greeting"].as_str()),
        (StatusCode::OK, Some("hello, Ada")),
        "{reply}"
    );
    let (st, _) = call(&s, M::DELETE, "/api/v1/apps/shop/scripts/spare", t, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(db.store.find_script(app.id, "spare").await.is_err());

    // Triggers of both kinds; disable, enable, remove.
    let (st, kv) = call(
        &s,
        M::POST,
        "/api/v1/apps/shop/triggers",
        t,
        Some(json!({"kind": "kv", "script": "fails", "collection": "orders", "ops": "set"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{kv}");
    let kv_id = kv["id"].as_str().unwrap().to_owned();
    let (st, dl) = call(&s, M::POST, "/api/v1/apps/shop/triggers", t,
        Some(json!({"kind": "dead_letter", "script": "greeter", "source": "nothing", "name": "spare-handler"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{dl}");
    let (_, triggers) = call(&s, M::GET, "/api/v1/apps/shop/triggers", t, None).await;
    assert_eq!(triggers.as_array().unwrap().len(), 2);
    assert_eq!(triggers[0]["script_name"], "fails", "{triggers}");
    let (_, off) = call(
        &s,
        M::POST,
        &format!("/api/v1/apps/shop/triggers/{kv_id}/disable"),
        t,
        None,
    )
    .await;
    assert_eq!(off["enabled"], false);
    let (_, on) = call(
        &s,
        M::POST,
        &format!("/api/v1/apps/shop/triggers/{kv_id}/enable"),
        t,
        None,
    )
    .await;
    assert_eq!(on["enabled"], true);
    let (st, _) = call(
        &s,
        M::DELETE,
        &format!("/api/v1/apps/shop/triggers/{}", dl["id"].as_str().unwrap()),
        t,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // A live stream of runs, opened before the write that makes one.
    let mut stream = client
        .get(s.url("/api/v1/apps/shop/runs/stream"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");

    // KV: set (which fires the failing trigger), get, list, delete.
    let (st, e) = call(
        &s,
        M::PUT,
        "/api/v1/apps/shop/kv/orders/o-1",
        t,
        Some(json!({"items": 2})),
    )
    .await;
    assert_eq!(
        (st, e["version"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{e}"
    );
    let (_, got) = call(&s, M::GET, "/api/v1/apps/shop/kv/orders/o-1", t, None).await;
    assert_eq!(got["value"], json!({"items": 2}));
    let (_, keys) = call(&s, M::GET, "/api/v1/apps/shop/kv/orders", t, None).await;
    assert_eq!(keys["keys"], json!(["o-1"]));
    let (st, _) = call(&s, M::DELETE, "/api/v1/apps/shop/kv/orders/o-1", t, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // The stream shows the failing run, with its log lines.
    let mut seen = String::new();
    let frame = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let chunk = stream.chunk().await.unwrap().expect("the stream ended");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(data) = seen.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str::<Value>(data).unwrap();
            }
        }
    })
    .await
    .expect("no run arrived on the stream");
    assert_eq!(frame["outcome"], "failed", "{frame}");
    assert!(frame["logs"].to_string().contains("attempt 1"), "{frame}");

    // Dead letters: one from the write, after its one attempt (the trigger
    // fires on set only).
    let first = the_unresolved_one(&s, t, "the dead letter").await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(
        first["last_error"]
            .as_str()
            .unwrap()
            .contains("always fails")
    );
    let (_, detail) = call(
        &s,
        M::GET,
        &format!("/api/v1/apps/shop/dead-letters/{id}"),
        t,
        None,
    )
    .await;
    assert_eq!(detail["dead_letter"]["id"], id.as_str());
    assert_eq!(detail["runs"][0]["attempt"], 1, "{detail}");
    let (_, apps) = call(&s, M::GET, "/api/v1/apps", t, None).await;
    assert_eq!(apps[0]["unresolved_dead_letters"], 1);

    // Runs: list and show.
    let (_, runs) = call(&s, M::GET, "/api/v1/apps/shop/runs?failed=true", t, None).await;
    let run_id = runs["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, run) = call(
        &s,
        M::GET,
        &format!("/api/v1/apps/shop/runs/{run_id}"),
        t,
        None,
    )
    .await;
    assert_eq!(run["outcome"], "failed");

    // Replay, then the replay fails again into a second dead letter: ignore
    // that one, resolve a third, bulk-replay the rest.
    let (st, r) = call(
        &s,
        M::POST,
        &format!("/api/v1/apps/shop/dead-letters/{id}/replay"),
        t,
        None,
    )
    .await;
    assert_eq!(
        (st, r["resolution"].as_str()),
        (StatusCode::OK, Some("replayed")),
        "{r}"
    );
    let second = the_unresolved_one(&s, t, "the replay's dead letter").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, id);
    let (_, r) = call(
        &s,
        M::POST,
        &format!("/api/v1/apps/shop/dead-letters/{second}/ignore"),
        t,
        None,
    )
    .await;
    assert_eq!(r["resolution"], "ignored");
    call(
        &s,
        M::PUT,
        "/api/v1/apps/shop/kv/orders/o-2",
        t,
        Some(json!(1)),
    )
    .await;
    let third = the_unresolved_one(&s, t, "a third dead letter").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, r) = call(
        &s,
        M::POST,
        &format!("/api/v1/apps/shop/dead-letters/{third}/resolve"),
        t,
        Some(json!({"resolution": "handled_by_script"})),
    )
    .await;
    assert_eq!(r["resolution"], "handled_by_script");
    call(
        &s,
        M::PUT,
        "/api/v1/apps/shop/kv/orders/o-3",
        t,
        Some(json!(1)),
    )
    .await;
    the_unresolved_one(&s, t, "a fourth dead letter").await;
    let (st, text) = call(
        &s,
        M::POST,
        "/api/v1/apps/shop/dead-letters/replay",
        t,
        Some(json!({"source": "kv"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let last: Value = serde_json::from_str(text.as_str().unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(
        last,
        json!({"replayed": 1, "failed": 0, "first_error": null})
    );
    // Paging: four dead letters, two a page, newest first.
    let (_, p1) = call(
        &s,
        M::GET,
        "/api/v1/apps/shop/dead-letters?limit=2",
        t,
        None,
    )
    .await;
    let next = p1["next"].as_str().expect("a next page");
    let (_, p2) = call(
        &s,
        M::GET,
        &format!("/api/v1/apps/shop/dead-letters?limit=2&after={next}"),
        t,
        None,
    )
    .await;
    let ids: Vec<&str> = p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["items"].as_array().unwrap())
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 4, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // Metrics and the OpenAPI document.
    let (st, metrics) = call(&s, M::GET, "/metrics", t, None).await;
    assert_eq!(st, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    let app_id = app.id.to_string();
    for series in [
        format!("picloud_events_claimed_total{{app_id=\"{app_id}\"}}"),
        format!("picloud_events_dead_lettered_total{{app_id=\"{app_id}\"}}"),
        format!("picloud_invocation_duration_seconds_count{{app_id=\"{app_id}\"}}"),
        format!("picloud_dead_letters_unresolved{{app_id=\"{app_id}\"}}"),
        "picloud_outbox_depth ".to_owned(),
        "picloud_outbox_oldest_due_age_seconds ".to_owned(),
        "picloud_instances_in_use ".to_owned(),
        "picloud_store_paused_seconds_total ".to_owned(),
    ] {
        assert!(
            metrics.contains(&series),
            "{series} missing from:\n{metrics}"
        );
    }
    let (_, doc) = call(&s, M::GET, "/openapi.json", t, None).await;
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/apps/{app}/dead-letters/replay",
        "/api/v1/apps/{app}/runs/stream",
        "/api/v1/apps/{app}/kv/{collection}/{key}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
}

/// The app's allowed hosts and variables through the API; a secret is
/// written, never read back; a viewer reads but changes nothing.
async fn allowed_hosts_variables_and_secrets(db: &TestDb) {
    let app = host::app(&db.store, "shop").await;
    db.store
        .set_member(app.id, "victor", Role::Viewer)
        .await
        .unwrap();
    let key =
        picloud_host::secrets::SecretKey::parse(&picloud_host::secrets::SecretKey::generate())
            .unwrap();
    let host = {
        let ceiling = host::ceiling();
        let mut options = picloud_host::HostOptions::new(&ceiling);
        options.cache_dir = Some(host::cache_dir());
        options.secret_key = Some(key);
        picloud_host::TriggerHost::new(
            db.store.clone(),
            std::sync::Arc::new(picloud_host::auth::MemberAuthorizer::new(db.store.clone())),
            host::fast_retries(1),
            ceiling,
            options,
        )
        .unwrap()
    };
    let s = Served::start(host).await;
    let alice = token(&db.store, ADMIN).await;
    let victor = token(&db.store, "victor").await;
    let (a, v) = (Some(alice.as_str()), Some(victor.as_str()));
    use Method as M;

    let hosts = "/api/v1/apps/shop/hosts";
    let added = call(
        &s,
        M::POST,
        hosts,
        a,
        Some(json!({"pattern": "HTTPS://*.Example.com"})),
    )
    .await;
    assert_eq!(added.0, StatusCode::OK, "{}", added.1);
    assert_eq!(
        added.1,
        json!({"pattern": "https://*.example.com:443", "added": true})
    );
    problem(
        call(
            &s,
            M::POST,
            hosts,
            a,
            Some(json!({"pattern": "example.com"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    problem(
        call(
            &s,
            M::POST,
            hosts,
            v,
            Some(json!({"pattern": "https://x.org"})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );
    assert_eq!(
        call(&s, M::GET, hosts, v, None).await.1,
        json!(["https://*.example.com:443"])
    );
    let deny = format!("{hosts}?pattern=https%3A%2F%2F*.example.com");
    assert_eq!(
        call(&s, M::DELETE, &deny, a, None).await.0,
        StatusCode::NO_CONTENT
    );
    problem(
        call(&s, M::DELETE, &deny, a, None).await,
        StatusCode::NOT_FOUND,
        "allowed_host_not_found",
    );

    let region = "/api/v1/apps/shop/vars/REGION";
    let token_var = "/api/v1/apps/shop/vars/TOKEN";
    let set = call(&s, M::PUT, region, a, Some(json!({"value": "eu-1"}))).await;
    assert_eq!(set.0, StatusCode::NO_CONTENT, "{}", set.1);
    let set = call(
        &s,
        M::PUT,
        token_var,
        a,
        Some(json!({"value": "s3cret-api", "secret": true})),
    )
    .await;
    assert_eq!(set.0, StatusCode::NO_CONTENT, "{}", set.1);
    problem(
        call(&s, M::PUT, region, v, Some(json!({"value": "us-1"}))).await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );
    let (status, listed) = call(&s, M::GET, "/api/v1/apps/shop/vars", v, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed[0]["name"], "REGION");
    assert_eq!(listed[0]["value"], "eu-1");
    assert_eq!(listed[1]["name"], "TOKEN");
    assert_eq!(listed[1]["secret"], true);
    assert_eq!(listed[1]["value"], Value::Null);
    assert!(!listed.to_string().contains("s3cret-api"));
    assert_eq!(
        call(&s, M::DELETE, token_var, a, None).await.0,
        StatusCode::NO_CONTENT
    );
    problem(
        call(&s, M::DELETE, token_var, a, None).await,
        StatusCode::NOT_FOUND,
        "variable_not_found",
    );
    assert_eq!(db.store.list_vars(app.id).await.unwrap().len(), 1);
}

async fn refusals(db: &TestDb) {
    let app = host::app(&db.store, "shop").await;
    let other = host::app(&db.store, "other").await;
    db.store
        .set_member(app.id, "victor", Role::Viewer)
        .await
        .unwrap();
    // bob administers only the other app.
    db.store.remove_member(other.id, ADMIN).await.unwrap();
    db.store
        .set_member(other.id, "bob", Role::Admin)
        .await
        .unwrap();
    // A small upload limit: an upload just over it still fits the socket's
    // buffers, so the client reads the early 413 instead of a broken pipe.
    let ceiling = SandboxCeiling {
        script_max_bytes: 64 << 10,
        ..host::ceiling()
    };
    let s = Served::start(host::host(&db.store, host::fast_retries(1), ceiling)).await;
    let alice = token(&db.store, ADMIN).await;
    let victor = token(&db.store, "victor").await;
    let dead = |app_id| NewDeadLetter {
        original_event_id: EventId::new(),
        app_id,
        source: "kv".into(),
        op: "set".into(),
        trigger_id: None,
        script_id: None,
        payload: json!({"collection": "c", "key": "k", "value": 1, "version": 1}),
        depth: 0,
        attempt_count: 3,
        first_attempt_at: Timestamp::now(),
        last_attempt_at: Timestamp::now(),
        last_error: "boom".into(),
    };
    let mine = db
        .store
        .dead_letter(&dead(app.id), false, &[])
        .await
        .unwrap();
    let theirs = db
        .store
        .dead_letter(&dead(other.id), false, &[])
        .await
        .unwrap();
    use Method as M;

    // No token, a malformed header, an unknown token.
    problem(
        call(&s, M::GET, "/api/v1/apps", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    problem(
        call(&s, M::GET, "/metrics", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    problem(
        call(&s, M::GET, "/openapi.json", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    problem(
        call(&s, M::GET, "/api/v1/apps", Some("pct_0000"), None).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    );

    // A revoked token, refused on its next request.
    let revoked = token(&db.store, ADMIN).await;
    let (st, _) = call(&s, M::GET, "/api/v1/apps", Some(&revoked), None).await;
    assert_eq!(st, StatusCode::OK);
    let id = db
        .store
        .list_tokens(Some(ADMIN))
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    db.store.revoke_token(id).await.unwrap();
    problem(
        call(&s, M::GET, "/api/v1/apps", Some(&revoked), None).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    );

    // A viewer may read but not replay, and nothing changes.
    let path = format!("/api/v1/apps/shop/dead-letters/{}", mine.id);
    let (st, _) = call(&s, M::GET, &path, Some(&victor), None).await;
    assert_eq!(st, StatusCode::OK);
    problem(
        call(&s, M::POST, &format!("{path}/replay"), Some(&victor), None).await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );
    problem(
        call(
            &s,
            M::POST,
            "/api/v1/apps/shop/dead-letters/replay",
            Some(&victor),
            Some(json!({})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );
    assert_eq!(
        db.store.get_dead_letter(mine.id).await.unwrap().resolution,
        None
    );

    // Another app's dead letter: not found through this app, refused through its own.
    let theirs_here = format!("/api/v1/apps/shop/dead-letters/{}", theirs.id);
    problem(
        call(&s, M::GET, &theirs_here, Some(&alice), None).await,
        StatusCode::NOT_FOUND,
        "dead_letter_not_found",
    );
    problem(
        call(
            &s,
            M::POST,
            &format!("{theirs_here}/replay"),
            Some(&alice),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "dead_letter_not_found",
    );
    problem(
        call(
            &s,
            M::GET,
            &format!("/api/v1/apps/other/dead-letters/{}", theirs.id),
            Some(&alice),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );
    let (_, visible) = call(&s, M::GET, "/api/v1/apps", Some(&alice), None).await;
    assert_eq!(
        visible.as_array().unwrap().len(),
        1,
        "alice sees only her app: {visible}"
    );
    assert_eq!(
        db.store
            .get_dead_letter(theirs.id)
            .await
            .unwrap()
            .resolution,
        None
    );
    let (_, metrics) = call(&s, M::GET, "/metrics", Some(&alice), None).await;
    assert!(
        !metrics.as_str().unwrap().contains(&other.id.to_string()),
        "another app's series leaked"
    );

    // A malformed body, and a body of the wrong shape.
    let resp = Client::new()
        .put(s.url("/api/v1/apps/shop/kv/orders/o-1"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (st, body) = (resp.status(), resp.json::<Value>().await.unwrap());
    problem((st, body), StatusCode::BAD_REQUEST, "invalid_json");
    problem(
        call(
            &s,
            M::POST,
            "/api/v1/apps/shop/triggers",
            Some(&alice),
            Some(json!({"kind": 7})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert!(
        db.store
            .kv_get(app.id, "orders", "o-1")
            .await
            .unwrap()
            .is_none()
    );

    // Oversized: a script upload over PICLOUD_SCRIPT_MAX_BYTES, and JSON over 1 MiB.
    let limit = s.host.runtime().ceiling().script_max_bytes as usize;
    let resp = Client::new()
        .put(s.url("/api/v1/apps/shop/scripts/huge"))
        .bearer_auth(&alice)
        .body(vec![0u8; limit + 1])
        .send()
        .await
        .unwrap();
    let (st, body) = (resp.status(), resp.json::<Value>().await.unwrap());
    problem((st, body), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let big = json!({"blob": "x".repeat((1 << 20) - 8)});
    problem(
        call(
            &s,
            M::PUT,
            "/api/v1/apps/shop/kv/orders/big",
            Some(&alice),
            Some(big),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert!(db.store.list_scripts(app.id).await.unwrap().is_empty());

    // A deploy the runtime rejects, and unknown things.
    let resp = Client::new()
        .put(s.url("/api/v1/apps/shop/scripts/junk"))
        .bearer_auth(&alice)
        .body(b"not wasm".to_vec())
        .send()
        .await
        .unwrap();
    let (st, body) = (resp.status(), resp.json::<Value>().await.unwrap());
    problem(
        (st, body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "deploy_rejected",
    );
    problem(
        call(&s, M::GET, "/api/v1/apps/nope", Some(&alice), None).await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    );
    problem(
        call(&s, M::GET, "/api/v1/nothing", Some(&alice), None).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    problem(
        call(
            &s,
            M::POST,
            "/api/v1/apps/shop/scripts/nope/invoke",
            Some(&alice),
            Some(json!({})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "script_not_found",
    );
}

async fn bulk_replay_of_ten_thousand(db: &TestDb) {
    const N: usize = 10_000;
    let app = host::app(&db.store, "shop").await;
    let host = host::host(&db.store, host::fast_retries(1), host::ceiling());
    // No dispatcher: the replays wait in the outbox, to be counted.
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(picloud_host::http::serve(
        host,
        "127.0.0.1:0".parse().unwrap(),
        stop.clone(),
        move |a| {
            let _ = tx.send(a);
        },
    ));
    let base = format!("http://{}", rx.await.unwrap());
    let seeders: Vec<_> = (0..8)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                for i in 0..N / 8 {
                    let dead = NewDeadLetter {
                        original_event_id: EventId::new(),
                        app_id: app.id,
                        source: "kv".into(),
                        op: "set".into(),
                        trigger_id: None,
                        script_id: None,
                        payload: json!({"collection": "c", "key": format!("k{i}"), "value": i, "version": 1}),
                        depth: 0,
                        attempt_count: 1,
                        first_attempt_at: Timestamp::now(),
                        last_attempt_at: Timestamp::now(),
                        last_error: "boom".into(),
                    };
                    store.dead_letter(&dead, false, &[]).await.unwrap();
                }
            })
        })
        .collect();
    for s in seeders {
        s.await.unwrap();
    }
    assert_eq!(db.store.unresolved_count(app.id).await.unwrap(), N as i64);
    let t = token(&db.store, ADMIN).await;
    let mut resp = Client::new()
        .post(format!("{base}/api/v1/apps/shop/dead-letters/replay"))
        .bearer_auth(&t)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<u64> = lines.iter().filter_map(|l| l["done"].as_u64()).collect();
    assert!(progress.len() >= 10, "progress along the way: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(lines[0]["total"], N as u64);
    assert_eq!(
        lines.last().unwrap(),
        &json!({"replayed": N, "failed": 0, "first_error": null})
    );
    assert_eq!(db.store.unresolved_count(app.id).await.unwrap(), 0);
    let replayed = db
        .store
        .count_dead_letters(&DeadLetterFilter {
            app_id: Some(app.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(replayed, N as u64);
    assert_eq!(
        db.store.count_events(Some(app.id)).await.unwrap(),
        N as i64,
        "one replay each"
    );
    stop.cancel();
}

/// The binary: `token create|list|revoke` and `serve --http` on a port of
/// its choosing, answering with the token it printed until it is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_what_its_tokens_open() {
    use picloud_tests::cli;
    use std::io::BufRead;
    let db = picloud_tests::db::sqlite().await;
    let url = db.url.as_str();
    cli::ok(url, &["app", "create", "shop", "--admin", ADMIN]);
    let secret = cli::ok(url, &["token", "create", ADMIN, "--name", "laptop"]);
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("pct_"), "{secret}");
    let listed = cli::ok(url, &["token", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["name"], "laptop");
    assert!(
        !listed.to_string().contains(&secret),
        "a listing shows no secret"
    );
    let stored = db
        .count("select count(*) from api_tokens where secret_sha256 like 'pct_%'")
        .await;
    assert_eq!(stored, 0, "only the hash is stored");

    let mut serve = std::process::Command::new(picloud_tests::db::host_bin())
        .args(["--database-url", url, "serve", "--http", "127.0.0.1:0"])
        .env(
            "PICLOUD_CACHE_DIR",
            std::env::temp_dir().join("picloud-cli-test-cache"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("http: listening on ")
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let whoami = || async {
        Client::new()
            .get(format!("{base}/api/v1/whoami"))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
    };
    let me: Value = whoami().await.json().await.unwrap();
    assert_eq!(me["principal"], ADMIN);
    let page = Client::new().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(page.text().await.unwrap().contains("PiCloud trigger host"));

    let id = listed[0]["id"].as_str().unwrap();
    cli::ok(url, &["token", "revoke", id]);
    assert_eq!(whoami().await.status(), StatusCode::UNAUTHORIZED);
    let r = cli::run(url, &["token", "revoke", "nope"]);
    cli::assert_refused(&r, "revoking an unknown token", "unknown token 'nope'");
    let _ = serve.kill();
    let _ = serve.wait();
}
