//! Where the SDK's host calls go: the host's imports inside the sandbox,
//! or, in a native `cargo test` with the `testing` feature, the in-memory
//! [`crate::testing::TestHost`] of the current thread.
//!
//! Rule: both sides have the signatures and types the WIT bindings
//! generate, so the public modules (`kv`, `dead_letters`, `queue`,
//! `pubsub`, `log`) are written once against them and never know which
//! side answers.

#[cfg(not(all(feature = "testing", not(target_arch = "wasm32"))))]
pub(crate) use crate::__private::bindings::picloud::trigger::{
    dead_letters, kv, log, pubsub, queue,
};

#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub(crate) use crate::testing::host::{config, dead_letters, kv, log, pubsub, queue};

/// `wasi:config/store`, its errors as the SDK's.
#[cfg(not(all(feature = "testing", not(target_arch = "wasm32"))))]
pub(crate) mod config {
    use crate::__private::bindings::wasi::config::store::{self, Error};

    pub(crate) fn get(name: &str) -> Result<Option<String>, crate::Error> {
        store::get(name).map_err(|e| match e {
            Error::Upstream(m) => crate::Error::msg(format!("config: {m}")),
            Error::Io(m) => crate::HostError::Unavailable(m).into(),
        })
    }
}
