//! The one implementation of the repository traits, for both backends.
//!
//! Rule: every repository method is written here once, generic over the
//! backend's [`Dialect`]; a backend file holds only what truly differs
//! (SQL text that is not the same on both, locking, the clock, binding a
//! list of ids, notifications, and the hot-path statements of the claim,
//! completion, retries and release, kept there whole so they can be tuned
//! per database). A change and the outbox event that describes it commit
//! in one transaction, begun with [`Dialect::begin_write`]; subscribers
//! hear of new work through [`Dialect::announce`] only after that commit.
//!
//! Claims are fair across apps (SPEC section 14): which kind of claim comes
//! next, where the walk of the apps resumes, and the order in which the
//! claimed rows start are decided here ([`FairClaims`], [`round_robin`]);
//! a backend only says how its database picks the rows of each kind.
//!
//! Design: the traits are implemented for every `S: Dialect` (blanket
//! impls), so `PgStore` and `SqliteStore` stay plain structs with their own
//! constructors, and no method is forwarded twice. SQL text that is the
//! same on both databases stands here, next to the code that runs it;
//! statements run through [`Run`], whose bounds are implied by
//! [`super::sql::Db`], so no signature here carries a `where` clause.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Database;
use sqlx::types::Json;

use super::dialect::Dialect;
use super::rows::{
    self, AbandonedRow, CHUNK, DeadLetterRow, Details, KvRow, MemberRow, ReplyRow, RunRow,
    ScriptCodeRow, TriggerRow, dead_letter_columns, outbox_columns, reply_columns, run_columns,
    script_columns, trigger_select,
};
use super::sql::{Built, Compact, Db, Run, Runs, Tuple};
use super::{
    AbandonedRepo, AppRepo, Backend, ConfigRepo, DeadLetterRepo, Error, KvRepo, KvWrite, KvWritten,
    Member, NewAbandoned, OutboxRepo, ReplyRepo, Result, Retry, RunRepo, ScriptRepo, Signal, Store,
    StoredReply, StoredVar, Subscription, TokenRepo, TriggerRepo,
};
use crate::auth::Role;
use crate::model::{
    AbandonedExecution, AbandonedId, App, AppId, Cause, DeadLetter, DeadLetterFilter, DeadLetterId,
    EventId, KvEntry, KvOp, NewDeadLetter, NewEvent, NewTrigger, Order, OutboxEvent, Resolution,
    RunId, Script, ScriptId, Timestamp, TokenId, Trigger, TriggerId, TriggerSpec,
};
use crate::runs::{self, NewRun, RunFilter};
use crate::tokens::ApiToken;

/// A connection of the backend `S`.
type Conn<S> = <<S as Dialect>::DB as Database>::Connection;

/// Most apps one fair claim serves (and never more than its limit, so that
/// each app it serves gets a row): each gets at least `limit / FAIR_APPS`
/// rows (4 of the dispatcher's 256), and with more apps waiting the claims
/// take them in turns of this many.
pub(crate) const FAIR_APPS: i64 = 64;

/// How many apps a fair claim of `limit` rows serves at most.
pub(crate) fn fair_apps(limit: u32) -> i64 {
    FAIR_APPS.min(i64::from(limit))
}

/// Most apps one fair claim walks past (one index probe each for the next
/// app, one for its oldest row) looking for [`FAIR_APPS`] with a row due:
/// apps whose rows all wait for later (retries in backoff) are stepped over
/// at a bounded cost, and the next claim goes on from there.
pub(crate) const FAIR_WALK: i64 = 128;

/// Which rows a claim takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimPlan {
    /// The oldest due rows, whatever their app: the cheapest claim, and a
    /// fair one while every due row fits in it.
    Oldest,
    /// Apps in turn: walk the apps that have rows in the outbox in id order
    /// after `after` (wrapping round to the first), at most [`FAIR_WALK`]
    /// of them; take the first [`fair_apps`] that have a row due; if more
    /// than one, lease each one's oldest due rows round-robin, each at most
    /// `ceil(limit / apps)`; then, if the limit is not reached, the oldest
    /// due rows left, whatever their app (apps with fewer rows than their
    /// share leave it to the others).
    Fair {
        /// Where the previous fair claim's walk ended (nil: the start).
        after: AppId,
    },
}

/// What a claim leased.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// The leased rows, in any order.
    pub rows: Vec<OutboxEvent>,
    /// After a fair claim: where the next one resumes its walk of the apps
    /// (the last app it served if it served [`fair_apps`], else the last it
    /// walked past). `None` when the claim does not say (a plain claim; on
    /// PostgreSQL, where it comes with the rows, one that leased nothing):
    /// the walk then resumes where it did last time.
    pub next_app: Option<AppId>,
}

/// Which claim comes next, kept by each store for its own claims.
///
/// A claim that came back with fewer rows than its limit leased every due,
/// unleased row there was, whatever its app: fair by construction, so the
/// next claim may be the cheap [`ClaimPlan::Oldest`]. A claim that came back
/// full may have left a backlog, in which one app's rows would hold back
/// every other app's, so the next one is [`ClaimPlan::Fair`]. A new store
/// does not know, and starts fair. An app's event therefore waits at most
/// one claim behind another app's backlog: the one that found the backlog.
#[derive(Debug)]
pub(crate) struct FairClaims(Mutex<FairState>);

#[derive(Debug)]
struct FairState {
    /// Whether the last claim came back full.
    backlog: bool,
    /// Where the next fair claim resumes its walk of the apps.
    cursor: AppId,
}

impl Default for FairClaims {
    fn default() -> Self {
        FairClaims(Mutex::new(FairState {
            backlog: true,
            cursor: AppId(uuid::Uuid::nil()),
        }))
    }
}

impl FairClaims {
    fn state(&self) -> std::sync::MutexGuard<'_, FairState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan of the next claim.
    pub(crate) fn plan(&self) -> ClaimPlan {
        let state = self.state();
        if state.backlog {
            ClaimPlan::Fair {
                after: state.cursor,
            }
        } else {
            ClaimPlan::Oldest
        }
    }

    /// Learn from a claim of at most `limit` rows.
    pub(crate) fn settle(&self, limit: u32, claimed: &Claimed) {
        let mut state = self.state();
        state.backlog = claimed.rows.len() as u64 >= u64::from(limit);
        if let Some(next) = claimed.next_app {
            state.cursor = next;
        }
    }
}

/// The apps a fair claim of `limit` rows serves, and where the next walk
/// resumes, from the apps it walked past (in walk order, each with whether
/// it has a row due): the first [`fair_apps`] with a row due; the next walk
/// resumes after the last of them if there were that many, else after the
/// last app walked. (PostgreSQL's claim makes the same choice in its one
/// statement.)
pub(crate) fn serve(
    walked: impl IntoIterator<Item = (AppId, bool)>,
    limit: u32,
) -> (Vec<AppId>, Option<AppId>) {
    let most = fair_apps(limit);
    let mut served = Vec::new();
    let mut last = None;
    for (app, due) in walked {
        last = Some(app);
        if due {
            served.push(app);
            if served.len() as i64 >= most {
                break;
            }
        }
    }
    (served, last)
}

/// Order claimed rows so that apps take turns to start: every app's oldest
/// row, then every app's second oldest, and so on; within a turn, oldest
/// first. The dispatcher starts rows in the order it receives them, so one
/// app's share of a claim does not queue another app's row behind it. With
/// one app this is due order.
pub(crate) fn round_robin(rows: &mut Vec<OutboxEvent>) {
    rows.sort_by_key(|r| (r.due_at, r.created_at));
    let mut turns: HashMap<AppId, u32> = HashMap::new();
    let mut keyed: Vec<(u32, OutboxEvent)> = rows
        .drain(..)
        .map(|row| {
            let turn = turns.entry(row.app_id).or_default();
            *turn += 1;
            (*turn, row)
        })
        .collect();
    // Stable: rows of one turn keep their due order.
    keyed.sort_by_key(|(turn, _)| *turn);
    rows.extend(keyed.into_iter().map(|(_, row)| row));
}

/// Write one event to the outbox on the caller's connection or open
/// transaction (see the backends' public `enqueue_in`).
pub(crate) async fn enqueue_in<S: Dialect>(
    conn: &mut Conn<S>,
    event: &NewEvent,
) -> Result<EventId> {
    Ok(enqueue_many_in::<S>(conn, std::slice::from_ref(event)).await?[0])
}

/// Write events to the outbox on the caller's connection or transaction.
/// The ids come back in the order of `events`.
pub(crate) async fn enqueue_many_in<S: Dialect>(
    conn: &mut Conn<S>,
    events: &[NewEvent],
) -> Result<Vec<EventId>> {
    let ids: Vec<EventId> = events.iter().map(|_| EventId::new()).collect();
    S::insert_events(conn, events, &ids).await?;
    Ok(ids)
}

