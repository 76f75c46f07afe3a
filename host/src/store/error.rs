//! The store's error type.
//!
//! Rule: errors a person or a script sees name the thing and the fix; raw
//! database text is kept for operators (`Database`) and never shown to a
//! guest unexplained. `is_transient` says whether trying again may help.

use crate::model::Resolution;
use crate::pattern::PatternError;

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such app, script, trigger, dead letter...
    #[error("unknown {what} '{id}'")]
    NotFound {
        /// `app`, `script`, `trigger`, `dead letter`, ...
        what: &'static str,
        /// The name or id that was asked for.
        id: String,
    },
    /// A unique name is already taken, or a reference crosses apps.
    #[error("{0}")]
    Conflict(String),
    /// Resolving a dead letter that already is.
    #[error("dead letter {id} is already resolved as {resolution}")]
    AlreadyResolved {
        /// The dead letter.
        id: String,
        /// How it was resolved.
        resolution: Resolution,
    },
    /// A conditional KV write found the key at another version than it
    /// expected (version 0: absent).
    #[error("{}", version_conflict_text(collection, key, *expected, *found))]
    VersionConflict {
        /// The key's collection.
        collection: String,
        /// The key.
        key: String,
        /// The version the write was conditioned on (0: absent).
        expected: u64,
        /// The version the key is at (0: absent).
        found: u64,
    },
    /// A trigger pattern was refused.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// An argument was malformed; the message says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// The database URL could not be used.
    #[error("{0}")]
    Url(String),
    /// The database could not be reached.
    #[error("cannot reach database {url}: {reason}")]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// Why.
        reason: String,
    },
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn version_conflict_text(collection: &str, key: &str, expected: u64, found: u64) -> String {
    let at = |v: u64| match v {
        0 => "absent".to_owned(),
        v => format!("at version {v}"),
    };
    format!(
        "{collection}/{key} is {}, not {}: read it again and retry, or fail the attempt",
        at(found),
        at(expected)
    )
}

impl Error {
    /// A `NotFound` for `what` named `id`.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Whether the same call may succeed later (connection trouble, lock
    /// contention), as opposed to a refusal that will repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                ) || e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| {
                        // PostgreSQL: serialization failure, deadlock, admin
                        // shutdown, connection failures; SQLite: busy, locked.
                        matches!(
                            &*c,
                            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "5" | "6"
                        ) || c.starts_with("08")
                    })
            }
            _ => false,
        }
    }

    /// Whether the database refused the values themselves (PostgreSQL's
    /// data exceptions, class 22: a NUL byte in text, a number out of
    /// range): the same call will fail again, and the caller's input is to
    /// blame, not the store.
    pub fn is_input_refused(&self) -> bool {
        match self {
            Error::Database(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c.starts_with("22")),
            _ => false,
        }
    }

    /// Whether this is a `NotFound`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}
