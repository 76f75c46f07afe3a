//! Collection and source patterns used by triggers.
//!
//! Rule: a pattern is `*` (matches everything), a prefix followed by a single
//! trailing `*` (`orders:*` matches `orders:eu`), or an exact name. A `*`
//! anywhere else is rejected when the trigger is created, so matching never
//! has to guess.

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern was empty.
    #[error("invalid pattern '': use '*' for everything, 'prefix*' or an exact name")]
    Empty,
    /// A `*` appeared somewhere other than the end.
    #[error("invalid pattern '{0}': '*' is allowed only as the last character ('*' or 'prefix*')")]
    MisplacedWildcard(String),
    /// Control characters or surrounding whitespace.
    #[error("invalid pattern '{0}': no whitespace at the ends and no control characters")]
    BadCharacters(String),
}

/// Check that `pattern` is one of the three accepted shapes.
pub fn validate(pattern: &str) -> Result<(), PatternError> {
    if pattern.is_empty() {
        return Err(PatternError::Empty);
    }
    if pattern.trim() != pattern || pattern.chars().any(char::is_control) {
        return Err(PatternError::BadCharacters(pattern.to_owned()));
    }
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if body.contains('*') {
        return Err(PatternError::MisplacedWildcard(pattern.to_owned()));
    }
    Ok(())
}

/// Whether `name` (a collection or a source) matches a validated `pattern`.
pub fn collection_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(collection_matches("*", "anything"));
        assert!(collection_matches("*", ""));
        assert!(collection_matches("orders:*", "orders:eu"));
        assert!(collection_matches("orders:*", "orders:"));
        assert!(!collection_matches("orders:*", "order"));
        assert!(collection_matches("orders", "orders"));
        assert!(!collection_matches("orders", "orders:eu"));
        assert!(!collection_matches("orders", "Orders"));
    }

    #[test]
    fn rejects_inner_wildcards() {
        assert!(validate("*").is_ok());
        assert!(validate("a*").is_ok());
        assert!(validate("abc").is_ok());
        assert_eq!(
            validate("a*b"),
            Err(PatternError::MisplacedWildcard("a*b".into()))
        );
        assert_eq!(
            validate("**"),
            Err(PatternError::MisplacedWildcard("**".into()))
        );
        assert_eq!(
            validate("*a"),
            Err(PatternError::MisplacedWildcard("*a".into()))
        );
        assert_eq!(validate(""), Err(PatternError::Empty));
        assert!(validate(" a").is_err());
        assert!(validate("a\n").is_err());
    }
}
