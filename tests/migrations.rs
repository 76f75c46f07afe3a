//! The host's migrations beside an embedding application's, on both
//! backends: either order, repeatedly; a failed `migrate` retried on the
//! same pool; and a database made by the host before it kept its own
//! bookkeeping (tables in `public`, versions in `_sqlx_migrations`) moved
//! over with its data.

use std::time::Duration;

use picloud_host::store::postgres::PgStore;
use picloud_host::store::sqlite::SqliteStore;
use picloud_host::store::{AppRepo, DatabaseUrl, RunRepo, Store};
use picloud_tests::db::{FreshPostgres, TempDir, raw_pool};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

/// How long a `migrate` may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(30);

/// The manager's own migrations: two files in a temporary directory, with
/// versions that collide with the host's (1 and 2), as any application
/// numbering from 1 has.
async fn manager_migrator(dir: &TempDir) -> Migrator {
    let path = dir.0.join("manager-migrations");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(
        path.join("0001_orders.sql"),
        "create table orders (id bigint primary key, item text not null);",
    )
    .unwrap();
    std::fs::write(
        path.join("0002_order_notes.sql"),
        "alter table orders add column note text;",
    )
    .unwrap();
    Migrator::new(path.as_path()).await.unwrap()
}

async fn sqlite_pool(dir: &TempDir) -> (SqlitePool, String) {
    let url = format!("sqlite://{}", dir.0.join("manager.db").display());
    let options: SqliteConnectOptions = url.parse::<SqliteConnectOptions>().unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options.create_if_missing(true))
        .await
        .unwrap();
    (pool, url)
}

async fn pg_pool(db: &FreshPostgres) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap()
}

async fn migrate_within<S: Store + ?Sized>(store: &S) -> picloud_host::store::Result<()> {
    tokio::time::timeout(HANG, store.migrate())
        .await
        .expect("migrate hung")
}

