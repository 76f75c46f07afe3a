//! Records every event it sees under `audit/<event id>`.
//!
//! Keyed by the event id, so a re-delivered event (delivery is
//! at-least-once) overwrites its own entry instead of adding a second one.
//! Register it on any collection, e.g.
//! `picloud-host trigger add-kv shop --script audit-log --collection 'orders' --as alice`.
//! (Registering it on `*` would also audit its own writes to `audit`, one
//! level deeper each time, until the host's depth limit stops it.)

use picloud_sdk::{Event, Result, handler, kv, log};
use serde_json::{Value, json};

#[handler]
fn audit(event: Event) -> Result<()> {
    let payload: Value = event.json().unwrap_or(Value::Null);
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
    log::info(&format!(
        "audited {}/{} event {}",
        event.source(),
        event.op(),
        event.id()
    ));
    Ok(())
}
