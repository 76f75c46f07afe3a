//! Running a statement on either database from code written once: the
//! bounds that generic sqlx code needs, named in one trait.
//!
//! Rule: shared store code asks for `DB: Db` and nothing else. Everything
//! it needs from sqlx (an executor for a connection, encoding of the values
//! it binds, decoding of the rows it reads, rows affected) is a supertrait
//! of [`Db`], so it is implied wherever `Db` is: no `where` clause is
//! repeated on the code that uses it.
//!
//! Why the capabilities are traits on the database and not plain bounds:
//! Rust assumes a trait's supertraits wherever the trait is a bound, but not
//! the other `where` clauses of its definition (rust-lang/rust#20671). A
//! bound such as `AppId: Encode<'q, DB>` or
//! `&'c mut DB::Connection: Executor<'c>` names another type than `DB`, so
//! it would have to be restated on every impl and function. [`Binds`],
//! [`Decodes`] and [`Runs`] turn each of those into a bound on `DB` itself,
//! implemented once for every database that meets the real sqlx bound, and
//! [`Run`] gives statements `.arg(..)`, `.run(..)`, `.one(..)`, `.optional(..)`
//! and `.all(..)`.

use std::future::Future;

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo};
use sqlx::types::Json;
use sqlx::{Arguments, Database, Encode, Executor, FromRow, IntoArguments, Postgres, Sqlite, Type};

use super::rows::{
    AbandonedRow, DeadLetterRow, KvRow, MemberRow, ReplyRow, RunRow, ScriptCodeRow, TriggerRow,
};
use crate::model::{
    AbandonedId, App, AppId, DeadLetterId, EventId, OutboxEvent, RunId, Script, ScriptId,
    Timestamp, TokenId, TriggerId,
};
use crate::runtime::LogLine;
use crate::tokens::ApiToken;

/// A value of the runs table, bound in the form that table stores: on
/// SQLite ids as 16-byte blobs and times as integer microseconds since the
/// epoch (about 130 bytes a row instead of 330, and 40 bytes an index entry
/// instead of 100: the table is written once per invocation, on the hot
/// path); on PostgreSQL as the value itself (`uuid`, `timestamptz`, compact
/// already). The types decode from either form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compact<T>(pub T);

/// A value with a compact SQLite form, for [`Compact`].
pub(crate) trait CompactSqlite {
    /// The SQLite type of the compact form.
    fn compact_type() -> SqliteTypeInfo;
    /// The compact form.
    fn compact(&self) -> SqliteArgumentValue<'static>;
}

macro_rules! compact_ids {
    ($($id:ty),*) => {$(
        impl CompactSqlite for $id {
            fn compact_type() -> SqliteTypeInfo {
                <Vec<u8> as Type<Sqlite>>::type_info()
            }
            fn compact(&self) -> SqliteArgumentValue<'static> {
                SqliteArgumentValue::Blob(self.0.as_bytes().to_vec().into())
            }
        }
    )*};
}
compact_ids!(AppId, ScriptId, TriggerId, EventId, RunId);

impl CompactSqlite for Timestamp {
    fn compact_type() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compact(&self) -> SqliteArgumentValue<'static> {
        SqliteArgumentValue::Int64(self.0.timestamp_micros())
    }
}

impl<T: CompactSqlite> Type<Sqlite> for Compact<T> {
    fn type_info() -> SqliteTypeInfo {
        T::compact_type()
    }
}

impl<'q, T: CompactSqlite> Encode<'q, Sqlite> for Compact<T> {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        buf.push(self.0.compact());
        Ok(IsNull::No)
    }
}

impl<T: Type<Postgres>> Type<Postgres> for Compact<T> {
    fn type_info() -> PgTypeInfo {
        T::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        T::compatible(ty)
    }
}

impl<'q, T: Encode<'q, Postgres>> Encode<'q, Postgres> for Compact<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        self.0.encode_by_ref(buf)
    }
}

