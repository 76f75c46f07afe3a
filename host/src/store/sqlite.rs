//! The SQLite backend: the embedded default, for one dispatcher process.
//!
//! Rule: every change and the outbox event that describes it commit in one
//! transaction, and every transaction that writes starts with
//! `BEGIN IMMEDIATE`: it takes the write lock before it reads, so two
//! writers queue on the busy timeout instead of deadlocking on a lock
//! upgrade. WAL lets readers run beside the one writer. Times are bound
//! from this process's clock (one process owns the file). Signals are an
//! in-process broadcast fired after each commit that enqueues.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::broadcast;

use super::rows::{
    self, AbandonedRow, CHUNK, DeadLetterRow, Details, KvRow, MemberRow, ReplyRow, ScriptCodeRow,
    TriggerRow, abandoned_columns, dead_letter_columns, outbox_columns, reply_columns,
    script_columns, trigger_select,
};
use super::{
    AbandonedRepo, AppRepo, Backend, DatabaseUrl, DeadLetterRepo, Error, KvRepo, Member,
    NewAbandoned, OutboxRepo, ReplyRepo, Result, Retry, ScriptRepo, Signal, Store, StoredReply,
    Subscription, TriggerRepo,
};
use crate::auth::Role;
use crate::model::{
    AbandonedExecution, AbandonedId, App, AppId, DeadLetter, DeadLetterFilter, DeadLetterId,
    EventId, KvEntry, KvOp, NewDeadLetter, NewEvent, NewTrigger, OutboxEvent, Resolution, Script,
    ScriptId, Timestamp, Trigger, TriggerId,
};

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
    signals: broadcast::Sender<Signal>,
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
            // The outbox is hot: keep pages in memory (64 MiB cache, 256 MiB
            // of the file mapped) instead of a read() per page.
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "268435456");
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
            .connect_with(options)
            .await
            .map_err(|e| rows::unreachable(url, e))?;
        Ok(Self::from_pool(pool))
    }

    /// A store over an existing pool (the embedder's own). Its connections
    /// should have foreign keys on and a busy timeout.
    pub fn from_pool(pool: SqlitePool) -> Self {
        let (signals, _) = broadcast::channel(SIGNAL_BUFFER);
        SqliteStore { pool, signals }
    }

    /// The connection pool, for an embedder's own transactions (begin them
    /// with `pool.begin_with("BEGIN IMMEDIATE")` when they write).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A transaction holding the write lock from its first statement.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn signal(&self, signal: Signal) {
        // Nobody listening is fine: dispatchers also poll.
        let _ = self.signals.send(signal);
    }
}

/// Write one event to the outbox on the caller's connection or open
/// transaction: the change it describes commits with it or not at all.
pub async fn enqueue_in(conn: &mut SqliteConnection, event: &NewEvent) -> Result<EventId> {
    Ok(enqueue_many_in(conn, std::slice::from_ref(event)).await?[0])
}

/// Write events to the outbox on the caller's connection or transaction,
/// in multi-row inserts. The ids come back in the order of `events`.
pub async fn enqueue_many_in(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> Result<Vec<EventId>> {
    let ids: Vec<EventId> = events.iter().map(|_| EventId::new()).collect();
    insert_events(conn, events, ids).await
}

/// Insert `events` under the given `ids` (one per event).
async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    ids: Vec<EventId>,
) -> Result<Vec<EventId>> {
    let now = Timestamp::now();
    for (chunk, chunk_ids) in events.chunks(CHUNK).zip(ids.chunks(CHUNK)) {
        let mut b = QueryBuilder::<Sqlite>::new(
            "insert into outbox (id, event_id, app_id, source, op, trigger_id, script_id, principal, \
             payload, depth, attempt_count, first_attempt_at, last_attempt_at, last_error, \
             due_at, reply_to, created_at) ",
        );
        b.push_values(chunk.iter().zip(chunk_ids), |mut row, (e, id)| {
            row.push_bind(*id)
                .push_bind(e.event_id.unwrap_or(*id))
                .push_bind(e.app_id)
                .push_bind(e.source.clone())
                .push_bind(e.op.clone())
                .push_bind(e.trigger_id)
                .push_bind(e.script_id)
                .push_bind(e.principal.clone())
                .push_bind(Json(e.payload.clone()))
                .push_bind(e.depth)
                .push_bind(e.attempt_count)
                .push_bind(e.first_attempt_at)
                .push_bind(e.last_attempt_at)
                .push_bind(e.last_error.clone())
                .push_bind(e.due_at.unwrap_or(now))
                .push_bind(e.reply_to.clone())
                .push_bind(now);
        });
        b.build()
            .execute(&mut *conn)
            .await
            .map_err(rows::unknown_app_on_fk(chunk[0].app_id))?;
    }
    Ok(ids)
}

