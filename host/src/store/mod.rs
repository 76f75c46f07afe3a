//! Storage: the repository traits and the backend chosen by URL.
//!
//! Rule: the two backends (`sqlite`, `postgres`) implement the same traits
//! with the same behaviour, proven by one contract test suite run against
//! both. Everything that is not SQL (validation, event payloads, the shape
//! of a dead letter's event) lives here or in [`crate::model`], once; a
//! backend only says how to store it. A change and the outbox event that
//! describes it always commit in one transaction.
//!
//! **Unchecked.** The repositories trust their caller: nothing here asks
//! whether a principal may do what is asked. Code acting for a principal
//! goes through [`crate::admin::Admin`] and [`crate::TriggerHost`], which
//! check first; the repositories are for the host itself, tests, and an
//! embedding application acting as itself.
//!
//! Layout: the traits are implemented once, in `shared`, for every
//! backend's `Dialect` (`dialect`): the SQL text that differs, locking,
//! the clock, id lists, notifications and the hot-path statements. `sql`
//! names, in one trait, what that generic code needs from sqlx; `rows`
//! holds the row structs both databases decode into.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::auth::Role;
use crate::model::{
    AbandonedExecution, App, AppId, Cause, DeadLetter, DeadLetterFilter, DeadLetterId, EventId,
    KvEntry, KvOp, NewDeadLetter, NewEvent, NewTrigger, OutboxEvent, Outcome, Resolution, RunId,
    Script, ScriptId, Timestamp, TokenId, Trigger, TriggerId, TriggerSpec, source,
};
use crate::pattern;
pub use crate::pattern::collection_matches;
use crate::runs::{NewRun, Run, RunFilter};
use crate::tokens::ApiToken;

mod dialect;
mod error;
mod migrate;
pub mod postgres;
mod rows;
pub mod schema;
mod shared;
mod sql;
pub mod sqlite;
mod url;

pub use error::{Error, Result};
pub use url::{DatabaseUrl, redact};

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, single dispatcher process.
    Sqlite,
    /// Shared by several dispatcher processes.
    Postgres,
}

/// A member of an app.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct Member {
    /// The app.
    pub app_id: AppId,
    /// Who.
    pub principal: String,
    /// With which role.
    pub role: Role,
}

/// Apps and their members.
#[async_trait]
pub trait AppRepo: Send + Sync {
    /// Create an app; its name must be unused.
    async fn create_app(&self, name: &str) -> Result<App>;
    /// An app by id.
    async fn get_app(&self, id: AppId) -> Result<App>;
    /// An app by name, or by id written as text.
    async fn find_app(&self, name_or_id: &str) -> Result<App>;
    /// All apps, by name.
    async fn list_apps(&self) -> Result<Vec<App>>;
    /// Add a member or change their role.
    async fn set_member(&self, app: AppId, principal: &str, role: Role) -> Result<()>;
    /// Remove a member; whether they were one.
    async fn remove_member(&self, app: AppId, principal: &str) -> Result<bool>;
    /// A principal's role in an app, if any. The built-in authorizer's query.
    async fn member_role(&self, app: AppId, principal: &str) -> Result<Option<Role>>;
    /// An app's members, by principal.
    async fn list_members(&self, app: AppId) -> Result<Vec<Member>>;
}

/// Deployed scripts.
#[async_trait]
pub trait ScriptRepo: Send + Sync {
    /// Store a script's code under `name`, replacing the code of an existing
    /// script of that name (its id stays). `sha256` is the hex digest of `wasm`.
    /// `deployed_by` is the principal the deploy was made for (`None`: the
    /// operator or the embedding application itself); scripts then act with
    /// no more rights than it has (see [`crate::auth`]).
    async fn put_script(
        &self,
        app: AppId,
        name: &str,
        wasm: &[u8],
        sha256: &str,
        deployed_by: Option<&str>,
    ) -> Result<Script>;
    /// A script's metadata by id.
    async fn get_script(&self, id: ScriptId) -> Result<Script>;
    /// A script of `app` by name, or by id written as text.
    async fn find_script(&self, app: AppId, name_or_id: &str) -> Result<Script>;
    /// A script's metadata and code.
    async fn script_code(&self, id: ScriptId) -> Result<(Script, Vec<u8>)>;
    /// An app's scripts, by name.
    async fn list_scripts(&self, app: AppId) -> Result<Vec<Script>>;
    /// Remove a script and (by cascade) its triggers; whether it existed.
    async fn remove_script(&self, app: AppId, id: ScriptId) -> Result<bool>;
}

