//! Reliability under process crashes (issue 6): real `picloud-host dispatch`
//! processes killed with SIGKILL at random moments, on SQLite and on
//! PostgreSQL, and two dispatchers sharing PostgreSQL of which one dies.
//!
//! What must hold (SPEC 5.9 and 5.10): every event is handled at least once,
//! no outbox row is left, nothing is dead-lettered; duplicates are allowed
//! (at-least-once) and reported, but never more than the rows the killed
//! processes held. On SQLite the file passes `PRAGMA integrity_check` after
//! every kill.
//!
//! Sizes: `PICLOUD_RELIABILITY_EVENTS` [20000] events and
//! `PICLOUD_RELIABILITY_KILLS` [10] kills per crash test,
//! `PICLOUD_RELIABILITY_TWO_EVENTS` [10000] for the two-dispatcher test;
//! `PICLOUD_RELIABILITY_SEED` repeats a run's random kill moments.

use std::str::FromStr;
use std::time::{Duration, Instant};

use picloud_host::store::Backend;
use picloud_tests::db::{self, TempDir, TestDb};
use picloud_tests::procs::{HostProcess, Rng, env_size, spawn_dispatcher};
use picloud_tests::workload::{self, DEAD_SQL, LEASE_MS, OUTBOX_SQL, RUNS_SQL, SEEN_SQL};
use sqlx::Connection;

/// How long any one phase may take before the test fails instead of hanging.
const PHASE_LIMIT: Duration = Duration::from_secs(180);

