//! The PostgreSQL schema that holds the host's tables (`picloud` unless
//! configured), so that they never meet the embedding application's.
//!
//! Rule: statement texts are written once, for both backends, with bare
//! table names. On PostgreSQL each text is qualified with the schema the
//! first time it runs (`qualify`) and the qualified text is kept, so a
//! statement costs one hash lookup more and works on any connection: the
//! host's own pool and an embedder's transaction alike, whatever their
//! `search_path`. The schema is one per process: it is fixed by
//! [`use_schema`] or `PICLOUD_PG_SCHEMA` before the first statement.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};

use super::migrate::{TABLES, validate_schema};
use super::{Error, Result};

/// The schema when nothing chose another.
pub const DEFAULT_SCHEMA: &str = "picloud";

/// The environment variable that chooses the schema.
pub const SCHEMA_ENV: &str = "PICLOUD_PG_SCHEMA";

static SCHEMA: OnceLock<String> = OnceLock::new();

/// Put the host's PostgreSQL tables in `name` for the rest of this process.
/// Call it before the store runs its first statement. Calling it again
/// with the same name is fine; another name, once a schema is fixed, is an
/// error (the statements already qualified name the first).
pub fn use_schema(name: &str) -> Result<()> {
    validate_schema(name)?;
    let fixed = SCHEMA.get_or_init(|| name.to_owned());
    if fixed != name {
        return Err(Error::Invalid(format!(
            "the PostgreSQL schema of this process is already {fixed:?}; it cannot become \
             {name:?}: choose the schema once, before the first store is used"
        )));
    }
    Ok(())
}

/// The schema of this process: what [`use_schema`] chose, else
/// `PICLOUD_PG_SCHEMA`, else [`DEFAULT_SCHEMA`]. An unusable
/// `PICLOUD_PG_SCHEMA` is reported by [`schema_from_env`]; here it falls
/// back to the default.
pub fn schema() -> &'static str {
    SCHEMA.get_or_init(|| {
        std::env::var(SCHEMA_ENV)
            .ok()
            .filter(|name| validate_schema(name).is_ok())
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned())
    })
}

/// Fix the schema from `PICLOUD_PG_SCHEMA` when it is set: an error naming
/// the variable when its value is not a usable schema name.
pub fn schema_from_env() -> Result<()> {
    match std::env::var(SCHEMA_ENV) {
        Ok(name) => use_schema(&name).map_err(|e| Error::Invalid(format!("{SCHEMA_ENV}: {e}"))),
        Err(_) => Ok(()),
    }
}

/// Texts already qualified, by their bare text.
static QUALIFIED: LazyLock<RwLock<HashMap<&'static str, &'static str>>> =
    LazyLock::new(Default::default);

/// `sql` with every table of the host named in [`schema`]. The texts are
/// the host's own, a bounded set: each qualified text is kept for the life
/// of the process.
pub(crate) fn qualify(sql: &str) -> &'static str {
    if let Some(done) = QUALIFIED.read().expect("qualified texts").get(sql) {
        return done;
    }
    let done: &'static str = Box::leak(rewrite(sql, schema()).into_boxed_str());
    let key: &'static str = Box::leak(sql.to_owned().into_boxed_str());
    QUALIFIED
        .write()
        .expect("qualified texts")
        .entry(key)
        .or_insert(done)
}

/// `sql` with each bare table name (one of [`TABLES`]: not after a `.` or
/// `as`, not before a `.`, not in a string, quoted name or comment) written
/// `"schema".name`.
fn rewrite(sql: &str, schema: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 64);
    let mut i = 0;
    // The last word and the last character outside blanks, before `i`.
    let mut last_word = "";
    let mut last_char = b' ';
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' || c == b'"' {
            let end = closing(bytes, i, c);
            out.push_str(&sql[i..end]);
            i = end;
            last_char = c;
            last_word = "";
        } else if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            let end = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            out.push_str(&sql[i..end]);
            i = end;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = i + bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'$')
                .count();
            let word = &sql[i..end];
            let qualifiable = TABLES.contains(&word)
                && last_char != b'.'
                && !last_word.eq_ignore_ascii_case("as")
                && bytes.get(end) != Some(&b'.');
            if qualifiable {
                out.push('"');
                out.push_str(schema);
                out.push_str("\".");
            }
            out.push_str(word);
            last_word = word;
            last_char = b'a';
            i = end;
        } else {
            let ch = sql[i..].chars().next().expect("a character at a boundary");
            out.push(ch);
            if !ch.is_whitespace() {
                last_char = c;
                last_word = "";
            }
            i += ch.len_utf8();
        }
    }
    out
}

/// The index just past the quote that closes the one at `start`
/// (a doubled quote is part of the text).
fn closing(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn bare_table_names_are_qualified_and_nothing_else() {
        // A word that is a table's name is taken for the table wherever it
        // is not a qualified column or an `as` alias: which is why no alias
        // in the host's SQL is named like a table (the last `apps`).
        let sql = "with shares as (select count(*) as apps from outbox o) \
                   select o.id, kv_entries.version, 'runs' from outbox o \
                   join runs on runs.id = o.id -- outbox here\n\
                   where \"apps\" = 1 and (select apps from shares) > 1";
        assert_eq!(
            rewrite(sql, "pc"),
            "with shares as (select count(*) as apps from \"pc\".outbox o) \
             select o.id, kv_entries.version, 'runs' from \"pc\".outbox o \
             join \"pc\".runs on runs.id = o.id -- outbox here\n\
             where \"apps\" = 1 and (select \"pc\".apps from shares) > 1"
        );
    }

    #[test]
    fn non_ascii_text_survives() {
        let sql = "select 'é', é from apps";
        assert_eq!(rewrite(sql, "s"), "select 'é', é from \"s\".apps");
    }
}
