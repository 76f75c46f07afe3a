//! The domain vocabulary shared by the store, the runtime and the dispatcher.
//!
//! Rule: these types are plain data. Ids are typed so an app id can never be
//! passed where a script id is expected, and every type here encodes the same
//! way on both backends (UUIDs as `uuid` on PostgreSQL and hyphenated text on
//! SQLite; timestamps as `timestamptz` and as fixed-width, sortable UTC text),
//! so one row struct decodes from either database. On SQLite they also decode
//! from the compact form the runs table stores (`store::sql::Compact`: ids as
//! 16-byte blobs, times as integer microseconds).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh id, unique and ordered by creation time (UUIDv7):
            /// the b-tree indexes keyed by ids then grow at their end, and
            /// deleting a batch of rows made together (the dispatcher's
            /// completions) touches a few index pages, not one page per row.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <Uuid as Type<Postgres>>::type_info()
            }
        }
        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
            }
        }
        impl Decode<'_, Postgres> for $name {
            fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
                <Uuid as Decode<Postgres>>::decode(value).map(Self)
            }
        }
        impl Type<Sqlite> for $name {
            fn type_info() -> SqliteTypeInfo {
                <String as Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <String as Type<Sqlite>>::compatible(ty) || <Vec<u8> as Type<Sqlite>>::compatible(ty)
            }
        }
        impl<'q> Encode<'q, Sqlite> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<SqliteArgumentValue<'q>>,
            ) -> Result<IsNull, BoxDynError> {
                <String as Encode<Sqlite>>::encode(self.to_string(), buf)
            }
        }
        impl Decode<'_, Sqlite> for $name {
            fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
                // Hyphenated text (36 bytes) or, in the runs table, 16 raw bytes.
                let bytes = <&[u8] as Decode<Sqlite>>::decode(value)?;
                Ok(Self(match bytes.len() {
                    16 => Uuid::from_slice(bytes)?,
                    _ => Uuid::try_parse_ascii(bytes)?,
                }))
            }
        }
    };
}

id_type!(
    /// Identifies an app: the unit of ownership and isolation.
    AppId
);
id_type!(
    /// Identifies a deployed script (its name within an app, not its code).
    ScriptId
);
id_type!(
    /// Identifies a trigger.
    TriggerId
);
id_type!(
    /// Identifies an outbox event; stable across retries, so scripts can use
    /// it to stay idempotent.
    EventId
);
id_type!(
    /// Identifies a dead letter.
    DeadLetterId
);
id_type!(
    /// Identifies an abandoned-execution record.
    AbandonedId
);
id_type!(
    /// Identifies a run record ([`crate::runs`]).
    RunId
);
id_type!(
    /// Identifies an API token ([`crate::tokens`]).
    TokenId
);

