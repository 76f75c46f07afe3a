//! The PostgreSQL backend: for production and for several dispatchers on
//! several machines sharing one database.
//!
//! Rule: every change and the outbox event that describes it commit in one
//! transaction; the claim is one statement that picks due rows `for update
//! skip locked`, leases them and returns them, so concurrent dispatchers
//! never receive the same row while its lease holds. Times that decide
//! leases and due rows come from the database (`now()`), never from the
//! clocks of the machines that share it. Dispatchers wake on
//! `LISTEN picloud_outbox` (a statement trigger on outbox inserts, so an
//! embedder's own inserts wake them too) and `picloud_reply`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

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

/// The notification channel of outbox inserts.
pub const OUTBOX_CHANNEL: &str = "picloud_outbox";
/// The notification channel of parked replies (payload: the inbox).
pub const REPLY_CHANNEL: &str = "picloud_reply";

/// Connections per process: dispatch tasks, host calls from scripts and
/// the embedder share them.
const MAX_CONNECTIONS: u32 = 16;

/// How long opening the store waits for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to the database at `url`. An unreachable server or a bad URL
    /// is [`Error::Unreachable`], naming the URL without its password.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self> {
        let options: PgConnectOptions = url.url.parse().map_err(|e| rows::unreachable(url, e))?;
        // One direct connection first: the pool would retry until its
        // timeout and report only that, hiding "connection refused".
        // Bounded: a server that accepts connections but never answers
        // (frozen, overloaded) must not hang the caller.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| rows::unreachable(url, format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| rows::unreachable(url, e))?;
        probe.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| rows::unreachable(url, e))?;
        Ok(PgStore { pool })
    }

    /// A store over an existing pool (the embedder's own).
    pub fn from_pool(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// The connection pool, for an embedder's own transactions.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Write one event to the outbox on the caller's connection or open
/// transaction: the change it describes commits with it or not at all.
pub async fn enqueue_in(conn: &mut PgConnection, event: &NewEvent) -> Result<EventId> {
    Ok(enqueue_many_in(conn, std::slice::from_ref(event)).await?[0])
}

/// Write events to the outbox on the caller's connection or transaction,
/// in multi-row inserts. The ids come back in the order of `events`.
pub async fn enqueue_many_in(conn: &mut PgConnection, events: &[NewEvent]) -> Result<Vec<EventId>> {
    let ids: Vec<EventId> = events.iter().map(|_| EventId::new()).collect();
    insert_events(conn, events, ids).await
}

/// Insert `events` under the given `ids` (one per event).
async fn insert_events(
    conn: &mut PgConnection,
    events: &[NewEvent],
    ids: Vec<EventId>,
) -> Result<Vec<EventId>> {
    for (chunk, chunk_ids) in events.chunks(CHUNK).zip(ids.chunks(CHUNK)) {
        let mut b = QueryBuilder::<Postgres>::new(
            "insert into outbox (id, event_id, app_id, source, op, trigger_id, script_id, principal, \
             payload, depth, attempt_count, first_attempt_at, last_attempt_at, last_error, \
             due_at, reply_to) ",
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
                .push("coalesce(")
                .push_bind_unseparated(e.due_at)
                .push_unseparated(", now())")
                .push_bind(e.reply_to.clone());
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
    conn: &mut PgConnection,
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
           values ($1, $2, $3, $4, 1, now())
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
    conn: &mut PgConnection,
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

fn uuids<T>(ids: &[T], f: impl Fn(&T) -> Uuid) -> Vec<Uuid> {
    ids.iter().map(f).collect()
}

async fn fetch_trigger(conn: &mut PgConnection, id: TriggerId) -> Result<Trigger> {
    let row: Option<TriggerRow> = sqlx::query_as(concat!(trigger_select!(), "where t.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or_else(|| Error::not_found("trigger", id))?
        .try_into()
}

async fn fetch_dead_letter(conn: &mut PgConnection, id: DeadLetterId) -> Result<DeadLetter> {
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

async fn enabled_triggers(pool: &PgPool, app: AppId, kind: &str) -> Result<Vec<Trigger>> {
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
impl AppRepo for PgStore {
    async fn create_app(&self, name: &str) -> Result<App> {
        sqlx::query_as("insert into apps (id, name) values ($1, $2) returning id, name, created_at")
            .bind(AppId::new())
            .bind(name)
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
impl ScriptRepo for PgStore {
    async fn put_script(
        &self,
        app: AppId,
        name: &str,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Script> {
        sqlx::query_as(concat!(
            "insert into scripts (id, app_id, name, wasm, sha256, size) values ($1, $2, $3, $4, $5, $6)
             on conflict (app_id, name) do update
                 set wasm = excluded.wasm, sha256 = excluded.sha256, size = excluded.size,
                     updated_at = now()
             returning ",
            script_columns!()
        ))
        .bind(ScriptId::new())
        .bind(app)
        .bind(name)
        .bind(wasm)
        .bind(sha256)
        .bind(wasm.len() as i64)
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
impl KvRepo for PgStore {
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
             where app_id = $1 and collection = $2 and ($3::text is null or key > $3)
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
        let mut tx = self.pool.begin().await?;
        let entry = kv_set_in(&mut tx, app, collection, key, value, depth).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn kv_delete(&self, app: AppId, collection: &str, key: &str, depth: i32) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let existed = kv_delete_in(&mut tx, app, collection, key, depth).await?;
        tx.commit().await?;
        Ok(existed)
    }
}

#[async_trait]
impl TriggerRepo for PgStore {
    async fn create_trigger(&self, t: &NewTrigger) -> Result<Trigger> {
        super::validate_trigger(t)?;
        let mut tx = self.pool.begin().await?;
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
        sqlx::query(
            "insert into triggers (id, app_id, script_id, kind, name, enabled, registered_by_principal)
             values ($1, $2, $3, $4, $5, true, $6)",
        )
        .bind(id)
        .bind(t.app_id)
        .bind(t.script_id)
        .bind(t.spec.kind())
        .bind(&t.name)
        .bind(&t.registered_by_principal)
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
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("update triggers set enabled = $2, updated_at = now() where id = $1")
                .bind(id)
                .bind(enabled)
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
impl OutboxRepo for PgStore {
    async fn enqueue(&self, event: &NewEvent) -> Result<EventId> {
        let mut conn = self.pool.acquire().await?;
        enqueue_in(&mut conn, event).await
    }

    async fn enqueue_many(&self, events: &[NewEvent]) -> Result<Vec<EventId>> {
        let mut tx = self.pool.begin().await?;
        let ids = enqueue_many_in(&mut tx, events).await?;
        tx.commit().await?;
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
        let mut rows: Vec<OutboxEvent> = sqlx::query_as(concat!(
            "update outbox
             set locked_until = now() + make_interval(secs => $2), locked_by = $1
             where id in (
                 select id from outbox
                 where due_at <= now() and (locked_until is null or locked_until < now())
                 order by due_at
                 limit $3
                 for update skip locked
             )
             returning ",
            outbox_columns!()
        ))
        .bind(worker)
        .bind(lease.as_secs_f64())
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
        let done = sqlx::query("delete from outbox where id = any($1)")
            .bind(uuids(ids, |i| i.0))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn reschedule(&self, retries: &[Retry]) -> Result<()> {
        if retries.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "update outbox o
             set attempt_count = r.attempt_count, first_attempt_at = r.first_attempt_at,
                 last_attempt_at = r.last_attempt_at, last_error = r.last_error, due_at = r.due_at,
                 locked_until = null, locked_by = null
             from unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[], $5::text[],
                         $6::timestamptz[])
                  as r(id, attempt_count, first_attempt_at, last_attempt_at, last_error, due_at)
             where o.id = r.id",
        )
        .bind(uuids(retries, |r| r.id.0))
        .bind(retries.iter().map(|r| r.attempt_count).collect::<Vec<_>>())
        .bind(
            retries
                .iter()
                .map(|r| r.first_attempt_at.0)
                .collect::<Vec<_>>(),
        )
        .bind(
            retries
                .iter()
                .map(|r| r.last_attempt_at.0)
                .collect::<Vec<_>>(),
        )
        .bind(
            retries
                .iter()
                .map(|r| r.last_error.clone())
                .collect::<Vec<_>>(),
        )
        .bind(retries.iter().map(|r| r.due_at.0).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fan_out(&self, raw: EventId, invocations: &[NewEvent]) -> Result<Vec<EventId>> {
        let mut tx = self.pool.begin().await?;
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
        Ok(ids)
    }

    async fn release(&self, ids: &[EventId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("update outbox set locked_until = null, locked_by = null where id = any($1)")
            .bind(uuids(ids, |i| i.0))
            .execute(&self.pool)
            .await?;
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
            sqlx::query_scalar("select count(*) from outbox where $1::uuid is null or app_id = $1")
                .bind(app)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>> {
        Ok(sqlx::query_scalar(
            "select min(greatest(due_at, coalesce(locked_until, due_at))) from outbox",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

#[async_trait]
impl DeadLetterRepo for PgStore {
    async fn dead_letter(&self, dead: &NewDeadLetter, emit_event: bool) -> Result<DeadLetter> {
        let mut tx = self.pool.begin().await?;
        let row: DeadLetterRow = sqlx::query_as(concat!(
            "insert into dead_letters (id, app_id, original_event_id, source, op, trigger_id,
                 script_id, payload, attempt_count, first_attempt_at, last_attempt_at, last_error)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
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
        Ok(dl)
    }

    async fn get_dead_letter(&self, id: DeadLetterId) -> Result<DeadLetter> {
        let mut conn = self.pool.acquire().await?;
        fetch_dead_letter(&mut conn, id).await
    }

    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut b = QueryBuilder::<Postgres>::new(concat!(
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
        let mut tx = self.pool.begin().await?;
        let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
            "update dead_letters set resolved_at = now(), resolution = $2
             where id = $1 and resolved_at is null
             returning ",
            dead_letter_columns!()
        ))
        .bind(id)
        .bind(resolution.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let current = fetch_dead_letter(&mut tx, id).await?;
            return Err(rows::already_resolved(&current));
        };
        let dl = DeadLetter::try_from(row)?;
        if resolution == Resolution::Replayed {
            let depth: Option<i32> = sqlx::query_scalar(
                "select depth from dead_letter_depths where dead_letter_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            enqueue_in(&mut tx, &super::replay_event(&dl, depth.unwrap_or(0))).await?;
        }
        tx.commit().await?;
        Ok(dl)
    }

    async fn stop_recursion(&self, event: EventId, dead_letter: DeadLetterId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("delete from outbox where id = $1")
            .bind(event)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "update dead_letters set resolved_at = now(), resolution = $2
             where id = $1 and resolved_at is null",
        )
        .bind(dead_letter)
        .bind(Resolution::HandlerFailed.as_str())
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
impl AbandonedRepo for PgStore {
    async fn record_abandoned(&self, a: &NewAbandoned) -> Result<AbandonedExecution> {
        let row: AbandonedRow = sqlx::query_as(concat!(
            "insert into abandoned_executions (id, app_id, outbox_event_id, script_id, trigger_id,
                 reply_to, outcome, detail)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
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
        .fetch_one(&self.pool)
        .await
        .map_err(rows::unknown_app_on_fk(a.app_id))?;
        row.try_into()
    }

    async fn list_abandoned(&self, app: Option<AppId>) -> Result<Vec<AbandonedExecution>> {
        let rows: Vec<AbandonedRow> = sqlx::query_as(concat!(
            "select ",
            abandoned_columns!(),
            " from abandoned_executions where $1::uuid is null or app_id = $1 order by created_at, id"
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
impl ReplyRepo for PgStore {
    async fn put_reply(&self, reply: &StoredReply) -> Result<()> {
        let mut tx = self.pool.begin().await?;
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
        sqlx::query("select pg_notify($1, $2)")
            .bind(REPLY_CHANNEL)
            .bind(&reply.inbox)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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

/// `LISTEN` on the outbox and reply channels over a dedicated connection.
struct PgSubscription {
    listener: PgListener,
}

#[async_trait]
impl Subscription for PgSubscription {
    async fn recv(&mut self) -> Result<Signal> {
        loop {
            let n = self.listener.recv().await?;
            match n.channel() {
                OUTBOX_CHANNEL => return Ok(Signal::Outbox),
                REPLY_CHANNEL => return Ok(Signal::Reply(n.payload().to_owned())),
                _ => continue,
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([OUTBOX_CHANNEL, REPLY_CHANNEL]).await?;
        Ok(Box::new(PgSubscription { listener }))
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
