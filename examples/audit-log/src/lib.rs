//! Records every event it sees under `audit/<event id>`.
//!
//! Shows: idempotency under at-least-once delivery. The entry is keyed by
//! the event id, which is the same on every retry and re-delivery, so a
//! second delivery overwrites its own entry instead of adding another.
//!
//! Works on any trigger; for example, audit every order:
//! `picloud-host trigger add-kv shop --script audit-log --collection orders --as alice`.
//! (Registered on `*` it would also audit its own writes to `audit`, one
//! level deeper each time, until the host's depth limit stops it.)

use picloud_sdk::{Event, Result, handler, kv, log};
use serde_json::{Value, json};

#[handler]
fn audit(event: Event) -> Result<()> {
    // The payload is JSON; keep it as text if it somehow is not.
    let payload: Value = event
        .json()
        .unwrap_or_else(|_| Value::String(event.payload().to_owned()));
    kv::set(
        "audit",
        event.id(),
        &json!({
            "source": event.source(),
            "op": event.op(),
            "app": event.app_id(),
            "payload": payload,
            "attempt": event.attempt(),
        }),
    )?;
    log::info!(
        "audited {}/{} event {} (attempt {})",
        event.source(),
        event.op(),
        event.id(),
        event.attempt()
    );
    Ok(())
}
