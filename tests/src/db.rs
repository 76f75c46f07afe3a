//! Fresh, migrated databases for tests, on both backends.
//!
//! Rule: every test gets its own database. SQLite: a new file in a new
//! temporary directory, removed on drop. PostgreSQL: `CREATE DATABASE
//! picloud_t_<uuid>` on the server at `PICLOUD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped on drop; databases
//! of that name pattern older than an hour (left by killed runs) are swept
//! when the first one is created. A server that cannot be reached fails the
//! test loudly: it is never skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use picloud_host::store::postgres::PgStore;
use picloud_host::store::sqlite::SqliteStore;
use picloud_host::store::{Backend, DatabaseUrl, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, SqlitePool};

/// Where the test PostgreSQL server is, unless `PICLOUD_TEST_POSTGRES_URL` says.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Every table the migrations create, on both backends.
pub const TABLES: [&str; 20] = [
    "apps",
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
    "runs",
    "api_tokens",
    "app_config",
    "app_outbound_hosts",
    "cron_trigger_details",
    "cron_ticks",
    "queue_trigger_details",
    "pubsub_trigger_details",
];

/// The prefix of every database these tests create.
const PG_PREFIX: &str = "picloud_t_";

/// The pool under a test database, for raw SQL and embedder transactions.
#[derive(Clone, Debug)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// A fresh, migrated database and a store over it.
pub struct TestDb {
    /// The store, as the host sees it.
    pub store: Arc<dyn Store>,
    /// Its URL (no password in test setups).
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    /// The store's own pool.
    pub pool: Pool,
    // Dropped last: the directory or database goes after the store.
    _dir: Option<TempDir>,
    _database: Option<FreshPostgres>,
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory under the system's temporary directory.
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("picloud-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An empty PostgreSQL database created for one test, dropped on drop.
pub struct FreshPostgres {
    /// Its URL.
    pub url: String,
    /// Its name (`picloud_t_<uuid>`).
    pub name: String,
    admin_url: String,
}

impl FreshPostgres {
    /// Create one on the test server; panics if the server is not there.
    pub async fn create() -> Self {
        let (mut admin, admin_url) = postgres_admin().await;
        sweep_stale_databases(&mut admin).await;
        let name = format!("{PG_PREFIX}{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
        admin.close().await.ok();
        FreshPostgres {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }
}

impl Drop for FreshPostgres {
    fn drop(&mut self) {
        // Drop runs outside any async context we could borrow: use a thread
        // with its own small runtime. FORCE ends the store's remaining
        // connections.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        });
        let _ = dropper.join();
    }
}

impl TestDb {
    /// The PostgreSQL pool; panics on SQLite.
    pub fn pg_pool(&self) -> &PgPool {
        match &self.pool {
            Pool::Postgres(p) => p,
            Pool::Sqlite(_) => panic!("this test database is SQLite, not PostgreSQL"),
        }
    }

    /// The SQLite pool; panics on PostgreSQL.
    pub fn sqlite_pool(&self) -> &SqlitePool {
        match &self.pool {
            Pool::Sqlite(p) => p,
            Pool::Postgres(_) => panic!("this test database is PostgreSQL, not SQLite"),
        }
    }

    /// Run one raw query returning a single integer (e.g. `select count(*)`).
    pub async fn count(&self, sql: &str) -> i64 {
        let n: Result<i64, sqlx::Error> = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        };
        n.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Run one raw statement (no binds) on the test database.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => sqlx::query(sql).execute(p).await?.rows_affected(),
            Pool::Postgres(p) => sqlx::query(sql).execute(p).await?.rows_affected(),
        })
    }
}

/// A fresh SQLite database file in a new temporary directory, migrated.
pub async fn sqlite() -> TestDb {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.0.join("picloud.db").display());
    let parsed = DatabaseUrl::parse(&url).expect("a sqlite URL");
    let store = SqliteStore::connect(&parsed)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrating {url}: {e}"));
    let pool = Pool::Sqlite(store.pool().clone());
    TestDb {
        store: Arc::new(store),
        url,
        backend: Backend::Sqlite,
        pool,
        _dir: Some(dir),
        _database: None,
    }
}

