//! Scripts reach the world (issue 15): outbound HTTP under the app's
//! allow-list and the SSRF guard, its limits, app variables and secrets,
//! and the webhook-notifier example end to end. Every request goes to a
//! real HTTP server this test starts on 127.0.0.1, from real components
//! (`tests/fixtures/http-probe`, `examples/webhook-notifier`) that use
//! `wstd`'s client over `wasi:http`; on both backends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use picloud_host::admin::{Admin, TriggerOptions};
use picloud_host::auth::{MemberAuthorizer, Role};
use picloud_host::config::SandboxCeiling;
use picloud_host::model::{AppId, DeadLetterFilter, KvOps, Resolution, source};
use picloud_host::outbound::parse_nets;
use picloud_host::runs::RunFilter;
use picloud_host::runtime::{Failure, InvokeError, LimitExceeded, Runtime, Success};
use picloud_host::secrets::SecretKey;
use picloud_host::store::Store;
use picloud_tests::db::TestDb;
use picloud_tests::guests;
use picloud_tests::host::{self as h, ADMIN};
use picloud_tests::web::Server;
use serde_json::{Value, json};

picloud_tests::contract!(
    an_allowed_host_answers_and_another_is_denied,
    names_of_private_addresses_and_redirects_to_denied_hosts_are_refused,
    a_slow_server_and_a_huge_body_trip_named_limits,
    a_flood_of_requests_stops_at_the_request_limit,
    a_viewer_may_not_reach_out,
    secrets_are_sealed_read_by_scripts_and_shown_nowhere,
    webhook_notifier_resolves_or_gives_up,
);

/// The test ceiling with small outbound limits; loopback allowed when
/// `loopback`.
fn ceiling(loopback: bool) -> SandboxCeiling {
    SandboxCeiling {
        timeout: Duration::from_millis(3000),
        outbound_max_requests: 5,
        outbound_timeout: Duration::from_millis(500),
        outbound_response_bytes: 64 * 1024,
        outbound_allow_nets: if loopback {
            parse_nets("127.0.0.0/8,::1").unwrap()
        } else {
            Vec::new()
        },
        ..h::ceiling()
    }
}

fn admin(s: &Arc<dyn Store>) -> Admin {
    Admin::new(s.clone(), Arc::new(MemberAuthorizer::new(s.clone())))
}

/// A server, a runtime that may reach loopback, and an app `shop` that
/// allows the server.
async fn allowed_server(s: &Arc<dyn Store>) -> (Server, Runtime, picloud_host::model::App) {
    let server = Server::start().await;
    let rt = h::runtime(s, ceiling(true));
    let app = h::app(s, "shop").await;
    admin(s)
        .allow_host(app.id, &server.origin(), None)
        .await
        .unwrap();
    (server, rt, app)
}

/// Run http-probe once with `payload`, as `principal`.
async fn probe(
    rt: &Runtime,
    app: AppId,
    payload: Value,
    principal: &str,
) -> Result<Success, Failure> {
    let script = h::deploy(rt, app, "http-probe", guests::HTTP_PROBE).await;
    let inv = h::invocation(app, script.id, source::HTTP, "invoke", payload, principal);
    rt.invoke(&script, inv).await
}

fn reply(ok: &Success) -> Value {
    serde_json::from_slice(ok.reply.as_deref().expect("a reply")).unwrap()
}

/// The probe's request failed in the script with the `wasi:http` error
/// `code`.
fn refused_with(ok: &Success, code: &str) {
    let answer = reply(ok);
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains(code), "{answer} {:?}", ok.logs);
}