/// A point in time, UTC, with microsecond precision.
///
/// On SQLite it is stored as fixed-width text (`2026-01-02T03:04:05.000006Z`),
/// so that comparing the text compares the times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// The due time of an outbox row that is held, not scheduled: a retry
    /// or replay of a disabled trigger waits at this time (never due) until
    /// the trigger is enabled again. 9999-01-01T00:00:00Z, which both
    /// backends store.
    pub fn held() -> Self {
        Self(DateTime::from_timestamp(253_370_764_800, 0).expect("9999-01-01 is a valid time"))
    }

    /// The due time of an ordered trigger's row that is parked behind an
    /// earlier row of its key (see `TriggerSpec::Kv::ordered`): never due,
    /// so claims do not look at it, until the settling of the row before it
    /// makes it due. 9999-01-02T00:00:00Z, after [`Timestamp::held`].
    pub fn parked() -> Self {
        Self(DateTime::from_timestamp(253_370_851_200, 0).expect("9999-01-02 is a valid time"))
    }

    /// Parse an RFC 3339 time given as `what` (a flag or field name); the
    /// error names it and shows the form wanted. The CLI's `--since` and
    /// the API's `since` read times through here.
    pub fn parse_rfc3339(what: &str, text: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| Self::from_datetime(t.with_timezone(&Utc)))
            .map_err(|e| {
                format!(
                    "invalid {what} time '{text}': {e}; use RFC 3339, e.g. 2026-11-29T10:00:00Z"
                )
            })
    }

    /// The current time, truncated to microseconds (what both backends keep).
    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    /// Truncate to microseconds, the precision both backends store.
    pub fn from_datetime(t: DateTime<Utc>) -> Self {
        let micros = t.timestamp_micros();
        Self(DateTime::from_timestamp_micros(micros).unwrap_or(t))
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    /// This time plus a duration.
    pub fn plus(&self, d: std::time::Duration) -> Self {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Self(
            self.0
                .checked_add_signed(d)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// This time minus a duration.
    pub fn minus(&self, d: std::time::Duration) -> Self {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Self(
            self.0
                .checked_sub_signed(d)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    }

    /// Fixed-width RFC 3339 text with microseconds
    /// (`2026-01-02T03:04:05.000006Z`): how SQLite stores times, so that
    /// comparing the text compares the times; PostgreSQL reads it too.
    pub(crate) fn fixed_text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}
impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}
impl Decode<'_, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Self)
    }
}
impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty) || <i64 as Type<Sqlite>>::compatible(ty)
    }
}
impl<'q> Encode<'q, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.fixed_text(), buf)
    }
}
impl Decode<'_, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        use sqlx::{TypeInfo, ValueRef};
        // Fixed-width text or, in the runs table, integer microseconds.
        if value.type_info().name() != "TEXT" {
            let micros = <i64 as Decode<Sqlite>>::decode(value)?;
            return DateTime::from_timestamp_micros(micros)
                .map(Self)
                .ok_or_else(|| format!("{micros} µs is not a time").into());
        }
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(
            DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc),
        ))
    }
}

/// An app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct App {
    /// Its id.
    pub id: AppId,
    /// Its unique name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A deployed script's metadata (the code itself is fetched separately).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct Script {
    /// Its id; stable across redeploys of the same name.
    pub id: ScriptId,
    /// The app it belongs to.
    pub app_id: AppId,
    /// Its name, unique within the app.
    pub name: String,
    /// Hex SHA-256 of the component bytes: the compile-cache key.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: i64,
    /// Who deployed the current code: the principal the deploy was made
    /// for, or `None` for the operator or the embedding application. The
    /// script's host calls need this principal's rights as well as those of
    /// the principal it runs as.
    pub deployed_by: Option<String>,
    /// First deploy.
    pub created_at: Timestamp,
    /// Last deploy.
    pub updated_at: Timestamp,
}

/// A stored KV entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct KvEntry {
    /// The collection.
    pub collection: String,
    /// The key within the collection.
    pub key: String,
    /// The JSON value.
    pub value: Value,
    /// Starts at 1, increases by one on every write.
    pub version: i64,
    /// Time of the last write.
    pub updated_at: Timestamp,
}

/// A KV operation a trigger can listen to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvOp {
    /// A key was written.
    Set,
    /// A key was deleted.
    Delete,
}

impl KvOp {
    /// The op's name in events and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            KvOp::Set => "set",
            KvOp::Delete => "delete",
        }
    }
}

impl FromStr for KvOp {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "set" => Ok(KvOp::Set),
            "delete" => Ok(KvOp::Delete),
            other => Err(InvalidValue::new("kv op", other, "set, delete")),
        }
    }
}

/// The set of KV ops a trigger listens to. Empty input means both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct KvOps {
    /// Fires on `set`.
    pub set: bool,
    /// Fires on `delete`.
    pub delete: bool,
}

impl KvOps {
    /// Both ops.
    pub const ALL: KvOps = KvOps {
        set: true,
        delete: true,
    };

    /// Whether `op` is in the set.
    pub fn contains(&self, op: KvOp) -> bool {
        match op {
            KvOp::Set => self.set,
            KvOp::Delete => self.delete,
        }
    }