/// The hot path of every enqueue and fan-out ([`Dialect::insert_events`]):
/// insert `events` under `ids` (one per event, in order), [`CHUNK`] rows
/// per statement. A row's `due_at` defaults to now and its `created_at` is
/// now, by the backend's [`Dialect::CLOCK`]: `now()` on PostgreSQL, one
/// time bound for the whole batch on SQLite.
pub(crate) async fn insert_events<S: Dialect>(
    conn: &mut Conn<S>,
    events: &[NewEvent],
    ids: &[EventId],
) -> Result<()> {
    let now = Timestamp::now();
    let ordered = ordered_apps::<S>(conn, events).await?;
    let heads = batch_heads(events);
    let chains: Vec<Option<String>> = events
        .iter()
        .map(|e| (!e.chain.is_empty()).then(|| Value::from(e.chain.clone()).to_string()))
        .collect();
    for (n, (chunk, chunk_ids)) in events.chunks(CHUNK).zip(ids.chunks(CHUNK)).enumerate() {
        let mut q = Built::<S::DB>::new(
            "insert into outbox (id, event_id, app_id, source, op, trigger_id, script_id, principal, \
             payload, depth, attempt_count, first_attempt_at, last_attempt_at, last_error, \
             due_at, reply_to, created_at, order_key, order_seq, chain) ",
        );
        q.push_values(
            chunk.iter().zip(chunk_ids).enumerate(),
            |row, (i, (e, id))| {
                row.bind(*id)
                    .bind(e.event_id.unwrap_or(*id))
                    .bind(e.app_id)
                    .bind(e.source.as_str())
                    .bind(e.op.as_str())
                    .bind(e.trigger_id)
                    .bind(e.script_id)
                    .bind(e.principal.as_deref())
                    .bind(Json(&e.payload))
                    .bind(e.depth)
                    .bind(e.attempt_count)
                    .bind(e.first_attempt_at)
                    .bind(e.last_attempt_at)
                    .bind(e.last_error.as_deref());
                // An ordered trigger's row behind another of its key and
                // trigger in this statement is parked; the first is checked
                // below.
                if matches!(e.order, Order::Fixed(..)) && !heads.contains(&(n * CHUNK + i)) {
                    row.bind(Timestamp::parked());
                } else {
                    row.bind_or_now(e.due_at, S::CLOCK, now);
                }
                row.bind(e.reply_to.as_deref()).now(S::CLOCK, now);
                order_values(row, e, &ordered);
                row.bind(chains[n * CHUNK + i].as_deref());
            },
        );
        let (sql, arguments) = q.finish()?;
        <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
            .run(&mut *conn)
            .await
            .map_err(rows::unknown_app_on_fk(chunk[0].app_id))?;
    }
    let mut heads: Vec<EventId> = heads.into_iter().map(|i| ids[i]).collect();
    heads.sort_unstable_by_key(|id| id.0);
    park_heads::<S>(conn, &heads).await
}