fn log_text(logs: &[picloud_host::runtime::LogLine]) -> String {
    logs.iter()
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn an_allowed_host_answers_and_another_is_denied(db: &TestDb) {
    let s = &db.store;
    let server = Server::start().await;
    let rt = h::runtime(s, ceiling(true));
    let app = h::app(s, "shop").await;
    // Nothing is allowed by default.
    let denied = probe(&rt, app.id, json!({"url": server.url("/hello")}), ADMIN)
        .await
        .expect("a denied request is an error the script handles");
    refused_with(&denied, "HttpRequestDenied");
    assert_eq!(server.requests(), 0);

    admin(s)
        .allow_host(app.id, &server.origin(), Some(ADMIN))
        .await
        .unwrap();
    let ok = probe(
        &rt,
        app.id,
        json!({"url": server.url("/hello?token=s3cret-query")}),
        ADMIN,
    )
    .await
    .unwrap();
    let answer = reply(&ok);
    assert_eq!(answer["status"], json!(200));
    assert_eq!(answer["body"], json!("hello"));
    let log = log_text(&ok.logs);
    assert!(
        log.contains(&format!(
            "http GET http://127.0.0.1:{}/hello -> 200",
            server.port
        )),
        "{log}"
    );
    assert!(
        !log.contains("s3cret-query"),
        "the query string stays out of the log: {log}"
    );

    // Another port of the same address is another host.
    let other = probe(
        &rt,
        app.id,
        json!({"url": "http://127.0.0.1:9/hello"}),
        ADMIN,
    )
    .await
    .unwrap();
    refused_with(&other, "HttpRequestDenied");
    let log = log_text(&other.logs);
    assert!(
        log.contains("is not one of the app's allowed hosts (app allow-host)"),
        "{log}"
    );
    assert_eq!(server.requests(), 1);
}

async fn names_of_private_addresses_and_redirects_to_denied_hosts_are_refused(db: &TestDb) {
    let s = &db.store;
    let server = Server::start().await;
    let app = h::app(s, "shop").await;
    let a = admin(s);
    a.allow_host(app.id, &format!("http://localhost:{}", server.port), None)
        .await
        .unwrap();
    let by_name = json!({"url": format!("http://localhost:{}/hello", server.port)});

    // Allowed by name, but the name resolves to loopback: refused.
    let strict = h::runtime(s, ceiling(false));
    let refused = probe(&strict, app.id, by_name.clone(), ADMIN)
        .await
        .unwrap();
    refused_with(&refused, "DestinationIpProhibited");
    let log = log_text(&refused.logs);
    assert!(log.contains("refused: localhost resolves to"), "{log}");
    assert!(log.contains("loopback address"), "{log}");
    assert!(log.contains("PICLOUD_OUTBOUND_ALLOW_NETS"), "{log}");
    assert_eq!(server.requests(), 0);

    // With the operator's allowance for loopback, the same request goes.
    let lenient = h::runtime(s, ceiling(true));
    let ok = probe(&lenient, app.id, by_name, ADMIN).await.unwrap();
    assert_eq!(reply(&ok)["status"], json!(200), "{}", reply(&ok));

    // A redirect to a host that is not allowed is refused like any request:
    // 127.0.0.1 is allowed, the redirect's `localhost` no longer is.
    a.deny_host(app.id, &format!("http://localhost:{}", server.port), None)
        .await
        .unwrap();
    a.allow_host(app.id, &server.origin(), None).await.unwrap();
    let redirected = probe(
        &lenient,
        app.id,
        json!({"url": server.url("/redirect"), "follow": true}),
        ADMIN,
    )
    .await
    .unwrap();
    refused_with(&redirected, "HttpRequestDenied");
    assert!(log_text(&redirected.logs).contains("-> 302"));
}

async fn a_slow_server_and_a_huge_body_trip_named_limits(db: &TestDb) {
    let s = &db.store;
    let (server, rt, app) = allowed_server(s).await;

    let slow = probe(&rt, app.id, json!({"url": server.url("/slow")}), ADMIN)
        .await
        .expect_err("the timeout fails the invocation");
    match &slow.error {
        InvokeError::Limit(LimitExceeded::OutboundTimeout { ms, request }) => {
            assert_eq!(*ms, 500);
            assert_eq!(request, &format!("GET {}", server.url("/slow")));
        }
        other => panic!("expected the outbound timeout, got {other}"),
    }
    assert!(
        slow.error
            .to_string()
            .contains("PICLOUD_OUTBOUND_TIMEOUT_MS")
    );
    assert!(
        slow.elapsed < Duration::from_millis(2500),
        "{:?}",
        slow.elapsed
    );

    let huge = probe(&rt, app.id, json!({"url": server.url("/huge")}), ADMIN)
        .await
        .expect_err("the body limit fails the invocation");
    assert!(
        matches!(
            huge.error,
            InvokeError::Limit(LimitExceeded::OutboundBody { limit: 65536, .. })
        ),
        "{}",
        huge.error
    );
    assert!(
        huge.error
            .to_string()
            .contains("PICLOUD_OUTBOUND_MAX_RESPONSE_BYTES")
    );
    assert_eq!(
        picloud_host::runs::limit_name(&huge.error),
        Some("outbound_body")
    );
}

async fn a_flood_of_requests_stops_at_the_request_limit(db: &TestDb) {
    let s = &db.store;
    let (server, rt, app) = allowed_server(s).await;
    let flood = probe(
        &rt,
        app.id,
        json!({"url": server.url("/hello"), "repeat": 100000, "keep_going": true}),
        ADMIN,
    )
    .await
    .expect_err("the flood fails its invocation");
    assert_eq!(
        flood.error,
        InvokeError::Limit(LimitExceeded::OutboundRequests { limit: 5 })
    );
    assert_eq!(
        server.requests(),
        5,
        "no request past the limit left the host"
    );
}

async fn a_viewer_may_not_reach_out(db: &TestDb) {
    let s = &db.store;
    let (server, rt, app) = allowed_server(s).await;
    s.set_member(app.id, "vera", Role::Viewer).await.unwrap();
    let denied = probe(&rt, app.id, json!({"url": server.url("/hello")}), "vera")
        .await
        .unwrap();
    refused_with(&denied, "HttpRequestDenied");
    assert!(log_text(&denied.logs).contains("may not make outbound requests"));
    assert_eq!(server.requests(), 0);
    // Only an app admin changes the allow-list.
    let e = admin(s)
        .allow_host(app.id, "https://example.com", Some("vera"))
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("permission denied"), "{e}");
    assert_eq!(s.list_hosts(app.id).await.unwrap().len(), 1);
}

