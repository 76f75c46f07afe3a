//! API tokens: how a caller of the HTTP API proves which principal it is.
//!
//! Rule: a token's secret is shown once, when it is made, and never stored:
//! the store keeps its SHA-256 only, so a copy of the database lets nobody
//! call the API. A token is bound to one principal and grants exactly that
//! principal's rights, checked by the host's [`crate::auth::Authorizer`]
//! on every request; revoking it takes effect on the next request.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Timestamp, TokenId};
use crate::store::{self, Store};

/// The prefix of every secret, so that a leaked one is recognisable (and
/// secret scanners can be taught it).
pub const SECRET_PREFIX: &str = "pct_";

/// A stored token: who it speaks for, never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct ApiToken {
    /// Its id (for `token revoke`).
    #[cfg_attr(feature = "http", schema(value_type = String, format = Uuid))]
    pub id: TokenId,
    /// The principal it authenticates as.
    pub principal: String,
    /// A name for listings ("ci", "dashboard").
    pub name: String,
    /// When it was made.
    #[cfg_attr(feature = "http", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    #[cfg_attr(feature = "http", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<Timestamp>,
}

/// Why a presented token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a token this host made (or not a token at all).
    #[error("the token is not known: create one with `picloud-host token create PRINCIPAL`")]
    Unknown,
    /// A token that was revoked.
    #[error(
        "the token {id} was revoked at {at}: create a new one with `picloud-host token create`"
    )]
    Revoked {
        /// Its id.
        id: TokenId,
        /// When.
        at: Timestamp,
    },
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The hex SHA-256 of a secret: what the store keeps and looks up.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh secret: the prefix and 256 bits from the operating system's
/// random source, in hex.
fn new_secret() -> Result<String, store::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| store::Error::Invalid(format!("no random source for a token: {e}")))?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

/// Make a token for `principal`; returns it and its secret, which is not
/// kept anywhere: hand it to its user now.
pub async fn create(
    store: &dyn Store,
    principal: &str,
    name: &str,
) -> Result<(ApiToken, String), store::Error> {
    if principal.trim().is_empty() {
        return Err(store::Error::Invalid(
            "a token needs a principal: `picloud-host token create PRINCIPAL`".into(),
        ));
    }
    let secret = new_secret()?;
    let token = store
        .create_token(principal, name, &secret_hash(&secret))
        .await?;
    Ok((token, secret))
}

/// The token a secret belongs to, if it is known and not revoked.
pub async fn authenticate(store: &dyn Store, secret: &str) -> Result<ApiToken, TokenError> {
    if !secret.starts_with(SECRET_PREFIX) {
        return Err(TokenError::Unknown);
    }
    match store.find_token(&secret_hash(secret)).await? {
        None => Err(TokenError::Unknown),
        Some(ApiToken {
            id,
            revoked_at: Some(at),
            ..
        }) => Err(TokenError::Revoked { id, at }),
        Some(token) => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }
}