    /// Parse `set,delete`, `set`, `delete`; an empty string means both.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let mut ops = KvOps {
            set: false,
            delete: false,
        };
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            match part.parse::<KvOp>()? {
                KvOp::Set => ops.set = true,
                KvOp::Delete => ops.delete = true,
            }
        }
        if !ops.set && !ops.delete {
            return Ok(KvOps::ALL);
        }
        Ok(ops)
    }

    /// The canonical text form stored in the database (`set,delete`).
    pub fn as_db_str(&self) -> &'static str {
        match (self.set, self.delete) {
            (true, false) => "set",
            (false, true) => "delete",
            _ => "set,delete",
        }
    }
}

/// What kind of trigger, and its kind-specific details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub enum TriggerSpec {
    /// Fires on KV writes in collections matching `collection`.
    Kv {
        /// A validated collection pattern (see [`crate::pattern`]).
        collection: String,
        /// Which ops fire it.
        ops: KvOps,
        /// Run the events of one (collection, key) one at a time, in the
        /// order they were written: while one is running or waiting for its
        /// retry, later ones of that key wait behind it. Other keys are not
        /// held up. Off by default: handlers run concurrently and unordered.
        /// Ordering covers writes made after the trigger was registered.
        #[serde(default)]
        ordered: bool,
    },
    /// Fires on new dead letters whose original source matches `source`.
    DeadLetter {
        /// A validated source pattern (see [`crate::pattern`]).
        source: String,
    },
    /// Fires on a cron schedule: one `cron`/`tick` event per tick, however
    /// many dispatchers run (see [`crate::cron`]).
    Cron {
        /// A cron expression with seconds (`0 */5 * * * *`), validated.
        schedule: String,
        /// An IANA time zone (`Europe/Berlin`); `UTC` by default.
        timezone: String,
        /// What to do about ticks missed while no dispatcher ran.
        #[serde(default)]
        catch_up: crate::cron::CatchUp,
    },
    /// Consumes the app's queue `queue` (see [`crate::messages`]); a queue
    /// has at most one consumer.
    Queue {
        /// The queue's name.
        queue: String,
        /// Most messages per invocation: 1 delivers `queue`/`message`
        /// events, more delivers `queue`/`batch` events of up to this many.
        batch: u32,
    },
    /// Fires on messages published to topics matching `topic`.
    Pubsub {
        /// A validated topic pattern (see [`crate::pattern`]).
        topic: String,
    },
}

impl Trigger {
    /// Whether it is a kv trigger that runs in order per key.
    pub fn is_ordered(&self) -> bool {
        matches!(self.spec, TriggerSpec::Kv { ordered: true, .. })
    }
}

impl TriggerSpec {
    /// The `kind` column value.
    pub fn kind(&self) -> &'static str {
        match self {
            TriggerSpec::Kv { .. } => "kv",
            TriggerSpec::DeadLetter { .. } => "dead_letter",
            TriggerSpec::Cron { .. } => "cron",
            TriggerSpec::Queue { .. } => "queue",
            TriggerSpec::Pubsub { .. } => "pubsub",
        }
    }
}

/// A registered trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct Trigger {
    /// Its id.
    pub id: TriggerId,
    /// Its app.
    pub app_id: AppId,
    /// The script it runs.
    pub script_id: ScriptId,
    /// A human name, for listings.
    pub name: String,
    /// Disabled triggers never match.
    pub enabled: bool,
    /// The principal scripts run as; checked on every host call.
    pub registered_by_principal: String,
    /// Kind and details.
    pub spec: TriggerSpec,
    /// Its retry policy; unset fields are the host's defaults.
    #[serde(default)]
    pub retry: crate::retry::RetryPolicy,
    /// Its own depth limit, below the host's (`PICLOUD_MAX_TRIGGER_DEPTH`):
    /// an event deeper than this is dead-lettered for it without running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// When its next cron tick is due (cron triggers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_at: Option<Timestamp>,
    /// Registration time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A trigger to register. The pattern must already be valid.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTrigger {
    /// Its app.
    pub app_id: AppId,
    /// The script to run (of the same app).
    pub script_id: ScriptId,
    /// A human name.
    pub name: String,
    /// The principal scripts will run as.
    pub registered_by_principal: String,
    /// Kind and details.
    pub spec: TriggerSpec,
    /// Its retry policy (`RetryPolicy::default()`: the host's defaults).
    pub retry: crate::retry::RetryPolicy,
    /// Its own depth limit, below the host's; `None`: the host's.
    pub max_depth: Option<u32>,
}