/// Park the ordered trigger rows `heads` (just inserted, each the first of
/// its key and trigger in its statement) that have a row of their key
/// before them: a raw row not yet fanned out, or their trigger's row (see
/// `TriggerSpec::Kv::ordered`). This is the claim's `order_gate`, asked
/// once here, so that claims never look at the rows waiting behind a key.
/// When an ordered trigger's row is deleted, the database makes the next
/// parked row of its key and trigger due (the `outbox_release_next`
/// trigger, migration `0008_ordered_release` on PostgreSQL and
/// `0009_ordered_release` on SQLite). On PostgreSQL a row ahead that
/// another transaction holds (it is being settled right now) is passed
/// over (`Statements::park_check_lock`): a row left due wrongly is only
/// held back by the gate, but one parked wrongly would wait for a sweep.
async fn park_heads<S: Dialect>(conn: &mut Conn<S>, heads: &[EventId]) -> Result<()> {
    for chunk in heads.chunks(CHUNK) {
        let mut q = Built::<S::DB>::new("update outbox as o set due_at = ");
        q.bind(Timestamp::parked())
            .push(" where o.id in (")
            .bind_list(chunk.iter().copied())
            .push(
                ") and exists (select 1 from outbox p where p.app_id = o.app_id \
                 and p.order_key = o.order_key \
                 and (p.trigger_id is null or p.trigger_id = o.trigger_id) \
                 and p.order_seq <= o.order_seq \
                 and (p.order_seq < o.order_seq or p.event_id < o.event_id)",
            )
            .push(S::SQL.park_check_lock)
            .push(")");
        let (sql, arguments) = q.finish()?;
        <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
            .run(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The indexes of `events`' ordered trigger rows ([`Order::Fixed`]) that
/// come first of their (app, key, trigger) among `events`: only those may
/// be due at once; the others wait behind them.
fn batch_heads(events: &[NewEvent]) -> HashSet<usize> {
    // Per (app, key, trigger): the place (number, event id) of its first
    // row, and that row's index.
    type Place = (i64, Option<EventId>);
    let mut first: HashMap<(AppId, &str, Option<TriggerId>), (Place, usize)> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let Order::Fixed(key, seq) = &e.order else {
            continue;
        };
        let place = (*seq, e.event_id);
        let head = first
            .entry((e.app_id, key.as_str(), e.trigger_id))
            .or_insert((place, i));
        if place < head.0 {
            *head = (place, i);
        }
    }
    first.into_values().map(|(_, i)| i).collect()
}

/// Of the apps of `events`' raw kv rows, those with an ordered kv trigger:
/// one indexed query, and none at all when no row is a raw kv row.
async fn ordered_apps<S: Dialect>(conn: &mut Conn<S>, events: &[NewEvent]) -> Result<Vec<AppId>> {
    let mut apps: Vec<AppId> = events
        .iter()
        .filter(|e| matches!(e.order, Order::Raw(_)))
        .map(|e| e.app_id)
        .collect();
    apps.sort_unstable_by_key(|a| a.0);
    apps.dedup();
    let mut ordered = Vec::new();
    for chunk in apps.chunks(CHUNK) {
        let mut q = Built::<S::DB>::new(
            "select distinct t.app_id from triggers t \
             join kv_trigger_details k on k.trigger_id = t.id \
             where t.kind = 'kv' and k.ordered and t.app_id in (",
        );
        q.bind_list(chunk.iter().copied()).push(")");
        let (sql, arguments) = q.finish()?;
        let rows: Vec<(AppId,)> =
            <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
                .all(&mut *conn)
                .await?;
        ordered.extend(rows.into_iter().map(|(app,)| app));
    }
    Ok(ordered)
}

/// The `order_key` and `order_seq` values of `e` (see [`Order`] and
/// migration 0007/0008). A raw kv event is keyed only when its app is one
/// of `ordered` (apps with an ordered trigger), and numbered one more than
/// the highest number of its key in the outbox. A kv write has locked its
/// entry by the time it enqueues, so writes of one key are numbered in the
/// order they commit; rows of one statement that share a key share a
/// number and keep their event ids' order.
fn order_values<'q, DB: Db>(row: &mut Tuple<'_, 'q, DB>, e: &'q NewEvent, ordered: &[AppId]) {
    match &e.order {
        Order::Raw(key) if ordered.contains(&e.app_id) => {
            row.bind(Some(key.as_str()));
            row.expr()
                .push("(select coalesce(max(s.order_seq), 0) + 1 from outbox s where s.app_id = ")
                .bind(e.app_id)
                .push(" and s.order_key = ")
                .bind(key.as_str())
                .push(")");
        }
        Order::Fixed(key, seq) => {
            row.bind(Some(key.as_str())).bind(Some(*seq));
        }
        Order::None | Order::Raw(_) => {
            row.bind(None::<&str>).bind(None::<i64>);
        }
    }
}

/// Record `runs` on the caller's transaction, stamped `recorded_at` now by
/// the backend's [`Dialect::CLOCK`]. A run already recorded (a commit
/// retried after its first try did land) is skipped. Nothing when there
/// are none.
///
/// Multi-row inserts of a power of two rows each (at most 128): a batch of
/// any size takes a few statements whose texts repeat, so they are parsed
/// once and then found in the connection's statement cache. (A statement
/// per batch size made SQLite parse a new 2,000-parameter statement for
/// most batches.)
const RUN_CHUNK: usize = 128;

pub(crate) async fn insert_runs_in<S: Dialect>(conn: &mut Conn<S>, runs: &[NewRun]) -> Result<()> {
    let now = Timestamp::now();
    let mut rest = runs;
    while !rest.is_empty() {
        let n = 1usize << rest.len().min(RUN_CHUNK).ilog2();
        let (chunk, after) = rest.split_at(n);
        rest = after;
        let mut q = Built::<S::DB>::new(
            "insert into runs (id, app_id, trigger_id, script_id, event_id, source, op, attempt, \
             principal, started_at, duration_us, outcome, limit_name, error, reply_bytes, logs, \
             recorded_at) ",
        );
        q.push_values(chunk, |row, r| {
            row.bind(Compact(r.id))
                .bind(Compact(r.app_id))
                .bind(r.trigger_id.map(Compact))
                .bind(r.script_id.map(Compact))
                .bind(Compact(r.event_id))
                .bind(r.source.as_str())
                .bind(r.op.as_str())
                .bind(r.attempt)
                .bind(r.principal.as_str())
                .bind(Compact(r.started_at))
                .bind(r.duration_us)
                .bind(r.outcome.as_str())
                .bind(r.limit.as_deref())
                .bind(r.error.as_deref())
                .bind(r.reply_bytes)
                .bind((!r.logs.is_empty()).then_some(Json(r.logs.as_slice())))
                .now_compact(S::CLOCK, now);
        });
        q.push(" on conflict (app_id, id) do nothing");
        let (sql, arguments) = q.finish()?;
        <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
            .run(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Which version a KV write expects the entry to be at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KvExpect {
    /// Whatever it is: the plain write.
    Any,
    /// Exactly this version; 0 means absent.
    Version(u64),
}

/// How many times `kv_increment_in` reads and writes again when another
/// writer got in between. The read locks an existing entry, so only the
/// first insert of a key can race (on PostgreSQL; SQLite's write lock keeps
/// others out of the transaction): two tries suffice, the rest is margin.
const INCREMENT_TRIES: usize = 8;

/// Write a KV entry (version + 1) and enqueue its `kv`/`set` event at
/// `depth` on the caller's connection or open transaction, if the entry is
/// at the version `expect` names; else [`Error::VersionConflict`] and
/// nothing written.
pub(crate) async fn kv_set_in<S: Dialect>(
    conn: &mut Conn<S>,
    app: AppId,
    collection: &str,
    key: &str,
    value: &Value,
    expect: KvExpect,
    cause: &Cause,
) -> Result<KvEntry> {
    super::validate_kv_names(collection, key)?;
    // Embedders call this directly: the limits hold here too. Depth first:
    // it is checked without recursion, and makes the size check safe.
    super::validate_json_depth("value", value)?;
    super::validate_kv_value_len(value.to_string().len())?;
    let row: Option<KvRow> = match expect {
        // Insert (or, for the plain write, update): an unknown app is named.
        KvExpect::Any | KvExpect::Version(0) => S::query(match expect {
            KvExpect::Any => S::SQL.kv_upsert,
            _ => S::SQL.kv_insert_new,
        })
        .arg(app)
        .arg(collection)
        .arg(key)
        .arg(Json(value))
        .now(S::CLOCK)
        .optional(&mut *conn)
        .await
        .map_err(rows::unknown_app_on_fk(app))?,
        KvExpect::Version(expected) => match i64::try_from(expected) {
            Ok(expected) => {
                S::query(S::SQL.kv_update_if_version)
                    .arg(app)
                    .arg(collection)
                    .arg(key)
                    .arg(Json(value))
                    .arg(expected)
                    .now(S::CLOCK)
                    .optional(&mut *conn)
                    .await?
            }
            Err(_) => None,
        },
    };
    let Some(row) = row else {
        return Err(version_conflict::<S>(conn, app, collection, key, expect).await);
    };
    let entry = KvEntry::from(row);
    let event = super::kv_event(
        app,
        KvOp::Set,
        collection,
        key,
        Some(value),
        entry.version,
        cause.depth,
    )
    .caused_by(cause);
    enqueue_in::<S>(conn, &event).await?;
    Ok(entry)
}

/// The [`Error::VersionConflict`] of a write that expected `expect`, with the
/// version the entry is at now (or the database error that stopped the
/// look).
async fn version_conflict<S: Dialect>(
    conn: &mut Conn<S>,
    app: AppId,
    collection: &str,
    key: &str,
    expect: KvExpect,
) -> Error {
    let expected = match expect {
        KvExpect::Version(v) => v,
        KvExpect::Any => 0,
    };
    match kv_version_in::<S>(conn, app, collection, key).await {
        Ok(found) => Error::VersionConflict {
            collection: collection.to_owned(),
            key: key.to_owned(),
            expected,
            found,
        },
        Err(e) => e,
    }
}

/// The version a KV entry is at; 0 when it does not exist.
async fn kv_version_in<S: Dialect>(
    conn: &mut Conn<S>,
    app: AppId,
    collection: &str,
    key: &str,
) -> Result<u64> {
    let version: Option<(i64,)> = S::query(
        "select version from kv_entries where app_id = $1 and collection = $2 and key = $3",
    )
    .arg(app)
    .arg(collection)
    .arg(key)
    .optional(&mut *conn)
    .await?;
    Ok(version.map_or(0, |(v,)| v as u64))
}

/// Delete a KV entry and, if it existed, enqueue its `kv`/`delete` event at
/// `depth` on the caller's connection or open transaction, if the entry is
/// at the version `expect` names (0: absent, so nothing goes); else
/// [`Error::VersionConflict`]. Whether an entry went.
pub(crate) async fn kv_delete_in<S: Dialect>(
    conn: &mut Conn<S>,
    app: AppId,
    collection: &str,
    key: &str,
    expect: KvExpect,
    cause: &Cause,
) -> Result<bool> {
    super::validate_kv_names(collection, key)?;
    let version: Option<(i64,)> = match expect {
        KvExpect::Any => {
            S::query(
                "delete from kv_entries where app_id = $1 and collection = $2 and key = $3 \
                 returning version",
            )
            .arg(app)
            .arg(collection)
            .arg(key)
            .optional(&mut *conn)
            .await?
        }
        KvExpect::Version(0) => match kv_version_in::<S>(conn, app, collection, key).await? {
            0 => return Ok(false),
            _ => return Err(version_conflict::<S>(conn, app, collection, key, expect).await),
        },
        KvExpect::Version(expected) => match i64::try_from(expected) {
            Ok(expected) => {
                S::query(
                    "delete from kv_entries \
                     where app_id = $1 and collection = $2 and key = $3 and version = $4 \
                     returning version",
                )
                .arg(app)
                .arg(collection)
                .arg(key)
                .arg(expected)
                .optional(&mut *conn)
                .await?
            }
            Err(_) => None,
        },
    };
    let Some((version,)) = version else {
        return match expect {
            KvExpect::Any => Ok(false),
            KvExpect::Version(_) => {
                Err(version_conflict::<S>(conn, app, collection, key, expect).await)
            }
        };
    };
    let event = super::kv_event(
        app,
        KvOp::Delete,
        collection,
        key,
        None,
        version + 1,
        cause.depth,
    )
    .caused_by(cause);
    enqueue_in::<S>(conn, &event).await?;
    Ok(true)
}

/// Add `delta` to the integer a KV entry holds (absent: 0) and enqueue its
/// `kv`/`set` event, on the caller's open transaction: a read that locks the
/// entry, and a write conditioned on the version read. Only a key that two
/// writers create at once makes it read again (PostgreSQL's read committed:
/// the next statement sees the other's commit).
pub(crate) async fn kv_increment_in<S: Dialect>(
    conn: &mut Conn<S>,
    app: AppId,
    collection: &str,
    key: &str,
    delta: i64,
    cause: &Cause,
) -> Result<KvEntry> {
    super::validate_kv_names(collection, key)?;
    for _ in 0..INCREMENT_TRIES {
        let current: Option<KvRow> = S::query(S::SQL.kv_get_for_update)
            .arg(app)
            .arg(collection)
            .arg(key)
            .optional(&mut *conn)
            .await?;
        let (base, expected) = match current.map(KvEntry::from) {
            None => (0, 0),
            Some(entry) => {
                let Some(base) = entry.value.as_i64() else {
                    return Err(Error::Invalid(format!(
                        "{collection}/{key} holds {}, not an integer: increment only integers, \
                         or set the key first",
                        entry.value
                    )));
                };
                (base, entry.version as u64)
            }
        };
        let Some(sum) = base.checked_add(delta) else {
            return Err(Error::Invalid(format!(
                "{collection}/{key}: {base} + {delta} is outside the signed 64-bit range"
            )));
        };
        let value = Value::from(sum);
        match kv_set_in::<S>(
            conn,
            app,
            collection,
            key,
            &value,
            KvExpect::Version(expected),
            cause,
        )
        .await
        {
            Err(Error::VersionConflict { .. }) => continue,
            written => return written,
        }
    }
    Err(Error::Conflict(format!(
        "{collection}/{key} changed {INCREMENT_TRIES} times during one increment: try again"
    )))
}

/// The public functions of a backend that write on the caller's connection
/// or transaction, for the store type `$store` and its connection `$conn`.
macro_rules! connection_functions {
    ($store:ty, $conn:ty) => {
        /// Write one event to the outbox on the caller's connection or open
        /// transaction: the change it describes commits with it or not at all.
        ///
        /// On SQLite, begin the transaction with `BEGIN IMMEDIATE` (the
        /// database is in WAL mode; a transaction that reads first and
        /// writes later can fail with `SQLITE_BUSY`), and after the commit
        /// call `TriggerHost::notify` so that the dispatcher starts now
        /// rather than at its next poll. On PostgreSQL the commit notifies.
        pub async fn enqueue_in(conn: &mut $conn, event: &NewEvent) -> Result<EventId> {
            super::validate_event(event)?;
            super::shared::enqueue_in::<$store>(conn, event).await
        }

        /// Write events to the outbox on the caller's connection or
        /// transaction, in multi-row inserts. The ids come back in the order
        /// of `events`.
        /// SQLite: `BEGIN IMMEDIATE` and `notify` as for `enqueue_in`.
        pub async fn enqueue_many_in(
            conn: &mut $conn,
            events: &[NewEvent],
        ) -> Result<Vec<EventId>> {
            events.iter().try_for_each(super::validate_event)?;
            super::shared::enqueue_many_in::<$store>(conn, events).await
        }

        /// Write a KV entry (version + 1) and enqueue its `kv`/`set` event at
        /// `depth` on the caller's connection or open transaction.
        /// SQLite: `BEGIN IMMEDIATE` and `notify` as for `enqueue_in`.
        pub async fn kv_set_in(
            conn: &mut $conn,
            app: AppId,
            collection: &str,
            key: &str,
            value: &serde_json::Value,
            depth: i32,
        ) -> Result<KvEntry> {
            super::shared::kv_set_in::<$store>(
                conn,
                app,
                collection,
                key,
                value,
                super::shared::KvExpect::Any,
                &crate::model::Cause::at(depth),
            )
            .await
        }

        /// Delete a KV entry and, if it existed, enqueue its `kv`/`delete`
        /// event at `depth` on the caller's connection or open transaction.
        /// Whether it existed.
        /// SQLite: `BEGIN IMMEDIATE` and `notify` as for `enqueue_in`.
        pub async fn kv_delete_in(
            conn: &mut $conn,
            app: AppId,
            collection: &str,
            key: &str,
            depth: i32,
        ) -> Result<bool> {
            super::shared::kv_delete_in::<$store>(
                conn,
                app,
                collection,
                key,
                super::shared::KvExpect::Any,
                &crate::model::Cause::at(depth),
            )
            .await
        }
    };
}
pub(crate) use connection_functions;

async fn fetch_trigger<S: Dialect>(conn: &mut Conn<S>, id: TriggerId) -> Result<Trigger> {
    let row: Option<TriggerRow> = S::query(concat!(trigger_select!(), "where t.id = $1"))
        .arg(id)
        .optional(conn)
        .await?;
    row.ok_or_else(|| Error::not_found("trigger", id))?
        .try_into()
}

async fn fetch_dead_letter<S: Dialect>(conn: &mut Conn<S>, id: DeadLetterId) -> Result<DeadLetter> {
    let row: Option<DeadLetterRow> = S::query(concat!(
        "select ",
        dead_letter_columns!(),
        " from dead_letters where id = $1"
    ))
    .arg(id)
    .optional(conn)
    .await?;
    row.ok_or_else(|| Error::not_found("dead letter", id))?
        .try_into()
}

async fn enabled_triggers<S: Dialect>(store: &S, app: AppId, kind: &str) -> Result<Vec<Trigger>> {
    let mut conn = store.pool().acquire().await?;
    let rows: Vec<TriggerRow> = S::query(concat!(
        trigger_select!(),
        "where t.app_id = $1 and t.kind = $2 and t.enabled order by t.created_at, t.id"
    ))
    .arg(app)
    .arg(kind)
    .all(&mut conn)
    .await?;
    rows::triggers(rows)
}

/// The `select` of a dead-letter listing: the filter's conditions, oldest
/// first, and its limit.
fn dead_letter_listing<DB: Db>(f: &DeadLetterFilter) -> Built<'_, DB> {
    let mut q = Built::new(concat!(
        "select ",
        dead_letter_columns!(),
        " from dead_letters where true"
    ));
    filter_dead_letters(&mut q, f);
    q
}

/// Append `f`'s conditions, order and limit to a `... where true`.
fn filter_dead_letters<'q, DB: Db>(q: &mut Built<'q, DB>, f: &'q DeadLetterFilter) {
    if let Some(app) = f.app_id {
        q.push(" and app_id = ").bind(app);
    }
    if f.unresolved_only {
        q.push(" and resolved_at is null");
    }
    if let Some(source) = &f.source {
        q.push(" and source = ").bind(source.as_str());
    }
    if let Some(trigger) = f.trigger_id {
        q.push(" and trigger_id = ").bind(trigger);
    }
    if let Some(after) = f.created_after {
        q.push(" and created_at >= ").bind(after);
    }
    if let Some(before) = f.created_before {
        q.push(" and created_at < ").bind(before);
    }
    let (cmp, order) = match f.newest_first {
        false => (" > ", " order by created_at, id"),
        true => (" < ", " order by created_at desc, id desc"),
    };
    if let Some(after) = f.after {
        q.push(" and (created_at, id)")
            .push(cmp)
            .push("(select created_at, id from dead_letters where id = ")
            .bind(after)
            .push(")");
    }
    q.push(order);
    if let Some(limit) = f.limit {
        q.push(" limit ").bind(i64::from(limit));
    }
}

/// Resolve a dead letter; a replay is enqueued at `replay_depth`, or at
/// the original event's depth when that is `None` (an operator's replay).
async fn resolve_at<S: Dialect>(
    store: &S,
    id: DeadLetterId,
    resolution: Resolution,
    replay_depth: Option<i32>,
) -> Result<DeadLetter> {
    let mut tx = store.begin_write().await?;
    let row: Option<DeadLetterRow> = S::query(S::SQL.resolve_dead_letter_returning)
        .arg(id)
        .arg(resolution.as_str())
        .now(S::CLOCK)
        .optional(&mut tx)
        .await?;
    let Some(row) = row else {
        let current = fetch_dead_letter::<S>(&mut tx, id).await?;
        return Err(rows::already_resolved(&current));
    };
    let dl = DeadLetter::try_from(row)?;
    let replayed = resolution == Resolution::Replayed;
    if replayed {
        let kept: Option<(i32, Option<String>)> =
            S::query("select depth, principal from dead_letter_depths where dead_letter_id = $1")
                .arg(id)
                .optional(&mut tx)
                .await?;
        let (depth, principal) = kept.unwrap_or((0, None));
        let depth = replay_depth.unwrap_or(depth);
        let event = super::replay_event(&dl, depth, principal.as_deref());
        enqueue_in::<S>(&mut tx, &event).await?;
    }
    tx.commit().await?;
    if replayed {
        store.announce(Signal::Outbox);
    }
    Ok(dl)
}

#[async_trait]
impl<S: Dialect> AppRepo for S {
    async fn create_app(&self, name: &str) -> Result<App> {
        super::validate_printable("app name", name)?;
        let mut conn = self.pool().acquire().await?;
        S::query(S::SQL.create_app)
            .arg(AppId::new())
            .arg(name)
            .now(S::CLOCK)
            .one(&mut conn)
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
        let mut conn = self.pool().acquire().await?;
        S::query("select id, name, created_at from apps where id = $1")
            .arg(id)
            .optional(&mut conn)
            .await?
            .ok_or_else(|| Error::not_found("app", id))
    }

    async fn find_app(&self, name_or_id: &str) -> Result<App> {
        let mut conn = self.pool().acquire().await?;
        let by_name: Option<App> =
            S::query("select id, name, created_at from apps where name = $1")
                .arg(name_or_id)
                .optional(&mut conn)
                .await?;
        drop(conn);
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
        let mut conn = self.pool().acquire().await?;
        Ok(
            S::query("select id, name, created_at from apps order by name")
                .all(&mut conn)
                .await?,
        )
    }

    async fn set_member(&self, app: AppId, principal: &str, role: Role) -> Result<()> {
        super::validate_printable("principal", principal)?;
        let mut conn = self.pool().acquire().await?;
        S::query(
            "insert into app_members (app_id, principal, role) values ($1, $2, $3)
             on conflict (app_id, principal) do update set role = excluded.role",
        )
        .arg(app)
        .arg(principal)
        .arg(role.as_str())
        .run(&mut conn)
        .await
        .map_err(rows::unknown_app_on_fk(app))?;
        Ok(())
    }

    async fn remove_member(&self, app: AppId, principal: &str) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        let done = S::query("delete from app_members where app_id = $1 and principal = $2")
            .arg(app)
            .arg(principal)
            .run(&mut conn)
            .await?;
        Ok(done > 0)
    }

    async fn member_role(&self, app: AppId, principal: &str) -> Result<Option<Role>> {
        let mut conn = self.pool().acquire().await?;
        let role: Option<(String,)> =
            S::query("select role from app_members where app_id = $1 and principal = $2")
                .arg(app)
                .arg(principal)
                .optional(&mut conn)
                .await?;
        role.map(|(role,)| rows::parse_role(&role)).transpose()
    }

    async fn list_members(&self, app: AppId) -> Result<Vec<Member>> {
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<MemberRow> = S::query(
            "select app_id, principal, role from app_members where app_id = $1 order by principal",
        )
        .arg(app)
        .all(&mut conn)
        .await?;
        rows.into_iter().map(Member::try_from).collect()
    }
}

#[async_trait]
impl<S: Dialect> TokenRepo for S {
    async fn create_token(
        &self,
        principal: &str,
        name: &str,
        secret_sha256: &str,
    ) -> Result<ApiToken> {
        super::validate_printable("principal", principal)?;
        super::validate_printable("token name", name)?;
        let mut conn = self.pool().acquire().await?;
        let token = ApiToken {
            id: TokenId::new(),
            principal: principal.to_owned(),
            name: name.to_owned(),
            created_at: Timestamp::now(),
            revoked_at: None,
        };
        S::query(
            "insert into api_tokens (id, principal, name, secret_sha256, created_at)
             values ($1, $2, $3, $4, $5)",
        )
        .arg(token.id)
        .arg(principal)
        .arg(name)
        .arg(secret_sha256)
        .arg(token.created_at)
        .run(&mut conn)
        .await?;
        Ok(token)
    }

    async fn list_tokens(&self, principal: Option<&str>) -> Result<Vec<ApiToken>> {
        let mut conn = self.pool().acquire().await?;
        Ok(S::query(
            "select id, principal, name, created_at, revoked_at from api_tokens
             where $1 is null or principal = $1 order by created_at, id",
        )
        .arg(principal)
        .all(&mut conn)
        .await?)
    }

    async fn revoke_token(&self, id: TokenId) -> Result<ApiToken> {
        let mut conn = self.pool().acquire().await?;
        let token: Option<ApiToken> = S::query(
            "update api_tokens set revoked_at = coalesce(revoked_at, $2) where id = $1
             returning id, principal, name, created_at, revoked_at",
        )
        .arg(id)
        .arg(Timestamp::now())
        .optional(&mut conn)
        .await?;
        token.ok_or_else(|| Error::NotFound {
            what: "token",
            id: id.to_string(),
        })
    }

    async fn find_token(&self, secret_sha256: &str) -> Result<Option<ApiToken>> {
        let mut conn = self.pool().acquire().await?;
        Ok(S::query(
            "select id, principal, name, created_at, revoked_at from api_tokens
             where secret_sha256 = $1",
        )
        .arg(secret_sha256)
        .optional(&mut conn)
        .await?)
    }
}

#[async_trait]
impl<S: Dialect> ConfigRepo for S {
    async fn put_var(&self, app: AppId, name: &str, secret: bool, value: &[u8]) -> Result<()> {
        super::validate_var_name(name)?;
        super::validate_var_value(value.len())?;
        let mut conn = self.pool().acquire().await?;
        S::query(
            "insert into app_config (app_id, name, secret, value, updated_at)
             values ($1, $2, $3, $4, $5)
             on conflict (app_id, name) do update
             set secret = excluded.secret, value = excluded.value, updated_at = excluded.updated_at",
        )
        .arg(app)
        .arg(name)
        .arg(secret)
        .arg(value)
        .arg(Timestamp::now())
        .run(&mut conn)
        .await
        .map_err(rows::unknown_app_on_fk(app))?;
        Ok(())
    }

    async fn get_var(&self, app: AppId, name: &str) -> Result<Option<StoredVar>> {
        let mut conn = self.pool().acquire().await?;
        Ok(S::query(
            "select name, secret, value, updated_at from app_config
             where app_id = $1 and name = $2",
        )
        .arg(app)
        .arg(name)
        .optional(&mut conn)
        .await?)
    }

    async fn list_vars(&self, app: AppId) -> Result<Vec<StoredVar>> {
        let mut conn = self.pool().acquire().await?;
        Ok(S::query(
            "select name, secret, value, updated_at from app_config
             where app_id = $1 order by name",
        )
        .arg(app)
        .all(&mut conn)
        .await?)
    }

    async fn remove_var(&self, app: AppId, name: &str) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        let gone = S::query("delete from app_config where app_id = $1 and name = $2")
            .arg(app)
            .arg(name)
            .run(&mut conn)
            .await?;
        Ok(gone > 0)
    }

    async fn allow_host(&self, app: AppId, pattern: &str) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        let added = S::query(
            "insert into app_outbound_hosts (app_id, pattern, created_at) values ($1, $2, $3)
             on conflict (app_id, pattern) do nothing",
        )
        .arg(app)
        .arg(pattern)
        .arg(Timestamp::now())
        .run(&mut conn)
        .await
        .map_err(rows::unknown_app_on_fk(app))?;
        Ok(added > 0)
    }

    async fn deny_host(&self, app: AppId, pattern: &str) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        let gone = S::query("delete from app_outbound_hosts where app_id = $1 and pattern = $2")
            .arg(app)
            .arg(pattern)
            .run(&mut conn)
            .await?;
        Ok(gone > 0)
    }

    async fn list_hosts(&self, app: AppId) -> Result<Vec<String>> {
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<(String,)> =
            S::query("select pattern from app_outbound_hosts where app_id = $1 order by pattern")
                .arg(app)
                .all(&mut conn)
                .await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }
}

