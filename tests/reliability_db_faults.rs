//! Reliability under database faults (issue 6): a `picloud-host dispatch`
//! process on a throwaway PostgreSQL cluster whose server is restarted in
//! the middle of the run and whose backends are terminated
//! (`pg_terminate_backend`). The dispatcher reconnects by itself and
//! finishes with nothing lost; a synchronous invocation during the outage
//! fails with one clear line within its timeout.
//!
//! Then the outages that are not the scripts' fault (SPEC 14, issue 9):
//! scripts caught in the middle of their work, or inside a host call, when
//! the store goes away, for longer than their whole retry budget: the
//! PostgreSQL server stopped for seconds, the server flapping, and a SQLite
//! file whose write lock another process holds. Each ends with nothing
//! dead-lettered, nothing lost and the outbox drained; the dispatcher says
//! "store unreachable" once per outage, not once per event.
//!
//! The tests run one at a time (each has its own cluster and dispatcher
//! process, and they time outages). Size:
//! `PICLOUD_RELIABILITY_DB_FAULT_EVENTS` [5000] events in the first test.

// Each test holds the `serial()` guard for its whole life, across awaits on
// its own runtime: that is the point (one outage at a time).
#![allow(clippy::await_holding_lock)]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use picloud_host::store::postgres::PgStore;
use picloud_host::store::{DatabaseUrl, Store};
use picloud_tests::cluster::Cluster;
use picloud_tests::db::TempDir;
use picloud_tests::procs::{HostProcess, env_size, run_host, spawn_dispatcher};
use picloud_tests::workload::{self, DEAD_SQL, OUTBOX_SQL, RUNS_SQL, SEEN_SQL};
use serde_json::json;
use sqlx::{Connection, PgConnection, SqliteConnection};

/// How long any one phase may take before the test fails instead of hanging.
const PHASE_LIMIT: Duration = Duration::from_secs(180);

/// One test at a time: they time outages against real processes.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// One count on a new connection; `None` while the server is away. `sql`
/// names the host's tables bare: they are found in its schema.
async fn count(url: &str, sql: &str) -> Option<i64> {
    let mut conn = PgConnection::connect(url).await.ok()?;
    sqlx::query("set search_path to picloud, public")
        .execute(&mut conn)
        .await
        .ok()?;
    let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.ok();
    conn.close().await.ok();
    n
}