/// Event sources.
pub mod source {
    /// KV writes (ops `set`, `delete`).
    pub const KV: &str = "kv";
    /// Cron ticks.
    pub const CRON: &str = "cron";
    /// Pub/sub messages.
    pub const PUBSUB: &str = "pubsub";
    /// Queue items.
    pub const QUEUE: &str = "queue";
    /// Inbound email.
    pub const EMAIL: &str = "email";
    /// HTTP calls (op `invoke`): synchronous invocations.
    pub const HTTP: &str = "http";
    /// New dead letters (op `created`).
    pub const DEAD_LETTER: &str = "dead_letter";
}

/// An event to write to the outbox. Built only by its constructors, so its
/// bookkeeping is always consistent: [`NewEvent::raw`] (an event from
/// outside, matched against triggers), [`NewEvent::invocation`] (one run of
/// a script), [`NewEvent::for_trigger`] (an event continuing for one
/// trigger, as fan-out writes it); the host makes the rest. Read it with
/// its accessors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewEvent {
    /// The logical event this row carries, when it continues one (a fanned-out
    /// invocation); `None` makes the new row's own id the event id.
    pub(crate) event_id: Option<EventId>,
    /// The app the event belongs to.
    pub(crate) app_id: AppId,
    /// One of [`source`].
    pub(crate) source: String,
    /// The operation, e.g. `set`.
    pub(crate) op: String,
    /// Set for an invocation row: run only this trigger.
    pub(crate) trigger_id: Option<TriggerId>,
    /// Set for an invocation row or a direct invocation: run this script.
    pub(crate) script_id: Option<ScriptId>,
    /// The principal to run as, for direct invocations.
    pub(crate) principal: Option<String>,
    /// The JSON payload.
    pub(crate) payload: Value,
    /// 0 for events from outside; a script's writes carry depth + 1.
    pub(crate) depth: i32,
    /// Attempts already made (0 for a fresh event).
    pub(crate) attempt_count: i32,
    /// When the first attempt was made, carried over by fan-out.
    pub(crate) first_attempt_at: Option<Timestamp>,
    /// When the last attempt was made, carried over by fan-out.
    pub(crate) last_attempt_at: Option<Timestamp>,
    /// The last failure, carried over by fan-out.
    pub(crate) last_error: Option<String>,
    /// Earliest time to run; `None` means now.
    pub(crate) due_at: Option<Timestamp>,
    /// Inbox to deliver the reply to (synchronous invocation).
    pub(crate) reply_to: Option<String>,
    /// Its place in a per-key order (ordered kv triggers).
    #[serde(skip)]
    pub(crate) order: Order,
    /// The triggers whose scripts caused it, newest first (see [`Cause`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) chain: Vec<String>,
}

/// What caused an event a script wrote: how deep it is, and the names of
/// the triggers whose runs led to it, newest first, at most
/// [`Cause::MAX_CHAIN`] of them. A depth stop's dead letter names the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cause {
    /// The new event's depth.
    pub depth: i32,
    /// Trigger names, newest first.
    pub chain: Vec<String>,
}

impl Cause {
    /// Most trigger names a chain keeps.
    pub const MAX_CHAIN: usize = 16;

    /// An event from outside at `depth`, with no chain.
    pub fn at(depth: i32) -> Cause {
        Cause {
            depth,
            chain: Vec::new(),
        }
    }

    /// What a run of `trigger` (if any) for an event at `depth` with
    /// `chain` causes: one level deeper, its name first.
    pub fn of_run(depth: i32, trigger: Option<&str>, chain: &[String]) -> Cause {
        let chain = trigger
            .map(str::to_owned)
            .into_iter()
            .chain(chain.iter().cloned())
            .take(Self::MAX_CHAIN)
            .collect();
        Cause {
            depth: depth + 1,
            chain,
        }
    }
}

/// A new outbox row's place in the order of its key (see
/// [`TriggerSpec::Kv::ordered`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Order {
    /// Not ordered.
    #[default]
    None,
    /// A raw kv event: keyed by its collection and key when its app has an
    /// ordered trigger, numbered after the key's rows already written (the
    /// store decides both in the insert).
    Raw(String),
    /// An ordered trigger's invocation row: the key and number of the raw
    /// event it continues.
    Fixed(String, i64),
}