#[tokio::test]
async fn sqlite_manager_and_host_migrate_in_either_order_twice() {
    for manager_first in [true, false] {
        let dir = TempDir::new();
        let manager = manager_migrator(&dir).await;
        let (pool, _) = sqlite_pool(&dir).await;
        let host = SqliteStore::from_pool(pool.clone());
        for _ in 0..2 {
            if manager_first {
                manager.run(&pool).await.expect("the manager's migrations");
                migrate_within(&host).await.expect("the host's migrations");
            } else {
                migrate_within(&host).await.expect("the host's migrations");
                manager.run(&pool).await.expect("the manager's migrations");
            }
        }
        let manager_versions: Vec<i64> =
            sqlx::query_scalar("select version from _sqlx_migrations order by version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(manager_versions, [1, 2], "only the manager's own versions");
        let host_versions: i64 = sqlx::query_scalar("select count(*) from picloud_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(host_versions, host_migration_count("sqlite"));
        host.create_app("shop").await.unwrap();
        sqlx::query("insert into orders (id, item, note) values (1, 'tea', 'x')")
            .execute(&pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn postgres_manager_and_host_migrate_in_either_order_twice() {
    for manager_first in [true, false] {
        let db = FreshPostgres::create().await;
        let dir = TempDir::new();
        let manager = manager_migrator(&dir).await;
        let pool = pg_pool(&db).await;
        let host = PgStore::from_pool(pool.clone());
        for _ in 0..2 {
            if manager_first {
                manager.run(&pool).await.expect("the manager's migrations");
                migrate_within(&host).await.expect("the host's migrations");
            } else {
                migrate_within(&host).await.expect("the host's migrations");
                manager.run(&pool).await.expect("the manager's migrations");
            }
        }
        let manager_versions: Vec<i64> =
            sqlx::query_scalar("select version from public._sqlx_migrations order by version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(manager_versions, [1, 2], "only the manager's own versions");
        let host_versions: i64 = sqlx::query_scalar("select count(*) from picloud.migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(host_versions, host_migration_count("postgres"));
        let public: Vec<String> = sqlx::query_scalar(
            "select tablename::text from pg_tables where schemaname = 'public' order by 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            public,
            ["_sqlx_migrations", "orders"],
            "the host keeps out of public"
        );
        // The host works on the manager's pool, whose search_path does not
        // name its schema.
        host.create_app("shop").await.unwrap();
        assert_eq!(host.find_app("shop").await.unwrap().name, "shop");
    }
}

#[tokio::test]
async fn sqlite_failed_migrate_rolls_back_and_can_be_retried_on_the_same_pool() {
    let dir = TempDir::new();
    let (pool, _) = sqlite_pool(&dir).await;
    // Something in the way of the last migration's `create table runs`.
    sqlx::query("create table runs (x integer)")
        .execute(&pool)
        .await
        .unwrap();
    let host = SqliteStore::from_pool(pool.clone());
    let err = migrate_within(&host).await.expect_err("runs is in the way");
    assert!(err.to_string().contains("runs"), "{err}");
    let apps: i64 = sqlx::query_scalar(
        "select count(*) from sqlite_master where name in ('apps', 'picloud_migrations')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(apps, 0, "nothing of the failed migration is left");
    sqlx::query("drop table runs").execute(&pool).await.unwrap();
    migrate_within(&host).await.expect("the retry");
    host.create_app("shop").await.unwrap();
}

#[tokio::test]
async fn postgres_failed_migrate_rolls_back_and_can_be_retried_on_the_same_pool() {
    let db = FreshPostgres::create().await;
    // One connection: a lock left on it would hang the retry.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql("create schema picloud; create table picloud.runs (x integer)")
        .execute(&pool)
        .await
        .unwrap();
    let host = PgStore::from_pool(pool.clone());
    let err = migrate_within(&host).await.expect_err("runs is in the way");
    assert!(err.to_string().contains("runs"), "{err}");
    let left: i64 = sqlx::query_scalar(
        "select count(*) from pg_tables where schemaname = 'picloud' and tablename <> 'runs'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "nothing of the failed migration is left");
    sqlx::query("drop table picloud.runs")
        .execute(&pool)
        .await
        .unwrap();
    migrate_within(&host).await.expect("the retry");
    host.create_app("shop").await.unwrap();
}

#[tokio::test]
async fn a_postgres_database_of_the_old_layout_moves_to_the_schema_with_its_data() {
    let db = FreshPostgres::create().await;
    let pool = pg_pool(&db).await;
    old_layout(&pool).await;
    let host = PgStore::from_pool(pool.clone());
    migrate_within(&host).await.expect("the move");
    migrate_within(&host).await.expect("and again");
    // The data came along, and the host reads it from its schema.
    assert_eq!(host.find_app("legacy").await.unwrap().name, "legacy");
    let public: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(public, ["_sqlx_migrations", "orders"]);
    let left: Vec<i64> = sqlx::query_scalar("select version from _sqlx_migrations")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [20260101], "only the manager's version stays");
    let functions: i64 = sqlx::query_scalar(
        "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'picloud' and p.proname like 'picloud_%_notify'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(functions, 2, "the notify functions moved too");
    // The function that releases ordered rows names tables: it moved with
    // a search path of the schema.
    let config: Vec<String> = sqlx::query_scalar(
        "select unnest(p.proconfig) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'picloud' and p.proname = 'picloud_release_next'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(config, ["search_path=picloud"]);
    // New rows still wake dispatchers: the statement trigger came along.
    let mut signals = host.subscribe().await.unwrap();
    let app = host.find_app("legacy").await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    picloud_host::store::postgres::kv_set_in(&mut tx, app.id, "c", "k", &serde_json::json!(1), 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), signals.recv())
        .await
        .expect("a notification")
        .unwrap();
    // The raw pool of the tests finds the tables through its search_path.
    let kv: i64 = sqlx::query_scalar("select count(*) from kv_entries")
        .fetch_one(&raw_pool(&db.url))
        .await
        .unwrap();
    assert_eq!(kv, 1);
}

#[tokio::test]
async fn a_sqlite_database_of_the_old_layout_keeps_its_data_and_gives_back_sqlx_migrations() {
    let dir = TempDir::new();
    let (pool, url) = sqlite_pool(&dir).await;
    sqlx::migrate!("../migrations/sqlite")
        .run(&pool)
        .await
        .unwrap();
    sqlx::query("insert into apps (id, name, created_at) values ($1, 'legacy', '2026-01-01T00:00:00.000000Z')")
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&pool)
        .await
        .unwrap();
    let host = SqliteStore::connect(&DatabaseUrl::parse(&url).unwrap())
        .await
        .unwrap();
    migrate_within(&host).await.expect("the move");
    migrate_within(&host).await.expect("and again");
    assert_eq!(host.find_app("legacy").await.unwrap().name, "legacy");
    let left: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the host's versions left _sqlx_migrations");
    let ours: i64 = sqlx::query_scalar("select count(*) from picloud_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ours, host_migration_count("sqlite"));
}

/// What the host before its own bookkeeping made of a database: sqlx's
/// migrator over the host's files, tables in `public`; an app in it; and
/// beside it a manager's own migration in the same `_sqlx_migrations`.
async fn old_layout(pool: &PgPool) {
    sqlx::migrate!("../migrations/postgres")
        .set_ignore_missing(true)
        .run(pool)
        .await
        .unwrap();
    sqlx::query("insert into apps (id, name) values (gen_random_uuid(), 'legacy')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "create table orders (id bigint primary key);
         insert into _sqlx_migrations (version, description, success, checksum, execution_time)
         values (20260101, 'orders', true, '\\x00', 1);",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// How many migrations the host ships for `backend`.
fn host_migration_count(backend: &str) -> i64 {
    picloud_tests::db::migration_count(backend) as i64
}

/// Migration 0007 rewrites SQLite's runs table in its compact form (blob
/// ids, integer microseconds): a run recorded before it reads back the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_runs_table_of_text_converts_to_the_compact_form() {
    let dir = TempDir::new();
    let (pool, url) = sqlite_pool(&dir).await;
    // The database as the host left it before 0007.
    let before = dir.0.join("before-0007");
    std::fs::create_dir_all(&before).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for entry in std::fs::read_dir(&repo).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0007" {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let (app, run, event, trigger) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    sqlx::query(
        "insert into apps (id, name, created_at) values ($1, 'old', '2026-01-01T00:00:00.000000Z')",
    )
    .bind(app.to_string())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into runs (id, app_id, trigger_id, script_id, event_id, source, op, attempt,
             principal, started_at, duration_us, outcome, limit_name, error, reply_bytes, logs,
             recorded_at)
         values ($1, $2, $3, null, $4, 'kv', 'set', 2, 'alice', '2026-03-04T05:06:07.000089Z',
             1234, 'failed', null, 'boom', null, null, '2026-03-04T05:06:08.123456Z')",
    )
    .bind(run.to_string())
    .bind(app.to_string())
    .bind(trigger.to_string())
    .bind(event.to_string())
    .execute(&pool)
    .await
    .unwrap();

    let host = SqliteStore::connect(&DatabaseUrl::parse(&url).unwrap())
        .await
        .unwrap();
    migrate_within(&host)
        .await
        .expect("0007 on a database with runs");
    let got = host
        .get_run(picloud_host::model::RunId(run))
        .await
        .expect("the run, by its id");
    assert_eq!(got.app_id.0, app);
    assert_eq!(got.trigger_id.map(|t| t.0), Some(trigger));
    assert_eq!(got.script_id, None);
    assert_eq!(got.event_id.0, event);
    assert_eq!(got.started_at.to_string(), "2026-03-04T05:06:07.000Z");
    assert_eq!(got.started_at.0.timestamp_subsec_micros(), 89);
    assert_eq!(got.recorded_at.0.timestamp_micros() % 1_000_000, 123_456);
    assert_eq!((got.attempt, got.error.as_deref()), (2, Some("boom")));
    let listed = host
        .list_runs(&picloud_host::runs::RunFilter::app(got.app_id))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "found by its app, through the index");
    let (id_type, time_type): (String, String) =
        sqlx::query_as("select typeof(id), typeof(recorded_at) from runs")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((id_type.as_str(), time_type.as_str()), ("blob", "integer"));
}