/// A statement with its bound values, on database `DB`.
pub(crate) type Statement<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// `DB` can bind a `T`: `T: Encode<'q, DB> + Type<DB>`, stated on `DB`.
pub(crate) trait Binds<'q, T>: Database {
    /// Bind `value` as the statement's next parameter.
    fn bind(statement: Statement<'q, Self>, value: T) -> Statement<'q, Self>;
    /// Add `value` to a list of arguments being built with its SQL text.
    fn add(arguments: &mut Self::Arguments<'q>, value: T) -> Result<(), BoxDynError>;
}

impl<'q, DB: Database, T> Binds<'q, T> for DB
where
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    fn bind(statement: Statement<'q, Self>, value: T) -> Statement<'q, Self> {
        statement.bind(value)
    }

    fn add(arguments: &mut Self::Arguments<'q>, value: T) -> Result<(), BoxDynError> {
        arguments.add(value)
    }
}

/// `DB`'s rows decode to a `T`: `T: FromRow<'r, DB::Row>`, stated on `DB`.
/// A single column decodes as a one-element tuple.
pub(crate) trait Decodes<T>: Database {
    /// Decode one row.
    fn decode(row: &Self::Row) -> sqlx::Result<T>;
}

impl<DB: Database, T> Decodes<T> for DB
where
    T: for<'r> FromRow<'r, DB::Row>,
{
    fn decode(row: &Self::Row) -> sqlx::Result<T> {
        T::from_row(row)
    }
}

/// `DB` runs statements on one of its connections.
pub(crate) trait Runs: Database {
    /// A statement from SQL text and the arguments its placeholders name.
    fn with_arguments<'q>(sql: &'q str, arguments: Self::Arguments<'q>) -> Statement<'q, Self>;
    /// Run a statement for its effect.
    fn execute<'e, 'q: 'e>(
        statement: Statement<'q, Self>,
        conn: &'e mut Self::Connection,
    ) -> BoxFuture<'e, sqlx::Result<Self::QueryResult>>;
    /// Run a statement for at most one row.
    fn fetch_optional<'e, 'q: 'e>(
        statement: Statement<'q, Self>,
        conn: &'e mut Self::Connection,
    ) -> BoxFuture<'e, sqlx::Result<Option<Self::Row>>>;
    /// Run a statement for all its rows.
    fn fetch_all<'e, 'q: 'e>(
        statement: Statement<'q, Self>,
        conn: &'e mut Self::Connection,
    ) -> BoxFuture<'e, sqlx::Result<Vec<Self::Row>>>;
}

impl<DB: Database> Runs for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn with_arguments<'q>(sql: &'q str, arguments: Self::Arguments<'q>) -> Statement<'q, Self> {
        sqlx::query_with(sql, arguments)
    }

    fn execute<'e, 'q: 'e>(
        statement: Statement<'q, Self>,
        conn: &'e mut Self::Connection,
    ) -> BoxFuture<'e, sqlx::Result<Self::QueryResult>> {
        Box::pin(statement.execute(conn))
    }

    fn fetch_optional<'e, 'q: 'e>(
        statement: Statement<'q, Self>,
        conn: &'e mut Self::Connection,
    ) -> BoxFuture<'e, sqlx::Result<Option<Self::Row>>> {
        Box::pin(statement.fetch_optional(conn))
    }

    fn fetch_all<'e, 'q: 'e>(
        statement: Statement<'q, Self>,
        conn: &'e mut Self::Connection,
    ) -> BoxFuture<'e, sqlx::Result<Vec<Self::Row>>> {
        Box::pin(statement.fetch_all(conn))
    }
}