/// Write a KV entry (version + 1) and enqueue its `kv`/`set` event at
/// `depth` on the caller's connection or open transaction.
pub async fn kv_set_in(
    conn: &mut SqliteConnection,
    app: AppId,
    collection: &str,
    key: &str,
    value: &Value,
    depth: i32,
) -> Result<KvEntry> {
    super::validate_kv_names(collection, key)?;
    // Embedders call this directly: the limit holds here too.
    super::validate_kv_value_len(value.to_string().len())?;
    let row: KvRow = sqlx::query_as(
        r#"insert into kv_entries (app_id, collection, key, value, version, updated_at)
           values ($1, $2, $3, $4, 1, $5)
           on conflict (app_id, collection, key) do update
               set value = excluded.value,
                   version = kv_entries.version + 1,
                   updated_at = excluded.updated_at
           returning collection, key, value, version, updated_at"#,
    )
    .bind(app)
    .bind(collection)
    .bind(key)
    .bind(Json(value))
    .bind(Timestamp::now())
    .fetch_one(&mut *conn)
    .await
    .map_err(rows::unknown_app_on_fk(app))?;
    let entry = KvEntry::from(row);
    let event = super::kv_event(
        app,
        KvOp::Set,
        collection,
        key,
        Some(value),
        entry.version,
        depth,
    );
    enqueue_in(conn, &event).await?;
    Ok(entry)
}

/// Delete a KV entry and, if it existed, enqueue its `kv`/`delete` event at
/// `depth` on the caller's connection or open transaction. Whether it existed.
pub async fn kv_delete_in(
    conn: &mut SqliteConnection,
    app: AppId,
    collection: &str,
    key: &str,
    depth: i32,
) -> Result<bool> {
    super::validate_kv_names(collection, key)?;
    let version: Option<i64> = sqlx::query_scalar(
        "delete from kv_entries where app_id = $1 and collection = $2 and key = $3 returning version",
    )
    .bind(app)
    .bind(collection)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(version) = version else {
        return Ok(false);
    };
    let event = super::kv_event(app, KvOp::Delete, collection, key, None, version + 1, depth);
    enqueue_in(conn, &event).await?;
    Ok(true)
}

/// Run `sql` (ending in `in (`) once per chunk of `ids`, inside `conn`'s
/// transaction. Returns the rows affected.
async fn for_id_chunks(conn: &mut SqliteConnection, sql: &str, ids: &[EventId]) -> Result<u64> {
    let mut affected = 0;
    for chunk in ids.chunks(CHUNK) {
        let mut b = QueryBuilder::<Sqlite>::new(sql);
        let mut list = b.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        list.push_unseparated(")");
        affected += b.build().execute(&mut *conn).await?.rows_affected();
    }
    Ok(affected)
}