/// Poll until `sql` reaches `at_least`, checking the dispatcher is alive.
async fn wait_for(url: &str, sql: &str, at_least: i64, p: &mut HostProcess, cluster: &Cluster) {
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut last = None;
    loop {
        if let Some(n) = count(url, sql).await {
            if n >= at_least {
                return;
            }
            last = Some(n);
        }
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{sql} stayed at {last:?} < {at_least} for {PHASE_LIMIT:?}\ndispatcher:\n{}\nserver:\n{}",
            p.stderr(),
            cluster.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Terminate every client backend but our own; how many went.
async fn terminate_backends(url: &str) -> i64 {
    count(
        url,
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
         where backend_type = 'client backend' and pid <> pg_backend_pid()",
    )
    .await
    .expect("terminating backends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_survives_server_restart_and_terminated_backends() {
    let _serial = serial();
    let events = env_size("PICLOUD_RELIABILITY_DB_FAULT_EVENTS", 5000) as i64;
    let cluster = Cluster::start();
    let url = cluster.url("postgres");
    let work = {
        let store: Arc<dyn Store> = Arc::new(
            PgStore::connect(&DatabaseUrl::parse(&url).unwrap())
                .await
                .expect("connecting to the throwaway cluster"),
        );
        store.migrate().await.expect("migrating");
        let work = workload::recorder(&store, events as usize).await;
        store.close().await;
        work
    };
    let dir = TempDir::new();
    let env = workload::dispatcher_env(&dir.0.join("cache"));
    let started = Instant::now();
    let mut p = spawn_dispatcher(&url, &env, &dir.0, "dispatcher");

    // Fault 1: every backend of the dispatcher is terminated under it.
    wait_for(&url, SEEN_SQL, events / 5, &mut p, &cluster).await;
    let terminated = terminate_backends(&url).await;
    assert!(terminated > 0, "the dispatcher had backends to terminate");
    wait_for(&url, SEEN_SQL, events * 2 / 5, &mut p, &cluster).await;

    // Fault 2: the server goes away (as in a crash) and comes back.
    let before_outage = count(&url, SEEN_SQL).await.unwrap();
    cluster.stop_immediate();
    let down = Instant::now();
    // A synchronous invocation while the server is down: one clear line,
    // within its timeout.
    let timeout_ms = 2000u64;
    let (out, took) = run_host(
        &url,
        &[
            "invoke",
            "reliability",
            "greeter",
            "--payload",
            r#"{"name":"Bo"}"#,
            "--as",
            "alice",
            "--timeout-ms",
            &timeout_ms.to_string(),
        ],
        &env,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "invoke failed while the server was down"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1") && !stderr.contains("password"),
        "names the database: {stderr}"
    );
    assert!(
        took < Duration::from_millis(timeout_ms + 1500),
        "invoke gave up within its timeout: {took:?}"
    );
    // And against a server that accepts connections but never answers (a
    // frozen one): the same, within the timeout.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let frozen_url = format!(
        "postgres://postgres@{}/postgres",
        frozen.local_addr().unwrap()
    );
    let (out, took_frozen) = run_host(
        &frozen_url,
        &[
            "invoke",
            "reliability",
            "greeter",
            "--as",
            "alice",
            "--timeout-ms",
            &timeout_ms.to_string(),
        ],
        &env,
    );
    drop(frozen);
    let frozen_err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "invoke against a frozen server failed"
    );
    assert_eq!(
        frozen_err.trim_end().lines().count(),
        1,
        "one line: {frozen_err}"
    );
    assert!(frozen_err.starts_with("error: "), "{frozen_err}");
    assert!(
        took_frozen < Duration::from_millis(timeout_ms + 1500),
        "invoke against a frozen server gave up within its timeout: {took_frozen:?}"
    );
    // Keep the server away a moment longer, then bring it back.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(down.elapsed())).await;
    p.assert_running();
    cluster.start_server();
    let outage = down.elapsed();
    wait_for(
        &url,
        SEEN_SQL,
        before_outage + events / 10,
        &mut p,
        &cluster,
    )
    .await;

    // Fault 3: terminated again, right after it came back.
    let terminated_again = terminate_backends(&url).await;

    // Everything finishes; the synchronous path works again.
    wait_for(&url, SEEN_SQL, events, &mut p, &cluster).await;
    let deadline = Instant::now() + PHASE_LIMIT;
    while count(&url, OUTBOX_SQL).await != Some(0) {
        p.assert_running();
        assert!(Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (out, _) = run_host(
        &url,
        &[
            "invoke",
            "reliability",
            "greeter",
            "--payload",
            r#"{"name":"Bo"}"#,
            "--as",
            "alice",
            "--timeout-ms",
            "20000",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "invoke after recovery: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello, Bo"));
    let status = p.interrupt(Duration::from_secs(20));
    assert!(status.success(), "clean stop: {status}\n{}", p.stderr());
    let elapsed = started.elapsed();

    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&DatabaseUrl::parse(&url).unwrap())
            .await
            .unwrap(),
    );
    let seen = workload::seen_keys(&store, work.app).await;
    let missing = work.ids.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} of {events} events lost");
    assert_eq!(count(&url, OUTBOX_SQL).await, Some(0));
    assert_eq!(
        count(&url, DEAD_SQL).await,
        Some(0),
        "nothing dead-lettered"
    );
    let duplicates = count(&url, RUNS_SQL).await.unwrap() - events;
    store.close().await;
    println!(
        "db faults: {events} events, {terminated} + {terminated_again} backends terminated, \
         server down {outage:?}, invoke during the outage failed in {took:?} with: {}; \
         against a frozen server in {took_frozen:?} with: {}; \
         {duplicates} duplicates, {elapsed:?}; dispatcher: {}",
        stderr.trim(),
        frozen_err.trim(),
        p.stdout().trim()
    );
}

/// The outage tests' retry policy: the whole budget of 5 attempts is spent
/// in well under a second of backoff, far less than any outage below, so
/// only not counting the store's failures keeps events out of dead letters.
fn outage_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut env = workload::dispatcher_env(&dir.join("cache"));
    env.extend([
        ("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "5".to_owned()),
        ("PICLOUD_TRIGGER_RETRY_BASE_MS", "50".to_owned()),
        ("PICLOUD_TRIGGER_RETRY_MAX_MS", "200".to_owned()),
    ]);
    env
}

/// How long each outage-test event's script works before its write, in ms
/// (the sandbox deadline is [`workload::TIMEOUT_MS`]).
const WORK_MS: u64 = 400;

/// Events of the outage tests: the recorder works [`WORK_MS`] first.
fn slow_event(i: usize) -> serde_json::Value {
    json!({ "sleep_ms": WORK_MS, "i": i })
}

/// The lines in which the dispatcher said the store was unreachable.
fn outage_lines(p: &HostProcess) -> usize {
    p.stderr().matches("store unreachable").count()
}