/// A database the store runs on: it runs statements, binds every type the
/// store binds and decodes every row the store reads. Implemented by each
/// backend for its sqlx database (only [`Db::rows_affected`] is its own:
/// sqlx has no generic way to ask).
pub(crate) trait Db:
    Runs
    + for<'q> Binds<'q, AppId>
    + for<'q> Binds<'q, Option<AppId>>
    + for<'q> Binds<'q, ScriptId>
    + for<'q> Binds<'q, Option<ScriptId>>
    + for<'q> Binds<'q, TriggerId>
    + for<'q> Binds<'q, Option<TriggerId>>
    + for<'q> Binds<'q, EventId>
    + for<'q> Binds<'q, DeadLetterId>
    + for<'q> Binds<'q, AbandonedId>
    + for<'q> Binds<'q, RunId>
    + for<'q> Binds<'q, TokenId>
    + for<'q> Binds<'q, Compact<AppId>>
    + for<'q> Binds<'q, Compact<ScriptId>>
    + for<'q> Binds<'q, Option<Compact<ScriptId>>>
    + for<'q> Binds<'q, Compact<TriggerId>>
    + for<'q> Binds<'q, Option<Compact<TriggerId>>>
    + for<'q> Binds<'q, Compact<EventId>>
    + for<'q> Binds<'q, Compact<RunId>>
    + for<'q> Binds<'q, Compact<Timestamp>>
    + for<'q> Binds<'q, String>
    + for<'q> Binds<'q, Timestamp>
    + for<'q> Binds<'q, Option<Timestamp>>
    + for<'q> Binds<'q, &'q str>
    + for<'q> Binds<'q, Option<&'q str>>
    + for<'q> Binds<'q, &'q [u8]>
    + for<'q> Binds<'q, Json<&'q Value>>
    + for<'q> Binds<'q, Option<Json<&'q [LogLine]>>>
    + for<'q> Binds<'q, Option<i64>>
    + for<'q> Binds<'q, bool>
    + for<'q> Binds<'q, i32>
    + for<'q> Binds<'q, i64>
    + Decodes<App>
    + Decodes<Script>
    + Decodes<ScriptCodeRow>
    + Decodes<MemberRow>
    + Decodes<KvRow>
    + Decodes<TriggerRow>
    + Decodes<OutboxEvent>
    + Decodes<DeadLetterRow>
    + Decodes<AbandonedRow>
    + Decodes<ReplyRow>
    + Decodes<RunRow>
    + Decodes<ApiToken>
    + Decodes<super::StoredVar>
    + Decodes<(Option<EventId>,)>
    + Decodes<(String,)>
    + Decodes<(i32,)>
    + Decodes<(i32, Option<String>)>
    + Decodes<(i64,)>
    + Decodes<(AppId,)>
    + Decodes<(Option<Timestamp>,)>
{
    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// The text to run for the host's statement `sql`: on PostgreSQL its
    /// tables named in the host's schema ([`super::schema`]).
    fn qualify(sql: &str) -> &str {
        sql
    }
}

/// Where the current time of a statement comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Clock {
    /// The SQL text says `now()`: the database's clock, shared by every
    /// process on it (PostgreSQL).
    Database,
    /// The SQL text takes the time as its last parameter, bound from this
    /// process's clock (SQLite, where one process owns the file).
    Process,
}

/// Binding and running a [`Statement`] in shared code.
pub(crate) trait Run<'q, DB: Db>: Sized {
    /// Bind the next parameter.
    fn arg<T>(self, value: T) -> Self
    where
        DB: Binds<'q, T>;
    /// Bind the current time as the next parameter when `clock` says the
    /// SQL text takes it; otherwise the text says `now()` and this binds
    /// nothing.
    fn now(self, clock: Clock) -> Self;
    /// Run for the effect; how many rows changed. (Not named `execute`:
    /// sqlx's own returns the database's result type.)
    fn run(self, conn: &mut DB::Connection) -> impl Future<Output = sqlx::Result<u64>> + Send;
    /// Run for exactly one row ([`sqlx::Error::RowNotFound`] without one).
    fn one<T>(self, conn: &mut DB::Connection) -> impl Future<Output = sqlx::Result<T>> + Send
    where
        DB: Decodes<T>;
    /// Run for at most one row.
    fn optional<T>(
        self,
        conn: &mut DB::Connection,
    ) -> impl Future<Output = sqlx::Result<Option<T>>> + Send
    where
        DB: Decodes<T>;
    /// Run for all rows.
    fn all<T>(self, conn: &mut DB::Connection) -> impl Future<Output = sqlx::Result<Vec<T>>> + Send
    where
        DB: Decodes<T>;
}

impl<'q, DB: Db> Run<'q, DB> for Statement<'q, DB> {
    fn arg<T>(self, value: T) -> Self
    where
        DB: Binds<'q, T>,
    {
        DB::bind(self, value)
    }

    fn now(self, clock: Clock) -> Self {
        match clock {
            Clock::Database => self,
            Clock::Process => self.arg(Timestamp::now()),
        }
    }

    async fn run(self, conn: &mut DB::Connection) -> sqlx::Result<u64> {
        Ok(DB::rows_affected(&DB::execute(self, conn).await?))
    }

    async fn one<T>(self, conn: &mut DB::Connection) -> sqlx::Result<T>
    where
        DB: Decodes<T>,
    {
        let row = DB::fetch_optional(self, conn).await?;
        DB::decode(&row.ok_or(sqlx::Error::RowNotFound)?)
    }

    async fn optional<T>(self, conn: &mut DB::Connection) -> sqlx::Result<Option<T>>
    where
        DB: Decodes<T>,
    {
        match DB::fetch_optional(self, conn).await? {
            Some(row) => DB::decode(&row).map(Some),
            None => Ok(None),
        }
    }

    async fn all<T>(self, conn: &mut DB::Connection) -> sqlx::Result<Vec<T>>
    where
        DB: Decodes<T>,
    {
        let rows = DB::fetch_all(self, conn).await?;
        rows.iter().map(DB::decode).collect()
    }
}