#[async_trait]
impl<S: Dialect> ScriptRepo for S {
    async fn put_script(
        &self,
        app: AppId,
        name: &str,
        wasm: &[u8],
        sha256: &str,
        deployed_by: Option<&str>,
    ) -> Result<Script> {
        if let Some(p) = deployed_by {
            super::validate_printable("principal", p)?;
        }
        let mut conn = self.pool().acquire().await?;
        S::query(S::SQL.put_script)
            .arg(ScriptId::new())
            .arg(app)
            .arg(name)
            .arg(wasm)
            .arg(sha256)
            .arg(wasm.len() as i64)
            .arg(deployed_by)
            .now(S::CLOCK)
            .one(&mut conn)
            .await
            .map_err(rows::unknown_app_on_fk(app))
    }

    async fn get_script(&self, id: ScriptId) -> Result<Script> {
        let mut conn = self.pool().acquire().await?;
        S::query(concat!(
            "select ",
            script_columns!(),
            " from scripts where id = $1"
        ))
        .arg(id)
        .optional(&mut conn)
        .await?
        .ok_or_else(|| Error::not_found("script", id))
    }

    async fn find_script(&self, app: AppId, name_or_id: &str) -> Result<Script> {
        let mut conn = self.pool().acquire().await?;
        let by_name: Option<Script> = S::query(concat!(
            "select ",
            script_columns!(),
            " from scripts where app_id = $1 and name = $2"
        ))
        .arg(app)
        .arg(name_or_id)
        .optional(&mut conn)
        .await?;
        if let Some(script) = by_name {
            return Ok(script);
        }
        let Ok(id) = name_or_id.parse::<ScriptId>() else {
            return Err(Error::not_found("script", name_or_id));
        };
        S::query(concat!(
            "select ",
            script_columns!(),
            " from scripts where app_id = $1 and id = $2"
        ))
        .arg(app)
        .arg(id)
        .optional(&mut conn)
        .await?
        .ok_or_else(|| Error::not_found("script", name_or_id))
    }

