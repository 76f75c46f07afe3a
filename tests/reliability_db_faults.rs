//! Reliability under database faults (issue 6): a `picloud-host dispatch`
//! process on a throwaway PostgreSQL cluster whose server is restarted in
//! the middle of the run and whose backends are terminated
//! (`pg_terminate_backend`). The dispatcher reconnects by itself and
//! finishes with nothing lost; a synchronous invocation during the outage
//! fails with one clear line within its timeout.
//!
//! Size: `PICLOUD_RELIABILITY_DB_FAULT_EVENTS` [5000] events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_host::store::postgres::PgStore;
use picloud_host::store::{DatabaseUrl, Store};
use picloud_tests::cluster::Cluster;
use picloud_tests::db::TempDir;
use picloud_tests::procs::{HostProcess, env_size, run_host, spawn_dispatcher};
use picloud_tests::workload::{self, DEAD_SQL, OUTBOX_SQL, RUNS_SQL, SEEN_SQL};
use sqlx::{Connection, PgConnection};

/// How long any one phase may take before the test fails instead of hanging.
const PHASE_LIMIT: Duration = Duration::from_secs(180);

/// One count on a new connection; `None` while the server is away.
async fn count(url: &str, sql: &str) -> Option<i64> {
    let mut conn = PgConnection::connect(url).await.ok()?;
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
