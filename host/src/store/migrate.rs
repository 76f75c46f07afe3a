//! The host's own migrations, kept out of the embedding application's way.
//!
//! Rule: the host records what it applied in its own table, never in sqlx's
//! `_sqlx_migrations` (that one belongs to the application, and sqlx
//! refuses to run when it finds versions it does not know). On SQLite the
//! table is `picloud_migrations`; on PostgreSQL every table of the host,
//! this one included, lives in its own schema (`picloud` unless
//! configured). Everything pending is applied in one transaction that takes
//! the migration lock for its own length only (SQLite: `BEGIN IMMEDIATE`;
//! PostgreSQL: `pg_advisory_xact_lock`). A failure rolls all of it back and
//! leaves no lock on a pooled connection, so `migrate` can simply be called
//! again. The application's migrations and the host's run in either order,
//! as often as anyone likes.
//!
//! Databases made before this rule (tables in `public`, versions in
//! `_sqlx_migrations`) are moved in the same transaction: the host's tables
//! and functions go to its schema, and its versions (only those whose
//! checksum is the host's own) move from `_sqlx_migrations` to its table.

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, Migrator};
use sqlx::{PgConnection, SqliteConnection};

use super::{Error, Result};

/// The host's SQLite migrations.
static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
/// The host's PostgreSQL migrations.
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");

/// The host's tables, for the move of a database made before the host had
/// its own schema (every table any migration creates).
pub(crate) const TABLES: &[&str] = &[
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

/// The host's PostgreSQL functions (their argument lists are empty).
const FUNCTIONS: &[&str] = &[
    "picloud_outbox_notify",
    "picloud_runs_notify",
    "picloud_release_next",
];

/// The PostgreSQL advisory lock that serializes migrations: "picloud" in
/// ASCII, so that it does not collide with sqlx's own (a hash of the
/// database name).
const PG_LOCK: i64 = 0x0070_6963_6c6f_7564;

/// One applied version, as the bookkeeping table holds it.
type Applied = (i64, Vec<u8>);

/// The migrations of `migrator` that `applied` lacks, in order; an error
/// when `applied` holds a version this host does not know (a newer host
/// migrated the database) or one whose text changed since it was applied.
fn pending<'m>(migrator: &'m Migrator, applied: &[Applied]) -> Result<Vec<&'m Migration>> {
    for (version, checksum) in applied {
        match migrator.iter().find(|m| m.version == *version) {
            None => {
                return Err(Error::Invalid(format!(
                    "the database holds picloud-host migration {version}, which this \
                     picloud-host does not know: a newer version migrated it; run that \
                     version or a newer one"
                )));
            }
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                return Err(Error::Invalid(format!(
                    "picloud-host migration {version} ({}) differs from the one applied to \
                     this database: its file was changed after release; restore it",
                    m.description
                )));
            }
            Some(_) => {}
        }
    }
    Ok(migrator
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .collect())
}

/// The host's versions among `legacy` (rows of `_sqlx_migrations`): those
/// whose version and checksum are one of `migrator`'s.
fn ours(migrator: &Migrator, legacy: Vec<Applied>) -> Vec<Applied> {
    legacy
        .into_iter()
        .filter(|(version, checksum)| {
            migrator
                .iter()
                .any(|m| m.version == *version && m.checksum.as_ref() == checksum.as_slice())
        })
        .collect()
}