    async fn script_code(&self, id: ScriptId) -> Result<(Script, Vec<u8>)> {
        let mut conn = self.pool().acquire().await?;
        let row: Option<ScriptCodeRow> = S::query(concat!(
            "select ",
            script_columns!(),
            ", wasm from scripts where id = $1"
        ))
        .arg(id)
        .optional(&mut conn)
        .await?;
        let row = row.ok_or_else(|| Error::not_found("script", id))?;
        Ok((row.script, row.wasm))
    }

    async fn list_scripts(&self, app: AppId) -> Result<Vec<Script>> {
        let mut conn = self.pool().acquire().await?;
        Ok(S::query(concat!(
            "select ",
            script_columns!(),
            " from scripts where app_id = $1 order by name"
        ))
        .arg(app)
        .all(&mut conn)
        .await?)
    }

    async fn remove_script(&self, app: AppId, id: ScriptId) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        let done = S::query("delete from scripts where app_id = $1 and id = $2")
            .arg(app)
            .arg(id)
            .run(&mut conn)
            .await?;
        Ok(done > 0)
    }
}

#[async_trait]
impl<S: Dialect> KvRepo for S {
    async fn kv_get(&self, app: AppId, collection: &str, key: &str) -> Result<Option<KvEntry>> {
        let mut conn = self.pool().acquire().await?;
        let row: Option<KvRow> = S::query(
            "select collection, key, value, version, updated_at from kv_entries
             where app_id = $1 and collection = $2 and key = $3",
        )
        .arg(app)
        .arg(collection)
        .arg(key)
        .optional(&mut conn)
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
        let mut conn = self.pool().acquire().await?;
        let keys: Vec<(String,)> = S::query(S::SQL.kv_list_keys)
            .arg(app)
            .arg(collection)
            .arg(after)
            .arg(i64::from(limit))
            .all(&mut conn)
            .await?;
        Ok(keys.into_iter().map(|(key,)| key).collect())
    }

    async fn kv_write(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        write: KvWrite<'_>,
        cause: &Cause,
    ) -> Result<KvWritten> {
        let (c, k) = (collection, key);
        Ok(match write {
            KvWrite::Set(v) => {
                KvWritten::Entry(kv_set_as(self, app, c, k, v, KvExpect::Any, cause).await?)
            }
            KvWrite::SetIfVersion(v, n) => {
                KvWritten::Entry(kv_set_as(self, app, c, k, v, KvExpect::Version(n), cause).await?)
            }
            KvWrite::Delete => {
                KvWritten::Deleted(kv_delete_as(self, app, c, k, KvExpect::Any, cause).await?)
            }
            KvWrite::DeleteIfVersion(n) => KvWritten::Deleted(
                kv_delete_as(self, app, c, k, KvExpect::Version(n), cause).await?,
            ),
            KvWrite::Increment(delta) => {
                let mut tx = self.begin_write().await?;
                let entry = kv_increment_in::<S>(&mut tx, app, c, k, delta, cause).await?;
                commit_kv(self, tx, true).await?;
                KvWritten::Entry(entry)
            }
        })
    }
}

/// [`kv_set_in`] in a write transaction of its own.
async fn kv_set_as<S: Dialect>(
    store: &S,
    app: AppId,
    collection: &str,
    key: &str,
    value: &Value,
    expect: KvExpect,
    cause: &Cause,
) -> Result<KvEntry> {
    let mut tx = store.begin_write().await?;
    let entry = kv_set_in::<S>(&mut tx, app, collection, key, value, expect, cause).await?;
    commit_kv(store, tx, true).await?;
    Ok(entry)
}

/// [`kv_delete_in`] in a write transaction of its own.
async fn kv_delete_as<S: Dialect>(
    store: &S,
    app: AppId,
    collection: &str,
    key: &str,
    expect: KvExpect,
    cause: &Cause,
) -> Result<bool> {
    let mut tx = store.begin_write().await?;
    let deleted = kv_delete_in::<S>(&mut tx, app, collection, key, expect, cause).await?;
    commit_kv(store, tx, deleted).await?;
    Ok(deleted)
}

/// What every KV write does last: commit its transaction, and wake this
/// process's dispatchers when it enqueued an event.
async fn commit_kv<S: Dialect>(
    store: &S,
    tx: sqlx::Transaction<'static, S::DB>,
    enqueued: bool,
) -> Result<()> {
    tx.commit().await?;
    if enqueued {
        store.announce(Signal::Outbox);
    }
    Ok(())
}

/// What a queue message waiting for a consumer says (see `hold`).
const NO_CONSUMER: &str = "waiting for a consumer: the queue has no enabled queue trigger";
/// How long such a message waits before it looks for a consumer again.
const NO_CONSUMER_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Make the app's queue messages that wait for a consumer due now.
async fn release_waiting_messages<S: Dialect>(conn: &mut Conn<S>, app: AppId) -> Result<u64> {
    Ok(S::query(
        "update outbox set due_at = $1, last_error = null where app_id = $2 and source = 'queue' \
         and trigger_id is null and last_error = $3",
    )
    .arg(Timestamp::now())
    .arg(app)
    .arg(NO_CONSUMER)
    .run(conn)
    .await?)
}