async fn fetch_trigger(conn: &mut SqliteConnection, id: TriggerId) -> Result<Trigger> {
    let row: Option<TriggerRow> = sqlx::query_as(concat!(trigger_select!(), "where t.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or_else(|| Error::not_found("trigger", id))?
        .try_into()
}

async fn fetch_dead_letter(conn: &mut SqliteConnection, id: DeadLetterId) -> Result<DeadLetter> {
    let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
        "select ",
        dead_letter_columns!(),
        " from dead_letters where id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| Error::not_found("dead letter", id))?
        .try_into()
}

async fn enabled_triggers(pool: &SqlitePool, app: AppId, kind: &str) -> Result<Vec<Trigger>> {
    let rows: Vec<TriggerRow> = sqlx::query_as(concat!(
        trigger_select!(),
        "where t.app_id = $1 and t.kind = $2 and t.enabled order by t.created_at, t.id"
    ))
    .bind(app)
    .bind(kind)
    .fetch_all(pool)
    .await?;
    rows::triggers(rows)
}

#[async_trait]
impl AppRepo for SqliteStore {
    async fn create_app(&self, name: &str) -> Result<App> {
        sqlx::query_as("insert into apps (id, name, created_at) values ($1, $2, $3) returning id, name, created_at")
            .bind(AppId::new())
            .bind(name)
            .bind(Timestamp::now())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                if rows::is_unique_violation(&e) {
                    Error::Conflict(format!("app '{name}' already exists"))
                } else {
                    Error::Database(e)
                }
            })
    }

    async fn get_app(&self, id: AppId) -> Result<App> {
        sqlx::query_as("select id, name, created_at from apps where id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("app", id))
    }

    async fn find_app(&self, name_or_id: &str) -> Result<App> {
        let by_name: Option<App> =
            sqlx::query_as("select id, name, created_at from apps where name = $1")
                .bind(name_or_id)
                .fetch_optional(&self.pool)
                .await?;
        match (by_name, name_or_id.parse::<AppId>()) {
            (Some(app), _) => Ok(app),
            (None, Ok(id)) => self
                .get_app(id)
                .await
                .map_err(|_| Error::not_found("app", name_or_id)),
            (None, Err(_)) => Err(Error::not_found("app", name_or_id)),
        }
    }

    async fn list_apps(&self) -> Result<Vec<App>> {
        Ok(
            sqlx::query_as("select id, name, created_at from apps order by name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn set_member(&self, app: AppId, principal: &str, role: Role) -> Result<()> {
        sqlx::query(
            "insert into app_members (app_id, principal, role) values ($1, $2, $3)
             on conflict (app_id, principal) do update set role = excluded.role",
        )
        .bind(app)
        .bind(principal)
        .bind(role.as_str())
        .execute(&self.pool)
        .await
        .map_err(rows::unknown_app_on_fk(app))?;
        Ok(())
    }

    async fn remove_member(&self, app: AppId, principal: &str) -> Result<bool> {
        let done = sqlx::query("delete from app_members where app_id = $1 and principal = $2")
            .bind(app)
            .bind(principal)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn member_role(&self, app: AppId, principal: &str) -> Result<Option<Role>> {
        let role: Option<String> =
            sqlx::query_scalar("select role from app_members where app_id = $1 and principal = $2")
                .bind(app)
                .bind(principal)
                .fetch_optional(&self.pool)
                .await?;
        role.as_deref().map(rows::parse_role).transpose()
    }

    async fn list_members(&self, app: AppId) -> Result<Vec<Member>> {
        let rows: Vec<MemberRow> = sqlx::query_as(
            "select app_id, principal, role from app_members where app_id = $1 order by principal",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Member::try_from).collect()
    }
}

#[async_trait]
impl ScriptRepo for SqliteStore {
    async fn put_script(
        &self,
        app: AppId,
        name: &str,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Script> {
        let now = Timestamp::now();
        sqlx::query_as(concat!(
            "insert into scripts (id, app_id, name, wasm, sha256, size, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $7)
             on conflict (app_id, name) do update
                 set wasm = excluded.wasm, sha256 = excluded.sha256, size = excluded.size,
                     updated_at = excluded.updated_at
             returning ",
            script_columns!()
        ))
        .bind(ScriptId::new())
        .bind(app)
        .bind(name)
        .bind(wasm)
        .bind(sha256)
        .bind(wasm.len() as i64)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(rows::unknown_app_on_fk(app))
    }

    async fn get_script(&self, id: ScriptId) -> Result<Script> {
        sqlx::query_as(concat!(
            "select ",
            script_columns!(),
            " from scripts where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found("script", id))
    }

    async fn find_script(&self, app: AppId, name_or_id: &str) -> Result<Script> {
        let by_name: Option<Script> = sqlx::query_as(concat!(
            "select ",
            script_columns!(),
            " from scripts where app_id = $1 and name = $2"
        ))
        .bind(app)
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(script) = by_name {
            return Ok(script);
        }
        let Ok(id) = name_or_id.parse::<ScriptId>() else {
            return Err(Error::not_found("script", name_or_id));
        };
        sqlx::query_as(concat!(
            "select ",
            script_columns!(),
            " from scripts where app_id = $1 and id = $2"
        ))
        .bind(app)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found("script", name_or_id))
    }

    async fn script_code(&self, id: ScriptId) -> Result<(Script, Vec<u8>)> {
        let row: Option<ScriptCodeRow> = sqlx::query_as(concat!(
            "select ",
            script_columns!(),
            ", wasm from scripts where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| Error::not_found("script", id))?;
        Ok((row.script, row.wasm))
    }

    async fn list_scripts(&self, app: AppId) -> Result<Vec<Script>> {
        Ok(sqlx::query_as(concat!(
            "select ",
            script_columns!(),
            " from scripts where app_id = $1 order by name"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn remove_script(&self, app: AppId, id: ScriptId) -> Result<bool> {
        let done = sqlx::query("delete from scripts where app_id = $1 and id = $2")
            .bind(app)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl KvRepo for SqliteStore {
    async fn kv_get(&self, app: AppId, collection: &str, key: &str) -> Result<Option<KvEntry>> {
        let row: Option<KvRow> = sqlx::query_as(
            "select collection, key, value, version, updated_at from kv_entries
             where app_id = $1 and collection = $2 and key = $3",
        )
        .bind(app)
        .bind(collection)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(KvEntry::from))
    }

    async fn kv_list_keys(
        &self,
        app: AppId,
        collection: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "select key from kv_entries
             where app_id = $1 and collection = $2 and ($3 is null or key > $3)
             order by key limit $4",
        )
        .bind(app)
        .bind(collection)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn kv_set(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        value: &Value,
        depth: i32,
    ) -> Result<KvEntry> {
        let mut tx = self.write().await?;
        let entry = kv_set_in(&mut tx, app, collection, key, value, depth).await?;
        tx.commit().await?;
        self.signal(Signal::Outbox);
        Ok(entry)
    }

    async fn kv_delete(&self, app: AppId, collection: &str, key: &str, depth: i32) -> Result<bool> {
        let mut tx = self.write().await?;
        let existed = kv_delete_in(&mut tx, app, collection, key, depth).await?;
        tx.commit().await?;
        if existed {
            self.signal(Signal::Outbox);
        }
        Ok(existed)
    }
}

#[async_trait]
impl TriggerRepo for SqliteStore {
    async fn create_trigger(&self, t: &NewTrigger) -> Result<Trigger> {
        super::validate_trigger(t)?;
        let mut tx = self.write().await?;
        let owner: Option<AppId> = sqlx::query_scalar("select app_id from scripts where id = $1")
            .bind(t.script_id)
            .fetch_optional(&mut *tx)
            .await?;
        match owner {
            None => return Err(Error::not_found("script", t.script_id)),
            Some(owner) if owner != t.app_id => return Err(rows::cross_app_script(t)),
            Some(_) => {}
        }
        let id = TriggerId::new();
        let now = Timestamp::now();
        sqlx::query(
            "insert into triggers (id, app_id, script_id, kind, name, enabled, registered_by_principal,
                 created_at, updated_at)
             values ($1, $2, $3, $4, $5, true, $6, $7, $7)",
        )
        .bind(id)
        .bind(t.app_id)
        .bind(t.script_id)
        .bind(t.spec.kind())
        .bind(&t.name)
        .bind(&t.registered_by_principal)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        match Details::of(&t.spec) {
            Details::Kv { pattern, ops } => {
                sqlx::query("insert into kv_trigger_details (trigger_id, collection_pattern, ops) values ($1, $2, $3)")
                    .bind(id)
                    .bind(pattern)
                    .bind(ops)
                    .execute(&mut *tx)
                    .await?;
            }
            Details::DeadLetter { pattern } => {
                sqlx::query("insert into dead_letter_trigger_details (trigger_id, source_pattern) values ($1, $2)")
                    .bind(id)
                    .bind(pattern)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let trigger = fetch_trigger(&mut tx, id).await?;
        tx.commit().await?;
        Ok(trigger)
    }

    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger> {
        let mut conn = self.pool.acquire().await?;
        fetch_trigger(&mut conn, id).await
    }

    async fn list_triggers(&self, app: AppId) -> Result<Vec<Trigger>> {
        let rows: Vec<TriggerRow> = sqlx::query_as(concat!(
            trigger_select!(),
            "where t.app_id = $1 order by t.created_at, t.id"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows::triggers(rows)
    }

    async fn set_trigger_enabled(&self, id: TriggerId, enabled: bool) -> Result<Trigger> {
        let mut tx = self.write().await?;
        let done = sqlx::query("update triggers set enabled = $2, updated_at = $3 where id = $1")
            .bind(id)
            .bind(enabled)
            .bind(Timestamp::now())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("trigger", id));
        }
        let trigger = fetch_trigger(&mut tx, id).await?;
        tx.commit().await?;
        Ok(trigger)
    }

    async fn delete_trigger(&self, id: TriggerId) -> Result<bool> {
        let done = sqlx::query("delete from triggers where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_matching_kv(
        &self,
        app: AppId,
        collection: &str,
        op: KvOp,
    ) -> Result<Vec<Trigger>> {
        let candidates = enabled_triggers(&self.pool, app, "kv").await?;
        Ok(rows::matching_kv(candidates, collection, op))
    }

    async fn list_matching_dead_letter(&self, app: AppId, source: &str) -> Result<Vec<Trigger>> {
        let candidates = enabled_triggers(&self.pool, app, "dead_letter").await?;
        Ok(rows::matching_dead_letter(candidates, source))
    }
}

#[async_trait]
impl OutboxRepo for SqliteStore {
    async fn enqueue(&self, event: &NewEvent) -> Result<EventId> {
        let mut conn = self.pool.acquire().await?;
        let id = enqueue_in(&mut conn, event).await?;
        self.signal(Signal::Outbox);
        Ok(id)
    }

    async fn enqueue_many(&self, events: &[NewEvent]) -> Result<Vec<EventId>> {
        let mut tx = self.write().await?;
        let ids = enqueue_many_in(&mut tx, events).await?;
        tx.commit().await?;
        self.signal(Signal::Outbox);
        Ok(ids)
    }

    async fn claim_due(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = Timestamp::now();
        let mut rows: Vec<OutboxEvent> = sqlx::query_as(concat!(
            "update outbox set locked_until = $1, locked_by = $2
             where id in (
                 select id from outbox
                 where due_at <= $3 and (locked_until is null or locked_until < $3)
                 order by due_at
                 limit $4
             )
             returning ",
            outbox_columns!()
        ))
        .bind(now.plus(lease))
        .bind(worker)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.sort_by_key(|r| (r.due_at, r.created_at));
        Ok(rows)
    }

    async fn complete(&self, ids: &[EventId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write().await?;
        let n = for_id_chunks(&mut tx, "delete from outbox where id in (", ids).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn reschedule(&self, retries: &[Retry]) -> Result<()> {
        if retries.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
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

    async fn fan_out(&self, raw: EventId, invocations: &[NewEvent]) -> Result<Vec<EventId>> {
        let mut tx = self.write().await?;
        sqlx::query("delete from outbox where id = $1")
            .bind(raw)
            .execute(&mut *tx)
            .await?;
        let ids = insert_events(
            &mut tx,
            invocations,
            invocations.iter().map(|_| EventId::new()).collect(),
        )
        .await?;
        tx.commit().await?;
        self.signal(Signal::Outbox);
        Ok(ids)
    }

    async fn release(&self, ids: &[EventId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for_id_chunks(
            &mut tx,
            "update outbox set locked_until = null, locked_by = null where id in (",
            ids,
        )
        .await?;
        tx.commit().await?;
        self.signal(Signal::Outbox);
        Ok(())
    }

    async fn get_event(&self, id: EventId) -> Result<Option<OutboxEvent>> {
        Ok(sqlx::query_as(concat!(
            "select ",
            outbox_columns!(),
            " from outbox where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn count_events(&self, app: Option<AppId>) -> Result<i64> {
        Ok(
            sqlx::query_scalar("select count(*) from outbox where $1 is null or app_id = $1")
                .bind(app)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>> {
        // Fixed-width text: max and min compare the times.
        Ok(sqlx::query_scalar(
            "select min(max(due_at, coalesce(locked_until, due_at))) from outbox",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

#[async_trait]
impl DeadLetterRepo for SqliteStore {
    async fn dead_letter(&self, dead: &NewDeadLetter, emit_event: bool) -> Result<DeadLetter> {
        let mut tx = self.write().await?;
        let row: DeadLetterRow = sqlx::query_as(concat!(
            "insert into dead_letters (id, app_id, original_event_id, source, op, trigger_id,
                 script_id, payload, attempt_count, first_attempt_at, last_attempt_at, last_error,
                 created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             returning ",
            dead_letter_columns!()
        ))
        .bind(DeadLetterId::new())
        .bind(dead.app_id)
        .bind(dead.original_event_id)
        .bind(&dead.source)
        .bind(&dead.op)
        .bind(dead.trigger_id)
        .bind(dead.script_id)
        .bind(Json(&dead.payload))
        .bind(dead.attempt_count)
        .bind(dead.first_attempt_at)
        .bind(dead.last_attempt_at)
        .bind(&dead.last_error)
        .bind(Timestamp::now())
        .fetch_one(&mut *tx)
        .await
        .map_err(rows::unknown_app_on_fk(dead.app_id))?;
        let dl = DeadLetter::try_from(row)?;
        sqlx::query("insert into dead_letter_depths (dead_letter_id, depth) values ($1, $2)")
            .bind(dl.id)
            .bind(dead.depth)
            .execute(&mut *tx)
            .await?;
        sqlx::query("delete from outbox where id = $1")
            .bind(dead.original_event_id)
            .execute(&mut *tx)
            .await?;
        if emit_event {
            enqueue_in(&mut tx, &super::dead_letter_event(dl.id, dead)).await?;
        }
        tx.commit().await?;
        if emit_event {
            self.signal(Signal::Outbox);
        }
        Ok(dl)
    }

    async fn get_dead_letter(&self, id: DeadLetterId) -> Result<DeadLetter> {
        let mut conn = self.pool.acquire().await?;
        fetch_dead_letter(&mut conn, id).await
    }

    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut b = QueryBuilder::<Sqlite>::new(concat!(
            "select ",
            dead_letter_columns!(),
            " from dead_letters"
        ));
        rows::push_dead_letter_filter(&mut b, filter);
        let rows: Vec<DeadLetterRow> = b.build_query_as().fetch_all(&self.pool).await?;
        rows::dead_letters(rows)
    }

    async fn unresolved_count(&self, app: AppId) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "select count(*) from dead_letters where app_id = $1 and resolved_at is null",
        )
        .bind(app)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn resolve(&self, id: DeadLetterId, resolution: Resolution) -> Result<DeadLetter> {
        let mut tx = self.write().await?;
        let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
            "update dead_letters set resolved_at = $3, resolution = $2
             where id = $1 and resolved_at is null
             returning ",
            dead_letter_columns!()
        ))
        .bind(id)
        .bind(resolution.as_str())
        .bind(Timestamp::now())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let current = fetch_dead_letter(&mut tx, id).await?;
            return Err(rows::already_resolved(&current));
        };
        let dl = DeadLetter::try_from(row)?;
        let replayed = resolution == Resolution::Replayed;
        if replayed {
            let depth: Option<i32> = sqlx::query_scalar(
                "select depth from dead_letter_depths where dead_letter_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            enqueue_in(&mut tx, &super::replay_event(&dl, depth.unwrap_or(0))).await?;
        }
        tx.commit().await?;
        if replayed {
            self.signal(Signal::Outbox);
        }
        Ok(dl)
    }

    async fn stop_recursion(&self, event: EventId, dead_letter: DeadLetterId) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("delete from outbox where id = $1")
            .bind(event)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "update dead_letters set resolved_at = $3, resolution = $2
             where id = $1 and resolved_at is null",
        )
        .bind(dead_letter)
        .bind(Resolution::HandlerFailed.as_str())
        .bind(Timestamp::now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn gc_dead_letters(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("delete from dead_letters where created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl AbandonedRepo for SqliteStore {
    async fn record_abandoned(&self, a: &NewAbandoned) -> Result<AbandonedExecution> {
        let row: AbandonedRow = sqlx::query_as(concat!(
            "insert into abandoned_executions (id, app_id, outbox_event_id, script_id, trigger_id,
                 reply_to, outcome, detail, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             returning ",
            abandoned_columns!()
        ))
        .bind(AbandonedId::new())
        .bind(a.app_id)
        .bind(a.outbox_event_id)
        .bind(a.script_id)
        .bind(a.trigger_id)
        .bind(&a.reply_to)
        .bind(a.outcome.as_str())
        .bind(&a.detail)
        .bind(Timestamp::now())
        .fetch_one(&self.pool)
        .await
        .map_err(rows::unknown_app_on_fk(a.app_id))?;
        row.try_into()
    }

    async fn list_abandoned(&self, app: Option<AppId>) -> Result<Vec<AbandonedExecution>> {
        let rows: Vec<AbandonedRow> = sqlx::query_as(concat!(
            "select ",
            abandoned_columns!(),
            " from abandoned_executions where $1 is null or app_id = $1 order by created_at, id"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AbandonedExecution::try_from).collect()
    }

    async fn gc_abandoned(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("delete from abandoned_executions where created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl ReplyRepo for SqliteStore {
    async fn put_reply(&self, reply: &StoredReply) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "insert into invocation_replies (inbox, app_id, outbox_event_id, script_id, outcome, body, created_at)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (inbox) do nothing",
        )
        .bind(&reply.inbox)
        .bind(reply.app_id)
        .bind(reply.outbox_event_id)
        .bind(reply.script_id)
        .bind(reply.outcome.as_str())
        .bind(&reply.body)
        .bind(reply.created_at)
        .execute(&mut *tx)
        .await
        .map_err(rows::unknown_app_on_fk(reply.app_id))?;
        sqlx::query("delete from outbox where id = $1")
            .bind(reply.outbox_event_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.signal(Signal::Reply(reply.inbox.clone()));
        Ok(())
    }

    async fn take_reply(&self, inbox: &str) -> Result<Option<StoredReply>> {
        let row: Option<ReplyRow> = sqlx::query_as(concat!(
            "delete from invocation_replies where inbox = $1 returning ",
            reply_columns!()
        ))
        .bind(inbox)
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredReply::try_from).transpose()
    }

    async fn take_stale_replies(&self, before: Timestamp) -> Result<Vec<StoredReply>> {
        let rows: Vec<ReplyRow> = sqlx::query_as(concat!(
            "delete from invocation_replies where created_at < $1 returning ",
            reply_columns!()
        ))
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredReply::try_from).collect()
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

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(SqliteSubscription {
            rx: self.signals.subscribe(),
        }))
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
