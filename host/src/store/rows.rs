//! What the two backends share besides the traits: row structs that decode
//! from either database, their conversion to the model, the column lists,
//! trigger matching and error classification.
//!
//! Rule: a backend differs from the other only in SQL text and binding; any
//! decision about what a row means, which trigger matches or which error a
//! constraint violation becomes is made here, once.

use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::types::Json;

use super::shared::Claimed;
use super::{Error, Member, Result, StoredReply};
use crate::auth::Role;
use crate::model::{
    AbandonedExecution, AbandonedId, AppId, DeadLetter, DeadLetterId, EventId, KvEntry, KvOp,
    KvOps, NewTrigger, OutboxEvent, RunId, Script, ScriptId, Timestamp, Trigger, TriggerId,
    TriggerSpec,
};
use crate::pattern::collection_matches;
use crate::retry::RetryPolicy;
use crate::runs::Run;
use crate::runtime::LogLine;

/// Rows per statement when a slice of ids or rows is written in chunks
/// (SQLite allows 32766 bound values; PostgreSQL 65535).
pub(crate) const CHUNK: usize = 500;

/// An outbox row as the database returns it, the payload still raw JSON
/// text: [`OutboxEvent`] decodes it row by row.
#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    id: EventId,
    event_id: EventId,
    app_id: AppId,
    source: String,
    op: String,
    trigger_id: Option<TriggerId>,
    script_id: Option<ScriptId>,
    principal: Option<String>,
    payload: Json<Box<RawValue>>,
    depth: i32,
    attempt_count: i32,
    first_attempt_at: Option<Timestamp>,
    last_attempt_at: Option<Timestamp>,
    last_error: Option<String>,
    due_at: Timestamp,
    locked_until: Option<Timestamp>,
    locked_by: Option<String>,
    reply_to: Option<String>,
    created_at: Timestamp,
    order_key: Option<String>,
    order_seq: Option<i64>,
    chain: Option<String>,
}

/// Most of an undecodable payload's text kept in its dead letter.
const UNDECODABLE_KEPT: usize = 64 * 1024;

impl From<OutboxRow> for OutboxEvent {
    fn from(r: OutboxRow) -> OutboxEvent {
        let raw = r.payload.0.get();
        let (payload, undecodable) = match serde_json::from_str::<Value>(raw) {
            Ok(v) => (v, None),
            Err(e) => {
                let mut cut = raw.len().min(UNDECODABLE_KEPT);
                while !raw.is_char_boundary(cut) {
                    cut -= 1;
                }
                (
                    Value::String(raw[..cut].to_owned()),
                    Some(format!("the stored payload cannot be decoded ({e})")),
                )
            }
        };
        OutboxEvent {
            id: r.id,
            event_id: r.event_id,
            app_id: r.app_id,
            source: r.source,
            op: r.op,
            trigger_id: r.trigger_id,
            script_id: r.script_id,
            principal: r.principal,
            payload,
            undecodable,
            depth: r.depth,
            attempt_count: r.attempt_count,
            first_attempt_at: r.first_attempt_at,
            last_attempt_at: r.last_attempt_at,
            last_error: r.last_error,
            due_at: r.due_at,
            locked_until: r.locked_until,
            locked_by: r.locked_by,
            reply_to: r.reply_to,
            created_at: r.created_at,
            order_key: r.order_key,
            order_seq: r.order_seq,
            // A chain is the host's own bookkeeping: one it cannot read is
            // left out rather than failing the row.
            chain: r
                .chain
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default(),
        }
    }
}

/// Outbox rows decode through `OutboxRow` on either database, so one
/// row's payload never fails the statement that fetched it.
impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for OutboxEvent
where
    OutboxRow: sqlx::FromRow<'r, R>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        OutboxRow::from_row(row).map(OutboxEvent::from)
    }
}