/// Enqueue the due ticks of one cron `trigger` and move its next fire
/// time on, in one transaction. Each tick's `cron_ticks` row is the
/// exactly-once guard: a dispatcher whose insert finds the row already
/// there enqueues nothing for that tick. The next fire time only moves
/// forward.
async fn schedule_one<S: Dialect>(store: &S, trigger: &Trigger, now: Timestamp) -> Result<u64> {
    let (
        TriggerSpec::Cron {
            schedule,
            timezone,
            catch_up,
        },
        Some(from),
    ) = (&trigger.spec, trigger.next_fire_at)
    else {
        return Ok(0);
    };
    let parsed = match crate::cron::Schedule::parse(schedule, timezone) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(trigger.id = %trigger.id, error = %e, "a stored cron schedule no longer parses; skipping it");
            return Ok(0);
        }
    };
    let due = parsed.due(from.0, now.0, *catch_up);
    let mut tx = store.begin_write().await?;
    let mut enqueued = 0;
    let mut rows = Vec::new();
    for tick in &due.ticks {
        let fresh = S::query(
            "insert into cron_ticks (trigger_id, scheduled_at) values ($1, $2) on conflict do nothing",
        )
        .arg(trigger.id)
        .arg(tick.scheduled_at)
        .run(&mut tx)
        .await?;
        if fresh == 1 {
            rows.push(NewEvent::tick(trigger, tick.payload(schedule, timezone)));
        }
    }
    if !rows.is_empty() {
        enqueued = enqueue_many_in::<S>(&mut tx, &rows).await?.len() as u64;
    }
    S::query("update cron_trigger_details set next_at = $2 where trigger_id = $1 and next_at < $2")
        .arg(trigger.id)
        .arg(due.next.unwrap_or(Timestamp::held()))
        .run(&mut tx)
        .await?;
    S::query("delete from cron_ticks where trigger_id = $1 and scheduled_at < $2")
        .arg(trigger.id)
        .arg(now.minus(std::time::Duration::from_secs(86_400)))
        .run(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(enqueued)
}

#[async_trait]
impl<S: Dialect> TriggerRepo for S {
    async fn create_trigger(&self, t: &NewTrigger) -> Result<Trigger> {
        super::validate_trigger(t)?;
        super::validate_printable("trigger name", &t.name)?;
        super::validate_printable("principal", &t.registered_by_principal)?;
        let mut tx = self.begin_write().await?;
        let owner: Option<(AppId,)> = S::query("select app_id from scripts where id = $1")
            .arg(t.script_id)
            .optional(&mut tx)
            .await?;
        match owner {
            None => return Err(Error::not_found("script", t.script_id)),
            Some((owner,)) if owner != t.app_id => return Err(rows::cross_app_script(t)),
            Some(_) => {}
        }
        let id = TriggerId::new();
        S::query(S::SQL.insert_trigger)
            .arg(id)
            .arg(t.app_id)
            .arg(t.script_id)
            .arg(t.spec.kind())
            .arg(t.name.as_str())
            .arg(t.registered_by_principal.as_str())
            .now(S::CLOCK)
            .run(&mut tx)
            .await?;
        match Details::of(&t.spec) {
            Details::Kv {
                pattern,
                ops,
                ordered,
            } => {
                S::query("insert into kv_trigger_details (trigger_id, collection_pattern, ops, ordered) values ($1, $2, $3, $4)")
                    .arg(id)
                    .arg(pattern)
                    .arg(ops)
                    .arg(ordered)
                    .run(&mut tx)
                    .await?;
            }
            Details::DeadLetter { pattern } => {
                S::query("insert into dead_letter_trigger_details (trigger_id, source_pattern) values ($1, $2)")
                    .arg(id)
                    .arg(pattern)
                    .run(&mut tx)
                    .await?;
            }
            Details::Cron {
                schedule,
                timezone,
                catch_up,
            } => {
                let next = crate::cron::Schedule::parse(schedule, timezone)
                    .map_err(Error::Invalid)?
                    .next_after(Timestamp::now().0)
                    .map(Timestamp::from_datetime);
                S::query("insert into cron_trigger_details (trigger_id, schedule, timezone, catch_up, next_at) values ($1, $2, $3, $4, $5)")
                    .arg(id)
                    .arg(schedule)
                    .arg(timezone)
                    .arg(catch_up)
                    .arg(next)
                    .run(&mut tx)
                    .await?;
            }
            Details::Queue { queue, batch } => {
                let taken: Option<(String,)> = S::query(
                    "select t.name from queue_trigger_details q join triggers t on t.id = q.trigger_id \
                     where q.app_id = $1 and q.queue = $2",
                )
                .arg(t.app_id)
                .arg(queue)
                .optional(&mut tx)
                .await?;
                if let Some((name,)) = taken {
                    return Err(Error::Conflict(format!(
                        "queue '{queue}' already has a consumer, trigger '{name}': a queue has one; remove that trigger first"
                    )));
                }
                S::query("insert into queue_trigger_details (trigger_id, app_id, queue, batch_size) values ($1, $2, $3, $4)")
                    .arg(id)
                    .arg(t.app_id)
                    .arg(queue)
                    .arg(batch)
                    .run(&mut tx)
                    .await?;
                release_waiting_messages::<S>(&mut tx, t.app_id).await?;
            }
            Details::Pubsub { pattern } => {
                S::query("insert into pubsub_trigger_details (trigger_id, topic_pattern) values ($1, $2)")
                    .arg(id)
                    .arg(pattern)
                    .run(&mut tx)
                    .await?;
            }
        }
        if let Some(depth) = t.max_depth {
            S::query("update triggers set max_depth = $2 where id = $1")
                .arg(id)
                .arg(i64::from(depth))
                .run(&mut tx)
                .await?;
        }
        if !t.retry.is_default() {
            let r = &t.retry;
            S::query(
                "update triggers set retry_max_attempts = $2, retry_backoff = $3, retry_base_ms = $4, \
                 retry_cap_ms = $5, retry_jitter_permille = $6, retry_max_age_ms = $7 where id = $1",
            )
            .arg(id)
            .arg(r.max_attempts.map(i64::from))
            .arg(r.backoff.map(|b| b.as_str()))
            .arg(r.base_ms.map(|v| v as i64))
            .arg(r.cap_ms.map(|v| v as i64))
            .arg(r.jitter.map(|j| (j * 1000.0).round() as i64))
            .arg(r.max_age_ms.map(|v| v as i64))
            .run(&mut tx)
            .await?;
        }
        let trigger = fetch_trigger::<S>(&mut tx, id).await?;
        tx.commit().await?;
        if matches!(t.spec, TriggerSpec::Queue { .. }) {
            self.announce(Signal::Outbox);
        }
        Ok(trigger)
    }

    async fn get_trigger(&self, id: TriggerId) -> Result<Trigger> {
        let mut conn = self.pool().acquire().await?;
        fetch_trigger::<S>(&mut conn, id).await
    }

    async fn list_triggers(&self, app: AppId) -> Result<Vec<Trigger>> {
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<TriggerRow> = S::query(concat!(
            trigger_select!(),
            "where t.app_id = $1 order by t.created_at, t.id"
        ))
        .arg(app)
        .all(&mut conn)
        .await?;
        rows::triggers(rows)
    }

    async fn set_trigger_enabled(&self, id: TriggerId, enabled: bool) -> Result<Trigger> {
        let mut tx = self.begin_write().await?;
        let done = S::query(S::SQL.set_trigger_enabled)
            .arg(id)
            .arg(enabled)
            .now(S::CLOCK)
            .run(&mut tx)
            .await?;
        if done == 0 {
            return Err(Error::not_found("trigger", id));
        }
        let mut released = 0;
        let trigger = fetch_trigger::<S>(&mut tx, id).await?;
        if enabled {
            released =
                S::query("update outbox set due_at = $1 where trigger_id = $2 and due_at = $3")
                    .arg(Timestamp::now())
                    .arg(id)
                    .arg(Timestamp::held())
                    .run(&mut tx)
                    .await?;
            if matches!(trigger.spec, TriggerSpec::Queue { .. }) {
                released += release_waiting_messages::<S>(&mut tx, trigger.app_id).await?;
            }
        }
        tx.commit().await?;
        if released > 0 {
            self.announce(Signal::Outbox);
        }
        Ok(trigger)
    }

    async fn delete_trigger(&self, id: TriggerId) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        let done = S::query("delete from triggers where id = $1")
            .arg(id)
            .run(&mut conn)
            .await?;
        Ok(done > 0)
    }

    async fn list_matching_kv(
        &self,
        app: AppId,
        collection: &str,
        op: KvOp,
    ) -> Result<Vec<Trigger>> {
        let candidates = enabled_triggers(self, app, "kv").await?;
        Ok(rows::matching_kv(candidates, collection, op))
    }

    async fn list_matching(&self, app: AppId, kind: &str, name: &str) -> Result<Vec<Trigger>> {
        let candidates = enabled_triggers(self, app, kind).await?;
        Ok(rows::matching_named(candidates, name))
    }

    async fn schedule_cron(&self) -> Result<u64> {
        let now = Timestamp::now();
        let due: Vec<TriggerRow> = {
            let mut conn = self.pool().acquire().await?;
            S::query(concat!(
                trigger_select!(),
                "where t.kind = 'cron' and t.enabled and c.next_at <= $1 order by c.next_at limit 100"
            ))
            .arg(now)
            .all(&mut conn)
            .await?
        };
        let mut enqueued = 0;
        for trigger in rows::triggers(due)? {
            enqueued += schedule_one::<S>(self, &trigger, now).await?;
        }
        if enqueued > 0 {
            self.announce(Signal::Outbox);
        }
        Ok(enqueued)
    }
}

#[async_trait]
impl<S: Dialect> OutboxRepo for S {
    async fn enqueue(&self, event: &NewEvent) -> Result<EventId> {
        super::validate_event(event)?;
        let mut conn = self.pool().acquire().await?;
        let id = enqueue_in::<S>(&mut conn, event).await?;
        self.announce(Signal::Outbox);
        Ok(id)
    }

    async fn enqueue_many(&self, events: &[NewEvent]) -> Result<Vec<EventId>> {
        events.iter().try_for_each(super::validate_event)?;
        let mut tx = self.begin_write().await?;
        let ids = enqueue_many_in::<S>(&mut tx, events).await?;
        tx.commit().await?;
        self.announce(Signal::Outbox);
        Ok(ids)
    }

