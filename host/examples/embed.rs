//! Embedding the trigger host in an application (the "manager"), start to
//! finish, on either backend:
//!
//! 1. the application's own pool and its own migrations, beside the host's,
//!    in either order;
//! 2. a host built over that pool, dispatching on a task of its own;
//! 3. producer transactions: an order row of the application and the KV
//!    write that triggers a script commit together (and a rolled-back one
//!    leaves nothing);
//! 4. the dead-letter badge, and a replay by a principal;
//! 5. a synchronous invoke;
//! 6. a graceful shutdown.
//!
//! Run it after building the example scripts (`scripts/build-guests.sh`):
//!
//! ```text
//! cargo run -p picloud-host --example embed -- sqlite:///tmp/embed.db
//! cargo run -p picloud-host --example embed -- postgres://postgres@127.0.0.1/embed
//! ```
//!
//! `tests/embedding.rs` runs it on both backends, with the application
//! migrating first and the host first, twice each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use picloud_host::TriggerHost;
use picloud_host::admin::TriggerOptions;
use picloud_host::auth::Role;
use picloud_host::config::TriggerConfig;
use picloud_host::model::{AppId, KvOps, Resolution};
use picloud_host::store::Store;
use picloud_host::store::postgres::{self, PgStore};
use picloud_host::store::sqlite::{self, SqliteStore};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, SqlitePool};
use tokio_util::sync::CancellationToken;

/// The application's own migrations (one table, `orders`).
static APP_MIGRATIONS: Migrator = sqlx::migrate!("../host/examples/embed-migrations");

/// The application's database: its own pool, on one backend or the other.
#[derive(Clone)]
pub enum AppDb {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// What one run saw.
#[derive(Debug, PartialEq)]
pub struct Summary {
    /// The application's orders (its own table).
    pub orders: i64,
    /// Totals the `order-totals` script wrote.
    pub totals: usize,
    /// Unresolved dead letters (the dashboard badge) before the replay.
    pub badge: i64,
    /// How many the principal replayed.
    pub replayed: usize,
    /// The greeter's reply.
    pub greeting: String,
}

#[allow(dead_code)] // `tests/embedding.rs` includes this file and calls `run`.
#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .context("usage: embed DATABASE_URL (sqlite://FILE or postgres://USER@HOST/DB)")?;
    let db = connect(&url).await?;
    let summary = run(&db, true).await?;
    println!("{summary:?}");
    Ok(())
}

/// The application's pool for `url`.
pub async fn connect(url: &str) -> Result<AppDb> {
    Ok(if url.starts_with("sqlite:") {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
        AppDb::Sqlite(
            SqlitePool::connect_with(
                options
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5)),
            )
            .await?,
        )
    } else {
        AppDb::Postgres(PgPool::connect(url).await?)
    })
}

/// The whole life of an embedding, once. `app_first`: the application
/// migrates before the host (else after). Safe to run again on the same
/// database.
pub async fn run(db: &AppDb, app_first: bool) -> Result<Summary> {
    // 1. Migrations: the application's and the host's, in either order.
    let store: Arc<dyn Store> = match db {
        AppDb::Sqlite(pool) => Arc::new(SqliteStore::from_pool(pool.clone())),
        AppDb::Postgres(pool) => Arc::new(PgStore::from_pool(pool.clone())),
    };
    if app_first {
        app_migrate(db).await?;
        store.migrate().await?;
    } else {
        store.migrate().await?;
        app_migrate(db).await?;
    }

    // 2. The host, over the application's pool, dispatching in the background.
    let host = TriggerHost::builder(store.clone())
        .config(TriggerConfig {
            retry_max_attempts: 2,
            retry_base: Duration::from_millis(20),
            ..TriggerConfig::default()
        })
        .build()?;
    let shutdown = CancellationToken::new();
    let running = host.spawn(shutdown.clone());

    let app = match store.find_app("shop").await {
        Ok(app) => app,
        Err(_) => store.create_app("shop").await?,
    };
    store.set_member(app.id, "alice", Role::Admin).await?;
    for name in ["order-totals", "payment-processor", "greeter"] {
        let wasm = std::fs::read(component(name)?)?;
        host.deploy(app.id, name, &wasm, Some("alice")).await?;
    }
    let admin = host.admin();
    if store.list_triggers(app.id).await?.is_empty() {
        admin
            .add_trigger(
                app.id,
                TriggerOptions::kv("order-totals", "orders", KvOps::ALL),
                "alice",
            )
            .await?;
        let writes = KvOps {
            set: true,
            delete: false,
        };
        admin
            .add_trigger(
                app.id,
                TriggerOptions::kv("payment-processor", "payments", writes),
                "alice",
            )
            .await?;
    }

    // 3. Producer transactions: the application's row and the KV write that
    // triggers a script commit together, or not at all.
    let order = json!({"customer": "ada", "items": [{"sku": "tea", "qty": 2, "price_cents": 450}]});
    produce(db, app.id, "o-1", &order, true).await?;
    produce(db, app.id, "o-2", &order, false).await?; // rolled back: nothing runs
    write_in_own_tx(
        db,
        app.id,
        "payments",
        "p-1",
        &json!({"amount_cents": 900, "card": "decline-0002"}),
    )
    .await?;
    host.notify(); // SQLite: start now; PostgreSQL: not needed (the commit notified)
    wait_until(|| async {
        Ok(store.unresolved_count(app.id).await? >= 1
            && store.kv_get(app.id, "order_totals", "o-1").await?.is_some())
    })
    .await?;

    // 4. The badge, and a replay by a principal (it fails again: the card
    // is still declined, so the badge comes back).
    let before = store.unresolved_count(app.id).await?;
    let dead = store
        .list_dead_letters(&picloud_host::model::DeadLetterFilter {
            app_id: Some(app.id),
            unresolved_only: true,
            ..Default::default()
        })
        .await?;
    let ids: Vec<_> = dead.iter().map(|d| d.id).collect();
    for result in admin
        .resolve_many(&ids, Resolution::Replayed, Some("alice"), |_| {})
        .await
    {
        result?;
    }

    // 5. A synchronous invoke.
    let reply = host
        .invoke(
            app.id,
            "greeter",
            json!({"name": "Ada"}),
            "alice",
            Duration::from_secs(10),
        )
        .await?
        .context("the greeter replies")?;
    let reply: serde_json::Value = serde_json::from_slice(&reply)?;

    // 6. Graceful shutdown: running invocations finish first; rows still
    // waiting (the replays' retries) wait in the outbox for the next start.
    shutdown.cancel();
    running.await??;

    Ok(Summary {
        orders: count_orders(db).await?,
        totals: store
            .kv_list_keys(app.id, "order_totals", None, 100)
            .await?
            .len(),
        badge: before,
        replayed: ids.len(),
        greeting: reply["greeting"].as_str().unwrap_or_default().to_owned(),
    })
}