/// The columns of [`crate::model::OutboxEvent`], in `select` order.
macro_rules! outbox_columns {
    () => {
        "id, coalesce(event_id, id) as event_id, app_id, source, op, trigger_id, script_id, \
         principal, payload, depth, \
         attempt_count, first_attempt_at, last_attempt_at, last_error, due_at, locked_until, \
         locked_by, reply_to, created_at, order_key, order_seq, chain"
    };
}
pub(crate) use outbox_columns;

/// The claim's condition on the outbox row `$t`: it is not an ordered
/// trigger's invocation behind an earlier row of its key still in the
/// outbox, that is the raw event of an earlier write (not fanned out yet) or
/// an earlier invocation of its own trigger (running, or waiting for its
/// retry). Rows compare by `order_seq`, then by event id (rows numbered in
/// one statement). Only ordered rows pay the probe: a range of
/// `idx_outbox_order` from the key's first row, which ends at the first row
/// ahead (for a waiting row, the key's first), not after the whole key.
#[rustfmt::skip]
macro_rules! order_gate {
    ($t:literal) => {
        concat!(
            "(", $t, ".order_key is null or ", $t, ".trigger_id is null or not exists (",
            "select 1 from outbox e where e.app_id = ", $t, ".app_id",
            " and e.order_key = ", $t, ".order_key and e.order_seq <= ", $t, ".order_seq",
            " and (e.order_seq < ", $t, ".order_seq or e.event_id < ", $t, ".event_id)",
            " and (e.trigger_id is null or e.trigger_id = ", $t, ".trigger_id)))"
        )
    };
}
pub(crate) use order_gate;

/// A row leased by a fair claim on PostgreSQL: the outbox columns and, on
/// every row, where the claim's walk of the apps ended (`next_app`).
#[derive(sqlx::FromRow)]
pub(crate) struct FairClaimRow {
    #[sqlx(flatten)]
    pub event: OutboxEvent,
    pub next_app: Option<AppId>,
}

/// What a fair claim leased, from its rows.
pub(crate) fn fair_claimed(rows: Vec<FairClaimRow>) -> Claimed {
    let next_app = rows.first().and_then(|r| r.next_app);
    Claimed {
        rows: rows.into_iter().map(|r| r.event).collect(),
        next_app,
    }
}

/// The columns of [`crate::model::Script`].
macro_rules! script_columns {
    () => {
        "id, app_id, name, sha256, size, deployed_by, created_at, updated_at"
    };
}
pub(crate) use script_columns;

/// The columns of [`DeadLetterRow`].
macro_rules! dead_letter_columns {
    () => {
        "id, app_id, original_event_id, source, op, trigger_id, script_id, payload, \
         attempt_count, first_attempt_at, last_attempt_at, last_error, created_at, resolved_at, \
         resolution"
    };
}
pub(crate) use dead_letter_columns;

/// The columns of [`AbandonedRow`].
macro_rules! abandoned_columns {
    () => {
        "id, app_id, outbox_event_id, script_id, trigger_id, reply_to, outcome, detail, created_at"
    };
}
pub(crate) use abandoned_columns;

/// The columns of [`ReplyRow`].
macro_rules! reply_columns {
    () => {
        "inbox, app_id, outbox_event_id, script_id, outcome, body, created_at"
    };
}
pub(crate) use reply_columns;

/// A trigger joined with its detail rows; append `where ...`.
macro_rules! trigger_select {
    () => {
        "select t.id, t.app_id, t.script_id, t.kind, t.name, t.enabled, \
         t.registered_by_principal, t.created_at, t.updated_at, k.collection_pattern, k.ops, \
         k.ordered, d.source_pattern, t.max_depth, t.retry_max_attempts, t.retry_backoff, t.retry_base_ms, \
         t.retry_cap_ms, t.retry_jitter_permille, t.retry_max_age_ms, c.schedule, c.timezone, c.catch_up, \
         c.next_at, q.queue, q.batch_size, p.topic_pattern \
         from triggers t \
         left join kv_trigger_details k on k.trigger_id = t.id \
         left join dead_letter_trigger_details d on d.trigger_id = t.id \
         left join cron_trigger_details c on c.trigger_id = t.id \
         left join queue_trigger_details q on q.trigger_id = t.id \
         left join pubsub_trigger_details p on p.trigger_id = t.id "
    };
}
pub(crate) use trigger_select;

fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Database(sqlx::Error::Decode(
        format!("stored {what} is malformed: {detail}").into(),
    ))
}

/// A trigger with the columns of both detail tables.
#[derive(sqlx::FromRow)]
pub(crate) struct TriggerRow {
    id: TriggerId,
    app_id: AppId,
    script_id: ScriptId,
    kind: String,
    name: String,
    enabled: bool,
    registered_by_principal: String,
    created_at: Timestamp,
    updated_at: Timestamp,
    collection_pattern: Option<String>,
    ops: Option<String>,
    ordered: Option<bool>,
    source_pattern: Option<String>,
    max_depth: Option<i64>,
    retry_max_attempts: Option<i64>,
    retry_backoff: Option<String>,
    retry_base_ms: Option<i64>,
    retry_cap_ms: Option<i64>,
    retry_jitter_permille: Option<i64>,
    retry_max_age_ms: Option<i64>,
    schedule: Option<String>,
    timezone: Option<String>,
    catch_up: Option<String>,
    next_at: Option<Timestamp>,
    queue: Option<String>,
    batch_size: Option<i64>,
    topic_pattern: Option<String>,
}

impl TryFrom<TriggerRow> for Trigger {
    type Error = Error;
    fn try_from(r: TriggerRow) -> Result<Trigger> {
        let spec = match r.kind.as_str() {
            "kv" => match (r.collection_pattern, r.ops) {
                (Some(collection), Some(ops)) => Some(TriggerSpec::Kv {
                    collection,
                    ops: KvOps::parse(&ops).map_err(|e| corrupt("trigger ops", e))?,
                    ordered: r.ordered.unwrap_or(false),
                }),
                _ => None,
            },
            "dead_letter" => r
                .source_pattern
                .map(|source| TriggerSpec::DeadLetter { source }),
            "cron" => match (r.schedule, r.timezone, r.catch_up) {
                (Some(schedule), Some(timezone), Some(catch_up)) => Some(TriggerSpec::Cron {
                    schedule,
                    timezone,
                    catch_up: catch_up
                        .parse()
                        .map_err(|e| corrupt("trigger catch-up", e))?,
                }),
                _ => None,
            },
            "queue" => match (r.queue, r.batch_size) {
                (Some(queue), Some(batch)) => Some(TriggerSpec::Queue {
                    queue,
                    batch: batch.max(1) as u32,
                }),
                _ => None,
            },
            "pubsub" => r.topic_pattern.map(|topic| TriggerSpec::Pubsub { topic }),
            _ => None,
        };
        let Some(spec) = spec else {
            return Err(corrupt(
                "trigger",
                format!("{} of kind '{}' has no details", r.id, r.kind),
            ));
        };
        let retry = RetryPolicy {
            max_attempts: r.retry_max_attempts.map(|n| n.max(1) as u32),
            backoff: r
                .retry_backoff
                .map(|b| b.parse().map_err(|e| corrupt("trigger backoff", e)))
                .transpose()?,
            base_ms: r.retry_base_ms.map(|v| v.max(0) as u64),
            cap_ms: r.retry_cap_ms.map(|v| v.max(0) as u64),
            jitter: r.retry_jitter_permille.map(|p| p as f64 / 1000.0),
            max_age_ms: r.retry_max_age_ms.map(|v| v.max(0) as u64),
        };
        Ok(Trigger {
            id: r.id,
            app_id: r.app_id,
            script_id: r.script_id,
            name: r.name,
            enabled: r.enabled,
            registered_by_principal: r.registered_by_principal,
            spec,
            retry,
            max_depth: r.max_depth.map(|d| d.clamp(1, i64::from(u32::MAX)) as u32),
            next_fire_at: r.next_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Convert fetched trigger rows.
pub(crate) fn triggers(rows: Vec<TriggerRow>) -> Result<Vec<Trigger>> {
    rows.into_iter().map(Trigger::try_from).collect()
}

/// Of an app's enabled kv triggers, those matching `collection` and `op`.
pub(crate) fn matching_kv(candidates: Vec<Trigger>, collection: &str, op: KvOp) -> Vec<Trigger> {
    candidates
        .into_iter()
        .filter(|t| match &t.spec {
            TriggerSpec::Kv {
                collection: pattern,
                ops,
                ..
            } => t.enabled && ops.contains(op) && collection_matches(pattern, collection),
            _ => false,
        })
        .collect()
}

/// Of an app's enabled triggers of one kind, those for `name`: a dead
/// letter's original source or a topic (by pattern), a queue (exactly).
pub(crate) fn matching_named(candidates: Vec<Trigger>, name: &str) -> Vec<Trigger> {
    candidates
        .into_iter()
        .filter(|t| {
            t.enabled
                && match &t.spec {
                    TriggerSpec::DeadLetter { source: pattern }
                    | TriggerSpec::Pubsub { topic: pattern } => collection_matches(pattern, name),
                    TriggerSpec::Queue { queue, .. } => queue == name,
                    _ => false,
                }
        })
        .collect()
}

/// The detail table row of a trigger spec.
pub(crate) enum Details<'a> {
    /// `kv_trigger_details`.
    Kv {
        pattern: &'a str,
        ops: &'static str,
        ordered: bool,
    },
    /// `dead_letter_trigger_details`.
    DeadLetter { pattern: &'a str },
    /// `cron_trigger_details`.
    Cron {
        schedule: &'a str,
        timezone: &'a str,
        catch_up: &'static str,
    },
    /// `queue_trigger_details`.
    Queue { queue: &'a str, batch: i64 },
    /// `pubsub_trigger_details`.
    Pubsub { pattern: &'a str },
}

impl<'a> Details<'a> {
    pub(crate) fn of(spec: &'a TriggerSpec) -> Self {
        match spec {
            TriggerSpec::Kv {
                collection,
                ops,
                ordered,
            } => Details::Kv {
                pattern: collection,
                ops: ops.as_db_str(),
                ordered: *ordered,
            },
            TriggerSpec::DeadLetter { source } => Details::DeadLetter { pattern: source },
            TriggerSpec::Cron {
                schedule,
                timezone,
                catch_up,
            } => Details::Cron {
                schedule,
                timezone,
                catch_up: catch_up.as_str(),
            },
            TriggerSpec::Queue { queue, batch } => Details::Queue {
                queue,
                batch: i64::from((*batch).clamp(1, 1000)),
            },
            TriggerSpec::Pubsub { topic } => Details::Pubsub { pattern: topic },
        }
    }
}

/// The error for a trigger whose script belongs to another app.
pub(crate) fn cross_app_script(t: &NewTrigger) -> Error {
    Error::Conflict(format!(
        "script {} belongs to another app than {}: a trigger runs a script of its own app",
        t.script_id, t.app_id
    ))
}

/// A script's metadata and code.
#[derive(sqlx::FromRow)]
pub(crate) struct ScriptCodeRow {
    /// The metadata.
    #[sqlx(flatten)]
    pub(crate) script: Script,
    /// The component bytes.
    pub(crate) wasm: Vec<u8>,
}

/// A member row.
#[derive(sqlx::FromRow)]
pub(crate) struct MemberRow {
    app_id: AppId,
    principal: String,
    role: String,
}

impl TryFrom<MemberRow> for Member {
    type Error = Error;
    fn try_from(r: MemberRow) -> Result<Member> {
        Ok(Member {
            app_id: r.app_id,
            principal: r.principal,
            role: parse_role(&r.role)?,
        })
    }
}

/// A stored role.
pub(crate) fn parse_role(role: &str) -> Result<Role> {
    role.parse().map_err(|e| corrupt("role", e))
}

/// A KV row.
#[derive(sqlx::FromRow)]
pub(crate) struct KvRow {
    collection: String,
    key: String,
    #[sqlx(json)]
    value: Value,
    version: i64,
    updated_at: Timestamp,
}

impl From<KvRow> for KvEntry {
    fn from(r: KvRow) -> KvEntry {
        KvEntry {
            collection: r.collection,
            key: r.key,
            value: r.value,
            version: r.version,
            updated_at: r.updated_at,
        }
    }
}

/// A dead-letter row.
#[derive(sqlx::FromRow)]
pub(crate) struct DeadLetterRow {
    id: DeadLetterId,
    app_id: AppId,
    original_event_id: EventId,
    source: String,
    op: String,
    trigger_id: Option<TriggerId>,
    script_id: Option<ScriptId>,
    #[sqlx(json)]
    payload: Value,
    attempt_count: i32,
    first_attempt_at: Timestamp,
    last_attempt_at: Timestamp,
    last_error: String,
    created_at: Timestamp,
    resolved_at: Option<Timestamp>,
    resolution: Option<String>,
}

impl TryFrom<DeadLetterRow> for DeadLetter {
    type Error = Error;
    fn try_from(r: DeadLetterRow) -> Result<DeadLetter> {
        let resolution = match r.resolution {
            Some(text) => Some(text.parse().map_err(|e| corrupt("resolution", e))?),
            None => None,
        };
        Ok(DeadLetter {
            id: r.id,
            app_id: r.app_id,
            original_event_id: r.original_event_id,
            source: r.source,
            op: r.op,
            trigger_id: r.trigger_id,
            script_id: r.script_id,
            payload: r.payload,
            attempt_count: r.attempt_count,
            first_attempt_at: r.first_attempt_at,
            last_attempt_at: r.last_attempt_at,
            last_error: r.last_error,
            created_at: r.created_at,
            resolved_at: r.resolved_at,
            resolution,
        })
    }
}

/// Convert fetched dead-letter rows.
pub(crate) fn dead_letters(rows: Vec<DeadLetterRow>) -> Result<Vec<DeadLetter>> {
    rows.into_iter().map(DeadLetter::try_from).collect()
}

/// The error for resolving `dl`, which is already resolved.
pub(crate) fn already_resolved(dl: &DeadLetter) -> Error {
    Error::AlreadyResolved {
        id: dl.id.to_string(),
        // A resolved_at without a resolution can only come from hand edits.
        resolution: dl.resolution.unwrap_or(crate::model::Resolution::Ignored),
    }
}

/// An abandoned-execution row.
#[derive(sqlx::FromRow)]
pub(crate) struct AbandonedRow {
    id: AbandonedId,
    app_id: AppId,
    outbox_event_id: EventId,
    script_id: ScriptId,
    trigger_id: Option<TriggerId>,
    reply_to: String,
    outcome: String,
    detail: String,
    created_at: Timestamp,
}

impl TryFrom<AbandonedRow> for AbandonedExecution {
    type Error = Error;
    fn try_from(r: AbandonedRow) -> Result<AbandonedExecution> {
        Ok(AbandonedExecution {
            id: r.id,
            app_id: r.app_id,
            outbox_event_id: r.outbox_event_id,
            script_id: r.script_id,
            trigger_id: r.trigger_id,
            reply_to: r.reply_to,
            outcome: r.outcome.parse().map_err(|e| corrupt("outcome", e))?,
            detail: r.detail,
            created_at: r.created_at,
        })
    }
}

/// The columns of [`RunRow`].
macro_rules! run_columns {
    () => {
        "id, app_id, trigger_id, script_id, event_id, source, op, attempt, principal, \
         started_at, duration_us, outcome, limit_name, error, reply_bytes, logs, recorded_at"
    };
}
pub(crate) use run_columns;

/// A run record row.
#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    id: RunId,
    app_id: AppId,
    trigger_id: Option<TriggerId>,
    script_id: Option<ScriptId>,
    event_id: EventId,
    source: String,
    op: String,
    attempt: i32,
    principal: String,
    started_at: Timestamp,
    duration_us: i64,
    outcome: String,
    limit_name: Option<String>,
    error: Option<String>,
    reply_bytes: Option<i64>,
    logs: Option<Json<Vec<LogLine>>>,
    recorded_at: Timestamp,
}

impl TryFrom<RunRow> for Run {
    type Error = Error;
    fn try_from(r: RunRow) -> Result<Run> {
        Ok(Run {
            id: r.id,
            app_id: r.app_id,
            trigger_id: r.trigger_id,
            script_id: r.script_id,
            event_id: r.event_id,
            source: r.source,
            op: r.op,
            attempt: r.attempt,
            principal: r.principal,
            started_at: r.started_at,
            duration_us: r.duration_us,
            outcome: r.outcome.parse().map_err(|e| corrupt("run outcome", e))?,
            limit: r.limit_name,
            error: r.error,
            reply_bytes: r.reply_bytes,
            logs: r.logs.map(|Json(lines)| lines).unwrap_or_default(),
            recorded_at: r.recorded_at,
        })
    }
}

/// Runs from their rows.
pub(crate) fn runs(rows: Vec<RunRow>) -> Result<Vec<Run>> {
    rows.into_iter().map(Run::try_from).collect()
}

/// A parked reply row.
#[derive(sqlx::FromRow)]
pub(crate) struct ReplyRow {
    inbox: String,
    app_id: AppId,
    outbox_event_id: EventId,
    script_id: ScriptId,
    outcome: String,
    body: Vec<u8>,
    created_at: Timestamp,
}

impl TryFrom<ReplyRow> for StoredReply {
    type Error = Error;
    fn try_from(r: ReplyRow) -> Result<StoredReply> {
        Ok(StoredReply {
            inbox: r.inbox,
            app_id: r.app_id,
            outbox_event_id: r.outbox_event_id,
            script_id: r.script_id,
            outcome: r.outcome.parse().map_err(|e| corrupt("outcome", e))?,
            body: r.body,
            created_at: r.created_at,
        })
    }
}

/// Whether `e` is a violation of a unique or primary-key constraint.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Whether `e` is a violation of a foreign-key constraint.
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

/// Map a foreign-key violation on `app_id` to "unknown app".
pub(crate) fn unknown_app_on_fk(app: AppId) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        if is_foreign_key_violation(&e) {
            Error::not_found("app", app)
        } else {
            Error::Database(e)
        }
    }
}

/// The error for a URL that would not connect: redacted, on one line, and
/// with any password scrubbed from the driver's text as well.
pub(crate) fn unreachable(url: &super::DatabaseUrl, e: impl std::fmt::Display) -> Error {
    let mut reason = e.to_string().replace(['\n', '\r'], " ");
    for secret in passwords(&url.url) {
        reason = reason.replace(secret, "***");
    }
    Error::Unreachable {
        url: url.redacted(),
        reason,
    }
}

/// The password substrings of a URL (userinfo and `password=` parameters).
fn passwords(url: &str) -> Vec<&str> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if let Some((_, pw)) = authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
        {
            found.push(pw);
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        found.extend(
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| k.eq_ignore_ascii_case("password"))
                .map(|(_, v)| v),
        );
    }
    found.retain(|p| !p.is_empty());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_passwords_from_reasons() {
        let url =
            super::super::DatabaseUrl::parse("postgres://u:hunter2@h:1/x?password=zz").unwrap();
        let e = unreachable(&url, "auth failed for hunter2\nand zz");
        let text = e.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("zz") && !text.contains('\n'),
            "{text}"
        );
    }
}
