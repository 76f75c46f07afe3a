//! The app's variables and secrets, read through `wasi:config/store`.
//!
//! An operator sets them with the CLI (or the HTTP API), and every script
//! of the app reads them by name:
//!
//! ```text
//! picloud-host app var set shop WEBHOOK_URL https://hooks.example.com/T0/B0
//! printf '%s' "$TOKEN" | picloud-host app secret set shop WEBHOOK_TOKEN -
//! ```
//!
//! ```no_run
//! use picloud_sdk::config;
//!
//! # fn f() -> picloud_sdk::Result<()> {
//! let url = config::require("WEBHOOK_URL")?;
//! let token = config::get("WEBHOOK_TOKEN")?; // None when unset
//! # Ok(()) }
//! ```
//!
//! A variable needs read access to the app; a secret's value needs write
//! access, of the principal the script runs as and of whoever deployed it.
//! Secrets are encrypted at rest with the host's `PICLOUD_SECRET_KEY` and
//! opened only for the script that reads them: the host never puts one in
//! a run, a log line, an error or a listing. Your script should not either:
//! don't log a secret, or return it in a reply.

use crate::Result;

/// The value of variable or secret `name`, or `None` when the app has none
/// by that name.
pub fn get(name: &str) -> Result<Option<String>> {
    crate::sys::config::get(name)
}

/// The value of `name`, or an error that names the missing variable and
/// the command that sets it.
pub fn require(name: &str) -> Result<String> {
    get(name)?.ok_or_else(|| {
        crate::Error::msg(format!(
            "the app has no variable {name}: set it with `picloud-host app var set APP {name} VALUE`"
        ))
    })
}