const SECRET: &str = "s3cret-value-4711";

async fn secrets_are_sealed_read_by_scripts_and_shown_nowhere(db: &TestDb) {
    let s = &db.store;
    let server = Server::start().await;
    let app = h::app(s, "shop").await;
    let key_text = SecretKey::generate();
    let key = SecretKey::parse(&key_text).unwrap();

    // Without a key no secret is stored, and the error says what to do.
    let e = admin(s)
        .set_var(app.id, "TOKEN", SECRET, true, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("PICLOUD_SECRET_KEY"), "{e}");
    assert!(s.list_vars(app.id).await.unwrap().is_empty());

    let a = admin(s).with_secret_key(Some(key.clone()));
    a.set_var(app.id, "TOKEN", SECRET, true, None)
        .await
        .unwrap();
    a.set_var(app.id, "REGION", "eu-1", false, None)
        .await
        .unwrap();
    a.allow_host(app.id, &server.origin(), None).await.unwrap();

    // At rest: not the plain text (read from the table itself).
    let stored: Vec<u8> = match db.backend {
        picloud_host::store::Backend::Sqlite => {
            sqlx::query_scalar("select value from app_config where name = 'TOKEN'")
                .fetch_one(db.sqlite_pool())
                .await
                .unwrap()
        }
        picloud_host::store::Backend::Postgres => {
            sqlx::query_scalar("select value from picloud.app_config where name = 'TOKEN'")
                .fetch_one(db.pg_pool())
                .await
                .unwrap()
        }
    };
    assert!(!stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    assert!(stored.len() > SECRET.len());

    // A script reads it (and sends it to the server, which saw it).
    let host = {
        let mut options = picloud_host::HostOptions::new(&ceiling(true));
        options.cache_dir = Some(h::cache_dir());
        options.secret_key = Some(key.clone());
        picloud_host::TriggerHost::new(
            s.clone(),
            Arc::new(MemberAuthorizer::new(s.clone())),
            h::fast_retries(1),
            ceiling(true),
            options,
        )
        .unwrap()
    };
    host.deploy(
        app.id,
        "http-probe",
        &guests::wasm(guests::HTTP_PROBE),
        None,
    )
    .await
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = host.spawn(stop.clone());
    let answer = host
        .invoke(
            app.id,
            "http-probe",
            json!({"url": server.url("/secret"), "secret_header": "TOKEN"}),
            ADMIN,
            Duration::from_secs(20),
        )
        .await
        .expect("the probe succeeds");
    let answer: Value = serde_json::from_slice(&answer.unwrap()).unwrap();
    assert_eq!(answer["status"], json!(200), "{answer}");
    assert_eq!(*server.seen.secrets.lock().unwrap(), [SECRET]);
    stop.cancel();
    running.await.unwrap().unwrap();

    // No run, log line, listing or CLI output holds it.
    let runs = host
        .admin()
        .list_runs(&RunFilter::app(app.id), None)
        .await
        .unwrap();
    assert!(!runs.is_empty());
    let runs_text = serde_json::to_string(&runs).unwrap();
    assert!(!runs_text.contains(SECRET), "{runs_text}");
    let listed = serde_json::to_string(&a.vars(app.id, None).await.unwrap()).unwrap();
    assert!(
        listed.contains("eu-1") && listed.contains("TOKEN"),
        "{listed}"
    );
    assert!(!listed.contains(SECRET));
    let env = [("PICLOUD_SECRET_KEY", key_text.as_str())];
    for args in [
        &["app", "var", "list", "shop"][..],
        &["app", "var", "list", "shop", "--json"],
        &["runs", "list", "shop", "--json"],
        &["logs", "shop"],
    ] {
        let r = picloud_tests::cli::run_with(&db.url, args, &env);
        assert!(r.ok, "{args:?}: {}", r.stderr);
        assert!(
            !r.stdout.contains(SECRET) && !r.stderr.contains(SECRET),
            "{args:?}"
        );
    }

    // The CLI sets a secret from standard input; a wrong key is named.
    let r = picloud_tests::cli::run_input(
        &db.url,
        &["app", "secret", "set", "shop", "OTHER", "-"],
        &env,
        Some(b"from-stdin\n"),
    );
    assert!(r.ok, "{}", r.stderr);
    let wrong = SecretKey::parse(&SecretKey::generate()).unwrap();
    let rt = h::runtime(s, ceiling(true)).with_secret_key(Some(wrong));
    let failed = probe(
        &rt,
        app.id,
        json!({"url": server.url("/secret"), "secret_header": "OTHER"}),
        ADMIN,
    )
    .await
    .expect_err("a secret that does not open fails the script");
    assert!(
        failed
            .error
            .to_string()
            .contains("secret 'OTHER' cannot be decrypted: PICLOUD_SECRET_KEY is not the key it was stored with"),
        "{}",
        failed.error
    );
    let right = h::runtime(s, ceiling(true)).with_secret_key(Some(key));
    probe(
        &right,
        app.id,
        json!({"url": server.url("/secret"), "secret_header": "OTHER"}),
        ADMIN,
    )
    .await
    .unwrap();
    assert_eq!(
        server.seen.secrets.lock().unwrap().last().unwrap(),
        "from-stdin"
    );
}

async fn webhook_notifier_resolves_or_gives_up(db: &TestDb) {
    let s = &db.store;
    let server = Server::start().await;
    let app = h::app(s, "shop").await;
    let host = h::host(s, h::fast_retries(3), ceiling(true));
    let a = host.admin();
    a.set_var(app.id, "WEBHOOK_URL", &server.url("/hook"), false, None)
        .await
        .unwrap();
    a.allow_host(app.id, &server.origin(), None).await.unwrap();
    for (name, path) in [
        ("always-fails", guests::ALWAYS_FAILS),
        ("webhook-notifier", guests::WEBHOOK_NOTIFIER),
    ] {
        host.deploy(app.id, name, &guests::wasm(path), None)
            .await
            .unwrap();
    }
    a.add_trigger(
        app.id,
        TriggerOptions::kv("always-fails", "orders", KvOps::ALL),
        ADMIN,
    )
    .await
    .unwrap();
    a.add_trigger(
        app.id,
        TriggerOptions::dead_letter("webhook-notifier", "kv"),
        ADMIN,
    )
    .await
    .unwrap();

    // The webhook takes the summary: the dead letter is handled.
    s.kv_set(app.id, "orders", "o-1", &json!({"total": 5}), 0)
        .await
        .unwrap();
    host.run_until_empty().await.unwrap();
    let handled = dead_letters(s, app.id).await;
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].resolution, Some(Resolution::HandledByScript));
    {
        let hooks = server.seen.hooks.lock().unwrap();
        assert_eq!(hooks.len(), 1);
        let (headers, summary) = &hooks[0];
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(summary["dead_letter_id"], json!(handled[0].id.to_string()));
        assert_eq!(summary["source"], json!("kv"));
        assert_eq!(summary["payload"]["key"], json!("o-1"));
        assert!(
            summary["last_error"]
                .as_str()
                .unwrap()
                .contains("always fails")
        );
    }

    // The webhook answers 500: retried, then given up (the recursion stop).
    server.seen.hook_status.store(500, Ordering::Relaxed);
    s.kv_set(app.id, "orders", "o-2", &json!({"total": 7}), 0)
        .await
        .unwrap();
    host.run_until_empty().await.unwrap();
    let all = dead_letters(s, app.id).await;
    assert_eq!(
        all.len(),
        2,
        "a failing dead-letter handler makes no dead letter"
    );
    let second = all.iter().find(|d| d.id != handled[0].id).unwrap();
    assert_eq!(second.resolution, Some(Resolution::HandlerFailed));
    assert_eq!(
        server.seen.hooks.lock().unwrap().len(),
        1 + 3,
        "three attempts"
    );
}

async fn dead_letters(s: &Arc<dyn Store>, app: AppId) -> Vec<picloud_host::model::DeadLetter> {
    s.list_dead_letters(&DeadLetterFilter {
        app_id: Some(app),
        ..DeadLetterFilter::default()
    })
    .await
    .unwrap()
}