/// The order key of `collection`/`key`: both, unambiguously.
pub(crate) fn order_key(collection: &str, key: &str) -> String {
    serde_json::json!([collection, key]).to_string()
}

/// The order key of a raw kv event's payload, when it names both.
pub(crate) fn payload_order_key(payload: &Value) -> Option<String> {
    let name = |field| payload.get(field).and_then(Value::as_str);
    Some(order_key(name("collection")?, name("key")?))
}

impl NewEvent {
    /// A raw event from outside (depth 0), to be matched against triggers.
    pub fn raw(app_id: AppId, source: &str, op: &str, payload: Value) -> Self {
        NewEvent {
            event_id: None,
            app_id,
            source: source.to_owned(),
            op: op.to_owned(),
            trigger_id: None,
            script_id: None,
            principal: None,
            depth: 0,
            attempt_count: 0,
            first_attempt_at: None,
            last_attempt_at: None,
            last_error: None,
            due_at: None,
            reply_to: None,
            order: match source {
                source::KV => payload_order_key(&payload).map_or(Order::None, Order::Raw),
                _ => Order::None,
            },
            payload,
            chain: Vec::new(),
        }
    }

    /// A direct run of `script`, as `principal`, with `payload`: source
    /// `http`, op `invoke`, as a synchronous invoke's event but without a
    /// caller waiting. It is retried and dead-lettered like a trigger's run.
    /// Prefer `TriggerHost::enqueue_invocation_in`, which checks that the
    /// principal may invoke scripts of the app.
    pub fn invocation(app_id: AppId, script: ScriptId, principal: &str, payload: Value) -> Self {
        NewEvent {
            script_id: Some(script),
            principal: Some(principal.to_owned()),
            ..NewEvent::raw(app_id, source::HTTP, "invoke", payload)
        }
    }

    /// The row that continues event `of` for one `trigger` running `script`
    /// (what fan-out writes for a trigger that failed, or will run later):
    /// same event id, app, source, op, payload and depth, with `attempts`
    /// so far, due at `due_at`.
    pub fn for_trigger(
        of: &OutboxEvent,
        trigger: TriggerId,
        script: ScriptId,
        attempts: Attempts,
        due_at: Timestamp,
    ) -> Self {
        NewEvent {
            event_id: Some(of.event_id),
            trigger_id: Some(trigger),
            script_id: Some(script),
            attempt_count: attempts.count,
            first_attempt_at: attempts.first_at,
            last_attempt_at: attempts.last_at,
            last_error: attempts.last_error,
            due_at: Some(due_at),
            order: Order::None,
            chain: of.chain.clone(),
            ..NewEvent::raw(of.app_id, &of.source, &of.op, of.payload.clone()).at_depth(of.depth)
        }
    }

    /// A tick of cron `trigger`: a `cron`/`tick` row for that trigger alone
    /// (see [`crate::cron`]).
    pub fn tick(trigger: &Trigger, payload: Value) -> Self {
        NewEvent {
            trigger_id: Some(trigger.id),
            script_id: Some(trigger.script_id),
            ..NewEvent::raw(trigger.app_id, source::CRON, "tick", payload)
        }
    }

    /// The app it belongs to.
    pub fn app_id(&self) -> AppId {
        self.app_id
    }

    /// Its source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Its op.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// Its payload.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// Its depth: 0 from outside, one more for each script write.
    pub fn depth(&self) -> i32 {
        self.depth
    }

    /// The trigger it is for, when it continues an event for one.
    pub fn trigger_id(&self) -> Option<TriggerId> {
        self.trigger_id
    }

    /// The script it runs, when it names one.
    pub fn script_id(&self) -> Option<ScriptId> {
        self.script_id
    }

    /// The principal a direct run of a script runs as.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The same event, first due at `due_at` instead of now.
    pub fn due_at(mut self, due_at: Timestamp) -> Self {
        self.due_at = Some(due_at);
        self
    }

