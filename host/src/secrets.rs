//! App variables and secrets: the configuration scripts read through
//! `wasi:config/store`.
//!
//! Rule: a secret is sealed with the host's key before it reaches storage
//! and opened only inside the invocation that reads it; its plain text is
//! never stored, logged, listed or returned by any surface but that read.
//! Without `PICLOUD_SECRET_KEY` the host stores no secret and says why.
//!
//! Sealing is XChaCha20-Poly1305 (RustCrypto's audited `chacha20poly1305`)
//! with a random 192-bit nonce per write and the app id and variable name as
//! associated data, so a sealed value copied to another app or name does
//! not open. A wrong key fails authentication: the error says the key
//! differs from the one the secret was stored with.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::model::{AppId, Timestamp};
use crate::store::StoredVar;

/// One of an app's variables as listed: a secret's value is never shown.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct AppVar {
    /// Its name.
    pub name: String,
    /// Whether it is a secret.
    pub secret: bool,
    /// A variable's value; `None` for a secret.
    pub value: Option<String>,
    /// When it was last set.
    pub updated_at: Timestamp,
}

impl From<StoredVar> for AppVar {
    fn from(v: StoredVar) -> AppVar {
        AppVar {
            value: (!v.secret).then(|| String::from_utf8_lossy(&v.value).into_owned()),
            name: v.name,
            secret: v.secret,
            updated_at: v.updated_at,
        }
    }
}

/// The environment variable that holds the key.
pub const SECRET_KEY_VAR: &str = "PICLOUD_SECRET_KEY";

/// Bytes of nonce before each sealed value.
const NONCE_BYTES: usize = 24;

/// Why a secret cannot be stored or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No key is configured.
    #[error(
        "secrets need {SECRET_KEY_VAR}: set it to 64 hex digits (generate one with `picloud-host secret-key`)"
    )]
    NoKey,
    /// The key is malformed.
    #[error(
        "{SECRET_KEY_VAR} must be 64 hex digits (32 bytes); generate one with `picloud-host secret-key`"
    )]
    BadKey,
    /// The stored value does not open with this key.
    #[error(
        "secret '{name}' cannot be decrypted: {SECRET_KEY_VAR} is not the key it was stored with"
    )]
    WrongKey {
        /// The variable.
        name: String,
    },
}

/// The host's secret key. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct SecretKey(Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A key from 64 hex digits.
    pub fn parse(text: &str) -> Result<SecretKey, SecretError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SecretError::BadKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(SecretKey(Key::from(bytes)))
    }

    /// The key in `PICLOUD_SECRET_KEY`, if it is set.
    pub fn from_env() -> Result<Option<SecretKey>, SecretError> {
        match std::env::var(SECRET_KEY_VAR) {
            Ok(text) if !text.trim().is_empty() => SecretKey::parse(&text).map(Some),
            _ => Ok(None),
        }
    }

    /// A new random key, as the 64 hex digits [`SecretKey::parse`] reads.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        hex::encode(bytes)
    }

    /// `plain`, sealed for variable `name` of `app`: nonce, then ciphertext.
    pub fn seal(&self, app: AppId, name: &str, plain: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the operating system's random source");
        let aad = associated(app, name);
        let sealed = XChaCha20Poly1305::new(&self.0)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The plain text of what [`SecretKey::seal`] sealed for `name` of `app`.
    pub fn open(&self, app: AppId, name: &str, sealed: &[u8]) -> Result<String, SecretError> {
        let wrong = || SecretError::WrongKey {
            name: name.to_owned(),
        };
        if sealed.len() < NONCE_BYTES {
            return Err(wrong());
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let aad = associated(app, name);
        let plain = XChaCha20Poly1305::new(&self.0)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

/// What binds a sealed value to its place: the app id and the name.
fn associated(app: AppId, name: &str) -> Vec<u8> {
    let mut aad = app.0.as_bytes().to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_same_key_app_and_name() {
        let key = SecretKey::parse(&SecretKey::generate()).unwrap();
        let app = AppId::new();
        let sealed = key.seal(app, "TOKEN", "hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(app, "TOKEN", &sealed).unwrap(), "hunter2");
        // Two seals of one value differ (a fresh nonce each time).
        assert_ne!(sealed, key.seal(app, "TOKEN", "hunter2"));

        let other = SecretKey::parse(&SecretKey::generate()).unwrap();
        let wrong = other.open(app, "TOKEN", &sealed).unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "secret 'TOKEN' cannot be decrypted: PICLOUD_SECRET_KEY is not the key it was stored with"
        );
        assert!(key.open(app, "OTHER", &sealed).is_err());
        assert!(key.open(AppId::new(), "TOKEN", &sealed).is_err());
        assert!(key.open(app, "TOKEN", &sealed[..10]).is_err());
    }

    #[test]
    fn a_malformed_key_is_refused() {
        assert!(matches!(SecretKey::parse("abc"), Err(SecretError::BadKey)));
        assert!(matches!(
            SecretKey::parse(&"zz".repeat(32)),
            Err(SecretError::BadKey)
        ));
        assert!(SecretKey::parse(&"ab".repeat(32)).is_ok());
        assert_eq!(
            format!("{:?}", SecretKey::parse(&"ab".repeat(32)).unwrap()),
            "SecretKey(..)"
        );
    }
}