/// Apply the host's pending SQLite migrations on `conn` (see the module
/// rule). Returns how many were applied.
pub(crate) async fn sqlite(conn: &mut SqliteConnection) -> Result<usize> {
    use sqlx::Connection;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "create table if not exists picloud_migrations (
             version integer primary key not null,
             description text not null,
             checksum blob not null,
             applied_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         )",
    )
    .execute(&mut *tx)
    .await?;
    let legacy_table: Option<(String,)> = sqlx::query_as(
        "select name from sqlite_master where type = 'table' and name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if legacy_table.is_some() {
        let legacy: Vec<Applied> =
            sqlx::query_as("select version, checksum from _sqlx_migrations where success")
                .fetch_all(&mut *tx)
                .await?;
        for (version, checksum) in ours(&SQLITE, legacy) {
            let description = describe(&SQLITE, version);
            sqlx::query(
                "insert into picloud_migrations (version, description, checksum)
                 values ($1, $2, $3) on conflict (version) do nothing",
            )
            .bind(version)
            .bind(description)
            .bind(&checksum)
            .execute(&mut *tx)
            .await?;
            sqlx::query("delete from _sqlx_migrations where version = $1 and checksum = $2")
                .bind(version)
                .bind(&checksum)
                .execute(&mut *tx)
                .await?;
        }
    }
    let applied: Vec<Applied> =
        sqlx::query_as("select version, checksum from picloud_migrations order by version")
            .fetch_all(&mut *tx)
            .await?;
    let todo = pending(&SQLITE, &applied)?;
    for m in &todo {
        raw_sqlite(&mut tx, &m.sql).await?;
        sqlx::query(
            "insert into picloud_migrations (version, description, checksum) values ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.description.as_ref())
        .bind(m.checksum.as_ref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(todo.len())
}

/// Apply the host's pending PostgreSQL migrations on `conn`, with its
/// tables in `schema` (see the module rule). Returns how many were applied.
pub(crate) async fn postgres(conn: &mut PgConnection, schema: &str) -> Result<usize> {
    use sqlx::Connection;
    let quoted = quote(schema);
    let mut tx = conn.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(PG_LOCK)
        .execute(&mut *tx)
        .await?;
    raw_pg(
        &mut tx,
        &format!(
            "create schema if not exists {quoted};
         create table if not exists {quoted}.migrations (
             version bigint primary key,
             description text not null,
             checksum bytea not null,
             applied_at timestamptz not null default now()
         )"
        ),
    )
    .await?;
    move_legacy_postgres(&mut tx, schema).await?;
    let applied: Vec<Applied> = sqlx::query_as(&format!(
        "select version, checksum from {quoted}.migrations order by version"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let todo = pending(&POSTGRES, &applied)?;
    if !todo.is_empty() {
        // The migrations' own text names no schema: they create in ours.
        sqlx::query("select set_config('search_path', $1, true)")
            .bind(&quoted)
            .execute(&mut *tx)
            .await?;
    }
    for m in &todo {
        raw_pg(&mut tx, &m.sql).await?;
        sqlx::query(&format!(
            "insert into {quoted}.migrations (version, description, checksum) values ($1, $2, $3)"
        ))
        .bind(m.version)
        .bind(m.description.as_ref())
        .bind(m.checksum.as_ref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(todo.len())
}

/// A database made before the host had its own schema: its tables and
/// functions are in `public`, its versions in `public._sqlx_migrations`.
/// Move them to `schema` (see the module rule); nothing when there are
/// none of the host's versions there.
async fn move_legacy_postgres(tx: &mut PgConnection, schema: &str) -> Result<()> {
    let legacy_table: Option<(String,)> = sqlx::query_as(
        "select table_name::text from information_schema.tables
         where table_schema = 'public' and table_name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if legacy_table.is_none() || schema == "public" {
        return Ok(());
    }
    let legacy: Vec<Applied> =
        sqlx::query_as("select version, checksum from public._sqlx_migrations where success")
            .fetch_all(&mut *tx)
            .await?;
    let moved = ours(&POSTGRES, legacy);
    if moved.is_empty() {
        return Ok(());
    }
    let quoted = quote(schema);
    let present: Vec<(String,)> = sqlx::query_as(
        "select table_name::text from information_schema.tables
         where table_schema = 'public' and table_name = any($1)",
    )
    .bind(TABLES)
    .fetch_all(&mut *tx)
    .await?;
    for (table,) in &present {
        raw_pg(
            &mut *tx,
            &format!("alter table public.{} set schema {quoted}", quote(table)),
        )
        .await?;
    }
    let functions: Vec<(String,)> = sqlx::query_as(
        "select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and p.proname = any($1)",
    )
    .bind(FUNCTIONS)
    .fetch_all(&mut *tx)
    .await?;
    for (function,) in &functions {
        raw_pg(
            &mut *tx,
            // Its search path goes with it: a function that names tables
            // (picloud_release_next) finds them in the schema.
            &format!(
                "alter function public.{name}() set schema {quoted};
                 alter function {quoted}.{name}() set search_path = {quoted}",
                name = quote(function)
            ),
        )
        .await?;
    }
    for (version, checksum) in moved {
        sqlx::query(&format!(
            "insert into {quoted}.migrations (version, description, checksum)
             values ($1, $2, $3) on conflict (version) do nothing"
        ))
        .bind(version)
        .bind(describe(&POSTGRES, version))
        .bind(&checksum)
        .execute(&mut *tx)
        .await?;
        sqlx::query("delete from public._sqlx_migrations where version = $1 and checksum = $2")
            .bind(version)
            .bind(&checksum)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The description of `migrator`'s migration `version` (it is one of them).
fn describe(migrator: &Migrator, version: i64) -> String {
    migrator
        .iter()
        .find(|m| m.version == version)
        .map(|m| m.description.to_string())
        .unwrap_or_default()
}

/// `name` as a quoted PostgreSQL identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Check a PostgreSQL schema name given by an operator or embedder: what
/// PostgreSQL accepts unquoted, at most 63 bytes.
pub fn validate_schema(name: &str) -> Result<()> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 || name.starts_with("pg_") {
        return Err(Error::Invalid(format!(
            "schema name {name:?} is not usable: use lower-case letters, digits and \
             underscores, starting with a letter, at most 63 bytes, not starting with pg_"
        )));
    }
    Ok(())
}

/// Run the statements of `sql` (no binds) on `conn`. Through
/// `Executor::execute`, boxed: the future of `RawSql::execute` is not
/// provably `Send` for every lifetime inside an `async fn`
/// (rust-lang/rust#102211).
fn raw_pg<'c>(conn: &'c mut PgConnection, sql: &'c str) -> BoxFuture<'c, Result<()>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sqlx::raw_sql(sql)).await?;
        Ok(())
    })
}

/// [`raw_pg`] on SQLite.
fn raw_sqlite<'c>(conn: &'c mut SqliteConnection, sql: &'c str) -> BoxFuture<'c, Result<()>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sqlx::raw_sql(sql)).await?;
        Ok(())
    })
}
