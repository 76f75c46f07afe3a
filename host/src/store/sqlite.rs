//! The SQLite backend: the embedded default, for one dispatcher process.
//!
//! Rule: every change and the outbox event that describes it commit in one
//! transaction, and every transaction that writes starts with
//! `BEGIN IMMEDIATE`: it takes the write lock before it reads, so two
//! writers queue on the busy timeout instead of deadlocking on a lock
//! upgrade. WAL lets readers run beside the one writer. Times are bound
//! from this process's clock (one process owns the file). Signals are an
//! in-process broadcast fired after each commit that enqueues.
//!
//! This file holds only what SQLite does its own way; the repositories are
//! implemented once, in `shared`. Here: the SQL text that differs
//! (`Dialect::SQL`, with the time as the last parameter), the write
//! transaction, the hot-path statements of the claim (both kinds, see
//! `shared::ClaimPlan`), completion, retries and release (ids in chunked
//! `in (...)` lists, all in one write transaction), the broadcast, and the
//! migrations. Outbox rows are inserted by the shared multi-row insert with
//! one time for the batch.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::broadcast;

use super::dialect::{Dialect, Statements};
use super::rows::{
    self, abandoned_columns, dead_letter_columns, order_gate, outbox_columns, run_columns,
    script_columns,
};
use super::shared::{self, ClaimPlan, Claimed, FAIR_WALK, FairClaims};
use super::sql::{Clock, Db};
use super::{Backend, DatabaseUrl, Error, Result, Retry, Signal, Subscription};
use crate::model::{AppId, EventId, KvEntry, NewEvent, Timestamp};
use crate::runs::NewRun;

/// How long a writer waits for the write lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool: readers run in parallel under WAL; writers
/// take turns on the write lock.
const MAX_CONNECTIONS: u32 = 8;
/// Signals buffered per subscriber; a lagging subscriber just wakes up.
const SIGNAL_BUFFER: usize = 256;

/// A store on SQLite.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for the dispatcher's claims and completions. SQLite
    /// empties a connection's page cache whenever another connection has
    /// written since its last transaction; with the hot path on a
    /// connection of its own, its cache of the outbox stays warm between
    /// batches instead of being read back from the file every time.
    hot: SqlitePool,
    signals: broadcast::Sender<Signal>,
    /// Which claim comes next (shared by the clones of this store).
    fair: Arc<FairClaims>,
}

impl SqliteStore {
    /// Open (creating if missing) the database file of `url`, in WAL mode
    /// with foreign keys on. A path that cannot be opened is
    /// [`Error::Unreachable`].
    pub async fn connect(url: &DatabaseUrl) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(&url.url)
            .map_err(|e| rows::unreachable(url, e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // The outbox is hot: keep pages in memory (64 MiB cache). No
            // memory map: the file grows at every checkpoint, and SQLite
            // then unmaps and maps it again in every reader (a third of
            // the dispatcher's kernel time when it was on).
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "0")
            // Checkpoint every ~40 MB of WAL instead of 4 MB: outbox pages
            // are written many times (insert, claim, delete) and a
            // checkpoint copies each page once, however often it changed.
            .pragma("wal_autocheckpoint", "10000");
        // Each connection to `:memory:` is its own database: keep one.
        let in_memory = url.url.contains(":memory:") || url.url.contains("mode=memory");
        let mut pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { MAX_CONNECTIONS })
            .acquire_timeout(Duration::from_secs(30));
        if in_memory {
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            .connect_with(options.clone())
            .await
            .map_err(|e| rows::unreachable(url, e))?;
        let hot = if in_memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy_with(options)
        };
        Ok(SqliteStore {
            hot,
            ..Self::from_pool(pool)
        })
    }

    /// A store over an existing pool (the embedder's own). Its connections
    /// should have foreign keys on and a busy timeout.
    pub fn from_pool(pool: SqlitePool) -> Self {
        let (signals, _) = broadcast::channel(SIGNAL_BUFFER);
        SqliteStore {
            hot: pool.clone(),
            pool,
            signals,
            fair: Arc::default(),
        }
    }

    /// The connection pool, for an embedder's own transactions (begin them
    /// with `pool.begin_with("BEGIN IMMEDIATE")` when they write).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

super::shared::connection_functions!(SqliteStore, SqliteConnection);