/// SQL text and the arguments its placeholders name, built together, for
/// statements whose shape depends on their input (a filtered listing, a
/// multi-row insert). sqlx's `QueryBuilder` does the same, but generic
/// code cannot run what it builds: over a generic database its query must
/// borrow the builder for the builder's own argument lifetime, which the
/// builder's drop forbids. This one hands its parts over instead
/// ([`Built::finish`]) to run with [`Runs::with_arguments`].
pub(crate) struct Built<'q, DB: Database> {
    sql: String,
    arguments: DB::Arguments<'q>,
    /// The first value that failed to encode, reported by `finish`.
    error: Option<BoxDynError>,
}

impl<'q, DB: Db> Built<'q, DB> {
    /// Start with `sql`.
    pub(crate) fn new(sql: &str) -> Self {
        Built {
            sql: sql.to_owned(),
            arguments: Default::default(),
            error: None,
        }
    }

    /// Append SQL text.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Append a placeholder bound to `value`.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<'q, T>,
    {
        if let Err(e) = DB::add(&mut self.arguments, value) {
            self.error.get_or_insert(e);
        }
        if let Err(e) = self.arguments.format_placeholder(&mut self.sql) {
            self.error.get_or_insert(e.into());
        }
        self
    }

    /// Append placeholders bound to `values`, separated by commas (the
    /// inside of an `in (...)`).
    pub(crate) fn bind_list<T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        DB: Binds<'q, T>,
    {
        for (n, value) in values.into_iter().enumerate() {
            self.push(if n == 0 { "" } else { ", " }).bind(value);
        }
        self
    }

    /// Append `values (..), (..)`: one tuple per item, whose values `row`
    /// appends.
    pub(crate) fn push_values<I: IntoIterator>(
        &mut self,
        items: I,
        mut row: impl FnMut(&mut Tuple<'_, 'q, DB>, I::Item),
    ) -> &mut Self {
        self.push("values ");
        for (n, item) in items.into_iter().enumerate() {
            self.push(if n == 0 { "(" } else { ", (" });
            row(
                &mut Tuple {
                    built: self,
                    first: true,
                },
                item,
            );
            self.push(")");
        }
        self
    }

    /// The SQL text and its arguments, or the first value that failed to
    /// encode.
    pub(crate) fn finish(self) -> sqlx::Result<(String, DB::Arguments<'q>)> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok((self.sql, self.arguments)),
        }
    }
}

/// The values of one tuple of [`Built::push_values`], separated by commas.
pub(crate) struct Tuple<'b, 'q, DB: Database> {
    built: &'b mut Built<'q, DB>,
    first: bool,
}

impl<'q, DB: Db> Tuple<'_, 'q, DB> {
    fn next(&mut self) -> &mut Built<'q, DB> {
        if !std::mem::take(&mut self.first) {
            self.built.push(", ");
        }
        self.built
    }

    /// A value bound to a placeholder.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<'q, T>,
    {
        self.next().bind(value);
        self
    }

    /// A value computed in SQL: write its text and binds on the builder
    /// returned.
    pub(crate) fn expr(&mut self) -> &mut Built<'q, DB> {
        self.next()
    }

    /// The current time, `now`, as `clock` says: `now()` in the text, or a
    /// placeholder bound to `now`.
    pub(crate) fn now(&mut self, clock: Clock, now: Timestamp) -> &mut Self {
        match clock {
            Clock::Database => self.next().push("now()"),
            Clock::Process => self.next().bind(now),
        };
        self
    }

    /// [`Tuple::now`] in the runs table's [`Compact`] form.
    pub(crate) fn now_compact(&mut self, clock: Clock, now: Timestamp) -> &mut Self {
        match clock {
            Clock::Database => self.next().push("now()"),
            Clock::Process => self.next().bind(Compact(now)),
        };
        self
    }

    /// `time`, or the current time when it is `None`, as `clock` says:
    /// `coalesce($n, now())`, or a placeholder bound to `time` or `now`.
    pub(crate) fn bind_or_now(
        &mut self,
        time: Option<Timestamp>,
        clock: Clock,
        now: Timestamp,
    ) -> &mut Self {
        match clock {
            Clock::Database => self.next().push("coalesce(").bind(time).push(", now())"),
            Clock::Process => self.next().bind(time.unwrap_or(now)),
        };
        self
    }
}