    /// The same event at another depth.
    pub fn at_depth(mut self, depth: i32) -> Self {
        self.depth = depth;
        self
    }

    /// The same event, caused as `cause` says (its depth and chain).
    pub fn caused_by(mut self, cause: &Cause) -> Self {
        self.depth = cause.depth;
        self.chain = cause.chain.clone();
        self
    }

    /// The triggers whose runs led to it, newest first.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }
}

/// The attempts an event has had so far ([`NewEvent::for_trigger`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attempts {
    /// How many.
    pub count: i32,
    /// When the first was made.
    pub first_at: Option<Timestamp>,
    /// When the last was made.
    pub last_at: Option<Timestamp>,
    /// How the last failed.
    pub last_error: Option<String>,
}

/// A row of the outbox. Decoded row by row: a row whose payload cannot be
/// decoded still comes back, marked [`OutboxEvent::undecodable`], so it
/// fails alone instead of failing the batch it was claimed with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// The row's own id.
    pub id: EventId,
    /// The logical event id scripts see: the same on every retry of the
    /// event, also when a raw event was fanned out to several triggers.
    pub event_id: EventId,
    /// Its app.
    pub app_id: AppId,
    /// Its source.
    pub source: String,
    /// Its op.
    pub op: String,
    /// Set for invocation rows.
    pub trigger_id: Option<TriggerId>,
    /// Set for invocation rows and direct invocations.
    pub script_id: Option<ScriptId>,
    /// Run-as principal for direct invocations.
    pub principal: Option<String>,
    /// The payload. For an [`OutboxEvent::undecodable`] row: its stored text,
    /// as a JSON string (at most 64 KiB of it).
    pub payload: Value,
    /// Why the stored payload could not be decoded (nested past what the
    /// JSON decoder accepts, for example: a row written around the host's
    /// checks). The dispatcher dead-letters such a row with this reason,
    /// without running it. `None` for every row the host's own checks let in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecodable: Option<String>,
    /// Trigger depth.
    pub depth: i32,
    /// Attempts made so far.
    pub attempt_count: i32,
    /// First attempt, if any.
    pub first_attempt_at: Option<Timestamp>,
    /// Last attempt, if any.
    pub last_attempt_at: Option<Timestamp>,
    /// Last failure, if any.
    pub last_error: Option<String>,
    /// Earliest time to run.
    pub due_at: Timestamp,
    /// Lease expiry while claimed.
    pub locked_until: Option<Timestamp>,
    /// The claimer holding the lease.
    pub locked_by: Option<String>,
    /// Inbox for a synchronous invocation's reply.
    pub reply_to: Option<String>,
    /// When it was written.
    pub created_at: Timestamp,
    /// The (collection, key) whose order it keeps, for a raw kv event of an
    /// app with an ordered trigger and for an ordered trigger's invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
    /// Its number in that order: rows of a key run in rising numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seq: Option<i64>,
    /// The triggers whose runs led to it, newest first (see [`Cause`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

/// The closed vocabulary of dead-letter resolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub enum Resolution {
    /// The original event was enqueued again.
    Replayed,
    /// Nothing more will be done.
    Ignored,
    /// A script dealt with it.
    HandledByScript,
    /// The dead-letter handler gave up (the recursion stop).
    HandlerFailed,
}

impl Resolution {
    /// All four values.
    pub const ALL: [Resolution; 4] = [
        Resolution::Replayed,
        Resolution::Ignored,
        Resolution::HandledByScript,
        Resolution::HandlerFailed,
    ];

    /// The database and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Replayed => "replayed",
            Resolution::Ignored => "ignored",
            Resolution::HandledByScript => "handled_by_script",
            Resolution::HandlerFailed => "handler_failed",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resolution {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resolution::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new(
                    "resolution",
                    s,
                    "replayed, ignored, handled_by_script, handler_failed",
                )
            })
    }
}