/// A throwaway cluster with the slow workload migrated into it.
async fn slow_cluster(events: usize) -> (Cluster, String, workload::Workload) {
    let cluster = Cluster::start();
    let url = cluster.url("postgres");
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&DatabaseUrl::parse(&url).unwrap())
            .await
            .expect("connecting to the throwaway cluster"),
    );
    store.migrate().await.expect("migrating");
    let work = workload::recorder_with(&store, events, slow_event).await;
    store.close().await;
    (cluster, url, work)
}

/// Wait for the outbox to drain, then stop the dispatcher and check that
/// every event ran and none was dead-lettered. Returns (runs, dead letters).
async fn assert_all_done_pg(
    url: &str,
    work: &workload::Workload,
    p: &mut HostProcess,
    cluster: &Cluster,
) -> i64 {
    let events = work.ids.len() as i64;
    wait_for(url, SEEN_SQL, events, p, cluster).await;
    let deadline = Instant::now() + PHASE_LIMIT;
    while count(url, OUTBOX_SQL).await != Some(0) {
        p.assert_running();
        assert!(Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = p.interrupt(Duration::from_secs(20));
    assert!(status.success(), "clean stop: {status}\n{}", p.stderr());
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&DatabaseUrl::parse(url).unwrap())
            .await
            .unwrap(),
    );
    let seen = workload::seen_keys(&store, work.app).await;
    store.close().await;
    let missing = work.ids.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} of {events} events lost");
    assert_eq!(
        count(url, DEAD_SQL).await,
        Some(0),
        "an outage of the store dead-lettered healthy events:\n{}",
        p.stderr()
    );
    count(url, RUNS_SQL).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_longer_than_the_retry_budget_costs_no_attempts() {
    let _serial = serial();
    let events = 200;
    let (cluster, url, work) = slow_cluster(events).await;
    let dir = TempDir::new();
    let mut p = spawn_dispatcher(&url, &outage_env(&dir.0), &dir.0, "dispatcher");

    // Scripts are mid-work (or writing) when the server dies, and it stays
    // away for 6 s: 5 attempts would have been spent in under 2 s.
    wait_for(&url, SEEN_SQL, 20, &mut p, &cluster).await;
    cluster.stop_immediate();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    p.assert_running();
    cluster.start_server();
    let outage = down.elapsed();

    let runs = assert_all_done_pg(&url, &work, &mut p, &cluster).await;
    let said = outage_lines(&p);
    // A script whose write fails just as the store comes back only makes
    // the breaker suspect another outage; its probe answers, and nothing
    // more is said.
    assert_eq!(
        said,
        1,
        "the outage is said once, not per event or per straggler: {said} times\n{}",
        p.stderr()
    );
    println!(
        "server down {outage:?} under {events} in-flight events: 0 dead letters, 0 lost, \
         {} repeated runs, outage said {said} time(s); dispatcher: {}",
        runs - events as i64,
        p.stdout().trim()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_server_with_scripts_inside_host_calls_dead_letters_nothing() {
    let _serial = serial();
    let events = 64;
    let (cluster, url, work) = slow_cluster(events).await;
    let dir = TempDir::new();
    let mut p = spawn_dispatcher(&url, &outage_env(&dir.0), &dir.0, "dispatcher");

    // Down 2 s, up 1 s, six times: every script is somewhere in its
    // 400 ms of work or its write when the server goes, again and again.
    wait_for(&url, SEEN_SQL, 1, &mut p, &cluster).await;
    for _ in 0..6 {
        cluster.stop_immediate();
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.assert_running();
        cluster.start_server();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let runs = assert_all_done_pg(&url, &work, &mut p, &cluster).await;
    println!(
        "server flapping 6 x (2 s down, 1 s up) under {events} events: 0 dead letters, 0 lost, \
         {} repeated runs, outages said {} time(s); dispatcher: {}",
        runs - events as i64,
        outage_lines(&p),
        p.stdout().trim()
    );
}

/// Events whose work is staggered: 300, 450, 600 or 750 ms, so that
/// instances that start together write at different times.
fn staggered_event(i: usize) -> serde_json::Value {
    json!({ "sleep_ms": 300 + 150 * (i % 4) as u64, "i": i })
}

/// A SQLite file in a new directory with the recorder workload of
/// `value`s migrated into it.
async fn sqlite_with(
    events: usize,
    value: fn(usize) -> serde_json::Value,
) -> (TempDir, String, workload::Workload) {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.0.join("picloud.db").display());
    let store = picloud_host::store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let work = workload::recorder_with(&store, events, value).await;
    store.close().await;
    (dir, url, work)
}

/// One count on the SQLite file (readers are not blocked by a writer in WAL mode).
async fn sqlite_count(url: &str, sql: &str) -> i64 {
    let mut conn = SqliteConnection::connect(url)
        .await
        .expect("opening the file");
    let n = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect(sql);
    conn.close().await.ok();
    n
}

/// Take the SQLite file's write lock from this (another) process and hold
/// it for `hold`, checking the dispatcher survives. How long it was held.
async fn hold_write_lock(url: &str, hold: Duration, p: &mut HostProcess) -> Duration {
    let mut locker = SqliteConnection::connect(url).await.unwrap();
    sqlx::query("begin immediate")
        .execute(&mut locker)
        .await
        .unwrap();
    sqlx::query("update apps set name = name")
        .execute(&mut locker)
        .await
        .unwrap();
    let locked = Instant::now();
    tokio::time::sleep(hold).await;
    p.assert_running();
    sqlx::query("rollback").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    locked.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_dead_letters_nothing() {
    let _serial = serial();
    let events = 200;
    let (dir, url, work) = sqlite_with(events, slow_event).await;
    let mut p = spawn_dispatcher(&url, &outage_env(&dir.0), &dir.0, "dispatcher");
    let deadline = Instant::now() + PHASE_LIMIT;
    while sqlite_count(&url, SEEN_SQL).await < 20 {
        p.assert_running();
        assert!(Instant::now() < deadline, "the dispatcher never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // This test process takes the write lock and holds it for 8 s: longer
    // than the dispatcher's 5 s busy timeout and than its whole retry budget.
    let held = hold_write_lock(&url, Duration::from_secs(8), &mut p).await;

    let deadline = Instant::now() + PHASE_LIMIT;
    while sqlite_count(&url, OUTBOX_SQL).await != 0 {
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "outbox never drained:\n{}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = p.interrupt(Duration::from_secs(20));
    assert!(status.success(), "clean stop: {status}\n{}", p.stderr());
    let store = picloud_host::store::connect(&url).await.unwrap();
    let seen = workload::seen_keys(&store, work.app).await;
    store.close().await;
    let missing = work.ids.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} of {events} events lost");
    assert_eq!(
        sqlite_count(&url, DEAD_SQL).await,
        0,
        "a locked database dead-lettered healthy events:\n{}",
        p.stderr()
    );
    let said = outage_lines(&p);
    assert!(
        said <= 2,
        "the lock is said once or twice, not per event: {said} times\n{}",
        p.stderr()
    );
    println!(
        "SQLite write lock held {held:?} by another process under {events} events: 0 dead letters, \
         0 lost, {} repeated runs, outage said {said} time(s); dispatcher: {}",
        sqlite_count(&url, RUNS_SQL).await - events as i64,
        p.stdout().trim()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_older_than_the_maximum_age_is_dead_lettered_saying_so() {
    let _serial = serial();
    let events = 40;
    let (dir, url, work) = sqlite_with(events, staggered_event).await;
    let mut env = outage_env(&dir.0);
    env.push(("PICLOUD_TRIGGER_MAX_EVENT_AGE_SECS", "1".to_owned()));
    env.push(("PICLOUD_SANDBOX_MAX_INSTANCES", "4".to_owned()));
    let mut p = spawn_dispatcher(&url, &env, &dir.0, "dispatcher");
    while sqlite_count(&url, SEEN_SQL).await < 1 {
        p.assert_running();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Locked for 4 s, from just after the first write: the three events
    // that started beside it are still working (their work is staggered),
    // so their writes wait past their deadline, by when they are older than
    // 1 s, and they give up. (With equal work, all four could write before
    // the lock and none would ever meet it.)
    hold_write_lock(&url, Duration::from_secs(4), &mut p).await;
    let deadline = Instant::now() + PHASE_LIMIT;
    while sqlite_count(&url, OUTBOX_SQL).await != 0 {
        p.assert_running();
        assert!(Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.interrupt(Duration::from_secs(20));
    let store = picloud_host::store::connect(&url).await.unwrap();
    let seen = workload::seen_keys(&store, work.app).await;
    let dead = store
        .list_dead_letters(&picloud_host::model::DeadLetterFilter::default())
        .await
        .unwrap();
    store.close().await;
    assert!(!dead.is_empty(), "some events outlived the maximum age");
    for d in &dead {
        assert!(
            d.last_error.starts_with("storage unavailable: ")
                && d.last_error.ends_with(
                    "gave up: the event is older than the maximum event age of 1 s \
                     (PICLOUD_TRIGGER_MAX_EVENT_AGE_SECS)"
                ),
            "the dead letter says why: {}",
            d.last_error
        );
    }
    // The outbox is empty, so an event that never ran is a dead letter. (One
    // that wrote and was then told `unavailable` may be both.)
    let never_ran = work.ids.difference(&seen).count();
    assert!(
        never_ran <= dead.len(),
        "{never_ran} events never ran but only {} were dead-lettered",
        dead.len()
    );
    println!(
        "maximum event age 1 s under a 4 s lock: {} of {events} events dead-lettered, e.g. {}",
        dead.len(),
        dead[0].last_error
    );
}