impl Db for Sqlite {
    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Run `sql` for a list of ids bound as one JSON array: `sql` reads them as
/// `in (select value from json_each($1))`, so it is one prepared statement
/// whatever the number of ids (a list of placeholders was a new statement
/// to prepare for every batch size). Returns the rows affected.
async fn for_ids(conn: &mut SqliteConnection, sql: &'static str, ids: &[EventId]) -> Result<u64> {
    let list = serde_json::to_string(ids).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(sqlx::query(sql)
        .bind(list)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Delete the rows whose ids are in the JSON array `$1`.
const DELETE_IDS: &str = "delete from outbox where id in (select value from json_each($1))";

/// The claim of [`ClaimPlan::Oldest`]: lease to `$2` until `$1` the `$4`
/// oldest rows due at `$3` that no claim holds.
const CLAIM_OLDEST: &str = concat!(
    "update outbox set locked_until = $1, locked_by = $2
     where id in (
         select c.id from outbox c
         where c.due_at <= $3 and (c.locked_until is null or c.locked_until < $3)
           and ",
    order_gate!("c"),
    "
         order by c.due_at
         limit $4
     )
     returning ",
    outbox_columns!()
);

/// The first half of a claim of [`ClaimPlan::Fair`]: the walk of the apps of
/// PostgreSQL's claim (see `postgres.rs`), written for SQLite (`min()` of ids
/// is one index probe; `indexed by` keeps each app's probe of its oldest row
/// on `idx_outbox_app_due`). From after app `$1`, at most `$3` apps
/// ([`FAIR_WALK`]), each with its place in the walk and whether it has a row
/// due at `$2`; [`shared::serve`] chooses from them. A plain select over the
/// walk: gathering the choice in SQL too (materialized tables, sorts, a
/// JSON array) cost ten times the walk itself.
const WALK_APPS: &str = "with recursive
     walk(app_id, prev, n) as (
         select $1, null, 0
       union all
         select coalesce((select min(o.app_id) from outbox o where o.app_id > w.app_id),
                         (select min(o.app_id) from outbox o)),
                w.app_id, w.n + 1
         from walk w
         where w.app_id is not null and w.n < $3
           and (w.n <= 1 or (w.app_id <= $1) > (w.prev <= $1)
                or ((w.app_id <= $1) = (w.prev <= $1) and w.app_id > w.prev))
     )
     select app_id, n,
            coalesce((select o.due_at from outbox o indexed by idx_outbox_app_due
                      where o.app_id = walk.app_id order by o.due_at limit 1) <= $2, false)
     from walk
     where n >= 1 and app_id is not null
       and (n = 1 or (app_id <= $1) > (prev <= $1)
            or ((app_id <= $1) = (prev <= $1) and app_id > prev))";

/// The second half of a claim of [`ClaimPlan::Fair`] when the walk found two
/// apps or more: the binds of [`CLAIM_OLDEST`], then those apps (`$5`, a
/// JSON array). PostgreSQL's `picked` and `fill` (see `postgres.rs`); SQLite
/// having no lateral join, each app's share is read by a correlated
/// subquery into a JSON array, which `json_each` turns back into rows with
/// their rank in the app (`key`).
const CLAIM_FAIR: &str = concat!(
    "with
     served as materialized (select value as app_id, key as n from json_each($5)),
     shares as materialized (
         select count(*) as served_apps, ($4 + count(*) - 1) / max(count(*), 1) as share
         from served
     ),
     picked as materialized (
         select j.value as id
         from served s,
              json_each((
                  select json_group_array(id) from (
                      select o.id from outbox o indexed by idx_outbox_app_due
                      where o.app_id = s.app_id and o.due_at <= $3
                        and (o.locked_until is null or o.locked_until < $3)
                        and ",
    order_gate!("o"),
    "
                      order by o.due_at
                      limit (select share from shares)))) j
         order by j.key, s.n
         limit $4
     ),
     fill as (
         select c.id from outbox c
         where c.due_at <= $3 and (c.locked_until is null or c.locked_until < $3)
           and c.id not in (select id from picked)
           and ",
    order_gate!("c"),
    "
         order by c.due_at
         limit max($4 - (select count(*) from picked), 0)
     )
     update outbox set locked_until = $1, locked_by = $2
     where id in (select id from picked union all select id from fill)
     returning ",
    outbox_columns!()
);

/// Lease up to `limit` due rows on `conn` as `plan` says: one statement, or
/// for a fair claim two (the walk of the apps, then the claim). Both read
/// and write on `conn`, in its transaction if it is in one; the walk only
/// chooses the apps, the claim checks every row again.
async fn claim_on(
    conn: &mut SqliteConnection,
    worker: &str,
    limit: u32,
    lease: Duration,
    plan: ClaimPlan,
) -> Result<Claimed> {
    let now = Timestamp::now();
    let until = now.plus(lease);
    let (apps, next_app) = match plan {
        ClaimPlan::Oldest => (Vec::new(), None),
        ClaimPlan::Fair { after } => {
            let mut walked: Vec<(AppId, i64, bool)> = sqlx::query_as(WALK_APPS)
                .bind(after)
                .bind(now)
                .bind(FAIR_WALK)
                .fetch_all(&mut *conn)
                .await?;
            walked.sort_by_key(|(_, n, _)| *n);
            shared::serve(walked.into_iter().map(|(app, _, due)| (app, due)), limit)
        }
    };
    // With one app or none, the oldest due rows are its own: the plain claim.
    let limit = i64::from(limit);
    let rows = if apps.len() <= 1 {
        sqlx::query_as(CLAIM_OLDEST)
            .bind(until)
            .bind(worker)
            .bind(now)
            .bind(limit)
            .fetch_all(conn)
            .await?
    } else {
        let apps = serde_json::to_string(&apps).map_err(|e| Error::Invalid(e.to_string()))?;
        sqlx::query_as(CLAIM_FAIR)
            .bind(until)
            .bind(worker)
            .bind(now)
            .bind(limit)
            .bind(apps)
            .fetch_all(conn)
            .await?
    };
    Ok(Claimed { rows, next_app })
}

impl Dialect for SqliteStore {
    type DB = Sqlite;
    const BACKEND: Backend = Backend::Sqlite;
    const CLOCK: Clock = Clock::Process;
    const SQL: Statements = Statements {
        create_app: "insert into apps (id, name, created_at) values ($1, $2, $3) returning id, name, created_at",
        put_script: concat!(
            "insert into scripts (id, app_id, name, wasm, sha256, size, deployed_by, created_at,
                 updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             on conflict (app_id, name) do update
                 set wasm = excluded.wasm, sha256 = excluded.sha256, size = excluded.size,
                     deployed_by = excluded.deployed_by, updated_at = excluded.updated_at
             returning ",
            script_columns!()
        ),
        insert_trigger: "insert into triggers (id, app_id, script_id, kind, name, enabled, registered_by_principal,
                 created_at, updated_at)
             values ($1, $2, $3, $4, $5, true, $6, $7, $7)",
        set_trigger_enabled: "update triggers set enabled = $2, updated_at = $3 where id = $1",
        kv_upsert: r#"insert into kv_entries (app_id, collection, key, value, version, updated_at)
           values ($1, $2, $3, $4, 1, $5)
           on conflict (app_id, collection, key) do update
               set value = excluded.value,
                   version = kv_entries.version + 1,
                   updated_at = excluded.updated_at
           returning collection, key, value, version, updated_at"#,
        // BEGIN IMMEDIATE already keeps every other writer out.
        kv_get_for_update: "select collection, key, value, version, updated_at from kv_entries
             where app_id = $1 and collection = $2 and key = $3",
        kv_insert_new: r#"insert into kv_entries (app_id, collection, key, value, version, updated_at)
           values ($1, $2, $3, $4, 1, $5)
           on conflict (app_id, collection, key) do nothing
           returning collection, key, value, version, updated_at"#,
        kv_update_if_version: r#"update kv_entries
           set value = $4, version = version + 1, updated_at = $6
           where app_id = $1 and collection = $2 and key = $3 and version = $5
           returning collection, key, value, version, updated_at"#,
        kv_list_keys: "select key from kv_entries
             where app_id = $1 and collection = $2 and ($3 is null or key > $3)
             order by key limit $4",
        count_events: "select count(*) from outbox where $1 is null or app_id = $1",
        // Fixed-width text: max and min compare the times.
        next_due_at: concat!(
            "select min(max(c.due_at, coalesce(c.locked_until, c.due_at))) from outbox c where ",
            order_gate!("c")
        ),
        release_parked: concat!(
            "update outbox as o set due_at = $2 where o.due_at = $1 and ",
            order_gate!("o")
        ),
        park_check_lock: "",
        insert_dead_letter: concat!(
            "insert into dead_letters (id, app_id, original_event_id, source, op, trigger_id,
                 script_id, payload, attempt_count, first_attempt_at, last_attempt_at, last_error,
                 created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             returning ",
            dead_letter_columns!()
        ),
        resolve_dead_letter_returning: concat!(
            "update dead_letters set resolved_at = $3, resolution = $2
             where id = $1 and resolved_at is null
             returning ",
            dead_letter_columns!()
        ),
        resolve_dead_letter: "update dead_letters set resolved_at = $3, resolution = $2
             where id = $1 and resolved_at is null",
        insert_abandoned: concat!(
            "insert into abandoned_executions (id, app_id, outbox_event_id, script_id, trigger_id,
                 reply_to, outcome, detail, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             returning ",
            abandoned_columns!()
        ),
        dead_letter_bytes: "length(cast(payload as blob)) + length(cast(last_error as blob))",
        list_abandoned: concat!(
            "select ",
            abandoned_columns!(),
            " from abandoned_executions where $1 is null or app_id = $1 order by created_at, id"
        ),
        // `apps.id` is text, `runs.app_id` a 16-byte blob (0007_compact_runs).
        get_run: concat!(
            "select ",
            run_columns!(),
            " from runs where app_id in (select unhex(replace(id, '-', '')) from apps) and id = $1"
        ),
        vacuum_outbox: "",
    };

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn fair_claims(&self) -> &FairClaims {
        &self.fair
    }

    /// A transaction holding the write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn announce(&self, signal: Signal) {
        // Nobody listening is fine: dispatchers also poll.
        let _ = self.signals.send(signal);
    }

    /// With rows to delete, one write transaction: the pages the delete and
    /// the claim share are written to the WAL once, and the commit is paid
    /// once. Without, the claim is one statement.
    async fn claim(
        &self,
        done: &[EventId],
        runs: &[NewRun],
        worker: &str,
        limit: u32,
        lease: Duration,
        plan: ClaimPlan,
    ) -> Result<Claimed> {
        if done.is_empty() && runs.is_empty() {
            let mut conn = self.hot.acquire().await?;
            return claim_on(&mut conn, worker, limit, lease, plan).await;
        }
        let mut tx = self.hot.begin_with("BEGIN IMMEDIATE").await?;
        for_ids(&mut tx, DELETE_IDS, done).await?;
        shared::insert_runs_in::<Self>(&mut tx, runs).await?;
        let rows = claim_on(&mut tx, worker, limit, lease, plan).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn delete_rows(&self, ids: &[EventId], runs: &[NewRun]) -> Result<u64> {
        let mut tx = self.hot.begin_with("BEGIN IMMEDIATE").await?;
        let n = for_ids(&mut tx, DELETE_IDS, ids).await?;
        shared::insert_runs_in::<Self>(&mut tx, runs).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn write_retries(&self, retries: &[Retry], runs: &[NewRun]) -> Result<()> {
        let mut tx = self.hot.begin_with("BEGIN IMMEDIATE").await?;
        shared::insert_runs_in::<Self>(&mut tx, runs).await?;
        for r in retries {
            sqlx::query(
                "update outbox
                 set attempt_count = $2, first_attempt_at = $3, last_attempt_at = $4,
                     last_error = $5, due_at = $6, locked_until = null, locked_by = null
                 where id = $1",
            )
            .bind(r.id)
            .bind(r.attempt_count)
            .bind(r.first_attempt_at)
            .bind(r.last_attempt_at)
            .bind(&r.last_error)
            .bind(r.due_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn unlock_rows(&self, ids: &[EventId]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for_ids(
            &mut tx,
            "update outbox set locked_until = null, locked_by = null
             where id in (select value from json_each($1))",
            ids,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close_pools(&self) {
        self.hot.close().await;
        self.pool.close().await;
    }

    async fn listen(&self) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(SqliteSubscription {
            rx: self.signals.subscribe(),
        }))
    }

    async fn apply_migrations(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        super::migrate::sqlite(&mut conn).await?;
        Ok(())
    }
}

/// The in-process broadcast of signals.
struct SqliteSubscription {
    rx: broadcast::Receiver<Signal>,
}

#[async_trait]
impl Subscription for SqliteSubscription {
    async fn recv(&mut self) -> Result<Signal> {
        match self.rx.recv().await {
            Ok(signal) => Ok(signal),
            // Missed some: whatever they were, there is work to look at.
            Err(broadcast::error::RecvError::Lagged(_)) => Ok(Signal::Outbox),
            Err(broadcast::error::RecvError::Closed) => {
                Err(Error::Database(sqlx::Error::PoolClosed))
            }
        }
    }
}