/// A dead letter: an event that exhausted its retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// Its id.
    pub id: DeadLetterId,
    /// Its app.
    pub app_id: AppId,
    /// The outbox id of the event that failed.
    pub original_event_id: EventId,
    /// The original source.
    pub source: String,
    /// The original op.
    pub op: String,
    /// The trigger that failed, if any.
    pub trigger_id: Option<TriggerId>,
    /// The script that failed, if any.
    pub script_id: Option<ScriptId>,
    /// The original payload.
    pub payload: Value,
    /// Attempts made.
    pub attempt_count: i32,
    /// First attempt.
    pub first_attempt_at: Timestamp,
    /// Last attempt.
    pub last_attempt_at: Timestamp,
    /// The last failure.
    pub last_error: String,
    /// When it was dead-lettered.
    pub created_at: Timestamp,
    /// When it was resolved, if it was.
    pub resolved_at: Option<Timestamp>,
    /// How it was resolved, if it was.
    pub resolution: Option<Resolution>,
}

/// A dead letter to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDeadLetter {
    /// The failed outbox row's id.
    pub original_event_id: EventId,
    /// Its app.
    pub app_id: AppId,
    /// Its source.
    pub source: String,
    /// Its op.
    pub op: String,
    /// Its trigger.
    pub trigger_id: Option<TriggerId>,
    /// Its script.
    pub script_id: Option<ScriptId>,
    /// Its payload.
    pub payload: Value,
    /// Its depth (the dead_letter event is one deeper).
    pub depth: i32,
    /// Attempts made.
    pub attempt_count: i32,
    /// First attempt.
    pub first_attempt_at: Timestamp,
    /// Last attempt.
    pub last_attempt_at: Timestamp,
    /// The last failure.
    pub last_error: String,
}

/// Filters for listing dead letters. All set fields must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeadLetterFilter {
    /// Only this app's.
    pub app_id: Option<AppId>,
    /// Only unresolved ones.
    pub unresolved_only: bool,
    /// Only with this original source.
    pub source: Option<String>,
    /// Only of this trigger.
    pub trigger_id: Option<TriggerId>,
    /// Created at or after.
    pub created_after: Option<Timestamp>,
    /// Created before.
    pub created_before: Option<Timestamp>,
    /// At most this many; `None` means no limit.
    pub limit: Option<u32>,
    /// Newest first (by creation time, then id) instead of oldest first.
    pub newest_first: bool,
    /// Only those after this one in the listing's order: the cursor of the
    /// next page (the last id of the page before).
    pub after: Option<DeadLetterId>,
}

/// Outcome of an invocation whose caller had gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The script succeeded.
    Ok,
    /// The script failed.
    Error,
}

impl Outcome {
    /// The database form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

impl FromStr for Outcome {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(Outcome::Ok),
            "error" => Ok(Outcome::Error),
            other => Err(InvalidValue::new("outcome", other, "ok, error")),
        }
    }
}

/// A synchronous invocation that finished after its caller had gone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbandonedExecution {
    /// Its id.
    pub id: AbandonedId,
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
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// A value outside a closed vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}': expected one of {expected}")]
pub struct InvalidValue {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl InvalidValue {
    pub(crate) fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        InvalidValue {
            what,
            value: value.to_owned(),
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_timestamps_sort_as_text() {
        let a = Timestamp::from_datetime(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let b = a.plus(std::time::Duration::from_micros(1));
        let c = a.plus(std::time::Duration::from_millis(1500));
        let (ta, tb, tc) = (a.fixed_text(), b.fixed_text(), c.fixed_text());
        assert_eq!(ta.len(), tb.len());
        assert!(ta < tb && tb < tc, "{ta} {tb} {tc}");
    }

    #[test]
    fn resolution_vocabulary_round_trips() {
        for r in Resolution::ALL {
            assert_eq!(r.as_str().parse::<Resolution>().unwrap(), r);
        }
        let err = "retried".parse::<Resolution>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown resolution 'retried': expected one of replayed, ignored, handled_by_script, handler_failed"
        );
    }

    #[test]
    fn kv_ops_parse() {
        assert_eq!(KvOps::parse("").unwrap(), KvOps::ALL);
        assert_eq!(
            KvOps::parse("set").unwrap(),
            KvOps {
                set: true,
                delete: false
            }
        );
        assert_eq!(KvOps::parse("delete, set").unwrap(), KvOps::ALL);
        assert!(KvOps::parse("update").is_err());
    }
}