/// The application's own migrations.
async fn app_migrate(db: &AppDb) -> Result<()> {
    match db {
        AppDb::Sqlite(pool) => APP_MIGRATIONS.run(pool).await?,
        AppDb::Postgres(pool) => APP_MIGRATIONS.run(pool).await?,
    }
    Ok(())
}

/// One order: the application's row and the host's KV write (which
/// enqueues the `kv` event) in one transaction, committed or rolled back.
async fn produce(
    db: &AppDb,
    app: AppId,
    key: &str,
    order: &serde_json::Value,
    commit: bool,
) -> Result<()> {
    let insert = "insert into orders (id, body) values ($1, $2) on conflict (id) do nothing";
    match db {
        AppDb::Sqlite(pool) => {
            // Writing transactions on SQLite take the write lock up front.
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(insert)
                .bind(key)
                .bind(order.to_string())
                .execute(&mut *tx)
                .await?;
            sqlite::kv_set_in(&mut tx, app, "orders", key, order, 0).await?;
            if commit {
                tx.commit().await?
            } else {
                tx.rollback().await?
            }
        }
        AppDb::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query(insert)
                .bind(key)
                .bind(order.to_string())
                .execute(&mut *tx)
                .await?;
            postgres::kv_set_in(&mut tx, app, "orders", key, order, 0).await?;
            if commit {
                tx.commit().await?
            } else {
                tx.rollback().await?
            }
        }
    }
    Ok(())
}

/// A KV write alone, in a transaction of the application's.
async fn write_in_own_tx(
    db: &AppDb,
    app: AppId,
    collection: &str,
    key: &str,
    value: &serde_json::Value,
) -> Result<()> {
    match db {
        AppDb::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlite::kv_set_in(&mut tx, app, collection, key, value, 0).await?;
            tx.commit().await?;
        }
        AppDb::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            postgres::kv_set_in(&mut tx, app, collection, key, value, 0).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn count_orders(db: &AppDb) -> Result<i64> {
    let sql = "select count(*) from orders";
    Ok(match db {
        AppDb::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        AppDb::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
    })
}

/// Poll `done` every 20 ms for up to 30 s.
async fn wait_until<F, Fut>(mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    for _ in 0..1500 {
        if done().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the scripts did not finish within 30 s")
}

/// An example script built by `scripts/build-guests.sh` (or the tests'
/// build), found under `target/guests` or `PICLOUD_GUESTS_DIR`.
fn component(package: &str) -> Result<PathBuf> {
    let file = format!("{}.wasm", package.replace('-', "_"));
    let dirs = [
        std::env::var_os("PICLOUD_GUESTS_DIR").map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/guests/wasm32-wasip2/guest"),
        ),
    ];
    dirs.into_iter()
        .flatten()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .with_context(|| format!("{file} is not built: run scripts/build-guests.sh"))
}
