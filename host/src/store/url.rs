//! Database URLs: which backend, and how to print one safely.
//!
//! Rule: a URL is never shown with its password; every message that names a
//! database goes through [`redact`].

use super::{Backend, Error, Result};

/// A database URL whose scheme has been recognised.
#[derive(Clone, Debug)]
pub struct DatabaseUrl {
    /// The backend the scheme selects.
    pub backend: Backend,
    /// The URL as given (may hold a password: print [`DatabaseUrl::redacted`]).
    pub url: String,
}

impl DatabaseUrl {
    /// Recognise `sqlite:` and `postgres:`/`postgresql:` URLs.
    pub fn parse(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        let backend = match scheme {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            _ => {
                return Err(Error::Url(format!(
                    "unsupported database URL '{}': use sqlite://FILE or postgres://USER@HOST/DB",
                    redact(url)
                )));
            }
        };
        Ok(DatabaseUrl {
            backend,
            url: url.to_owned(),
        })
    }

    /// The URL without its password.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The password ends at the last '@': splitting there (not at the first
    // '/' or '?') also hides passwords that contain those characters
    // unencoded. An '@' later in the URL only makes us hide more.
    let Some((userinfo, host_and_tail)) = rest.rsplit_once('@') else {
        return redact_query(url);
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    redact_query(&format!("{scheme}://{user}@{host_and_tail}"))
}

fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?password=x&sslmode=off"),
            "postgres://h/db?password=***&sslmode=off"
        );
        assert_eq!(redact("sqlite://picloud.db"), "sqlite://picloud.db");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:pa/ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:pa?ss@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn picks_backend_by_scheme() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://x.db").unwrap().backend,
            Backend::Sqlite
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap().backend,
            Backend::Sqlite
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://h/d").unwrap().backend,
            Backend::Postgres
        );
        let e = DatabaseUrl::parse("mysql://u:pw@h/d")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unsupported database URL 'mysql://u:***@h/d': use sqlite://FILE or postgres://USER@HOST/DB"
        );
    }
}