/// The server URL tests create their databases on.
pub fn postgres_server_url() -> String {
    std::env::var("PICLOUD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

/// An admin connection to the test server; panics with the fix if it is
/// not there.
pub async fn postgres_admin() -> (PgConnection, String) {
    let admin_url = postgres_server_url();
    match PgConnection::connect(&admin_url).await {
        Ok(conn) => (conn, admin_url),
        Err(e) => panic!(
            "PostgreSQL is not reachable at {} ({e}); the contract tests need it: start it \
             (e.g. `pg_ctlcluster 15 main start`) or set PICLOUD_TEST_POSTGRES_URL",
            picloud_host::store::redact(&admin_url)
        ),
    }
}

/// A fresh PostgreSQL database, created for this test and migrated.
pub async fn postgres() -> TestDb {
    let fresh = FreshPostgres::create().await;
    let url = fresh.url.clone();
    let parsed = DatabaseUrl::parse(&url).expect("a postgres URL");
    let store = PgStore::connect(&parsed)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrating {url}: {e}"));
    let pool = Pool::Postgres(raw_pool(&url));
    TestDb {
        store: Arc::new(store),
        url,
        backend: Backend::Postgres,
        pool,
        _dir: None,
        _database: Some(fresh),
    }
}

/// A pool of the test's own on the database at `url`, for raw SQL: its
/// `search_path` finds the host's schema first, so tests name tables bare.
/// (The store's own connections have no such path: each of its statements
/// names the schema itself.)
pub fn raw_pool(url: &str) -> PgPool {
    let options: PgConnectOptions = url.parse().expect("a postgres URL");
    PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with(options.options([("search_path", "picloud,public")]))
}

/// Drop test databases older than an hour (left by runs that were killed
/// before their drops ran). Once per process; failures only warn.
async fn sweep_stale_databases(admin: &mut PgConnection) {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let stale: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(
        r"select datname from pg_database
          where datname like 'picloud\_t\_%'
            and (pg_stat_file('base/' || oid || '/PG_VERSION')).modification
                < now() - interval '1 hour'",
    )
    .fetch_all(&mut *admin)
    .await;
    match stale {
        Ok(names) => {
            for name in names {
                let sql = format!("drop database if exists \"{name}\" with (force)");
                if let Err(e) = sqlx::query(&sql).execute(&mut *admin).await {
                    eprintln!("warning: could not drop stale test database {name}: {e}");
                }
            }
        }
        Err(e) => eprintln!("warning: could not look for stale test databases: {e}"),
    }
}

/// The `picloud-host` binary of this build, built first if needed.
///
/// Integration tests of this crate do not get `CARGO_BIN_EXE_picloud-host`
/// (the binary belongs to another package), so this runs
/// `cargo build -p picloud-host --bin picloud-host` once per process (a
/// no-op when it is up to date) into the target directory this test binary
/// lives in, and returns the path.
pub fn host_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            // target/<profile>/deps/<test> -> target/<profile>
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("the test binary lives in target/<profile>/deps")
                .to_path_buf();
            let bin = profile_dir.join(format!("picloud-host{}", std::env::consts::EXE_SUFFIX));
            let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
            let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("tests/ lives in the workspace");
            let cargo = std::env::var("CARGO")
                .ok()
                .or_else(|| option_env!("CARGO").map(str::to_owned))
                .unwrap_or_else(|| "cargo".to_owned());
            let mut cmd = std::process::Command::new(cargo);
            cmd.current_dir(workspace)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "picloud-host",
                    "--bin",
                    "picloud-host",
                ])
                .arg("--target-dir")
                .arg(target_dir);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("running cargo build for picloud-host");
            assert!(status.success(), "building picloud-host failed: {status}");
            assert!(bin.exists(), "{} was not built", bin.display());
            bin
        })
        .clone()
}

/// Generate, for each named `async fn name(db: &TestDb)` in the calling
/// module, one test per backend: `sqlite::name` and `postgres::name`, each
/// on a fresh database.
#[macro_export]
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::db::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::db::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

/// How many migrations the repository has for `backend` (`sqlite` or
/// `postgres`): the `.sql` files of `migrations/<backend>`.
pub fn migration_count(backend: &str) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend);
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count()
}