/// Poll `sql` (a count) until it reaches `at_least`, checking that the
/// dispatchers are still alive.
async fn wait_for(db: &TestDb, sql: &str, at_least: i64, procs: &mut [&mut HostProcess]) {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let n = db.count(sql).await;
        if n >= at_least {
            return;
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = procs.iter().map(|p| p.stderr()).collect();
            panic!(
                "{sql} stayed at {n} < {at_least} for {PHASE_LIMIT:?}; dispatcher stderr:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Poll until the outbox is empty.
async fn wait_for_empty_outbox(db: &TestDb, p: &mut HostProcess) {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let n = db.count(OUTBOX_SQL).await;
        if n == 0 {
            return;
        }
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{n} outbox rows still there after {PHASE_LIMIT:?}:\n{}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `PRAGMA integrity_check` and `foreign_key_check` on a new connection to
/// the SQLite file, as another process would open it after the crash.
async fn sqlite_integrity(url: &str) {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).expect("a sqlite URL");
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("opening the SQLite file after a kill");
    let check: Vec<String> = sqlx::query_scalar("pragma integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("running integrity_check");
    assert_eq!(check, ["ok"], "integrity_check after a kill");
    let fk = sqlx::query("pragma foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .expect("running foreign_key_check");
    assert!(fk.is_empty(), "{} foreign key violations", fk.len());
    conn.close().await.ok();
}

/// Rows the killed dispatcher `pid` held when it died.
async fn leased_by(db: &TestDb, pid: u32) -> i64 {
    db.count(&format!(
        "select count(*) from outbox where locked_by like '%-{pid}-%'"
    ))
    .await
}

/// Everything handled, nothing left, nothing dead; returns the duplicates.
async fn assert_all_handled(db: &TestDb, work: &workload::Workload) -> i64 {
    let events = work.ids.len() as i64;
    let seen = workload::seen_keys(&db.store, work.app).await;
    let missing = work.ids.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} of {events} events never handled");
    assert_eq!(seen.len() as i64, events, "only the workload's events");
    assert_eq!(db.count(OUTBOX_SQL).await, 0, "no outbox row left");
    assert_eq!(db.count(DEAD_SQL).await, 0, "nothing dead-lettered");
    db.count(RUNS_SQL).await - events
}

async fn crash_and_restart(db: TestDb) {
    let label = match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let events = env_size("PICLOUD_RELIABILITY_EVENTS", 20_000);
    let kills = env_size("PICLOUD_RELIABILITY_KILLS", 10);
    let mut rng = Rng::from_env();
    println!("{label}: seed {}", rng.seed());
    let work = workload::recorder(&db.store, events).await;
    let dir = TempDir::new();
    let env = workload::dispatcher_env(&dir.0.join("cache"));
    let started = Instant::now();

    let mut held_at_kills = 0i64;
    let mut peak_held = 0i64;
    for k in 0..kills {
        let mut p = spawn_dispatcher(&db.url, &env, &dir.0, &format!("dispatcher-{k}"));
        let alive = Instant::now();
        // One kill in four lands at a random moment of start-up (migrations,
        // engine, compile cache); the others at a random point of progress.
        if rng.unit() < 0.25 {
            tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(1500))).await;
        } else {
            let at = events as f64 * (k as f64 + 0.3 + 0.7 * rng.unit()) / (kills as f64 + 1.0);
            wait_for(&db, SEEN_SQL, at as i64, &mut [&mut p]).await;
            tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(150))).await;
        }
        p.kill();
        let held = leased_by(&db, p.pid).await;
        held_at_kills += held;
        peak_held = peak_held.max(held);
        if db.backend == Backend::Sqlite {
            sqlite_integrity(&db.url).await;
        }
        println!(
            "{label}: kill {} after {:?}: {} seen, {held} rows held by the dead process",
            k + 1,
            alive.elapsed(),
            db.count(SEEN_SQL).await
        );
    }

    // The last one runs to the end, then stops cleanly on SIGINT.
    let mut p = spawn_dispatcher(&db.url, &env, &dir.0, "dispatcher-last");
    wait_for(&db, SEEN_SQL, events as i64, &mut [&mut p]).await;
    wait_for_empty_outbox(&db, &mut p).await;
    let status = p.interrupt(Duration::from_secs(20));
    assert!(status.success(), "clean stop: {status}\n{}", p.stderr());
    assert!(p.stdout().contains("dispatched: "), "{}", p.stdout());
    let elapsed = started.elapsed();
    if db.backend == Backend::Sqlite {
        sqlite_integrity(&db.url).await;
    }

    let duplicates = assert_all_handled(&db, &work).await;
    println!(
        "{label}: {events} events, {kills} kills, {duplicates} duplicates \
         ({held_at_kills} rows held by killed processes, at most {peak_held} at once), \
         {elapsed:?} ({:.0} events/s)",
        events as f64 / elapsed.as_secs_f64()
    );
    assert!(
        duplicates <= held_at_kills,
        "{duplicates} duplicates, but killed processes held only {held_at_kills} rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dispatcher_killed_at_random_moments() {
    crash_and_restart(db::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dispatcher_killed_at_random_moments() {
    crash_and_restart(db::postgres().await).await;
}

/// Two dispatcher processes share one PostgreSQL database; one is killed
/// mid-run. The survivor leaves the dead one's rows alone while their lease
/// holds, then finishes them and everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_one_killed_the_survivor_finishes() {
    let events = env_size("PICLOUD_RELIABILITY_TWO_EVENTS", 10_000);
    let db = db::postgres().await;
    let pool = db.pg_pool().clone();
    let mut rng = Rng::from_env();
    println!("two dispatchers: seed {}", rng.seed());
    let work = workload::recorder(&db.store, events).await;
    let dir = TempDir::new();
    let env = workload::dispatcher_env(&dir.0.join("cache"));
    let started = Instant::now();

    let mut victim = spawn_dispatcher(&db.url, &env, &dir.0, "victim");
    let mut survivor = spawn_dispatcher(&db.url, &env, &dir.0, "survivor");
    let at = events as f64 * (0.25 + 0.25 * rng.unit());
    wait_for(&db, SEEN_SQL, at as i64, &mut [&mut victim, &mut survivor]).await;
    victim.kill();
    let mark = format!("%-{}-%", victim.pid);
    // The dead one's rows, and how long each one's lease still runs.
    let held: Vec<(String, f64)> = sqlx::query_as(
        "select id::text, extract(epoch from locked_until - now())::float8
         from outbox where locked_by like $1",
    )
    .bind(&mark)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        !held.is_empty(),
        "the killed dispatcher held rows (else this test proves nothing)"
    );
    let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
    let still_leased: Vec<String> = held
        .iter()
        .filter(|(_, left)| *left > 1.0)
        .map(|(id, _)| id.clone())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let untouched: i64 = sqlx::query_scalar(
        "select count(*) from outbox where id::text = any($1) and locked_by like $2",
    )
    .bind(&still_leased)
    .bind(&mark)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        untouched,
        still_leased.len() as i64,
        "the survivor took none of the dead one's rows while their lease held"
    );

    wait_for(&db, SEEN_SQL, events as i64, &mut [&mut survivor]).await;
    wait_for_empty_outbox(&db, &mut survivor).await;
    let left: i64 = sqlx::query_scalar("select count(*) from outbox where id::text = any($1)")
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let status = survivor.interrupt(Duration::from_secs(20));
    assert!(
        status.success(),
        "clean stop: {status}\n{}",
        survivor.stderr()
    );
    let elapsed = started.elapsed();
    let duplicates = assert_all_handled(&db, &work).await;
    println!(
        "two dispatchers: {events} events, victim killed at {:.0} seen holding {} rows \
         ({} leased for > 1 s more), {duplicates} duplicates, {elapsed:?}; lease {LEASE_MS} ms; \
         survivor: {}",
        at,
        held.len(),
        still_leased.len(),
        survivor.stdout().trim()
    );
    assert!(
        duplicates <= held.len() as i64,
        "{duplicates} duplicates, but the dead dispatcher held only {} rows",
        held.len()
    );
}