/// The per-app key-value store. Writes enqueue their `kv` event in the same
/// transaction.
#[async_trait]
pub trait KvRepo: Send + Sync {
    /// Read one entry.
    async fn kv_get(&self, app: AppId, collection: &str, key: &str) -> Result<Option<KvEntry>>;
    /// Keys of a collection in ascending order after `after`, at most `limit`.
    async fn kv_list_keys(
        &self,
        app: AppId,
        collection: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// Write an entry and enqueue its `kv`/`set` event at `depth`, atomically.
    async fn kv_set(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        value: &Value,
        depth: i32,
    ) -> Result<KvEntry> {
        self.kv_write(app, collection, key, KvWrite::Set(value), &Cause::at(depth))
            .await
            .map(KvWritten::entry)
    }
    /// Delete an entry and, if it existed, enqueue its `kv`/`delete` event at
    /// `depth`, atomically. Whether it existed.
    async fn kv_delete(&self, app: AppId, collection: &str, key: &str, depth: i32) -> Result<bool> {
        self.kv_write(app, collection, key, KvWrite::Delete, &Cause::at(depth))
            .await
            .map(KvWritten::deleted)
    }
    /// [`KvRepo::kv_set`], only if the entry is at version `expected` (0: only
    /// if it does not exist); otherwise [`Error::VersionConflict`] and nothing
    /// is written.
    async fn kv_set_if_version(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        value: &Value,
        expected: u64,
        depth: i32,
    ) -> Result<KvEntry> {
        let write = KvWrite::SetIfVersion(value, expected);
        self.kv_write(app, collection, key, write, &Cause::at(depth))
            .await
            .map(KvWritten::entry)
    }
    /// [`KvRepo::kv_delete`], only if the entry is at version `expected` (0:
    /// only if it does not exist, deleting nothing); otherwise
    /// [`Error::VersionConflict`]. Whether an entry went.
    async fn kv_delete_if_version(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        expected: u64,
        depth: i32,
    ) -> Result<bool> {
        let write = KvWrite::DeleteIfVersion(expected);
        self.kv_write(app, collection, key, write, &Cause::at(depth))
            .await
            .map(KvWritten::deleted)
    }
    /// Add `delta` to an entry holding an integer (an absent entry counts as
    /// 0) and enqueue its `kv`/`set` event, atomically. A value that is not
    /// an integer, or a sum out of the `i64` range, is [`Error::Invalid`].
    async fn kv_increment(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        delta: i64,
        depth: i32,
    ) -> Result<KvEntry> {
        self.kv_write(
            app,
            collection,
            key,
            KvWrite::Increment(delta),
            &Cause::at(depth),
        )
        .await
        .map(KvWritten::entry)
    }
    /// Any of the writes above, its event caused as `cause` says (a
    /// script's write: one level deeper than its event, with the chain of
    /// triggers that led to it).
    async fn kv_write(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        write: KvWrite<'_>,
        cause: &Cause,
    ) -> Result<KvWritten>;
}

/// A KV write ([`KvRepo::kv_write`]).
#[derive(Clone, Copy, Debug)]
pub enum KvWrite<'a> {
    /// Set the value.
    Set(&'a Value),
    /// Delete the key.
    Delete,
    /// Set the value if the key is at this version (0: absent).
    SetIfVersion(&'a Value, u64),
    /// Delete the key if it is at this version (0: absent).
    DeleteIfVersion(u64),
    /// Add to the integer value.
    Increment(i64),
}

/// What a [`KvWrite`] did.
#[derive(Clone, Debug)]
pub enum KvWritten {
    /// The entry as written.
    Entry(KvEntry),
    /// Whether a key was deleted.
    Deleted(bool),
}

impl KvWritten {
    /// The entry a set or an increment wrote.
    pub fn entry(self) -> KvEntry {
        match self {
            KvWritten::Entry(e) => e,
            KvWritten::Deleted(_) => unreachable!("a delete answers whether it deleted"),
        }
    }

    /// Whether a delete deleted.
    pub fn deleted(self) -> bool {
        match self {
            KvWritten::Deleted(d) => d,
            KvWritten::Entry(_) => unreachable!("a set answers its entry"),
        }
    }
}

/// Triggers, and the dispatch-time matching queries.
#[async_trait]
pub trait TriggerRepo: Send + Sync {
    /// Register a trigger. The pattern is validated ([`validate_trigger`]) and
    /// the script must belong to the trigger's app.
    async fn create_trigger(&self, trigger: &NewTrigger) -> Result<Trigger>;
    /// A trigger by id.
    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger>;
    /// An app's triggers, oldest first.
    async fn list_triggers(&self, app: AppId) -> Result<Vec<Trigger>>;
    /// Enable or disable a trigger. Enabling it makes its held rows (see
    /// [`OutboxRepo::hold`]) due now, in the same transaction.
    async fn set_trigger_enabled(&self, id: TriggerId, enabled: bool) -> Result<Trigger>;
    /// Remove a trigger (its details go by cascade); whether it existed.
    async fn delete_trigger(&self, id: TriggerId) -> Result<bool>;
    /// Enabled kv triggers of `app` whose pattern matches `collection` and whose
    /// ops include `op`.
    async fn list_matching_kv(
        &self,
        app: AppId,
        collection: &str,
        op: KvOp,
    ) -> Result<Vec<Trigger>>;
    /// Enabled triggers of `app` of `kind` for `name`: `dead_letter`
    /// triggers whose pattern matches a dead letter's original source,
    /// `pubsub` triggers whose pattern matches a topic, the `queue`
    /// trigger of a queue.
    async fn list_matching(&self, app: AppId, kind: &str, name: &str) -> Result<Vec<Trigger>>;
    /// Turn the due ticks of enabled cron triggers into `cron`/`tick`
    /// invocation rows, each tick once however many dispatchers call this
    /// at once (see [`crate::cron`]). Returns how many rows it enqueued.
    async fn schedule_cron(&self) -> Result<u64>;
}

/// An attempt that failed and will be tried again.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// The outbox row.
    pub id: EventId,
    /// Attempts made, including the one that just failed.
    pub attempt_count: i32,
    /// The first attempt's time.
    pub first_attempt_at: Timestamp,
    /// The failed attempt's time.
    pub last_attempt_at: Timestamp,
    /// Why it failed.
    pub last_error: String,
    /// When to try again.
    pub due_at: Timestamp,
}

/// The outbox: events waiting to be dispatched.
#[async_trait]
pub trait OutboxRepo: Send + Sync {
    /// Write one event.
    async fn enqueue(&self, event: &NewEvent) -> Result<EventId>;
    /// Write many events in one transaction.
    async fn enqueue_many(&self, events: &[NewEvent]) -> Result<Vec<EventId>>;
    /// Lease up to `limit` due rows (due, and unlocked or with an expired
    /// lease) to `worker` for `lease`, in one statement, and return them.
    /// Concurrent claimers never receive the same row while its lease holds.
    /// Claims are fair across apps (SPEC section 14): after a claim that came
    /// back full, the next takes each app's oldest rows in turn, so one app's
    /// backlog holds another app's event back by one claim at most; the rows
    /// come back in turns too (every app's oldest first).
    async fn claim_due(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>>;
    /// Delete finished rows (batched completion) and record their `runs`,
    /// atomically. Returns how many rows went.
    async fn complete(&self, ids: &[EventId], runs: &[NewRun]) -> Result<u64>;
    /// [`OutboxRepo::complete`] `done` with their `runs`, and
    /// [`OutboxRepo::claim_due`], in one round trip: one write transaction
    /// on SQLite; on PostgreSQL two statements sent at once on two
    /// connections, worked on in parallel. The dispatcher's steady state.
    /// Returns the claimed rows. If it fails, the completion may or may not
    /// have happened (completing again is harmless: a deleted row stays
    /// deleted and a recorded run is not recorded twice), and no row stays
    /// claimed unless giving the claim back failed too (its rows then run
    /// after their lease).
    async fn complete_and_claim(
        &self,
        done: &[EventId],
        runs: &[NewRun],
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>>;
    /// Record failed attempts and their `runs`, and release the rows'
    /// leases until `due_at`, atomically.
    async fn reschedule(&self, retries: &[Retry], runs: &[NewRun]) -> Result<()>;
    /// Replace raw events by per-trigger invocation rows and record the
    /// raw events' `runs`, atomically: the rows `raws` go, `invocations`
    /// come (ids in their order). Each row gets its own id; the rows carry
    /// their raw event's id as their `event_id` (set by the caller), which
    /// is what scripts see.
    async fn fan_out(
        &self,
        raws: &[EventId],
        invocations: &[NewEvent],
        runs: &[NewRun],
    ) -> Result<Vec<EventId>>;
    /// Make due every parked row that nothing holds back any more (see
    /// `TriggerSpec::Kv::ordered`). Deleting an ordered trigger's row makes
    /// the next of its key and trigger due (a trigger in the database);
    /// this is the safety net for what that cannot see, such as a raw row
    /// that went without a row for a trigger removed meanwhile. Reads every
    /// parked row; the dispatcher runs it when idle and every 10 s. How
    /// many rows became due.
    async fn release_parked(&self) -> Result<u64>;
    /// Give leases back without recording an attempt (graceful shutdown).
    async fn release(&self, ids: &[EventId]) -> Result<()>;
    /// Hold the leased rows `ids` (retries and replays of a disabled
    /// trigger): release them at [`Timestamp::held`], never due, until
    /// [`TriggerRepo::set_trigger_enabled`] enables their trigger again.
    async fn hold(&self, ids: &[EventId]) -> Result<()>;
    /// One row, if it is still there.
    async fn get_event(&self, id: EventId) -> Result<Option<OutboxEvent>>;
    /// How many rows are waiting (all apps when `app` is `None`).
    async fn count_events(&self, app: Option<AppId>) -> Result<i64>;
    /// The earliest `due_at` among unleased rows (or leased rows' expiry).
    async fn next_due_at(&self) -> Result<Option<Timestamp>>;
}

/// Dead letters.
#[async_trait]
pub trait DeadLetterRepo: Send + Sync {
    /// In one transaction: record the dead letter, delete its outbox row
    /// (`original_event_id`), record the `runs` of its last attempt, and,
    /// when `emit_event`, enqueue the `dead_letter`/`created` event one
    /// level deeper ([`dead_letter_event`]).
    async fn dead_letter(
        &self,
        dead: &NewDeadLetter,
        emit_event: bool,
        runs: &[NewRun],
    ) -> Result<DeadLetter>;
    /// A dead letter by id.
    async fn get_dead_letter(&self, id: DeadLetterId) -> Result<DeadLetter>;
    /// Dead letters matching the filter, oldest first.
    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;
    /// [`DeadLetterRepo::list_dead_letters`], paged by bytes as well: the
    /// oldest matching dead letters that begin within `max_bytes` of
    /// payload and error text (so at least one, if any match and
    /// `max_bytes` is not 0; at most one dead letter past the budget). The
    /// database adds the sizes up, so what is past the page never reaches
    /// the host's memory.
    async fn list_dead_letters_within(
        &self,
        filter: &DeadLetterFilter,
        max_bytes: u64,
    ) -> Result<Vec<DeadLetter>>;
    /// Unresolved dead letters of an app (the dashboard badge).
    async fn unresolved_count(&self, app: AppId) -> Result<i64>;
    /// How many dead letters `filter` lists, its limit aside.
    async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64>;
    /// Settle a dead letter. `Replayed` enqueues the original event for the
    /// same trigger and script (attempt 0, same payload, same depth) in the
    /// same transaction. An already-resolved one is
    /// [`Error::AlreadyResolved`] and nothing changes.
    async fn resolve(&self, id: DeadLetterId, resolution: Resolution) -> Result<DeadLetter>;
    /// [`DeadLetterRepo::resolve`] by a script running an event at `depth`:
    /// a replay is an event the script caused, so it is enqueued at
    /// `depth + 1` (SPEC 14), and the depth limit ends a handler that
    /// replays what it is handling. An operator's replay keeps the depth.
    async fn resolve_from_script(
        &self,
        id: DeadLetterId,
        resolution: Resolution,
        depth: i32,
    ) -> Result<DeadLetter>;
    /// The recursion stop, in one transaction: delete the outbox row of a
    /// failed dead-letter handler, record the `runs` of its last attempt,
    /// and resolve its dead letter `handler_failed` if it is still
    /// unresolved.
    async fn stop_recursion(
        &self,
        event: EventId,
        dead_letter: DeadLetterId,
        runs: &[NewRun],
    ) -> Result<()>;
    /// Delete dead letters created before `before`. Returns how many.
    async fn gc_dead_letters(&self, before: Timestamp) -> Result<u64>;
}

/// Run records ([`crate::runs`]). The dispatcher writes them with its
/// events' outcomes (the `runs` arguments of [`OutboxRepo`] and
/// [`DeadLetterRepo`]); these read them and age them out. Reading checks
/// nothing: the facade's callers check `AppLogs` first.
#[async_trait]
pub trait RunRepo: Send + Sync {
    /// The runs matching `filter`, newest first (oldest first when
    /// `filter.oldest_first`).
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>>;
    /// One run.
    async fn get_run(&self, id: RunId) -> Result<Run>;
    /// A dead letter's history: every run of its original event by its
    /// trigger (or, without one, its script), oldest first.
    async fn dead_letter_runs(&self, id: DeadLetterId) -> Result<Vec<Run>>;
    /// Delete runs recorded before `before`, and each app's runs beyond its
    /// newest `keep_per_app`, in chunks (a long delete would hold SQLite's
    /// write lock against the dispatcher). How many went.
    async fn gc_runs(&self, before: Timestamp, keep_per_app: u64) -> Result<u64>;
}

/// A synchronous invocation that finished after its caller had gone.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAbandoned {
    /// The app.
    pub app_id: AppId,
    /// The outbox row that ran.
    pub outbox_event_id: EventId,
    /// The script that ran.
    pub script_id: ScriptId,
    /// The trigger, if any.
    pub trigger_id: Option<TriggerId>,
    /// The inbox nobody was listening on.
    pub reply_to: String,
    /// Whether the script succeeded.
    pub outcome: Outcome,
    /// Reply size or error text.
    pub detail: String,
}

/// Abandoned synchronous executions.
#[async_trait]
pub trait AbandonedRepo: Send + Sync {
    /// Record one.
    async fn record_abandoned(&self, abandoned: &NewAbandoned) -> Result<AbandonedExecution>;
    /// Those of an app (all apps when `None`), oldest first.
    async fn list_abandoned(&self, app: Option<AppId>) -> Result<Vec<AbandonedExecution>>;
    /// Delete those created before `before`. Returns how many.
    async fn gc_abandoned(&self, before: Timestamp) -> Result<u64>;
}

/// API tokens ([`crate::tokens`]): only the SHA-256 of a token's secret
/// is stored.
#[async_trait]
pub trait TokenRepo: Send + Sync {
    /// Store a new token of `principal` named `name` whose secret hashes to
    /// `secret_sha256` (hex).
    async fn create_token(
        &self,
        principal: &str,
        name: &str,
        secret_sha256: &str,
    ) -> Result<ApiToken>;
    /// The tokens of `principal` (every principal's when `None`), oldest
    /// first, revoked ones included.
    async fn list_tokens(&self, principal: Option<&str>) -> Result<Vec<ApiToken>>;
    /// Revoke a token; revoking it again keeps the first revocation time.
    /// [`Error::NotFound`] for an unknown id.
    async fn revoke_token(&self, id: TokenId) -> Result<ApiToken>;
    /// The token whose secret hashes to `secret_sha256`, revoked or not.
    async fn find_token(&self, secret_sha256: &str) -> Result<Option<ApiToken>>;
}

/// One of an app's variables as stored: a variable's UTF-8 text, or a
/// secret's sealed bytes ([`crate::secrets`]).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredVar {
    /// The variable's name.
    pub name: String,
    /// Whether it is a secret (its value sealed).
    pub secret: bool,
    /// The text, or the sealed bytes.
    pub value: Vec<u8>,
    /// When it was last set.
    pub updated_at: Timestamp,
}

/// What scripts read and where they may reach: an app's variables and
/// secrets ([`crate::secrets`]) and its allowed outbound hosts
/// ([`crate::outbound`]). The store keeps them; it neither seals nor parses.
#[async_trait]
pub trait ConfigRepo: Send + Sync {
    /// Create or replace variable `name` of `app`.
    async fn put_var(&self, app: AppId, name: &str, secret: bool, value: &[u8]) -> Result<()>;
    /// One variable, if the app has it.
    async fn get_var(&self, app: AppId, name: &str) -> Result<Option<StoredVar>>;
    /// Every variable of the app, by name.
    async fn list_vars(&self, app: AppId) -> Result<Vec<StoredVar>>;
    /// Remove a variable; whether it existed.
    async fn remove_var(&self, app: AppId, name: &str) -> Result<bool>;
    /// Add an allowed host pattern (canonical text); whether it was new.
    async fn allow_host(&self, app: AppId, pattern: &str) -> Result<bool>;
    /// Remove an allowed host pattern; whether it was there.
    async fn deny_host(&self, app: AppId, pattern: &str) -> Result<bool>;
    /// The app's allowed host patterns, in order.
    async fn list_hosts(&self, app: AppId) -> Result<Vec<String>>;
}

/// Longest variable name.
pub const MAX_VAR_NAME: usize = 128;
/// Largest variable or secret value, in bytes.
pub const MAX_VAR_VALUE: usize = 64 * 1024;

/// A variable's name: 1 to [`MAX_VAR_NAME`] letters, digits, `_`, `-` or `.`.
pub fn validate_var_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_VAR_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(Error::Invalid(format!(
            "variable name '{}' is not 1 to {MAX_VAR_NAME} letters, digits, '_', '-' or '.'",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// A variable's value: at most [`MAX_VAR_VALUE`] bytes.
pub fn validate_var_value(len: usize) -> Result<()> {
    if len > MAX_VAR_VALUE {
        return Err(Error::Invalid(format!(
            "value of {len} bytes exceeds the variable limit of {MAX_VAR_VALUE} bytes"
        )));
    }
    Ok(())
}

/// A whole store: every repository, on one backend.
#[async_trait]
pub trait Store:
    AppRepo
    + ScriptRepo
    + KvRepo
    + TriggerRepo
    + OutboxRepo
    + DeadLetterRepo
    + AbandonedRepo
    + ReplyRepo
    + RunRepo
    + TokenRepo
    + ConfigRepo
{
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Listen for [`Signal`]s: on PostgreSQL `LISTEN picloud_outbox` (sent by
    /// a statement trigger on outbox inserts, so an embedder's own inserts
    /// wake dispatchers too) and `LISTEN picloud_reply` (payload: the inbox);
    /// on SQLite an in-process broadcast fired after every commit that
    /// enqueues. Several subscriptions may be live at once.
    async fn subscribe(&self) -> Result<Box<dyn Subscription>>;
    /// Listen for new run records from every process: on PostgreSQL
    /// `LISTEN picloud_runs` (sent by a statement trigger on run inserts).
    /// `None` where no other process can signal (SQLite): poll instead.
    async fn subscribe_runs(&self) -> Result<Option<Box<dyn Subscription>>>;
    /// Wake this process's dispatchers: outbox rows were committed on a
    /// connection the store does not watch (the embedding application's).
    /// On SQLite only the store's own commits wake them, and any other
    /// commit is found at the next poll; this makes it start now. On
    /// PostgreSQL it does nothing: a statement trigger on the outbox
    /// notifies with every commit, whoever made it.
    fn wake(&self);
    /// Apply the host's embedded migrations; applying them twice is
    /// harmless. The host keeps its own bookkeeping, never sqlx's
    /// `_sqlx_migrations`: an application's own migrations and these run
    /// in either order. On PostgreSQL the tables live in their own schema
    /// ([`schema::schema`], `picloud` by default), and a database made
    /// before that rule (tables in `public`) is moved there. All pending
    /// migrations commit together or not at all, and a failure leaves no
    /// lock behind: calling `migrate` again is always safe.
    async fn migrate(&self) -> Result<()>;
    /// Reclaim the outbox's dead rows where the backend keeps them: on
    /// PostgreSQL `VACUUM (ANALYZE)` of the outbox, whose every row is
    /// deleted soon after it is written, so that claims do not wade through
    /// dead versions when autovacuum is off or behind; on SQLite nothing
    /// (deleted rows' pages are reused). Garbage collection calls it.
    async fn vacuum_outbox(&self) -> Result<()>;
    /// Close the pool.
    async fn close(&self);
}

/// Open the store named by `url` (`sqlite://...` or `postgres://...`).
/// Does not migrate; call [`Store::migrate`]. On PostgreSQL a
/// `PICLOUD_PG_SCHEMA` that is not a usable schema name is an error here.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    let parsed = DatabaseUrl::parse(url)?;
    match parsed.backend {
        Backend::Sqlite => Ok(Arc::new(sqlite::SqliteStore::connect(&parsed).await?)),
        Backend::Postgres => {
            schema::schema_from_env()?;
            Ok(Arc::new(postgres::PgStore::connect(&parsed).await?))
        }
    }
}

/// A connection, or an open transaction, of the embedding application on
/// either backend: what the host's `*_in` calls write on, so that their rows
/// commit with the application's own or not at all. Made from
/// `&mut *tx` (a `sqlx::Transaction`) or a `&mut` connection.
///
/// On SQLite, begin writing transactions with `BEGIN IMMEDIATE`
/// (`pool.begin_with("BEGIN IMMEDIATE")`): a transaction that reads before
/// it writes can otherwise fail with `SQLITE_BUSY` when it upgrades to
/// writing while another connection writes.
pub enum Conn<'c> {
    /// A PostgreSQL connection or transaction.
    Postgres(&'c mut sqlx::PgConnection),
    /// A SQLite connection or transaction.
    Sqlite(&'c mut sqlx::SqliteConnection),
}

impl<'c> From<&'c mut sqlx::PgConnection> for Conn<'c> {
    fn from(conn: &'c mut sqlx::PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

impl<'c> From<&'c mut sqlx::SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut sqlx::SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

impl Conn<'_> {
    /// Write `event` to the outbox on this connection (see
    /// [`validate_event`] for what is refused).
    pub async fn enqueue(self, event: &NewEvent) -> Result<EventId> {
        match self {
            Conn::Postgres(conn) => postgres::enqueue_in(conn, event).await,
            Conn::Sqlite(conn) => sqlite::enqueue_in(conn, event).await,
        }
    }
}

/// Check a trigger before it is stored: its pattern, schedule, queue name
/// and retry policy must be valid.
pub fn validate_trigger(trigger: &NewTrigger) -> Result<()> {
    match &trigger.spec {
        TriggerSpec::Kv { collection, .. } => pattern::validate(collection)?,
        TriggerSpec::DeadLetter { source } => pattern::validate(source)?,
        TriggerSpec::Pubsub { topic } => pattern::validate(topic)?,
        TriggerSpec::Cron {
            schedule, timezone, ..
        } => {
            crate::cron::Schedule::parse(schedule, timezone).map_err(Error::Invalid)?;
        }
        TriggerSpec::Queue { queue, batch } => {
            crate::messages::validate_name("queue", queue)?;
            if !(1..=1000).contains(batch) {
                return Err(Error::Invalid(format!(
                    "--batch {batch} is out of range: give 1 to 1000"
                )));
            }
        }
    }
    if trigger.max_depth == Some(0) {
        return Err(Error::Invalid(
            "--max-depth 0 would stop every event: give 1 or more (a write from a script is one level deeper)"
                .into(),
        ));
    }
    trigger.retry.validate().map_err(Error::Invalid)
}

/// Largest accepted collection or key, in bytes.
pub const MAX_KV_NAME_BYTES: usize = 512;
/// Largest accepted KV value, in bytes of JSON text.
pub const MAX_KV_VALUE_BYTES: usize = 1024 * 1024;

/// Check the size of a KV value's JSON text (`len` bytes).
pub fn validate_kv_value_len(len: usize) -> Result<()> {
    if len > MAX_KV_VALUE_BYTES {
        return Err(Error::Invalid(format!(
            "value of {len} bytes is over the limit of {MAX_KV_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Check a KV collection and key before they reach the database.
pub fn validate_kv_names(collection: &str, key: &str) -> Result<()> {
    for (what, v) in [("collection", collection), ("key", key)] {
        if v.is_empty() {
            return Err(Error::Invalid(format!(
                "empty {what}: give a non-empty name"
            )));
        }
        if v.len() > MAX_KV_NAME_BYTES {
            return Err(Error::Invalid(format!(
                "{what} of {} bytes is over the limit of {MAX_KV_NAME_BYTES} bytes",
                v.len()
            )));
        }
        validate_printable(what, v)?;
    }
    Ok(())
}

/// Refuse a name with a control character (NUL, line breaks, escapes...).
/// Both databases then agree: PostgreSQL cannot store a NUL in text at all,
/// and SQLite would store it; and a name never breaks a log line or a table.
pub fn validate_printable(what: &str, v: &str) -> Result<()> {
    match v.char_indices().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(Error::Invalid(format!(
            "{what} has a control character (U+{:04X}) at byte {at}: use printable text",
            c as u32
        ))),
    }
}

/// Deepest nesting of arrays and objects accepted in any JSON value that
/// enters the host (a KV value, an event or invocation payload). Well
/// below what the JSON decoder accepts (128), so the envelopes the host
/// wraps around a value (a kv event, a dead-letter event, a dead letter's
/// replay) always decode again.
pub const MAX_JSON_DEPTH: usize = 64;

/// The nesting depth of `value`: 0 for a scalar, 1 for `[]` or `{}`.
/// Iterative, so an absurdly deep value costs no stack.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, depth + 1))),
            _ => continue,
        }
        deepest = deepest.max(depth + 1);
    }
    deepest
}

/// Refuse a JSON value nested deeper than [`MAX_JSON_DEPTH`].
pub fn validate_json_depth(what: &str, value: &Value) -> Result<()> {
    let depth = json_depth(value);
    if depth > MAX_JSON_DEPTH {
        return Err(Error::Invalid(format!(
            "{what} is nested {depth} deep, over the limit of {MAX_JSON_DEPTH}: flatten it"
        )));
    }
    Ok(())
}

/// Check an event written from outside the host (an embedder's
/// `enqueue_in`, an invocation): printable names and a payload no deeper
/// than [`MAX_JSON_DEPTH`]. Events the host derives from one (a kv write's
/// event, a dead letter's) wrap it a level or two deeper, which is why the
/// bound sits well below the decoder's.
///
/// It must also be an event something will run, never one the dispatcher
/// would drop unseen:
/// - a row of one trigger (`trigger_id`, a replay) names its script too;
/// - a direct run of a script (`script_id` without a trigger) names the
///   principal it runs as;
/// - any other event is matched against triggers, so its source must be
///   one a trigger kind serves ([`SERVED_SOURCES`]): `kv` with op `set` or
///   `delete` and a `collection`, `dead_letter` with a `source`, `queue`
///   with a `queue`, `pubsub` with a `topic` (see [`crate::messages`]).
pub fn validate_event(event: &NewEvent) -> Result<()> {
    validate_printable("source", &event.source)?;
    validate_printable("op", &event.op)?;
    if let Some(p) = &event.principal {
        validate_printable("principal", p)?;
    }
    validate_json_depth("payload", &event.payload)?;
    validate_served(event)
}

/// The sources a trigger kind serves: what a raw event (one matched
/// against triggers) may carry.
pub const SERVED_SOURCES: [&str; 4] = [
    source::KV,
    source::DEAD_LETTER,
    source::QUEUE,
    source::PUBSUB,
];

/// See [`validate_event`]: the event reaches a script.
fn validate_served(event: &NewEvent) -> Result<()> {
    if event.trigger_id.is_some() {
        if event.script_id.is_none() {
            return Err(Error::Invalid(
                "an event for one trigger must name its script too: replay the dead letter \
                 instead of writing the row by hand"
                    .into(),
            ));
        }
        return Ok(());
    }
    if event.script_id.is_some() {
        if event.principal.is_none() {
            return Err(Error::Invalid(
                "a direct run of a script needs the principal it runs as: build it with \
                 NewEvent::invocation"
                    .into(),
            ));
        }
        return Ok(());
    }
    let field = |name: &str| event.payload.get(name).and_then(Value::as_str).is_some();
    match event.source.as_str() {
        source::KV => {
            if event.op.parse::<KvOp>().is_err() {
                return Err(Error::Invalid(format!(
                    "a kv event's op must be set or delete, not {:?}: nothing would run it",
                    event.op
                )));
            }
            if !field("collection") {
                return Err(Error::Invalid(
                    "a kv event's payload needs a \"collection\" string: kv triggers match on it"
                        .into(),
                ));
            }
        }
        source::DEAD_LETTER => {
            if !field("source") {
                return Err(Error::Invalid(
                    "a dead_letter event's payload needs a \"source\" string: dead-letter \
                     triggers match on it"
                        .into(),
                ));
            }
        }
        source::QUEUE | source::PUBSUB => {
            let (name, kind) = match event.source.as_str() {
                source::QUEUE => ("queue", "queue triggers consume"),
                _ => ("topic", "pubsub triggers match on"),
            };
            if !field(name) {
                return Err(Error::Invalid(format!(
                    "a {} event's payload needs a \"{name}\" string: {kind} it; build it with \
                     picloud_host::messages",
                    event.source
                )));
            }
        }
        other => {
            return Err(Error::Invalid(format!(
                "no trigger kind serves source {other:?} (served: {}): the event would never \
                 run; to run a script directly, use enqueue_invocation_in",
                SERVED_SOURCES.join(", ")
            )));
        }
    }
    Ok(())
}

/// The `kv` event a write causes. Its payload carries the collection, the
/// key, the new value (`null` on delete) and the new version.
pub fn kv_event(
    app: AppId,
    op: KvOp,
    collection: &str,
    key: &str,
    value: Option<&Value>,
    version: i64,
    depth: i32,
) -> NewEvent {
    let payload = json!({
        "collection": collection,
        "key": key,
        "value": value.cloned().unwrap_or(Value::Null),
        "version": version,
    });
    NewEvent::raw(app, source::KV, op.as_str(), payload).at_depth(depth)
}

/// The `dead_letter`/`created` event for a new dead letter, one level deeper
/// than the event that failed. Its payload carries the dead letter's id, the
/// original source, op, trigger, script, attempt count, last error and payload.
pub fn dead_letter_event(id: DeadLetterId, dead: &NewDeadLetter) -> NewEvent {
    let payload = json!({
        "dead_letter_id": id,
        "source": dead.source,
        "op": dead.op,
        "trigger_id": dead.trigger_id,
        "script_id": dead.script_id,
        "attempt_count": dead.attempt_count,
        "last_error": dead.last_error,
        "payload": dead.payload,
    });
    NewEvent::raw(dead.app_id, source::DEAD_LETTER, "created", payload).at_depth(dead.depth + 1)
}

/// The invocation row that replays a dead letter: same trigger, script,
/// payload and depth, no attempts yet. `principal` is what a direct run of
/// a script (no trigger) ran as; a trigger's run runs as its trigger's.
pub fn replay_event(dead: &DeadLetter, depth: i32, principal: Option<&str>) -> NewEvent {
    NewEvent {
        trigger_id: dead.trigger_id,
        script_id: dead.script_id,
        principal: principal
            .filter(|_| dead.trigger_id.is_none())
            .map(str::to_owned),
        ..NewEvent::raw(dead.app_id, &dead.source, &dead.op, dead.payload.clone())
    }
    .at_depth(depth)
}

/// Something a dispatcher may want to wake up for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// New rows were written to the outbox.
    Outbox,
    /// A reply was stored for this inbox (another process ran the invocation).
    Reply(String),
    /// New run records were committed ([`Store::subscribe_runs`]).
    Runs,
}

/// A live subscription to [`Signal`]s.
#[async_trait]
pub trait Subscription: Send {
    /// The next signal. An error means the subscription broke; the caller
    /// falls back to polling and subscribes again.
    async fn recv(&mut self) -> Result<Signal>;
}

/// The reply of a synchronous invocation, parked for the process that owns
/// the inbox (PostgreSQL: it may be another process).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredReply {
    /// The inbox (`_INBOX.<uuid>`).
    pub inbox: String,
    /// The app.
    pub app_id: AppId,
    /// The outbox row that ran.
    pub outbox_event_id: EventId,
    /// The script that ran.
    pub script_id: ScriptId,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// The reply body (success) or the error text (failure).
    pub body: Vec<u8>,
    /// When it was stored.
    pub created_at: Timestamp,
}

/// Parked replies of synchronous invocations, in the `invocation_replies`
/// table (inbox text primary key, app_id, outbox_event_id, script_id,
/// outcome `ok|error`, body bytes, created_at indexed for the stale sweep).
#[async_trait]
pub trait ReplyRepo: Send + Sync {
    /// Park a reply, delete the outbox row it answers, record its `runs`,
    /// and signal the inbox, in one transaction.
    async fn put_reply(&self, reply: &StoredReply, runs: &[NewRun]) -> Result<()>;
    /// Take (and delete) the reply for an inbox, if it is there.
    async fn take_reply(&self, inbox: &str) -> Result<Option<StoredReply>>;
    /// Take (and delete) replies stored before `before`: nobody came for them.
    async fn take_stale_replies(&self, before: Timestamp) -> Result<Vec<StoredReply>>;
}
