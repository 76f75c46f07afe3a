//! What a backend supplies to the one implementation of the repositories
//! ([`super::shared`]): its pool, its SQL text where the two databases
//! differ, how it locks, which clock decides times, how it binds a list of
//! ids, how it picks the rows of each kind of claim, and how it tells
//! dispatchers about new work.
//!
//! Rule: a [`Dialect`] holds no decision about what a statement means,
//! when a transaction commits or which signal a change sends; those are
//! made once in `shared`. It answers only "how, on this database".

use std::future::Future;
use std::time::Duration;

use sqlx::{Database, Pool, Transaction};

use super::shared::{ClaimPlan, Claimed, FairClaims};
use super::sql::{Clock, Db, Statement};
use super::{Backend, Result, Retry, Signal, Subscription};
use crate::model::{EventId, NewEvent};
use crate::runs::NewRun;

/// A backend's store. The repository traits are implemented once for
/// every `Dialect` (in [`super::shared`]).
pub(crate) trait Dialect: Sized + Send + Sync + 'static {
    /// The sqlx database.
    type DB: Db;
    /// Which backend this is.
    const BACKEND: Backend;
    /// Where statements' current time comes from; it decides how the
    /// texts in [`Dialect::SQL`] end.
    const CLOCK: Clock;
    /// The statements whose text differs between the databases.
    const SQL: Statements;

    /// The connection pool.
    fn pool(&self) -> &Pool<Self::DB>;

    /// Which claim comes next: state the store keeps for its own claims.
    fn fair_claims(&self) -> &FairClaims;

    /// A statement on this backend's database, to bind and run with
    /// [`super::sql::Run`].
    fn query(sql: &str) -> Statement<'_, Self::DB> {
        sqlx::query(<Self::DB as Db>::qualify(sql))
    }

    /// Begin a transaction that writes. On SQLite it takes the write lock
    /// before its first read (`BEGIN IMMEDIATE`).
    fn begin_write(&self) -> impl Future<Output = Result<Transaction<'static, Self::DB>>> + Send;

    /// Tell this process's subscribers about a change that has committed
    /// (new outbox rows, a parked reply). Nothing by default: PostgreSQL's
    /// notifications travel with the commit itself.
    fn announce(&self, signal: Signal) {
        let _ = signal;
    }

    /// Inside the transaction that parks a reply for `inbox`, arrange for
    /// the inbox's owner to hear of it when the transaction commits.
    /// Nothing by default (see [`Dialect::announce`]).
    fn notify_reply_in(
        conn: &mut <Self::DB as Database>::Connection,
        inbox: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (conn, inbox);
        async { Ok(()) }
    }

    /// Hot path: insert `events` into the outbox under `ids` (one per
    /// event, in order) on the caller's connection or transaction. Both
    /// backends use the shared multi-row insert, whose only difference is
    /// [`Dialect::CLOCK`]; a backend overrides this to tune its own.
    fn insert_events(
        conn: &mut <Self::DB as Database>::Connection,
        events: &[NewEvent],
        ids: &[EventId],
    ) -> impl Future<Output = Result<()>> + Send {
        super::shared::insert_events::<Self>(conn, events, ids)
    }

    /// Hot path: delete the outbox rows `done` (finished; there may be none),
    /// record their `runs` (there may be none), and lease up to `limit` (at
    /// least 1) due rows, picked as `plan` says (see
    /// [`super::OutboxRepo::complete_and_claim`] for what a failure leaves),
    /// to `worker` for `lease`, in one round trip, and return
    /// the leased rows in any order (and, for a fair claim, where its walk
    /// of the apps ended). The rows being deleted are leased, so they are
    /// never the ones claimed.
    fn claim(
        &self,
        done: &[EventId],
        runs: &[NewRun],
        worker: &str,
        limit: u32,
        lease: Duration,
        plan: ClaimPlan,
    ) -> impl Future<Output = Result<Claimed>> + Send;

    /// Hot path: delete the outbox rows `ids` and record `runs` (not both
    /// empty), atomically. How many rows went.
    fn delete_rows(
        &self,
        ids: &[EventId],
        runs: &[NewRun],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Hot path: record failed attempts and their `runs` (not both empty)
    /// and release the rows' leases, atomically.
    fn write_retries(
        &self,
        retries: &[Retry],
        runs: &[NewRun],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Clear the leases of the outbox rows `ids` (not empty).
    fn unlock_rows(&self, ids: &[EventId]) -> impl Future<Output = Result<()>> + Send;

    /// Start a subscription to [`Signal`]s.
    fn listen(&self) -> impl Future<Output = Result<Box<dyn Subscription>>> + Send;

    /// Start a subscription to [`Signal::Runs`] from every process, where
    /// the database can send one; `None` by default (poll).
    fn listen_runs(&self) -> impl Future<Output = Result<Option<Box<dyn Subscription>>>> + Send {
        async { Ok(None) }
    }

    /// Apply this backend's embedded migrations.
    fn apply_migrations(&self) -> impl Future<Output = Result<()>> + Send;

    /// Close every pool the store opened.
    fn close_pools(&self) -> impl Future<Output = ()> + Send {
        self.pool().close()
    }
}

/// SQL text that differs between the databases, for the statements that
/// [`super::shared`] runs. Where [`Dialect::CLOCK`] is [`Clock::Process`]
/// each text that records a time takes it as its last parameter, after
/// the ones listed; otherwise it says `now()`.
pub(crate) struct Statements {
    /// Insert an app. Binds id, name. Returns `id, name, created_at`.
    pub create_app: &'static str,
    /// Insert or replace a script's code by `(app_id, name)`. Binds id,
    /// app_id, name, wasm, sha256, size. Returns the script columns.
    pub put_script: &'static str,
    /// Insert an enabled trigger. Binds id, app_id, script_id, kind, name,
    /// registered_by_principal.
    pub insert_trigger: &'static str,
    /// Enable or disable a trigger and touch it. Binds id, enabled.
    pub set_trigger_enabled: &'static str,
    /// Insert a KV entry at version 1 or bump an existing one. Binds
    /// app_id, collection, key, value. Returns the KV columns.
    pub kv_upsert: &'static str,
    /// Read a KV entry inside a write transaction, locking it against other
    /// writers to the end of the transaction where the database locks rows.
    /// Binds app_id, collection, key. Returns the entry columns.
    pub kv_get_for_update: &'static str,
    /// Insert a KV entry at version 1 only if it does not exist; no row
    /// returned when it does. Binds app_id, collection, key, value.
    /// Returns the entry columns.
    pub kv_insert_new: &'static str,
    /// Update a KV entry's value and version only if it is at a version; no
    /// row returned otherwise. Binds app_id, collection, key, value,
    /// version. Returns the entry columns.
    pub kv_update_if_version: &'static str,
    /// Keys of a collection after a key (null: from the start), in order.
    /// Binds app_id, collection, after, limit.
    pub kv_list_keys: &'static str,
    /// Count outbox rows of an app (null: all apps). Binds app_id.
    pub count_events: &'static str,
    /// The earliest time a row becomes claimable: its due time, or its
    /// lease's expiry when that is later.
    pub next_due_at: &'static str,
    /// Make due every parked row that no earlier row of its key holds back
    /// (see [`super::OutboxRepo::release_parked`]). Binds the parked time.
    pub release_parked: &'static str,
    /// What follows the check that parks an ordered trigger's row (see
    /// `shared::park_heads`): on PostgreSQL ` for share skip locked`, so a
    /// row that another transaction is settling right now does not park
    /// the new row behind it, and a row found cannot go until this commits
    /// (its delete then sees the parked row, and releases it); on SQLite
    /// nothing (one writer at a time).
    pub park_check_lock: &'static str,
    /// Insert a dead letter. Binds id, app_id, original_event_id, source,
    /// op, trigger_id, script_id, payload, attempt_count,
    /// first_attempt_at, last_attempt_at, last_error. Returns the
    /// dead-letter columns.
    pub insert_dead_letter: &'static str,
    /// Resolve a dead letter if it is unresolved. Binds id, resolution.
    /// Returns the dead-letter columns.
    pub resolve_dead_letter_returning: &'static str,
    /// Resolve a dead letter if it is unresolved, returning nothing.
    /// Binds id, resolution.
    pub resolve_dead_letter: &'static str,
    /// Record an abandoned execution. Binds id, app_id, outbox_event_id,
    /// script_id, trigger_id, reply_to, outcome, detail. Returns the
    /// abandoned-execution columns.
    pub insert_abandoned: &'static str,
    /// An expression over a `dead_letters` row: the bytes of its payload (as
    /// JSON text) and its last error.
    pub dead_letter_bytes: &'static str,
    /// Abandoned executions of an app (null: all apps), oldest first.
    /// Binds app_id.
    pub list_abandoned: &'static str,
    /// A run by its id alone: runs are keyed by (app_id, id), so one probe
    /// per app, the apps' ids read in the form the runs table keeps them.
    /// Binds id. Returns the run columns.
    pub get_run: &'static str,
    /// Reclaim the outbox's dead rows ([`super::Store::vacuum_outbox`]);
    /// empty where the backend needs nothing.
    pub vacuum_outbox: &'static str,
}