    async fn claim_due(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>> {
        self.complete_and_claim(&[], &[], worker, limit, lease)
            .await
    }

    async fn complete(&self, ids: &[EventId], runs: &[NewRun]) -> Result<u64> {
        if ids.is_empty() && runs.is_empty() {
            return Ok(0);
        }
        self.delete_rows(ids, runs).await
    }

    async fn complete_and_claim(
        &self,
        done: &[EventId],
        runs: &[NewRun],
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>> {
        if limit == 0 {
            self.complete(done, runs).await?;
            return Ok(Vec::new());
        }
        let plan = self.fair_claims().plan();
        let claimed = self.claim(done, runs, worker, limit, lease, plan).await?;
        self.fair_claims().settle(limit, &claimed);
        let mut rows = claimed.rows;
        round_robin(&mut rows);
        Ok(rows)
    }

    async fn reschedule(&self, retries: &[Retry], runs: &[NewRun]) -> Result<()> {
        if retries.is_empty() && runs.is_empty() {
            return Ok(());
        }
        self.write_retries(retries, runs).await
    }

    async fn fan_out(
        &self,
        raws: &[EventId],
        invocations: &[NewEvent],
        runs: &[NewRun],
    ) -> Result<Vec<EventId>> {
        let mut tx = self.begin_write().await?;
        for chunk in raws.chunks(CHUNK) {
            let mut q = Built::<S::DB>::new("delete from outbox where id in (");
            q.bind_list(chunk.iter().copied()).push(")");
            let (sql, arguments) = q.finish()?;
            <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
                .run(&mut tx)
                .await?;
        }
        insert_runs_in::<S>(&mut tx, runs).await?;
        let ids = enqueue_many_in::<S>(&mut tx, invocations).await?;
        tx.commit().await?;
        self.announce(Signal::Outbox);
        Ok(ids)
    }

    async fn release_parked(&self) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let released = S::query(S::SQL.release_parked)
            .arg(Timestamp::parked())
            .now(S::CLOCK)
            .run(&mut tx)
            .await?;
        tx.commit().await?;
        if released > 0 {
            self.announce(Signal::Outbox);
        }
        Ok(released)
    }

    async fn release(&self, ids: &[EventId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.unlock_rows(ids).await?;
        self.announce(Signal::Outbox);
        Ok(())
    }

    async fn hold(&self, ids: &[EventId]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for id in ids {
            // Only while the trigger is still disabled, and with its row
            // locked to the end of this transaction: an enable that comes
            // first leaves the row to run; one that comes after releases it.
            let disabled: Option<(AppId,)> = S::query(
                "update triggers set enabled = enabled
                 where not enabled and id = (select trigger_id from outbox where id = $1)
                 returning app_id",
            )
            .arg(*id)
            .optional(&mut tx)
            .await?;
            let held = disabled.map(|_| Timestamp::held());
            // A queue message with no consumer waits for one: registering
            // (or enabling) a consumer makes it due, and it looks again
            // after a while in case that raced with this hold.
            let message = match held {
                Some(_) => None,
                None => S::query(
                    "select app_id from outbox where id = $1 and source = 'queue' and trigger_id is null",
                )
                .arg(*id)
                .optional::<(AppId,)>(&mut tx)
                .await?,
            };
            match message {
                Some(_) => {
                    S::query(
                        "update outbox set due_at = $1, last_error = $2, locked_until = null,
                             locked_by = null
                         where id = $3",
                    )
                    .arg(Timestamp::now().plus(NO_CONSUMER_RECHECK))
                    .arg(NO_CONSUMER)
                    .arg(*id)
                    .run(&mut tx)
                    .await?;
                }
                None => {
                    S::query(
                        "update outbox set due_at = coalesce($1, due_at), locked_until = null,
                             locked_by = null
                         where id = $2",
                    )
                    .arg(held)
                    .arg(*id)
                    .run(&mut tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_event(&self, id: EventId) -> Result<Option<OutboxEvent>> {
        let mut conn = self.pool().acquire().await?;
        Ok(S::query(concat!(
            "select ",
            outbox_columns!(),
            " from outbox where id = $1"
        ))
        .arg(id)
        .optional(&mut conn)
        .await?)
    }

    async fn count_events(&self, app: Option<AppId>) -> Result<i64> {
        let mut conn = self.pool().acquire().await?;
        let (count,) = S::query(S::SQL.count_events)
            .arg(app)
            .one(&mut conn)
            .await?;
        Ok(count)
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>> {
        let mut conn = self.pool().acquire().await?;
        let (at,) = S::query(S::SQL.next_due_at).one(&mut conn).await?;
        Ok(at)
    }
}

#[async_trait]
impl<S: Dialect> DeadLetterRepo for S {
    async fn dead_letter(
        &self,
        dead: &NewDeadLetter,
        emit_event: bool,
        runs: &[NewRun],
    ) -> Result<DeadLetter> {
        let mut tx = self.begin_write().await?;
        let row: DeadLetterRow = S::query(S::SQL.insert_dead_letter)
            .arg(DeadLetterId::new())
            .arg(dead.app_id)
            .arg(dead.original_event_id)
            .arg(dead.source.as_str())
            .arg(dead.op.as_str())
            .arg(dead.trigger_id)
            .arg(dead.script_id)
            .arg(Json(&dead.payload))
            .arg(dead.attempt_count)
            .arg(dead.first_attempt_at)
            .arg(dead.last_attempt_at)
            .arg(dead.last_error.as_str())
            .now(S::CLOCK)
            .one(&mut tx)
            .await
            .map_err(rows::unknown_app_on_fk(dead.app_id))?;
        let dl = DeadLetter::try_from(row)?;
        // The original event's stable id, from its row before it goes: the
        // dead letter's history is the runs of that event.
        S::query(
            "insert into dead_letter_depths (dead_letter_id, depth, event_id, principal)
             values ($1, $2, coalesce(
                 (select coalesce(event_id, id) from outbox where id = $3), $3),
                 (select principal from outbox where id = $3 and trigger_id is null))",
        )
        .arg(dl.id)
        .arg(dead.depth)
        .arg(dead.original_event_id)
        .run(&mut tx)
        .await?;
        S::query("delete from outbox where id = $1")
            .arg(dead.original_event_id)
            .run(&mut tx)
            .await?;
        insert_runs_in::<S>(&mut tx, runs).await?;
        if emit_event {
            enqueue_in::<S>(&mut tx, &super::dead_letter_event(dl.id, dead)).await?;
        }
        tx.commit().await?;
        if emit_event {
            self.announce(Signal::Outbox);
        }
        Ok(dl)
    }

    async fn get_dead_letter(&self, id: DeadLetterId) -> Result<DeadLetter> {
        let mut conn = self.pool().acquire().await?;
        fetch_dead_letter::<S>(&mut conn, id).await
    }

    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let (sql, arguments) = dead_letter_listing::<S::DB>(filter).finish()?;
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<DeadLetterRow> =
            <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
                .all(&mut conn)
                .await?;
        rows::dead_letters(rows)
    }

    async fn list_dead_letters_within(
        &self,
        filter: &DeadLetterFilter,
        max_bytes: u64,
    ) -> Result<Vec<DeadLetter>> {
        // The filtered page, then the bytes before each row: only the rows
        // that begin within the budget leave the database.
        let mut q = Built::<S::DB>::new(concat!(
            "select ",
            dead_letter_columns!(),
            " from (select *, coalesce(sum("
        ));
        q.push(S::SQL.dead_letter_bytes).push(
            ") over (order by created_at, id rows between unbounded preceding and 1 preceding), 0)
                 as bytes_before
             from (select * from dead_letters where true",
        );
        filter_dead_letters(&mut q, filter);
        q.push(") listed) sized where bytes_before < ")
            .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
            .push(" order by created_at, id");
        let (sql, arguments) = q.finish()?;
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<DeadLetterRow> =
            <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
                .all(&mut conn)
                .await?;
        rows::dead_letters(rows)
    }

    async fn unresolved_count(&self, app: AppId) -> Result<i64> {
        let mut conn = self.pool().acquire().await?;
        let (count,) =
            S::query("select count(*) from dead_letters where app_id = $1 and resolved_at is null")
                .arg(app)
                .one(&mut conn)
                .await?;
        Ok(count)
    }

    async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let filter = DeadLetterFilter {
            limit: None,
            ..filter.clone()
        };
        let mut q =
            Built::<S::DB>::new("select count(*) from (select id from dead_letters where true");
        filter_dead_letters(&mut q, &filter);
        q.push(") counted");
        let (sql, arguments) = q.finish()?;
        let mut conn = self.pool().acquire().await?;
        let (count,): (i64,) =
            <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
                .one(&mut conn)
                .await?;
        Ok(count.max(0) as u64)
    }

    async fn resolve(&self, id: DeadLetterId, resolution: Resolution) -> Result<DeadLetter> {
        resolve_at(self, id, resolution, None).await
    }

    async fn resolve_from_script(
        &self,
        id: DeadLetterId,
        resolution: Resolution,
        depth: i32,
    ) -> Result<DeadLetter> {
        resolve_at(self, id, resolution, Some(depth.saturating_add(1))).await
    }

    async fn stop_recursion(
        &self,
        event: EventId,
        dead_letter: DeadLetterId,
        runs: &[NewRun],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        S::query("delete from outbox where id = $1")
            .arg(event)
            .run(&mut tx)
            .await?;
        insert_runs_in::<S>(&mut tx, runs).await?;
        S::query(S::SQL.resolve_dead_letter)
            .arg(dead_letter)
            .arg(Resolution::HandlerFailed.as_str())
            .now(S::CLOCK)
            .run(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn gc_dead_letters(&self, before: Timestamp) -> Result<u64> {
        let mut conn = self.pool().acquire().await?;
        Ok(S::query("delete from dead_letters where created_at < $1")
            .arg(before)
            .run(&mut conn)
            .await?)
    }
}

#[async_trait]
impl<S: Dialect> AbandonedRepo for S {
    async fn record_abandoned(&self, a: &NewAbandoned) -> Result<AbandonedExecution> {
        let mut conn = self.pool().acquire().await?;
        let row: AbandonedRow = S::query(S::SQL.insert_abandoned)
            .arg(AbandonedId::new())
            .arg(a.app_id)
            .arg(a.outbox_event_id)
            .arg(a.script_id)
            .arg(a.trigger_id)
            .arg(a.reply_to.as_str())
            .arg(a.outcome.as_str())
            .arg(a.detail.as_str())
            .now(S::CLOCK)
            .one(&mut conn)
            .await
            .map_err(rows::unknown_app_on_fk(a.app_id))?;
        row.try_into()
    }

    async fn list_abandoned(&self, app: Option<AppId>) -> Result<Vec<AbandonedExecution>> {
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<AbandonedRow> = S::query(S::SQL.list_abandoned)
            .arg(app)
            .all(&mut conn)
            .await?;
        rows.into_iter().map(AbandonedExecution::try_from).collect()
    }

    async fn gc_abandoned(&self, before: Timestamp) -> Result<u64> {
        let mut conn = self.pool().acquire().await?;
        Ok(
            S::query("delete from abandoned_executions where created_at < $1")
                .arg(before)
                .run(&mut conn)
                .await?,
        )
    }
}

#[async_trait]
impl<S: Dialect> ReplyRepo for S {
    async fn put_reply(&self, reply: &StoredReply, runs: &[NewRun]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        S::query(
            "insert into invocation_replies (inbox, app_id, outbox_event_id, script_id, outcome, body, created_at)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (inbox) do nothing",
        )
        .arg(reply.inbox.as_str())
        .arg(reply.app_id)
        .arg(reply.outbox_event_id)
        .arg(reply.script_id)
        .arg(reply.outcome.as_str())
        .arg(reply.body.as_slice())
        .arg(reply.created_at)
        .run(&mut tx)
        .await
        .map_err(rows::unknown_app_on_fk(reply.app_id))?;
        S::query("delete from outbox where id = $1")
            .arg(reply.outbox_event_id)
            .run(&mut tx)
            .await?;
        insert_runs_in::<S>(&mut tx, runs).await?;
        S::notify_reply_in(&mut tx, &reply.inbox).await?;
        tx.commit().await?;
        self.announce(Signal::Reply(reply.inbox.clone()));
        Ok(())
    }

    async fn take_reply(&self, inbox: &str) -> Result<Option<StoredReply>> {
        let mut conn = self.pool().acquire().await?;
        let row: Option<ReplyRow> = S::query(concat!(
            "delete from invocation_replies where inbox = $1 returning ",
            reply_columns!()
        ))
        .arg(inbox)
        .optional(&mut conn)
        .await?;
        row.map(StoredReply::try_from).transpose()
    }

    async fn take_stale_replies(&self, before: Timestamp) -> Result<Vec<StoredReply>> {
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<ReplyRow> = S::query(concat!(
            "delete from invocation_replies where created_at < $1 returning ",
            reply_columns!()
        ))
        .arg(before)
        .all(&mut conn)
        .await?;
        rows.into_iter().map(StoredReply::try_from).collect()
    }
}

/// Append `f`'s conditions, order and limit to a `select ... from runs
/// where app_id = ...`.
fn filter_runs<'q, DB: Db>(q: &mut Built<'q, DB>, f: &'q RunFilter) {
    if let Some(script) = f.script_id {
        q.push(" and script_id = ").bind(Compact(script));
    }
    if let Some(trigger) = f.trigger_id {
        q.push(" and trigger_id = ").bind(Compact(trigger));
    }
    if let Some(event) = f.event_id {
        q.push(" and event_id = ").bind(Compact(event));
    }
    if f.failed_only {
        q.push(" and outcome <> 'succeeded'");
    }
    // The rest is a range of the app's part of the (app_id, id) key.
    if let Some(since) = f.since {
        q.push(" and id >= ")
            .bind(Compact(runs::first_id_at(since)));
    }
    if let Some(until) = f.until {
        q.push(" and id <= ").bind(Compact(runs::last_id_at(until)));
    }
    if let Some(after) = f.after {
        q.push(if f.oldest_first {
            " and id > "
        } else {
            " and id < "
        })
        .bind(Compact(after));
    }
    let order = if f.oldest_first { "asc" } else { "desc" };
    q.push(" order by app_id ")
        .push(order)
        .push(", id ")
        .push(order)
        .push(" limit ")
        .bind(i64::from(f.limit));
}

/// How far outside a dead letter's first attempt and creation its runs
/// are looked for: the clocks of the machines that ran its attempts and the
/// database's may disagree by this much.
const HISTORY_SLACK: Duration = Duration::from_secs(300);

/// Rows one garbage-collection statement deletes at most: SQLite's write
/// lock is held no longer than that takes.
const GC_CHUNK: i64 = 5_000;

#[async_trait]
impl<S: Dialect> RunRepo for S {
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<runs::Run>> {
        let mut q = Built::<S::DB>::new(concat!(
            "select ",
            run_columns!(),
            " from runs where app_id = "
        ));
        q.bind(Compact(filter.app_id));
        filter_runs(&mut q, filter);
        let (sql, arguments) = q.finish()?;
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<RunRow> =
            <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
                .all(&mut conn)
                .await?;
        rows::runs(rows)
    }

    async fn get_run(&self, id: RunId) -> Result<runs::Run> {
        let mut conn = self.pool().acquire().await?;
        let row: Option<RunRow> = S::query(S::SQL.get_run)
            .arg(Compact(id))
            .optional(&mut conn)
            .await?;
        row.ok_or_else(|| Error::not_found("run", id))?.try_into()
    }

    async fn dead_letter_runs(&self, id: DeadLetterId) -> Result<Vec<runs::Run>> {
        let mut conn = self.pool().acquire().await?;
        let dl = fetch_dead_letter::<S>(&mut conn, id).await?;
        let event: Option<(Option<EventId>,)> =
            S::query("select event_id from dead_letter_depths where dead_letter_id = $1")
                .arg(id)
                .optional(&mut conn)
                .await?;
        let event = event.and_then(|(e,)| e).unwrap_or(dl.original_event_id);
        // Its trigger's runs (a raw event's other triggers are not its
        // history); a dead letter without a trigger is its script's.
        // Within its app and the time its attempts took (a range of the
        // (app_id, id) key; runs have no index of their own on the event).
        let (from, to) = (
            dl.first_attempt_at.minus(HISTORY_SLACK),
            dl.created_at.plus(HISTORY_SLACK),
        );
        let mut q = Built::<S::DB>::new(concat!(
            "select ",
            run_columns!(),
            " from runs where app_id = "
        ));
        q.bind(Compact(dl.app_id))
            .push(" and id >= ")
            .bind(Compact(runs::first_id_at(from)))
            .push(" and id <= ")
            .bind(Compact(runs::last_id_at(to)))
            .push(" and event_id = ")
            .bind(Compact(event));
        match (dl.trigger_id, dl.script_id) {
            (Some(trigger), _) => {
                q.push(" and trigger_id = ").bind(Compact(trigger));
            }
            (None, Some(script)) => {
                q.push(" and script_id = ").bind(Compact(script));
            }
            (None, None) => {}
        }
        q.push(" order by started_at, id");
        let (sql, arguments) = q.finish()?;
        let rows: Vec<RunRow> =
            <S::DB as Runs>::with_arguments(<S::DB as Db>::qualify(&sql), arguments)
                .all(&mut conn)
                .await?;
        rows::runs(rows)
    }

    async fn gc_runs(&self, before: Timestamp, keep_per_app: u64) -> Result<u64> {
        let keep = i64::try_from(keep_per_app).unwrap_or(i64::MAX);
        let apps: Vec<(AppId,)> = {
            let mut conn = self.pool().acquire().await?;
            S::query("select id from apps order by id")
                .all(&mut conn)
                .await?
        };
        let mut deleted = 0;
        for (app,) in apps {
            // Finished before `before`, then past the newest `keep`: each
            // in chunks, each chunk its own transaction.
            for sql in [
                "delete from runs where app_id = $1 and id in (
                     select id from runs where app_id = $1 and id < $2
                     order by app_id, id limit $3)",
                "delete from runs where app_id = $1 and id in (
                     select id from runs where app_id = $1
                     order by app_id desc, id desc limit $3 offset $4)",
            ] {
                loop {
                    let mut tx = self.begin_write().await?;
                    let n = S::query(sql)
                        .arg(Compact(app))
                        .arg(Compact(runs::first_id_at(before)))
                        .arg(GC_CHUNK)
                        .arg(keep)
                        .run(&mut tx)
                        .await?;
                    tx.commit().await?;
                    deleted += n;
                    if n < GC_CHUNK as u64 {
                        break;
                    }
                }
            }
        }
        Ok(deleted)
    }
}

#[async_trait]
impl<S: Dialect> Store for S {
    fn backend(&self) -> Backend {
        S::BACKEND
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        self.listen().await
    }

    fn wake(&self) {
        self.announce(Signal::Outbox);
    }

    async fn subscribe_runs(&self) -> Result<Option<Box<dyn Subscription>>> {
        self.listen_runs().await
    }

    async fn migrate(&self) -> Result<()> {
        self.apply_migrations().await
    }

    async fn vacuum_outbox(&self) -> Result<()> {
        if S::SQL.vacuum_outbox.is_empty() {
            return Ok(());
        }
        // Outside any transaction, as VACUUM must be.
        let mut conn = self.pool().acquire().await?;
        S::query(S::SQL.vacuum_outbox).run(&mut conn).await?;
        Ok(())
    }

    async fn close(&self) {
        self.close_pools().await;
    }
}
